"""Human-normalised Atari scores: the table's arithmetic and the logged eval/<task>/hns."""
from __future__ import annotations

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from crl.cli import main
from crl.metrics.human_normalized import REFERENCE_SCORES, human_normalized


def test_two_games_against_the_published_table():
    # Mnih et al. 2015: Pong random -20.7, human 14.6; Breakout random 1.7, human 30.5
    assert human_normalized("pong", -20.7) == 0.0 and human_normalized("pong", 14.6) == pytest.approx(1.0)
    assert human_normalized("breakout", 16.1) == pytest.approx((16.1 - 1.7) / (30.5 - 1.7))
    assert math.isnan(human_normalized("cartpole", 10.0))
    assert len(REFERENCE_SCORES) == 57


def test_atari_run_logs_hns_beside_the_raw_score(tmp_path):
    argv = ["atari", "--game", "pong", "--agent", "dqn", "--num-envs", "1", "--steps", "16", "--learning-starts", "8",
            "--batch-size", "4", "--buffer-size", "64", "--eval-episodes", "1", "--eval-max-steps", "20",
            "--metrics-every", "0", "--no-progress", "--run-dir", str(tmp_path), "--name", "h"]
    assert main(argv) == 0
    (run_dir,) = tmp_path.glob("*/*/h")
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    raw = acc.Scalars("eval/pong/score")
    hns = acc.Scalars("eval/pong/hns")
    assert [e.step for e in hns] == [e.step for e in raw]
    for r, h in zip(raw, hns):
        assert h.value == pytest.approx((r.value + 20.7) / 35.3, rel=1e-6)
