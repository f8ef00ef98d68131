"""A component with its own options, registered from a user file and set from the command line.

The file is the README's example (examples/scaled_norm.py): one dataclass of options and one
registry line; nothing else in crl changes.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from crl.checkpoint import load_latest_checkpoint
from crl.cli import main
from conftest import gym_args

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "scaled_norm.py")
RUN = ("--steps", "300", "--eval-every", "300", "--learning-starts", "100", "--eval-episodes", "1",
       "--mlp-hidden", "16,16", "--norm", "scaled-layernorm")


def _run_args(run_root, *extra: str) -> list[str]:
    return ["run", f"{EXAMPLE}:gym", *gym_args(run_root, *RUN, *extra)[1:]]


def test_user_norm_option_reaches_the_norm(run_root):
    assert main(_run_args(run_root, "--scaled-gain", "2.5", "--name", "g")) == 0
    run_dir = next(run_root.glob("*/*/g"))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["scaled_gain"] == 2.5
    gains = {k: v for k, v in load_latest_checkpoint(run_dir)["learner"]["network"].items() if k.endswith(".gain")}
    assert len(gains) == 2  # one norm per hidden layer, each with the gain the flag set
    assert all(torch.equal(v, torch.tensor(2.5)) for v in gains.values())


def test_user_norm_option_default_and_help(run_root, capsys):
    assert main(_run_args(run_root, "--help")) == 0
    help_text = capsys.readouterr().out
    assert "--scaled-gain" in help_text and "output gain of scaled-layernorm" in help_text
    assert main(_run_args(run_root, "--name", "d")) == 0
    gains = load_latest_checkpoint(next(run_root.glob("*/*/d")))["learner"]["network"]
    assert all(torch.equal(v, torch.tensor(1.0)) for k, v in gains.items() if k.endswith(".gain"))


def test_user_norm_option_is_checked(run_root, capsys):
    assert main(_run_args(run_root, "--scaled-gain", "-1")) == 2
    assert "--scaled-gain: must be > 0, got -1.0" in capsys.readouterr().err
    other_norm = ["run", f"{EXAMPLE}:gym", *gym_args(run_root, "--scaled-gain", "2")[1:]]
    assert main(other_norm) == 2
    err = capsys.readouterr().err
    assert "--scaled-gain: an option of norm scaled-layernorm, which this run does not use" in err
    assert not run_root.exists()
