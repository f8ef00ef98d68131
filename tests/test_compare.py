"""crl compare: runs produced here (by the runner and by RunLogger), read back from their
TensorBoard event files; plots, tables and statistics checked against what was logged."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import trim_mean
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from crl.cli import main
from crl.compare import (FEW_RUNS_NOTE, bootstrap_band, compare, curves_on_grid, final_summary, find_runs, group_runs,
                         read_run, select_tags, split_by_coverage, stratified_bootstrap_ci, tag_filename)
from crl.config import make_config
from crl.errors import UserError
from crl.logging import RunLogger

PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, name: str, series: dict[str, list[tuple[int, float]]], start_step: int = 0, **cfg):
    """A run directory written by crl's own RunLogger: config.yaml + an event file."""
    config = make_config("gym", scenario="gym", progress=False, name=name, **cfg)
    logger = RunLogger(root / name, config, total_steps=100, start_step=start_step)
    for tag, points in series.items():
        for step, value in points:
            logger.scalar(tag, value, step)
    logger.close()
    return root / name


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        assert main(["gym", "--run-dir", str(root), "--name", f"seed{seed}", "--seed", str(seed), "--no-progress",
                     "--steps", "400", "--eval-every", "200", "--eval-episodes", "2", "--eval-max-steps", "40",
                     "--learning-starts", "50", "--batch-size", "16", "--mlp-hidden", "16,16", "--buffer-size",
                     "1000", "--checkpoint-every", "10000", "--metrics-every", "100", "--log-every", "100"]) == 0
    return root


def test_compare_real_runs_writes_plots_and_tables_equal_to_the_logs(real_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    tags = ["eval/CartPole-v1/score", "plasticity/srank_0.01", "forgetting/*"]
    assert main(["compare", str(real_runs / "gym" / "*" / "seed*"), "--out", str(out), "--tags", *tags]) == 0
    printed = capsys.readouterr().out
    assert "compared 2 runs in 1 group(s), 2 tag(s)" in printed
    chosen = ["eval/CartPole-v1/score", "plasticity/srank_0.01"]  # CartPole is one task: forgetting/* left out
    for tag in chosen:
        png = out / tag_filename(tag)
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5_000, tag
    assert not list(out.glob("forgetting__*.png"))

    per_run = rows_of(out / "runs.csv")
    assert len(per_run) == 2 * len(chosen)
    for row in per_run:
        acc = EventAccumulator(row["run_dir"], size_guidance={"scalars": 0})
        acc.Reload()
        last = acc.Scalars(row["tag"])[-1]
        assert (int(row["step"]), float(row["value"])) == (last.step, last.value)  # what was logged, bit for bit
    table = {r["tag"]: r for r in rows_of(out / "final_values.csv")}
    assert set(table) == set(chosen)
    for tag in chosen:
        finals = [float(r["value"]) for r in per_run if r["tag"] == tag]
        assert table[tag]["statistic"] == "mean" and table[tag]["n_runs"] == "2"
        assert float(table[tag]["value"]) == pytest.approx(np.mean(finals))
        assert float(table[tag]["ci_low"]) <= float(table[tag]["value"]) <= float(table[tag]["ci_high"])
    md = (out / "final_values.md").read_text()
    assert "| `eval/CartPole-v1/score` | 2 | mean [a] |" in md and FEW_RUNS_NOTE in md  # 2 runs: flagged
    assert "left out 3 forgetting/* tag(s) for every group: every run saw a single task" in md
    assert "restarts" not in md and "ends inside a record" not in md and "end at different steps" not in md
    assert printed.endswith(md)  # the table is printed at the end, as written


def test_compare_default_tags_and_folder_above_runs(real_runs):
    runs = [read_run(p) for p in find_runs([str(real_runs)])]
    assert len(runs) == 2
    tags, notes = select_tags(runs, None)
    assert notes == []  # both runs have every default tag
    assert {"eval/CartPole-v1/score", "forgetting/avg_final", "plasticity/effective_rank"} <= set(tags)
    assert not any(t.startswith("plasticity/torso") for t in tags)  # per-layer tags only on request


def test_compare_errors_are_one_clear_line(real_runs, tmp_path, capsys):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert main(["compare", str(not_a_run), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: crl compare:") and "is not a run directory" in err and err.count("\n") == 1
    assert main(["compare", str(real_runs), "--tags", "eval/CartPole-v1/scor", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tag 'eval/CartPole-v1/scor' is missing from 2 of 2 runs" in err and "eval/CartPole-v1/score" in err
    with pytest.raises(UserError, match="matches no tag"):
        compare([str(real_runs)], tags=["nothing/*"], out=tmp_path / "o")
    with pytest.raises(UserError, match="matches nothing"):
        compare([str(tmp_path / "nope*")], out=tmp_path / "o")


# ----------------------------------------------------------------------------- logged by RunLogger


def test_groups_iqm_with_five_seeds_and_mean_below(tmp_path):
    finals_a = [1.0, 2.0, 3.0, 4.0, 5.0, 100.0]
    finals_b = [10.0, 20.0, 60.0]
    for seed, v in enumerate(finals_a):
        fake_run(tmp_path, f"a{seed}", {"eval/t/score": [(0, 0.0), (50, v / 2), (100 + seed, v)]}, seed=seed)
    for seed, v in enumerate(finals_b):
        fake_run(tmp_path, f"b{seed}", {"eval/t/score": [(0, 0.0), (100, v)]}, seed=seed, norm="layernorm")
    result = compare([str(tmp_path / "a*"), str(tmp_path / "b*")], tags=["eval/t/score"], out=tmp_path / "cmp")
    assert set(result["groups"]) == {"norm=none", "norm=layernorm"}
    rows = {r["group"]: r for r in result["rows"]}
    a, b = rows["norm=none"], rows["norm=layernorm"]
    assert a["statistic"] == "IQM" and a["value"] == pytest.approx(3.5)  # mean of 2, 3, 4, 5
    assert a["value"] == pytest.approx(trim_mean(finals_a, 0.25))
    assert a["ci_low"] <= 3.5 <= a["ci_high"] and a["n_runs"] == 6 and a["final_step"] == 105
    assert b["statistic"] == "mean" and b["value"] == pytest.approx(30.0) and 10.0 <= b["ci_low"] < b["ci_high"] <= 60
    md = (tmp_path / "cmp" / "final_values.md").read_text()
    assert "| norm=none | `eval/t/score` | 6 | IQM | 3.5 |" in md
    assert (tmp_path / "cmp" / "eval__t__score.png").read_bytes()[:8] == PNG


def test_resumed_run_reads_purged_events_once(tmp_path):
    fake_run(tmp_path, "r", {"x": [(s, float(s)) for s in range(0, 10)]})
    # a resume from the checkpoint at step 5 purges what the first process logged after step 5; a tag it
    # already has at step 5 is not written there again (crl/logging.py: a resumed run logs the same value)
    fake_run(tmp_path, "r2", {})
    cfg = make_config("gym", scenario="gym", progress=False, name="r")
    logger = RunLogger(tmp_path / "r", cfg, total_steps=100, start_step=5)
    for s in (5, 6, 7):
        logger.scalar("x", 100.0 + s, s)
    logger.close()
    run = read_run(tmp_path / "r")
    steps, values = run.scalars["x"]
    assert steps.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 106.0, 107.0]
    assert run.final("x") == (7, 107.0)


def test_curves_are_interpolated_inside_each_runs_range(tmp_path):
    runs = [read_run(fake_run(tmp_path, "p", {"y": [(0, 0.0), (10, 10.0)]}, seed=0)),
            read_run(fake_run(tmp_path, "q", {"y": [(0, 2.0), (5, 2.0)]}, seed=1))]
    grid, values = curves_on_grid(runs, "y")
    assert grid.tolist() == [0, 5, 10]
    assert values[0].tolist() == [0.0, 5.0, 10.0]
    assert values[1, :2].tolist() == [2.0, 2.0] and np.isnan(values[1, 2])
    mean, lo, hi = bootstrap_band(values, resamples=200)
    assert mean.tolist() == [1.0, 3.5, 10.0]
    assert np.isnan(lo[2]) and np.isnan(hi[2])  # one run at step 10: no band there
    assert lo[0] == 0.0 and hi[0] == 2.0
    solid, dashed = split_by_coverage(mean, (~np.isnan(values)).sum(axis=0), 2)
    assert solid[:2].tolist() == [1.0, 3.5] and np.isnan(solid[2])  # both runs up to step 5
    assert np.isnan(dashed[0]) and dashed[1:].tolist() == [3.5, 10.0]  # one run after: dashed, joined at 5
    assert len(group_runs(runs)) == 1  # configs differ only by seed


# ----------------------------------------------------------------------------- statistics


def test_stratified_bootstrap_resamples_within_each_task():
    scores = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])  # task 0 always 0, task 1 always 1
    point, lo, hi = stratified_bootstrap_ci(scores, np.mean, resamples=500)
    assert point == lo == hi == 0.5  # a plain bootstrap over all 8 cells would not be constant
    point, lo, hi = stratified_bootstrap_ci([1.0, 2.0, 3.0, 4.0], np.mean, resamples=2000, seed=1)
    assert point == 2.5 and 1.0 <= lo < 2.5 < hi <= 4.0


def test_final_summary_single_run_has_no_interval_and_bad_input():
    s = final_summary([7.0])
    assert (s["statistic"], s["value"], s["n"]) == ("mean", 7.0, 1)
    assert np.isnan(s["ci_low"]) and np.isnan(s["ci_high"])
    mean, lo, hi = bootstrap_band(np.array([[1.0, 2.0]]))
    assert mean.tolist() == [1.0, 2.0] and np.isnan(lo).all() and np.isnan(hi).all()
    with pytest.raises(UserError):
        stratified_bootstrap_ci([], np.mean)
