"""The DQN agent end to end on real environments: logging, every head, Atari, resume."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from crl.cli import main
from conftest import gym_args

SHORT = ("--steps", "600", "--learning-starts", "100", "--eval-every", "300", "--eval-episodes", "2",
         "--checkpoint-every", "300", "--log-every", "100")


def _run_dir(run_root, name):
    return next(run_root.glob(f"*/*/{name}"))


def _scalars(run_dir):
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def test_gym_run_writes_events_config_and_summary(run_root):
    assert main(gym_args(run_root, *SHORT, "--name", "r")) == 0
    run_dir = _run_dir(run_root, "r")
    assert run_dir.parent.name == "dqn-hlgauss-none-none" and run_dir.parent.parent.name == "gym"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["agent"] == "dqn-hlgauss" and cfg["learning_starts"] == 100
    scalars = _scalars(run_dir)
    for tag in ("train/episode_return", "train/loss", "train/epsilon", "train/lr", "eval/CartPole-v1/score",
                "perf/eval_seconds"):
        assert tag in scalars, tag
    assert [s for s, _ in scalars["eval/CartPole-v1/score"]] == [300, 600]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 600
    assert summary["final_scores"]["CartPole-v1"] == pytest.approx(scalars["eval/CartPole-v1/score"][-1][1])
    # Raw returns are logged: CartPole gives +1 per step, so a return equals the episode's length.
    returns = [v for _, v in scalars["train/episode_return"]]
    lengths = [v for _, v in scalars["train/episode_length"]]
    assert returns == lengths


@pytest.mark.parametrize("agent", ["dqn", "dqn-mse", "dqn-twohot", "dqn-c51"])
def test_every_head_trains(agent, run_root):
    assert main(gym_args(run_root, *SHORT, "--agent", agent, "--name", agent)) == 0
    loss = _scalars(_run_dir(run_root, agent))["train/loss"]
    assert loss and all(torch.isfinite(torch.tensor(v)) for _, v in loss)


def test_atari_smoke_real_ale(run_root):
    args = ["atari", "--game", "pong", "--run-dir", str(run_root), "--no-progress", "--metrics-every", "0",
            "--steps", "160", "--num-envs", "4", "--learning-starts", "64", "--buffer-size", "2000",
            "--eval-every", "160", "--eval-episodes", "2", "--eval-max-steps", "50", "--norm", "nap",
            "--name", "pong", "--batch-size", "8", "--log-every", "40"]
    assert main(args) == 0
    scalars = _scalars(_run_dir(run_root, "pong"))
    assert scalars["train/updates"][-1][1] > 0
    assert "eval/pong/score" in scalars


def _weights(run_dir):
    from crl.checkpoint import load_latest_checkpoint

    return load_latest_checkpoint(run_dir)["learner"]["network"]


def test_resume_reproduces_uninterrupted_run(run_root):
    common = (*gym_args(run_root), "--steps", "900", "--learning-starts", "100", "--eval-every", "300",
              "--eval-episodes", "3", "--checkpoint-every", "300", "--seed", "3", "--norm", "nap")
    assert main([*common, "--name", "full"]) == 0
    full = _run_dir(run_root, "full")

    # The same run, stopped right after its step-600 checkpoint (as if killed), then resumed.
    from crl import api
    from crl.flags import config_from_args, parse_args
    from crl.config import adapt_to_budget
    from crl.runner import Runner

    cfg, explicit = config_from_args(parse_args([*common, "--name", "part"]))
    adapt_to_budget(cfg, explicit)  # as the CLI does
    scenario, learner, hooks = api.prepare(cfg)
    runner = Runner(cfg, scenario, learner, hooks, api.run_directory(cfg, scenario))
    original_train = learner.train

    def train_until_600(task, steps):
        if runner.global_step >= 600:
            raise KeyboardInterrupt
        return original_train(task, steps)

    learner.train = train_until_600
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    runner.logger.close()
    part = _run_dir(run_root, "part")
    assert main(["gym", "--resume", str(part)]) == 0

    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((part / "summary.json").read_text())
    assert sa["final_scores"] == sb["final_scores"]
    assert sa["eval_matrix"] == sb["eval_matrix"]
