"""What ``crl compare`` says about its statistics: one resample count everywhere, no interval
for a single run, the few-runs caveat, the table on stdout, and no forgetting plots for
single-task runs. Runs are real config.yaml files and TensorBoard event files."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _tb_runs import write_run
from crl.cli import main
from crl.compare import FEW_RUNS_NOTE, NO_INTERVAL, compare, stratified_bootstrap_ci, tag_filename


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def png_title(path: Path) -> str:
    with Image.open(path) as im:
        return im.text["Title"]


def seeds(root: Path, prefix: str, finals: list[float], **config) -> None:
    for seed, v in enumerate(finals):
        write_run(root, f"{prefix}{seed}", {"eval/a/score": [(0, 0.0), (100, v)]}, seed=seed, **config)


@pytest.mark.parametrize("resamples", [2000, 300])
def test_plot_title_and_table_state_the_resamples_used(tmp_path, resamples):
    seeds(tmp_path / "runs", "s", [1.0, 2.0, 4.0])
    out = tmp_path / "cmp"
    result = compare([str(tmp_path / "runs")], out=out, resamples=resamples)
    assert png_title(out / "eval__a__score.png") == f"eval/a/score: mean over seeds, 95% bootstrap band " \
                                                   f"({resamples} resamples)"  # 2000 used to be capped to 1000
    assert f"; {resamples} resamples over runs." in result["markdown"]
    row = result["rows"][0]
    point, lo, hi = stratified_bootstrap_ci([1.0, 2.0, 4.0], np.mean, resamples)  # the table's CI uses them too
    assert (row["value"], row["ci_low"], row["ci_high"]) == (point, lo, hi)


def test_resamples_out_of_range_is_one_line_naming_the_option(tmp_path, capsys):
    seeds(tmp_path / "runs", "s", [1.0])
    for bad in ("50", "1000000"):
        assert main(["compare", str(tmp_path / "runs"), "--resamples", bad, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err == f"error: crl compare: --resamples must be between 100 and 100000, got {bad}\n"


def test_single_run_has_no_interval_and_few_runs_are_flagged(tmp_path, capsys):
    seeds(tmp_path / "runs", "one", [5.0], norm="layernorm")
    seeds(tmp_path / "runs", "three", [1.0, 2.0, 6.0], norm="none")
    seeds(tmp_path / "runs", "five", [1.0, 2.0, 3.0, 4.0, 5.0], norm="nap")
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "runs"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    md = (out / "final_values.md").read_text()
    assert printed.endswith("\n\n" + md)  # c: the table goes to stdout after the summary lines
    # and one warning line on stderr naming the groups under 5 runs
    assert captured.err.count("\n") == 1 and captured.err.startswith("warning: crl compare: fewer than 5 runs in 2 ")
    assert "norm=layernorm: 1" in captured.err and "norm=none: 3" in captured.err and "nap" not in captured.err
    assert f"| norm=layernorm | `eval/a/score` | 1 | mean | 5 | {NO_INTERVAL} | 100 |" in md
    assert "| norm=none | `eval/a/score` | 3 | mean [a] | 3 | [" in md
    assert "| norm=nap | `eval/a/score` | 5 | IQM | 3 | [" in md
    assert md.count("[a]") == 2 and FEW_RUNS_NOTE in md  # the mark on the 3-run row and its footnote
    csv_rows = {r["group"]: r for r in rows_of(out / "final_values.csv")}
    assert (csv_rows["norm=layernorm"]["ci_low"], csv_rows["norm=layernorm"]["ci_high"]) == ("", "")
    assert float(csv_rows["norm=none"]["ci_low"]) < 3.0 < float(csv_rows["norm=none"]["ci_high"])


def test_no_few_runs_footnote_when_every_group_has_five_runs(tmp_path, capsys):
    seeds(tmp_path / "runs", "s", [1.0, 2.0, 3.0, 4.0, 5.0])
    md = compare([str(tmp_path / "runs")], out=tmp_path / "cmp")["markdown"]
    assert "[a]" not in md and "under-cover" not in md
    assert main(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "cmp2")]) == 0
    assert capsys.readouterr().err == ""  # no warning either


# ----------------------------------------------------------------------------- forgetting with one task

FORGETTING = ("avg_final", "avg_forgetting", "bwt", "num_tasks")


def task_run(root: Path, name: str, tasks: list[str], seed: int, stream_length: int | None = None, **config) -> None:
    """A run that evaluated ``tasks`` and logged forgetting/* at its end (num_tasks = stream length)."""
    n = stream_length or len(tasks)
    points = {f"eval/{t}/score": [(0, 0.0), (100, 1.0 + seed)] for t in tasks}
    values = {"avg_final": 1.0 + seed, "avg_forgetting": 0.5 * (n - 1), "bwt": -0.5 * (n - 1), "num_tasks": float(n)}
    points.update({f"forgetting/{k}": [(100, values[k])] for k in FORGETTING})
    write_run(root, name, points, seed=seed, **config)


def test_forgetting_left_out_for_single_task_groups_only(tmp_path):
    for seed in (0, 1):
        task_run(tmp_path, f"single{seed}", ["a"], seed, scenario="gym")
        task_run(tmp_path, f"split{seed}", ["a", "b"], seed, scenario="split")
    result = compare([str(tmp_path)], tags=["eval/a/score", "forgetting/*"], out=tmp_path / "cmp")
    by_tag: dict[str, list[str]] = {}
    for row in result["rows"]:
        by_tag.setdefault(row["tag"], []).append(row["group"])
    assert by_tag["eval/a/score"] == ["scenario=gym", "scenario=split"]
    assert all(by_tag[f"forgetting/{k}"] == ["scenario=split"] for k in FORGETTING)
    assert (tmp_path / "cmp" / tag_filename("forgetting/bwt")).exists()  # the two-task group still has its plot
    assert ("left out 4 forgetting/* tag(s) for group(s) scenario=gym: every run saw a single task"
            in result["markdown"])


def test_forgetting_plots_skipped_when_every_run_has_one_task(tmp_path, capsys):
    for seed in (0, 1):
        task_run(tmp_path, f"s{seed}", ["a"], seed)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path), "--out", str(out)]) == 0  # default tags include forgetting/*
    assert sorted(p.name for p in out.glob("*.png")) == ["eval__a__score.png"]
    assert "left out 4 forgetting/* tag(s) for every group" in capsys.readouterr().out
    assert main(["compare", str(tmp_path), "--tags", "forgetting/*", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: crl compare: nothing left to compare") and err.count("\n") == 1


def test_one_task_met_twice_keeps_forgetting(tmp_path):
    # one eval tag but a stream of two positions (the task comes back): forgetting is meaningful
    for seed in (0, 1):
        task_run(tmp_path, f"s{seed}", ["a"], seed, stream_length=2)
    result = compare([str(tmp_path)], tags=["forgetting/*"], out=tmp_path / "cmp")
    assert result["tags"] == [f"forgetting/{k}" for k in sorted(FORGETTING)] and result["notes"] == []


def test_task_count_from_eval_tags_without_num_tasks(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, f"one{seed}", {"eval/a/score": [(100, 1.0)], "forgetting/bwt": [(100, 0.0)]},
                  seed=seed, norm="none")
        write_run(tmp_path, f"two{seed}", {"eval/a/score": [(100, 1.0)], "eval/b/score": [(100, 2.0)],
                                           "forgetting/bwt": [(100, -1.0)]}, seed=seed, norm="nap")
    result = compare([str(tmp_path)], tags=["forgetting/bwt"], out=tmp_path / "cmp")
    assert [(r["group"], r["value"]) for r in result["rows"]] == [("norm=nap", -1.0)]
