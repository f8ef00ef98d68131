"""scripts/revisit_returns.py on a real (tiny) sequential-minatar run: each visit's numbers are the
ones in the run's own records (event file episodes, summary.json's eval matrix)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytest.importorskip("minatar")

from conftest import load_script  # noqa: E402
from crl.cli import main  # noqa: E402

GAMES = ["breakout", "space_invaders"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    argv = ["run", "sequential-minatar", "--games", ",".join(GAMES), "--steps", "300", "--cycles", "2",
            "--learning-starts", "100", "--eval-episodes", "1", "--eval-max-steps", "60", "--metrics-every", "0",
            "--log-every", "50",
            "--no-compile-optimizer", "--run-dir", str(root), "--no-progress", "--name", "t"]
    assert main(argv) == 0
    (path,) = root.glob("*/*/t")
    return path


def test_each_visit_matches_the_runs_records(run_dir, capsys):
    assert load_script("revisit_returns").main([str(run_dir), "--last", "3"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and
            line[2].isdigit()]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    episodes = [(e.step, e.value) for e in acc.Scalars("train/episode_return")]
    matrix = json.loads((run_dir / "summary.json").read_text())["eval_matrix"]  # R[stream position, task]
    assert len(rows) == 4
    for i, row in enumerate(rows):
        game = GAMES[i % 2]
        inside = [v for s, v in episodes if 300 * i < s <= 300 * (i + 1)]
        assert row[1] == game and len(inside) >= 3
        assert row[2] == f"{np.mean(inside[-3:]):.2f} (1 run)"
        assert row[3] == f"{matrix[i][i % 2]:.2f} (1 run)"
        assert row[4] == (f"{matrix[i + 1][i % 2]:.2f} (1 run)" if i < 3 else "-")
        assert row[5].rstrip(" |") == f"{matrix[-1][i % 2]:.2f} (1 run)"


def test_tags_are_read_at_each_visit_end(run_dir, capsys):
    tag = "train/loss"
    assert load_script("revisit_returns").main([str(run_dir), "--tags", tag]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out[out.index(f"{tag} at visit end"):].splitlines()[2:6]]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    points = [(e.step, e.value) for e in acc.Scalars(tag)]
    for i, row in enumerate(rows):
        inside = [v for s, v in points if 300 * i < s <= 300 * (i + 1)]
        assert len(inside) >= 3 and row[2].rstrip(" |") == f"{inside[-1]:.3g} (1 run)"


def test_two_seeds_give_a_ci_and_bad_input_one_line(run_dir, tmp_path, capsys):
    script = load_script("revisit_returns")
    assert script.mean_ci([1.0, 3.0]).startswith("2.00 [1.00, 3.00] (2)")
    assert script.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: no run (config.yaml) under {tmp_path}\n"
    assert script.main([str(run_dir), "--tags", "plasticity/nothing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tags: no run logged plasticity/nothing; they logged ") and "train/loss" in err
