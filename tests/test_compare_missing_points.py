"""``crl compare`` on runs with missing points: a resume that purged a tag's only points (the
IndexError of issue 11), a missing final point, runs of different lengths, empty and cut-off
event files, and a second event file that starts earlier with or without a resume's purge.
Each gives one clear error line (exit 2) or a result that shows the gap, never a traceback."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from _tb_runs import write_run
from crl.cli import main
from crl.compare import (bootstrap_band, compare, curves_on_grid, cut_off, ends_apart, read_run, split_by_coverage)


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: crl compare: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return captured.err


def evals(*steps: int, tag: str = "eval/a/score") -> dict[str, list[tuple[int, float]]]:
    return {tag: [(s, float(s) / 100) for s in steps], "train/loss": [(s, 1.0) for s in steps]}


# ----------------------------------------------------------------------------- a resume purged every point of a tag


def purged_run(root: Path) -> Path:
    """A finished run resumed at its last step: the second process's purge drops everything logged
    at step 200 and it logs only train/loss again, so ``eval/final/score`` (only ever logged at
    the end) is left with no point at all."""
    first = {**evals(0, 100, 200), "eval/final/score": [(200, 7.0)]}
    return write_run(root, "s1", first, {"train/loss": [(200, 0.5)]}, purge_steps=(None, 200), seed=1)


def test_tag_with_all_points_purged_is_an_error_naming_the_resume(tmp_path, capsys):
    write_run(tmp_path, "s0", {**evals(0, 100, 200), "eval/final/score": [(200, 6.0)]}, seed=0)
    purged = purged_run(tmp_path)
    run = read_run(purged)
    assert "eval/final/score" in run.emptied and "eval/final/score" not in run.scalars
    assert run.final("train/loss") == (200, 0.5)  # re-logged by the resumed process
    assert main(["compare", str(tmp_path), "--tags", "eval/final/score", "--out", str(tmp_path / "o")]) == 2
    err = one_error_line(capsys)
    assert f"tag 'eval/final/score' is missing from 1 of 2 runs ({purged})" in err
    assert err.rstrip().endswith("all its points were purged by a --resume from an earlier step and not logged again")


def test_default_tags_leave_out_a_purged_tag_with_a_note(tmp_path, capsys):
    write_run(tmp_path, "s0", {**evals(0, 100, 200), "eval/final/score": [(200, 6.0)]}, seed=0)
    purged = purged_run(tmp_path)
    out = tmp_path / "o"
    assert main(["compare", str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"left out 1 default tag(s) missing from some runs: `eval/final/score` (missing from {purged})" in printed
    assert not (out / "eval__final__score.png").exists()
    # the purge also dropped eval/a/score's point at 200 in s1: the table says the runs end apart
    assert f"`eval/a/score`: the runs end at different steps (100 to 200; {purged} ends first" in printed
    finals = {(r["run_dir"], r["tag"]): (int(r["step"]), float(r["value"])) for r in rows_of(out / "runs.csv")}
    assert finals[(str(purged), "eval/a/score")] == (100, 1.0)
    assert {tag for _, tag in finals} == {"eval/a/score"}  # train/loss is no default tag


# ----------------------------------------------------------------------------- missing final point, different lengths


def test_missing_final_point_is_noted_and_drawn_dashed(tmp_path):
    write_run(tmp_path, "long", evals(0, 100, 200, 300), seed=0)
    short = write_run(tmp_path, "short", evals(0, 100, 200), seed=1)
    out = tmp_path / "o"
    result = compare([str(tmp_path)], tags=["eval/a/score"], out=out)
    row = rows_of(out / "final_values.csv")[0]
    assert (row["final_step"], row["final_step_min"]) == ("300", "200")
    assert float(row["value"]) == (3.0 + 2.0) / 2  # each run's own last point
    assert "| 200 to 300 |" in result["markdown"]
    assert f"the runs end at different steps (200 to 300; {short} ends first" in result["markdown"]
    runs = [read_run(tmp_path / "long"), read_run(short)]
    grid, values = curves_on_grid(runs, "eval/a/score")
    mean, lo, hi = bootstrap_band(values, 500)
    solid, dashed = split_by_coverage(mean, (~np.isnan(values)).sum(axis=0), 2)
    assert grid.tolist() == [0, 100, 200, 300]
    assert solid[:3].tolist() == [0.0, 1.0, 2.0] and np.isnan(solid[3])  # both runs: solid
    assert dashed[2:].tolist() == [2.0, 3.0] and np.isnan(dashed[:2]).all()  # one run: dashed, no band
    assert np.isnan(lo[3]) and np.isnan(hi[3]) and lo[2] <= 2.0 <= hi[2]


def test_runs_of_different_lengths_plot_and_tabulate(tmp_path, capsys):
    write_run(tmp_path, "a", evals(*range(0, 1001, 100)), seed=0)
    write_run(tmp_path, "b", evals(0, 100), seed=1)
    write_run(tmp_path, "c", evals(500, 600), seed=2)  # starts late: before 500 the mean is over a and b only
    out = tmp_path / "o"
    assert main(["compare", str(tmp_path), "--tags", "eval/a/score", "--out", str(out)]) == 0
    assert "the runs end at different steps (100 to 1000" in capsys.readouterr().out
    assert (out / "eval__a__score.png").stat().st_size > 5_000


def test_episode_end_jitter_is_not_a_missing_point(tmp_path):
    ends = {"x": [(0, 1.0), (13, 1.0), (30, 1.0), (397, 2.0)], "y": [(0, 1.0), (20, 1.0), (41, 1.0), (399, 2.0)]}
    assert not ends_apart([np.array([s for s, _ in v]) for v in ends.values()])
    assert ends_apart([np.array([0, 200, 400]), np.array([0, 200])])
    assert ends_apart([np.array([400]), np.array([200])])  # single points: any difference
    for seed, (name, pts) in enumerate(ends.items()):
        write_run(tmp_path, name, {"train/episode_return": pts}, seed=seed)
    result = compare([str(tmp_path)], out=tmp_path / "o")
    assert result["notes"] == [] and "| 397 to 399 |" in result["markdown"]


# ----------------------------------------------------------------------------- empty and cut-off event files


def test_empty_event_file_is_one_error_line(tmp_path, capsys):
    write_run(tmp_path, "good", evals(0, 100), seed=0)
    bad = tmp_path / "bad"
    write_run(tmp_path, "bad", seed=1)  # config.yaml only
    (bad / "events.out.tfevents.0000000001.test.0.0").write_bytes(b"")
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = one_error_line(capsys)
    assert f"run '{bad}' has no scalar point in its event files (empty: events.out.tfevents." in err


def test_empty_second_event_file_is_harmless(tmp_path):
    run = write_run(tmp_path, "r", evals(0, 100, 200))
    (run / "events.out.tfevents.0000000009.test.0.0").write_bytes(b"")
    read = read_run(run)
    assert read.final("eval/a/score") == (200, 2.0) and read.notes == []


def test_cut_off_event_file_uses_the_points_before_and_says_so(tmp_path, capsys):
    run = write_run(tmp_path, "r", evals(0, 100, 200, 300))
    (events,) = run.glob("events.out.tfevents.*")
    assert not cut_off(events)
    events.write_bytes(events.read_bytes()[:-7])  # the writer killed inside the last record
    assert cut_off(events)
    out = tmp_path / "o"
    assert main(["compare", str(run), "--tags", "eval/a/score", "train/loss", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{run}: {events.name} ends inside a record (the writer was killed)" in printed
    finals = {r["tag"]: int(r["step"]) for r in rows_of(out / "runs.csv")}
    assert finals == {"eval/a/score": 300, "train/loss": 200}  # the last record (train/loss at 300) is lost


def test_event_file_cut_before_its_first_point_is_one_error_line(tmp_path, capsys):
    run = write_run(tmp_path, "r", evals(0))
    (events,) = run.glob("events.out.tfevents.*")
    events.write_bytes(events.read_bytes()[:30])
    assert main(["compare", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "has no scalar point in its event files (cut off: " in one_error_line(capsys)


# ----------------------------------------------------------------------------- two event files, the second earlier


def test_resume_purge_replaces_the_later_points_without_a_note(tmp_path):
    run = write_run(tmp_path, "r", evals(0, 100, 200, 300), {"eval/a/score": [(200, 9.0), (300, 9.5)]},
                    purge_steps=(None, 200))
    read = read_run(run)
    steps, values = read.scalars["eval/a/score"]
    assert steps.tolist() == [0, 100, 200, 300] and values.tolist() == [0.0, 1.0, 9.0, 9.5]
    assert read.scalars["train/loss"][0].tolist() == [0, 100]  # purged, not re-logged yet
    assert read.notes == []


def test_restart_without_purge_replaces_the_later_points_with_a_note(tmp_path):
    # a second process wrote from step 0 again, without the purge marker of a resume
    run = write_run(tmp_path, "r", evals(0, 100, 200, 300), {"eval/a/score": [(0, 5.0), (100, 6.0)]})
    read = read_run(run)
    steps, values = read.scalars["eval/a/score"]
    assert steps.tolist() == [0, 100] and values.tolist() == [5.0, 6.0]  # not 5, 6, 2, 3: no doubling back
    assert read.scalars["train/loss"][0].tolist() == [0, 100, 200, 300]  # the restart did not log it
    assert read.notes == [f"{run}: an event file restarts at step 0 without a resume's purge (another process "
                          "wrote to this run directory); its points replace the earlier ones from there on"]
    result = compare([str(run)], tags=["eval/a/score"], out=tmp_path / "o")
    assert read.notes[0] in result["markdown"] and result["rows"][0]["value"] == 6.0


# ----------------------------------------------------------------------------- output folder


def test_out_that_is_a_file_is_one_error_line(tmp_path, capsys):
    write_run(tmp_path, "r", evals(0, 100))
    blocker = tmp_path / "out.txt"
    blocker.write_text("not a folder")
    assert main(["compare", str(tmp_path / "r"), "--out", str(blocker)]) == 2
    assert f"cannot write to --out {blocker}" in one_error_line(capsys)
