"""Issue 12: defaults that are part of a method's protocol, checked on real runs.

Epsilon is Dopamine's ``linearly_decaying_epsilon`` (1.0 until learning starts, then linear);
``--norm nap`` gives a warmup + cosine learning-rate curve restarted at every task (read back
from the event file); NorMuon's Muon step size is 0.02 whatever the preset.
"""
from __future__ import annotations

import math
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.dqn import linear_epsilon
from crl.cli import main
from crl.config import PRESETS, make_config
from conftest import gym_args


def _scalars(run_dir, tag):
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def test_epsilon_is_dopamines_linearly_decaying_epsilon():
    # Dopamine: steps_left = decay + warmup - step; bonus = clip((1 - eps) * steps_left / decay, 0, 1 - eps)
    for step in (0, 19_999, 20_000):
        assert linear_epsilon(step, 1.0, 0.01, 250_000, 20_000) == 1.0
    assert linear_epsilon(20_000 + 125_000, 1.0, 0.01, 250_000, 20_000) == pytest.approx(0.505)
    assert linear_epsilon(270_000, 1.0, 0.01, 250_000, 20_000) == pytest.approx(0.01)
    assert linear_epsilon(10 ** 7, 1.0, 0.01, 250_000, 20_000) == pytest.approx(0.01)


def test_epsilon_logged_is_one_until_learning_starts(run_root):
    args = gym_args(run_root, "--steps", "400", "--learning-starts", "200", "--eps-decay-steps", "100",
                    "--eval-every", "400", "--eval-episodes", "1", "--log-every", "20", "--name", "eps")
    assert main(args) == 0
    (run_dir,) = run_root.glob("*/*/eps")
    eps = _scalars(run_dir, "train/epsilon")
    assert all(v == 1.0 for s, v in eps if s <= 200)
    # logged at step 260: the epsilon of the step taken at 259 (gym preset: eps_end 0.05)
    assert [v for s, v in eps if s == 260][0] == pytest.approx(1.0 - 0.95 * 0.59)
    assert all(v == pytest.approx(0.05) for s, v in eps if s > 300)


def test_nap_alone_gives_warmup_and_cosine_restarted_at_each_task(tmp_path):
    argv = ["run", "split-digits", "--n-tasks", "2", "--norm", "nap", "--epochs", "0", "--steps", "100",
            "--run-dir", str(tmp_path), "--no-progress", "--metrics-every", "0", "--mlp-hidden", "16",
            "--log-every", "1", "--name", "nap"]
    assert main(argv) == 0
    (run_dir,) = tmp_path.glob("*/*/nap")
    lr = dict(_scalars(run_dir, "train/lr"))
    peak, init, final, warmup, horizon = 1e-3, 1e-8, 1e-6, 10, 100  # supervised preset lr; warmup = 100 // 10
    for task in range(2):
        base = task * horizon
        for s in range(1, horizon + 1):
            k = s  # lr logged after update s of the task is the one for the next update
            if k < warmup:
                want = init + (peak - init) * k / warmup
            elif k >= horizon:
                want = final
            else:
                want = final + (peak - final) * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (horizon - warmup)))
            assert lr[base + s] == pytest.approx(want, rel=1e-5), (task, s)
    assert lr[horizon + 1] < 1e-3 * 0.2 and lr[horizon + warmup] == pytest.approx(peak, rel=1e-5)  # restarted


TWO_CARTPOLES = """
import crl

@crl.register_scenario("nap-two-cartpoles", "CartPole twice", kind="rl")
def two(cfg):
    return crl.Scenario("nap-two-cartpoles", [crl.RLTask("a", crl.gym_env_factory("CartPole-v1")),
                                          crl.RLTask("b", crl.gym_env_factory("CartPole-v1"))])
"""


def test_nap_schedule_restarts_at_each_task_in_dqn(tmp_path):
    # NaP's headline setting is sequential RL: the DQN learner must restart the warmup + cosine at each task,
    # over that task's updates (one per env step here; none before --learning-starts, so task 0 has fewer)
    (tmp_path / "two.py").write_text(TWO_CARTPOLES)
    argv = ["run", str(tmp_path / "two.py"), "--norm", "nap", "--steps", "600", "--learning-starts", "100",
            "--train-freq", "1", "--eval-every", "600", "--eval-episodes", "1", "--metrics-every", "0",
            "--log-every", "50", "--run-dir", str(tmp_path), "--no-progress", "--name", "nap"]
    assert main(argv) == 0
    (run_dir,) = tmp_path.glob("*/*/nap")
    lr = dict(_scalars(run_dir, "train/lr"))
    peak, init, final, warmup = 1e-3, 1e-8, 1e-6, 60  # gym preset lr; warmup: a tenth of 600 updates

    def want(k, horizon):  # the lr after k updates of a task of `horizon` updates
        if k < warmup:
            return init + (peak - init) * k / warmup
        if k >= horizon:
            return final
        return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (horizon - warmup)))

    # task 0: updates at env steps 100..600 (k = step - 99), horizon 500; task 1: k = step - 600, horizon 600
    for step in range(100, 601, 50):
        assert lr[step] == pytest.approx(want(step - 99, 500), rel=1e-5), step
    for step in range(650, 1201, 50):
        assert lr[step] == pytest.approx(want(step - 600, 600), rel=1e-5), step
    assert lr[600] == pytest.approx(final) and lr[650] < peak and lr[700] > 0.5 * peak  # restarted, warmed up


def test_eps_restart_per_task_restarts_the_decay_and_survives_a_resume(tmp_path):
    # default: one decay over the run, so task b explores at --eps-end; --eps-restart-per-task: task b decays
    # again from its first env step (no --learning-starts hold: learning goes on). A run killed after its
    # checkpoint inside task b and resumed must go on with task b's decay, not the run's.
    (tmp_path / "two.py").write_text(TWO_CARTPOLES.replace("nap-two-cartpoles", "eps-two-cartpoles"))
    base = ["run", str(tmp_path / "two.py"), "--steps", "600", "--learning-starts", "100", "--eps-decay-steps",
            "400", "--eval-every", "600", "--eval-episodes", "1", "--metrics-every", "0", "--log-every", "50",
            "--checkpoint-every", "300", "--run-dir", str(tmp_path), "--no-progress"]
    assert main(base + ["--name", "once"]) == 0
    assert main(base + ["--name", "restart", "--eps-restart-per-task"]) == 0
    once, restart = (dict(_scalars(next(tmp_path.glob(f"*/*/{n}")), "train/epsilon")) for n in ("once", "restart"))
    for step in range(50, 1201, 50):  # the point at env step s is the epsilon that chose step s's action (s - 1)
        assert once[step] == pytest.approx(linear_epsilon(step - 1, 1.0, 0.05, 400, 100)), step
        want = linear_epsilon(step - 1 - 600, 1.0, 0.05, 400, 0) if step > 600 else once[step]
        assert restart[step] == pytest.approx(want), step
    assert once[900] == pytest.approx(0.05) and restart[900] == pytest.approx(1.0 - 0.95 * 299 / 400)

    run_dir = next(tmp_path.glob("*/*/restart"))
    killed = run_dir.parent / "killed"
    shutil.copytree(run_dir, killed)
    (killed / "checkpoints" / "step_000000001200.pt").unlink()
    (killed / "summary.json").unlink()
    assert main(["run", str(tmp_path / "two.py"), "--resume", str(killed), "--no-progress"]) == 0
    assert dict(_scalars(killed, "train/epsilon")) == restart


def test_sb3_dqn_refuses_eps_restart_per_task(tmp_path, capsys):
    argv = ["gym", "--agent", "sb3-dqn", "--eps-restart-per-task", "--run-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --eps-restart-per-task:") and "--agent dqn" in err[0]
    assert not any(tmp_path.iterdir())


def test_nap_schedule_flags_still_override(tmp_path):
    argv = ["run", "split-digits", "--n-tasks", "2", "--norm", "nap", "--epochs", "0", "--steps", "40",
            "--run-dir", str(tmp_path), "--no-progress", "--metrics-every", "0", "--mlp-hidden", "16",
            "--log-every", "1", "--name", "c", "--lr-schedule", "constant", "--lr-warmup", "0"]
    assert main(argv) == 0
    (run_dir,) = tmp_path.glob("*/*/c")
    lrs = [v for _, v in _scalars(run_dir, "train/lr")]
    assert lrs and all(v == pytest.approx(1e-3) for v in lrs)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_normuon_muon_lr_is_the_reference_under_every_preset(preset):
    from crl.optim import build_optimizer, optimizer_args

    cfg = make_config(preset, optimizer="normuon")
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = build_optimizer(cfg.optimizer, net.named_parameters(), muon_exclude={"2"}, **optimizer_args(cfg))
    muon = [g for g in opt.param_groups if g["use_muon"]]
    aux = [g for g in opt.param_groups if not g["use_muon"]]
    assert muon[0]["lr"] == 0.02 and muon[0]["momentum"] == 0.95 and muon[0]["beta2"] == 0.95
    assert aux[0]["lr"] == 3e-4 and aux[0]["eps"] == 1e-10 and aux[0]["betas"] == (0.9, 0.95)


def test_normuon_flags_reach_the_optimizer_of_a_run(run_root):
    args = gym_args(run_root, "--optimizer", "normuon", "--muon-lr", "0.01", "--muon-aux-lr", "0.001",
                    "--steps", "300", "--learning-starts", "100", "--eval-every", "300", "--eval-episodes", "1",
                    "--log-every", "100", "--name", "nm")
    assert main(args) == 0
    (run_dir,) = run_root.glob("*/*/nm")
    lrs = [v for _, v in _scalars(run_dir, "train/lr")]
    assert lrs and all(v == pytest.approx(0.01) for v in lrs)


def test_atari_reset_is_dopamines_no_noops_no_fire_and_flags_restore_them():
    import numpy as np

    from crl.config import make_config
    from crl.registry import SCENARIOS

    cfg = make_config("atari", game="space_invaders")
    assert cfg.noop_max == 0 and not cfg.fire_reset and cfg.sticky_actions == 0.25
    task = SCENARIOS.get("atari")(cfg).tasks[0]
    for noop_max, all_same in ((0, True), (30, False)):
        cfg.noop_max = noop_max
        env = SCENARIOS.get("atari")(cfg).tasks[0].make_env(8, 5)
        try:
            obs, _ = env.reset(seed=5)  # no no-ops: every env starts on the same frame; 0-30 no-ops: they differ
            assert all(np.array_equal(obs[0], obs[i]) for i in range(8)) is all_same
        finally:
            env.close()
    assert task.info["noop_max"] == 0 and task.info["fire_reset"] is False


def test_largest_accepted_seed_trains_and_evaluates_on_atari(run_root):
    from crl.cli import main as cli

    assert cli(["atari", "--game", "pong", "--seed", str(2 ** 32), "--run-dir", str(run_root)]) == 2  # refused
    args = ["atari", "--game", "pong", "--seed", str(2 ** 32 - 1), "--run-dir", str(run_root), "--no-progress",
            "--metrics-every", "0", "--steps", "80", "--num-envs", "2", "--learning-starts", "40", "--buffer-size",
            "1000", "--eval-every", "80", "--eval-episodes", "2", "--eval-max-steps", "20", "--batch-size", "4",
            "--name", "bigseed"]
    assert cli(args) == 0
    (run_dir,) = run_root.glob("*/*/bigseed")
    assert _scalars(run_dir, "eval/pong/score")


def test_softmoe_uses_dopamines_same_padded_nature_torso():
    from crl.nn.network import build_torso
    from crl.nn.torsos.nature import SameConv2d
    from crl.options import building

    cfg = make_config("atari", moe="softmoe")
    with building(cfg):
        torso = build_torso(cfg, (4, 84, 84))
    assert torso.feature_map_shape == (64, 11, 11)  # 84 -> 21 -> 11 -> 11 (flax SAME)
    assert torso.dense.moe.slots_per_expert == 16 and torso.dense.moe.num_experts == 8  # ceil(121 / 8)
    for padding, shape in (("valid", (64, 7, 7)), ("same", (64, 11, 11))):
        cfg = make_config("atari", nature_padding=padding)
        with building(cfg):
            assert build_torso(cfg, (4, 84, 84)).feature_map_shape == shape
    # TF SAME on 21 -> 11 with kernel 4, stride 2: 3 zeros in all, 1 before and 2 after (asymmetric)
    conv = SameConv2d(1, 1, 4, 2, bias=False)
    x = torch.randn(1, 1, 21, 21)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 2, 1, 2)), conv.weight, stride=2)
    assert torch.equal(conv(x), ref) and ref.shape[-1] == 11


def test_impala_dense_width_flag():
    from crl.nn.network import build_torso
    from crl.options import building

    for width in (256, 512):
        cfg = make_config("atari", torso="impala", impala_dense=width)
        with building(cfg):
            assert build_torso(cfg, (4, 84, 84)).out_features == width


def test_cora_atari_starts_from_coras_settings():
    from crl.flags import config_from_args, parse_args

    cfg, _ = config_from_args(parse_args(["run", "cora-atari"]))
    # AGI-Labs/continual_rl: atari_6_tasks_5_cycles (experiment_specs.py) and make_atari_task.py
    assert (cfg.cycles, cfg.steps, cfg.eval_every) == (5, 50_000_000, 250_000)
    assert (cfg.sticky_actions, cfg.noop_max, cfg.fire_reset, cfg.episodic_life) == (0.0, 30, True, True)
    assert cfg.max_episode_frames == 10_000 * 4  # TimeLimit(10,000) after MaxAndSkipEnv(4): agent steps
    cfg, _ = config_from_args(parse_args(["run", "cora-atari", "--cycles", "2", "--sticky-actions", "0.25"]))
    assert (cfg.cycles, cfg.sticky_actions) == (2, 0.25)  # flags win


def test_episodic_life_stores_life_losses_as_terminal_while_the_game_plays_on(tmp_path):
    from crl.logging import RunLogger
    from types import SimpleNamespace

    from crl.api import prepare

    cfg = make_config("atari", game="breakout", episodic_life=True, num_envs=2, buffer_size=4_000,
                      learning_starts=10 ** 6, eps_decay_steps=1, device="cpu", progress=False, metrics_every=0,
                      log_every=10 ** 6, run_dir=str(tmp_path))
    scenario, learner, _ = prepare(cfg)
    task = scenario.tasks[0]
    logger = RunLogger(tmp_path, cfg, total_steps=2_000)
    learner.run = SimpleNamespace(task_index=0, task=task, stop_requested=False, logger=logger, hooks=None)
    lost_total = 0
    original = learner._life_lost

    def counting(info, valid):
        nonlocal lost_total
        lost = original(info, valid)
        lost_total += int(lost.sum())
        return lost

    learner._life_lost = counting
    learner.train(task, 1_200)  # random play: several lives lost, few whole games over
    from agents.replay import _TERM

    terminal = int(((learner.replay._flags_host & _TERM) != 0).sum())  # stored transitions without bootstrap
    assert lost_total > 0 and terminal >= lost_total
    logger.close()


def test_nap_schedule_options_refused_without_norm_nap(tmp_path, capsys):
    # --intervention nap with another norm runs the projection only: a NaP schedule option would be ignored
    argv = gym_args(tmp_path, "--intervention", "nap", "--norm", "layernorm", "--nap-warmup", "10", "--steps", "300")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --nap-warmup:") and "--norm nap" in err[0]
    assert not any(tmp_path.iterdir())  # nothing written


def test_env_steps_count_transitions_not_autoreset_steps(run_root):
    # NEXT_STEP autoreset spends one env.step on each reset: no frame is played and no transition
    # stored, so it must not count as an env step nor earn an update (Dopamine and MinAtar's
    # examples/dqn.py count played frames). With one env, an episode ending at env step s then
    # has s equal to the summed lengths of all episodes so far.
    args = gym_args(run_root, "--steps", "800", "--learning-starts", "100", "--train-freq", "1",
                    "--batch-size", "8", "--eval-every", "800", "--eval-episodes", "1", "--log-every", "1",
                    "--name", "count")
    assert main(args) == 0
    (run_dir,) = run_root.glob("*/*/count")
    ends = _scalars(run_dir, "train/episode_length")
    updates = dict(_scalars(run_dir, "train/updates"))
    assert len(ends) >= 10  # CartPole under a near-random policy: episodes of about 20 steps
    played = 0
    for step, length in ends:
        played += int(length)
        assert step == played
        assert updates[step] == max(0, played - 100 + 1)  # one update per transition from step 100 on


def _warmups(lr: dict[int, float], peak: float) -> tuple[list[int], list[int]]:
    """Per task: the updates of its warmup (its first update to the first at the peak), and its updates.
    A task starts at the first update and wherever the lr rises again after falling (a restart)."""
    steps = sorted(lr)
    starts = [steps[0]] + [s for a, b, s in zip(steps, steps[1:], steps[2:]) if lr[b] < lr[a] and lr[s] > lr[b]]
    return [min(s for s in steps if s >= start and lr[s] == pytest.approx(peak, rel=1e-6)) - start + 1
            for start in starts], [b - a for a, b in zip(starts, starts[1:] + [steps[-1] + 1])]


@pytest.mark.parametrize("explicit", [False, True], ids=["nap-warmup", "explicit-lr-warmup"])
def test_classifier_with_epochs_cuts_naps_warmup_as_dqn_does(tmp_path, explicit):
    # With --epochs the classifier learns its tasks' updates only from its data; NaP's warmup (20 here)
    # is still cut to a tenth of a task shorter than ten warmups (warmup_for, DQN's rule), while a
    # --lr-warmup given explicitly is used as given.
    argv = ["run", "split-digits", "--n-tasks", "2", "--norm", "nap", "--epochs", "5", "--batch-size", "64",
            "--run-dir", str(tmp_path), "--no-progress", "--metrics-every", "0", "--mlp-hidden", "16",
            "--log-every", "1", "--name", "w"] + (["--lr-warmup", "20"] if explicit else ["--nap-warmup", "20"])
    assert main(argv) == 0
    (run_dir,) = tmp_path.glob("*/*/w")
    warmups, task_updates = _warmups(dict(_scalars(run_dir, "train/lr")), peak=1e-3)
    assert len(warmups) == 2 and 20 < min(task_updates) < 200, task_updates  # a task shorter than ten warmups
    expected = 20 if explicit else min(task_updates) // 10
    assert warmups == [expected, expected]
    config = (run_dir / "config.yaml").read_text()
    assert ("nap_warmup: 0\n" in config) == explicit
