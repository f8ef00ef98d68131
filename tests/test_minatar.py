"""MinAtar (scenarios/minatar.py): real MinAtar games, the reference preset, resume, sequential MinAtar."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from crl.cli import main
from crl.config import make_config
from crl.errors import UserError
from crl.registry import SCENARIOS

minatar = pytest.importorskip("minatar")  # in the test extra; skipped only where it is not installed

from scenarios.minatar import CHANNELS, GAMES, MinAtarVectorEnv, make_minatar_env, parse_minatar_games  # noqa: E402

# The reference DQN of MinAtar (Young & Tian 2019, arXiv 1903.03176): the constants and calls of
# examples/dqn.py in github.com/kenjyoung/MinAtar. Written down here independently of crl/config.py.
REFERENCE = {
    "buffer_size": 100_000,  # REPLAY_BUFFER_SIZE
    "batch_size": 32,  # BATCH_SIZE
    "train_freq": 1,  # TRAINING_FREQ: one update per env step
    "target_update": 1_000,  # TARGET_NETWORK_UPDATE_FREQ (updates; = env steps at one update per step)
    "learning_starts": 5_000,  # REPLAY_START_SIZE: random actions first
    "eps_start": 1.0,  # EPSILON
    "eps_end": 0.1,  # END_EPSILON
    "eps_decay_steps": 100_000,  # FIRST_N_FRAMES
    "gamma": 0.99,  # GAMMA
    "lr": 2.5e-4,  # STEP_SIZE
    "rmsprop_alpha": 0.95,  # SQUARED_GRAD_MOMENTUM
    "rmsprop_eps": 0.01,  # MIN_SQUARED_GRAD
    "rmsprop_centered": True,  # optim.RMSprop(..., centered=True)
    "rmsprop_momentum": 0.0,  # not passed in the paper's code (GRAD_MOMENTUM unused; README: MinAtar)
    "optimizer": "rmsprop",
    "agent": "dqn",  # scalar Q, smooth_l1_loss (Huber)
    "double_dqn": False,  # the target is max_a' Q_target(s', a')
    "n_step": 1,
    "max_grad_norm": 0.0,  # no gradient clipping
    "clip_rewards": False,  # raw rewards (all 0 or 1 in MinAtar)
    "num_envs": 1,  # one environment
    "full_action_space": True,  # env.num_actions() = 6 for every game
    "minatar_sticky_actions": 0.1,  # minatar.Environment default
    "minatar_difficulty_ramping": True,  # minatar.Environment default
    "torso": "minatar",
    "steps": 5_000_000,  # NUM_FRAMES
}

QUICK = ["--no-progress", "--metrics-every", "0", "--eval-episodes", "1", "--eval-max-steps", "50"]
EAGER = [*QUICK, "--no-compile-optimizer"]  # the preset compiles the optimizer step: seconds these short runs skip


def _run_dir(root, name):
    return next(root.glob(f"*/*/{name}"))


def test_preset_equals_the_reference_list():
    cfg = make_config("minatar")
    assert {k: getattr(cfg, k) for k in REFERENCE} == REFERENCE


def test_preset_builds_the_reference_network_and_optimizer(tmp_path):
    from crl.api import prepare

    cfg = make_config("minatar", scenario="minatar", game="space_invaders", metrics_every=0)
    _, learner, _ = prepare(cfg)
    net = learner.network
    conv = net.torso.encoder[0].layer
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (6, 16, (3, 3),
                                                                                                  (1, 1), (0, 0))
    dense = net.torso.dense[1].layer
    assert (dense.in_features, dense.out_features) == (16 * 8 * 8, 128)
    assert (net.output.in_features, net.output.out_features) == (128, 6)
    assert sum(p.numel() for p in net.parameters()) == (6 * 9 * 16 + 16) + (1024 * 128 + 128) + (128 * 6 + 6)
    opt = learner.optimizer
    assert isinstance(opt, torch.optim.RMSprop)
    group = opt.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["centered"], group["momentum"]) == (2.5e-4, 0.95, 0.01,
                                                                                                 True, 0)
    assert learner.replay.stack == 1  # MinAtar channels are not frames
    assert learner.head.kind == "huber"


@pytest.mark.parametrize("game", GAMES)
def test_each_game_observations_actions_and_autoreset(game):
    env = make_minatar_env(game, 2, 0)
    ref = minatar.Environment(game)  # the package's own env, seeded as crl seeds sub-env 0
    ref.seed(5)
    ref.reset()
    obs, _ = env.reset(seed=5)
    c = CHANNELS[game]
    assert obs.shape == (2, c, 10, 10) and obs.dtype == np.uint8
    assert set(np.unique(obs)) <= {0, 255} and obs.any()
    assert np.array_equal(obs[0], ref.state().transpose(2, 0, 1).astype(np.uint8) * 255)
    assert env.single_action_space.n == 6
    # same actions -> same observations and rewards as the package's env (sticky actions included)
    rng = np.random.default_rng(0)
    done_seen = False
    for _ in range(400):
        a = rng.integers(6, size=2)
        was_done = env._done.copy()
        obs, reward, term, trunc, _ = env.step(a)
        assert not trunc.any()
        if was_done[0]:  # NEXT_STEP autoreset: this step reset sub-env 0, no reward, not terminal
            ref.reset()
            assert reward[0] == 0 and not term[0]
            done_seen = True
        else:
            r, d = ref.act(int(a[0]))
            assert (reward[0], term[0]) == (r, d)
        assert np.array_equal(obs[0], ref.state().transpose(2, 0, 1).astype(np.uint8) * 255)
    if game == "breakout":
        assert done_seen  # random breakout episodes last ~10 steps
    minimal = MinAtarVectorEnv(game, 1, full_action_space=False)
    assert minimal.single_action_space.n == len(minatar.Environment(game).minimal_action_set())


@pytest.mark.parametrize("game", GAMES)
def test_each_game_runs_through_the_cli(game, run_root):
    argv = ["minatar", "--game", game, "--run-dir", str(run_root), "--name", game, "--steps", "300",
            "--learning-starts", "200", "--eval-every", "300", *EAGER]
    assert main(argv) == 0
    summary = json.loads((_run_dir(run_root, game) / "summary.json").read_text())
    assert list(summary["final_scores"]) == [game]
    acc = EventAccumulator(str(_run_dir(run_root, game)))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert f"eval/{game}/score" in tags and f"eval/{game}/hns" not in tags  # Atari's human scores do not apply
    ckpt = torch.load(next((_run_dir(run_root, game) / "checkpoints").glob("*.pt")), weights_only=False)
    # one update per env step from step 200 on, both included (the reference starts one step later: t > 5000)
    assert ckpt["learner"]["counters"][1] == 101


def test_resume_is_exact(run_root):
    common = ["minatar", "--game", "breakout", "--run-dir", str(run_root), "--steps", "600", "--learning-starts",
              "100", "--eval-every", "200", "--checkpoint-every", "200", "--eps-decay-steps", "300",
              "--target-update", "100", "--seed", "4", *QUICK]
    assert main([*common, "--name", "full"]) == 0
    full = _run_dir(run_root, "full")

    from crl import api
    from crl.config import adapt_to_budget
    from crl.flags import config_from_args, parse_args
    from crl.runner import Runner

    cfg, explicit = config_from_args(parse_args([*common, "--name", "part"]))
    adapt_to_budget(cfg, explicit)
    scenario, learner, hooks = api.prepare(cfg)
    runner = Runner(cfg, scenario, learner, hooks, api.run_directory(cfg, scenario))
    original_train = learner.train

    def train_until_400(task, steps):  # as if killed right after the step-400 checkpoint
        if runner.global_step >= 400:
            raise KeyboardInterrupt
        return original_train(task, steps)

    learner.train = train_until_400
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    runner.logger.close()
    part = _run_dir(run_root, "part")
    assert main(["minatar", "--resume", str(part)]) == 0

    from crl.checkpoint import load_latest_checkpoint

    a, b = (load_latest_checkpoint(d)["learner"] for d in (full, part))
    for k in a["network"]:
        assert torch.equal(a["network"][k], b["network"][k]), k
    assert a["counters"] == b["counters"]
    assert a["env"] is not None  # the MinAtar env is in the checkpoint: its episodes continue exactly
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    assert sa["final_scores"] == sb["final_scores"] and sa["eval_matrix"] == sb["eval_matrix"]


@pytest.mark.parametrize("norm", ["layernorm", "nap"])
def test_torso_with_norms_and_softmoe(norm, run_root):
    argv = ["minatar", "--game", "breakout", "--run-dir", str(run_root), "--name", norm, "--steps", "150",
            "--learning-starts", "100", "--eval-every", "150", "--norm", norm, "--moe", "softmoe", *EAGER]
    assert main(argv) == 0


def test_missing_package_is_one_line_exit_2(monkeypatch, capsys, run_root):
    monkeypatch.setitem(sys.modules, "minatar", None)  # import minatar raises ImportError
    assert main(["minatar", "--game", "breakout", "--run-dir", str(run_root), "--steps", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e \".[minatar]\"" in err[0] and "not installed" in err[0]
    assert not run_root.exists()


@pytest.mark.parametrize("argv, message", [
    (["--game", "brekout"], "--game: unknown MinAtar game 'brekout'; did you mean 'breakout'?"),
    (["--game", "pong"], "--game: unknown MinAtar game 'pong'"),
    (["--minatar-sticky-actions", "1.5"], "--minatar-sticky-actions: must be in [0, 1]"),
    (["--rmsprop-alpha", "2"], "--rmsprop-alpha: must be in [0, 1]"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys, run_root):
    assert main(["minatar", "--run-dir", str(run_root), "--steps", "100", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not run_root.exists()


def test_sequential_minatar_pads_channels_and_shares_six_actions():
    cfg = make_config("sequential-minatar")
    sc = SCENARIOS.get("sequential-minatar")(cfg)
    assert [t.name for t in sc.tasks] == list(GAMES) and sc.cycles == 2
    for t in sc.tasks:
        env = t.make_env(1, 0)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (1, 10, 10, 10) and env.single_action_space.n == 6
        assert not obs[0, CHANNELS[t.name]:].any()  # the padding channels are always empty
    two = SCENARIOS.get("sequential-minatar")(make_config("sequential-minatar", games="breakout,freeway", cycles=3))
    assert [t.name for t in two.stream()] == ["breakout", "freeway"] * 3
    assert {t.info["channels"] for t in two.tasks} == {7}
    assert parse_minatar_games("") == list(GAMES)
    for bad, msg in (("breakout,breakout", "at most once"), ("breakout,tetris", "unknown MinAtar game 'tetris'")):
        with pytest.raises(UserError, match=msg):
            parse_minatar_games(bad)


def test_sequential_minatar_trains_across_games(run_root):
    argv = ["run", "sequential-minatar", "--games", "breakout,space_invaders", "--run-dir", str(run_root), "--name",
            "seq", "--steps", "150", "--learning-starts", "100", "--eval-every", "150", *EAGER]
    assert main(argv) == 0
    summary = json.loads((_run_dir(run_root, "seq") / "summary.json").read_text())
    assert list(summary["final_scores"]) == ["breakout", "space_invaders"]


def test_sweep_runs_minatar_trials(run_root):
    argv = ["sweep", "--backend", "local", "--grid", "seed=0,1", "--", "minatar", "--game", "freeway", "--run-dir",
            str(run_root), "--steps", "120", "--learning-starts", "100", "--eval-every", "120", *EAGER]
    assert main(argv) == 0
    summaries = sorted(run_root.glob("minatar/*/*/summary.json"))
    assert len(summaries) == 2
    assert all(list(json.loads(p.read_text())["final_scores"]) == ["freeway"] for p in summaries)


def test_replay_returns_the_observations_the_env_gave(monkeypatch, tmp_path):
    """MinAtar's channels are not frames: replay must store and return whole observations (frame_stack 1)."""
    from crl.api import prepare
    from crl.runner import Runner

    seen: set[bytes] = set()
    step, reset = MinAtarVectorEnv.step, MinAtarVectorEnv.reset

    def record(out):
        seen.update(o.tobytes() for o in out[0])
        return out

    monkeypatch.setattr(MinAtarVectorEnv, "step", lambda self, a: record(step(self, a)))
    monkeypatch.setattr(MinAtarVectorEnv, "reset", lambda self, **kw: record(reset(self, **kw)))
    cfg = make_config("minatar", scenario="minatar", game="seaquest", steps=300, learning_starts=10 ** 6,
                      num_envs=2, eval_every=10 ** 6, checkpoint_every=10 ** 6, metrics_every=0, progress=False,
                      eval_episodes=1, eval_max_steps=1)
    scenario, learner, hooks = prepare(cfg)
    Runner(cfg, scenario, learner, hooks, tmp_path / "run").run()
    batch = learner.replay.sample(256, 1, 0.99)
    for key in ("obs", "next_obs"):
        assert batch[key].shape == (256, 10, 10, 10)
        assert all(o.numpy().tobytes() in seen for o in batch[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(batch["obs"], batch["next_obs"]))
