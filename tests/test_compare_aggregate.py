"""``crl compare --aggregate``: rliable's aggregates across tasks, checked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import trim_mean

from crl.aggregate import aggregate
from crl.cli import main
from crl.errors import UserError
from _tb_runs import write_run

# (runs, tasks): 3 seeds x 2 games, final values chosen so every aggregate differs
SCORES = np.array([[0.2, 1.5], [0.4, 0.9], [0.9, 0.3]])


def test_point_estimates_equal_the_definitions():
    out = aggregate(SCORES, gamma=1.0, resamples=500)
    assert out["mean"][0] == pytest.approx(np.mean([SCORES[:, 0].mean(), SCORES[:, 1].mean()]))
    assert out["median"][0] == pytest.approx(np.median(SCORES.mean(axis=0)))
    flat = np.sort(SCORES.ravel())  # 6 scores: trim 25% each side = 1.5 values -> scipy cuts int(1.5) = 1
    assert out["IQM"][0] == pytest.approx(flat[1:-1].mean()) == pytest.approx(trim_mean(flat, 0.25))
    # gamma - mean(min(x, gamma)): the 1.5 counts as 1.0
    assert out["optimality gap"][0] == pytest.approx(1.0 - np.mean([0.2, 1.0, 0.4, 0.9, 0.9, 0.3]))


def test_stratified_bootstrap_keeps_each_task_whole():
    # each task constant over runs: every stratified draw reproduces the matrix, so the CI is the point;
    # a bootstrap that mixed tasks would not
    x = np.array([[0.1, 0.8]] * 4)
    for point, lo, hi in aggregate(x, resamples=300).values():
        assert lo == pytest.approx(point) and hi == pytest.approx(point)
    point, lo, hi = aggregate(SCORES, resamples=2000)["mean"]
    assert lo < point < hi
    assert math.isnan(aggregate(SCORES[:1])["IQM"][1])  # one run: no interval


def test_bad_scores_are_one_error():
    with pytest.raises(UserError, match="finite"):
        aggregate([[1.0, float("nan")]])


def test_compare_aggregate_from_event_files(tmp_path, capsys):
    for seed, (a, b) in enumerate(SCORES):
        write_run(tmp_path / "runs", f"s{seed}", {"eval/pong/score": [(100, 0.0), (200, a)],
                                                   "eval/breakout/score": [(100, 0.0), (200, b)]}, seed=seed)
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "runs"), "--aggregate", "eval/*/score", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    expected = aggregate(SCORES[:, ::-1])  # tasks sorted by name: breakout, pong
    assert f"| mean | {expected['mean'][0]:.4g} |" in text and "Fewer than 5 runs" in text
    err = captured.err.splitlines()  # and one warning line on stderr
    assert len(err) == 1 and err[0].startswith("warning: crl compare: fewer than 5 runs in 1 group(s)")
    assert f": {len(SCORES)}): their bootstrap intervals (final values and --aggregate) under-cover" in err[0]
    assert (out / "aggregate.csv").read_text().count("\n") == 1 + 4  # header + one row per metric


def test_compare_aggregate_bad_pattern(tmp_path, capsys):
    write_run(tmp_path / "runs", "s0", {"eval/pong/score": [(100, 1.0)]})
    assert main(["compare", str(tmp_path / "runs"), "--aggregate", "eval/*/scroe", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--aggregate 'eval/*/scroe' matches no tag" in err[0]
