"""Sequential Atari: game lists, modes/difficulties as tasks, CORA presets, a few DQN steps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from crl.cli import main
from crl.config import make_config
from crl.errors import UserError
from crl.registry import SCENARIOS
from scenarios.sequential_atari import CORA_GAMES, parse_games

TINY = ["--agent", "dqn", "--num-envs", "2", "--steps", "8", "--learning-starts", "4", "--batch-size", "4",
        "--buffer-size", "64", "--eval-episodes", "1", "--eval-max-steps", "5", "--eval-every", "1000000",
        "--checkpoint-every", "1000000", "--target-update", "8", "--metrics-every", "0", "--no-progress"]


def test_parse_games():
    assert parse_games("breakout:4:1, pong,freeway:3") == [("breakout", 4, 1), ("pong", None, None),
                                                          ("freeway", 3, None)]
    for bad in ("", "breakout:x", "a:1:2:3"):
        with pytest.raises(UserError, match="--games"):
            parse_games(bad)


def test_cora_presets_use_the_full_action_space():
    cfg = make_config("atari")
    sc = SCENARIOS.get("cora-atari")(cfg)
    assert [t.name for t in sc.tasks] == list(CORA_GAMES) == ["space_invaders", "krull", "beam_rider", "hero",
                                                              "star_gunner", "ms_pacman"]
    assert all(t.info["full_action_space"] for t in sc.tasks)
    assert [t.name for t in SCENARIOS.get("mini-cora-atari")(cfg).tasks] == ["space_invaders", "beam_rider",
                                                                            "ms_pacman"]
    assert [t.name for t in SCENARIOS.get("sequential-atari")(make_config("atari", cycles=2)).tasks] == list(CORA_GAMES)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(UserError, match="breakout has no mode 3; modes: 0, 4, 8"):
        SCENARIOS.get("sequential-atari")(make_config("atari", games="breakout:3"))


def test_sequential_atari_with_a_mode_task_trains(tmp_path):
    argv = ["run", "sequential-atari", "--games", "breakout:4:1,pong", "--run-dir", str(tmp_path), "--name", "r", *TINY]
    assert main(argv) == 0
    (path,) = tmp_path.glob("*/*/r/summary.json")
    s = json.loads(path.read_text())
    assert np.array(s["eval_matrix"]).shape == (2, 2)  # every game evaluated at each task end
    assert set(s["final_scores"]) == {"breakout-m4-d1", "pong"}


def test_cycles_repeat_the_sequence():
    sc = SCENARIOS.get("sequential-atari")(make_config("atari", games="pong,breakout", cycles=3))
    assert [t.name for t in sc.stream()] == ["pong", "breakout"] * 3
