"""``--agent sb3-dqn``: Stable-Baselines3's own DQN inside crl's runner, on real CartPole.

Real SB3 (``stable_baselines3.DQN``), real gymnasium envs, real TensorBoard event files read back,
a real SIGINT through crl's signal handler."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import gym_args
from crl import api
from crl.checkpoint import load_latest_checkpoint
from crl.cli import main
from crl.config import adapt_to_budget, make_config
from crl.flags import config_from_args, parse_args
from crl.hooks import Hook
from crl.runner import Runner

TWO_TASKS = '''
import crl

@crl.register_scenario("two-cartpoles", "CartPole, then CartPole cut at 100 steps", kind="rl")
def two(cfg):
    return crl.Scenario("two-cartpoles", [
        crl.RLTask("long", crl.gym_env_factory("CartPole-v1")),
        crl.RLTask("short", crl.gym_env_factory("CartPole-v1", max_episode_steps=100)),
    ])
'''
SHORT = ("--steps", "600", "--learning-starts", "100", "--eval-every", "300", "--eval-episodes", "2",
         "--checkpoint-every", "300", "--log-every", "100")


def _run_dir(root, name):
    return next(root.glob(f"*/*/{name}"))


def _scalars(run_dir):
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def test_two_tasks_write_eval_plasticity_and_forgetting_tags(tmp_path):
    path = tmp_path / "two.py"
    path.write_text(TWO_TASKS)
    root = tmp_path / "runs"
    argv = ["run", str(path), "--agent", "sb3-dqn", "--run-dir", str(root), "--no-progress", "--name", "r",
            "--metrics-every", "200", "--probe-steps", "5", *SHORT]
    assert main(argv) == 0
    run_dir = _run_dir(root, "r")
    assert run_dir.parent.name == "sb3-dqn-none-none"
    s = _scalars(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    R = np.array(summary["eval_matrix"])
    assert R.shape == (2, 2) and np.isfinite(R).all()
    # eval/*: the baseline before training (two tasks), the mid-task evaluation and each task end
    assert [st for st, _ in s["eval/long/score"]] == [0, 300, 600, 900, 1200]
    assert s["eval/short/score"][-1][1] == pytest.approx(R[1, 1])
    # forgetting/* from the eval matrix: task 'long' after its own training minus after the next task
    assert s["forgetting/avg_final"][-1][1] == pytest.approx(R[1].mean())
    assert s["forgetting/max_minus_last"][-1][1] == pytest.approx(R[0, 0] - R[1, 0])
    assert s["forgetting/bwt"][-1][1] == pytest.approx(R[1, 0] - R[0, 0])
    # plasticity/* measured on SB3's own Q-network (its layer names), after SB3's optimizer steps
    for tag in ("plasticity/q_net.q_net.1/dormant_redo_tau0", "plasticity/q_net.q_net.4/weight_norm",
                "plasticity/srank_0.01", "plasticity/grad_norm", "plasticity/drift_task", "plasticity/probe_loss_after"):
        assert tag in s, tag
    assert s["plasticity/drift_init"][-1][1] > 0
    final = load_latest_checkpoint(run_dir)["learner"]["policy"]
    out_w = final["q_net.q_net.4.weight"]
    assert out_w.shape == (2, 128)  # --mlp-hidden 128,128 of the gym preset is SB3's net_arch
    assert s["train/updates"][-1][1] > 0 and "train/loss" in s and "train/episode_return" in s


class SigintAt(Hook):
    """Sends a real SIGINT to this process after ``n`` of SB3's optimizer steps (mid-chunk)."""

    name = "sigint-at"

    def __init__(self, n: int):
        self.n = n

    def after_optimizer_step(self, run) -> None:
        if run.learner.updates == self.n:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_then_resume_equals_uninterrupted(tmp_path):
    root = tmp_path / "runs"
    common = (*gym_args(root, *SHORT), "--agent", "sb3-dqn", "--steps", "900", "--seed", "3", "--metrics-every", "150",
              "--probe-steps", "3")
    assert main([*common, "--name", "full"]) == 0
    full = _run_dir(root, "full")

    cfg, explicit = config_from_args(parse_args([*common, "--name", "part"]))
    adapt_to_budget(cfg, explicit)  # as the CLI does
    scenario, learner, hooks = api.prepare(cfg)
    hooks.append(SigintAt(170))  # updates start after step 100, one per 2 env steps: ~step 440, mid-chunk
    summary = Runner(cfg, scenario, learner, hooks, api.run_directory(cfg, scenario)).run()
    assert summary["stop_signal"] == "SIGINT" and 300 < summary["global_step"] < 600
    part = _run_dir(root, "part")
    assert main(["gym", "--resume", str(part)]) == 0

    a, b = load_latest_checkpoint(full)["learner"], load_latest_checkpoint(part)["learner"]
    assert a["policy"].keys() == b["policy"].keys() and "q_net_target.q_net.0.weight" in a["policy"]
    for k in a["policy"]:
        assert torch.equal(a["policy"][k], b["policy"][k]), k
    assert a["counters"][:3] == b["counters"][:3]  # num_timesteps, SB3's update count, _n_calls
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    assert sa["global_step"] == sb["global_step"] == 900 and sa["eval_matrix"] == sb["eval_matrix"]


def test_crl_options_reach_sb3s_dqn(tmp_path):
    """crl's options where SB3 has the notion; --train-freq as updates per env step, as in crl's DQN."""
    cfg = make_config("gym", scenario="gym", agent="sb3-dqn", steps=10_000, num_envs=8, train_freq=4, lr=3e-4,
                      gamma=0.9, target_update=123, eps_decay_steps=2_500, eps_end=0.02, adam_eps=1e-5,
                      run_dir=str(tmp_path))
    _, learner, _ = api.prepare(cfg)
    m = learner.model
    assert (m.train_freq.frequency, m.gradient_steps, m.n_envs) == (1, 2, 8)  # 8 env steps -> 2 updates
    assert (m.learning_rate, m.gamma, m.target_update_interval) == (3e-4, 0.9, 123)
    assert (m.exploration_fraction, m.exploration_final_eps) == (0.25, 0.02)
    assert m.policy.net_arch == [128, 128] and m.policy.optimizer.param_groups[0]["eps"] == 1e-5
    cfg = make_config("gym", scenario="gym", agent="sb3-dqn", sb3_train_freq=256, sb3_gradient_steps=128,
                      run_dir=str(tmp_path))
    _, learner, _ = api.prepare(cfg)
    assert (learner.model.train_freq.frequency, learner.model.gradient_steps) == (256, 128)


@pytest.mark.parametrize("argv, needles", [
    (["--norm", "layernorm"], ["--norm", "sb3-dqn", "accepted: none"]),
    (["--torso", "impala"], ["--torso", "mlp (SB3's MlpPolicy) or nature"]),
    (["--intervention", "redo"], ["--intervention", "sb3-dqn"]),
    (["--activation", "crelu"], ["--activation", "sb3-dqn", "accepted: relu"]),
    (["--reparam", "compander"], ["--reparam", "sb3-dqn", "accepted: none"]),
    (["--env-id", "Pendulum-v1"], ["Pendulum-v1", "Discrete"]),
])
def test_crl_only_components_are_refused(tmp_path, capsys, argv, needles):
    root = tmp_path / "runs"
    assert main([*gym_args(root), "--agent", "sb3-dqn", "--steps", "100", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    assert not root.exists()


BAD_ENV = '''
import gymnasium as gym
import numpy as np
import crl


class BadObs(gym.Env):
    """Declares 4 observations but returns 3: SB3's env checker catches it."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, True, False, {}


def make(num_envs, seed):
    return gym.vector.SyncVectorEnv([BadObs for _ in range(num_envs)])


@crl.register_scenario("bad-env", "an env whose observations do not fit its space", kind="rl")
def bad(cfg):
    return crl.Scenario("bad-env", [crl.RLTask("bad", make)])
'''


def test_user_env_is_checked_by_sb3s_checker(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text(BAD_ENV)
    root = tmp_path / "runs"
    assert main(["run", str(path), "--agent", "sb3-dqn", "--run-dir", str(root), "--no-progress", "--steps", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fails SB3's env checker" in err[0] and "'bad'" in err[0], err
    assert not root.exists()


# rl-zoo's tuned DQN for CartPole-v1 (rl-baselines3-zoo, hyperparams/dqn.yml), in crl's flags
ZOO_CARTPOLE = dict(steps=50_000, lr=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1_000, gamma=0.99,
                    target_update=10, sb3_train_freq=256, sb3_gradient_steps=128, eps_decay_steps=8_000,
                    eps_end=0.04, mlp_hidden="256,256")


class StopWhenSolved(Hook):
    """Ends the run at the first evaluation whose mean return reaches ``threshold``."""

    name = "stop-when-solved"

    def __init__(self, threshold: float):
        self.threshold, self.best, self.at = threshold, float("-inf"), None

    def on_eval(self, run, scores):
        self.best = max(self.best, scores[0])
        if scores[0] >= self.threshold and self.at is None:
            self.at = run.global_step
            run.stop_requested = True


def _solves(seed: int, tmp_path) -> StopWhenSolved:
    cfg = make_config("gym", scenario="gym", env_id="CartPole-v1", agent="sb3-dqn", seed=seed, run_dir=str(tmp_path),
                      progress=False, metrics_every=0, eval_every=5_000, name=f"seed{seed}", **ZOO_CARTPOLE)
    scenario, learner, hooks = api.prepare(cfg)
    stop = StopWhenSolved(475.0)
    hooks.append(stop)
    Runner(cfg, scenario, learner, hooks, api.run_directory(cfg, scenario)).run()
    return stop


@pytest.mark.slow
def test_sb3_dqn_reaches_475_on_cartpole_two_of_three_seeds(tmp_path):
    """SB3's DQN in crl's runner reaches CartPole's 475 (mean of crl's 10-episode evaluation, every 5,000
    steps) within 50k steps for 2 of 3 seeds, with rl-zoo's hyperparameters (measured here: all three seeds
    at the step-30,208 evaluation, 500.0). The first-reach shape of crl's DQN test before it asked for the
    final evaluation: SB3's DQN on these settings does not stay at 500 (finals measured 270-500)."""
    solved, runs = 0, []
    for seed in (0, 1, 2):
        runs.append(_solves(seed, tmp_path))
        solved += runs[-1].at is not None
        if solved == 2:
            break
    assert solved >= 2, f"best mean eval returns per seed: {[r.best for r in runs]}"


def test_several_envs_one_point_per_tag_and_step(tmp_path):
    """Episodes of several envs ending at one vector step give one point per tag at that step, their mean
    (as crl's own DQN logs them): two points at one x would be two different values for one step."""
    root = tmp_path / "runs"
    argv = ["gym", "--agent", "sb3-dqn", "--run-dir", str(root), "--no-progress", "--name", "v", "--num-envs", "8",
            "--steps", "400", "--learning-starts", "100", "--eval-every", "400", "--eval-episodes", "1",
            "--checkpoint-every", "400", "--log-every", "100", "--metrics-every", "0"]
    assert main(argv) == 0
    s = _scalars(_run_dir(root, "v"))
    for tag, points in s.items():
        steps = [st for st, _ in points]
        assert len(steps) == len(set(steps)), tag
    # 8 CartPole envs of random-ish play (episodes of ~10-40 steps): many steps end several at once
    assert len(s["train/episode_return"]) >= 10
    assert all(r == pytest.approx(ln) for (_, r), (_, ln) in zip(s["train/episode_return"], s["train/episode_length"]))


def test_double_dqn_refused_when_asked_and_recorded_off_otherwise(tmp_path, capsys):
    root = tmp_path / "runs"
    common = ["gym", "--agent", "sb3-dqn", "--run-dir", str(root), "--no-progress", "--steps", "10"]
    assert main([*common, "--double-dqn", "--name", "d"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --double-dqn:") and "--no-double-dqn" in err[0]
    assert not (root / "gym").exists()  # nothing written
    assert main([*common, "--name", "n"]) == 0
    assert "double_dqn: false" in (_run_dir(root, "n") / "config.yaml").read_text()
