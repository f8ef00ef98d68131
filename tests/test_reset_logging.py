"""``train/reset_count`` of ``--intervention reset``: one point per step, the count after every reset.

A periodic reset (``--reset-every``) on the last update of a task and the reset at the start of the
next task (``--reset-every-task``) fall on the same learner step; both re-initialise the layers and
both are counted, and TensorBoard gets one point at that step (the project's rule for every tag).
"""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from crl.checkpoint import load_latest_checkpoint
from crl.cli import main
from crl.interventions.reset import LayerReset
from conftest import gym_args


@pytest.mark.parametrize("every_task, want", [
    # 2 tasks x 20 updates, a periodic reset every 10 updates: periodic resets after updates 10, 20, 30, 40,
    # and (on by default) a task-start reset at step 20, where task 1 starts: 5 resets, two of them at step 20
    ("--reset-every-task", [(10, 1.0), (20, 3.0), (30, 4.0), (40, 5.0)]),
    ("--no-reset-every-task", [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]),
])
def test_periodic_and_task_start_resets_at_one_step_log_one_point(tmp_path, every_task, want):
    argv = ["run", "split-digits", "--n-tasks", "2", "--epochs", "0", "--steps", "20", "--mlp-hidden", "16",
            "--intervention", "reset", "--reset-every", "10", every_task, "--run-dir", str(tmp_path),
            "--no-progress", "--metrics-every", "0", "--log-every", "1", "--name", "r"]
    assert main(argv) == 0
    (run_dir,) = tmp_path.glob("*/*/r")
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    repeated = {tag: {s: n for s, n in Counter(e.step for e in ea.Scalars(tag)).items() if n > 1}
                for tag in ea.Tags()["scalars"]}
    assert not {tag: steps for tag, steps in repeated.items() if steps}, "tags with more than one point at a step"
    assert [(e.step, e.value) for e in ea.Scalars("train/reset_count")] == want
    hooks = load_latest_checkpoint(run_dir)["hooks"]
    (state,) = [v for k, v in hooks.items() if k.endswith(":reset")]
    assert state["resets"] == want[-1][1]  # no reset dropped: at step 20 both happened


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.output = torch.nn.Linear(3, 2)


def _hook_run(every: int):
    points = []
    net = _Net()
    learner = SimpleNamespace(network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), metric_step=0)
    run = SimpleNamespace(learner=learner, logger=SimpleNamespace(scalar=lambda *a: points.append(a)))
    hook = LayerReset(every_task=True, every=every)
    hook.on_run_start(run)
    return hook, run, points


def test_count_held_at_the_runs_end_is_still_logged_once():
    # the reset after the last update waits for the learner to move on; the run ends first: written then
    hook, run, points = _hook_run(every=5)
    for step in range(1, 11):
        run.learner.metric_step = step
        hook.after_optimizer_step(run)
    assert points == [("train/reset_count", 1, 5)]
    hook.on_run_end(run)
    assert points == [("train/reset_count", 1, 5), ("train/reset_count", 2, 10)]


def test_several_resets_at_one_step_give_one_point_with_the_count_after_all():
    # --num-envs 4, one update per env step: 4 updates per learner step, a reset every 2 updates
    hook, run, points = _hook_run(every=2)
    for step in (4, 8, 12):
        run.learner.metric_step = step
        for _ in range(4):
            hook.after_optimizer_step(run)
    hook.on_run_end(run)
    assert points == [("train/reset_count", 2, 4), ("train/reset_count", 4, 8), ("train/reset_count", 6, 12)]
    assert hook.resets == 6


def test_a_held_count_is_written_before_a_later_task_start():
    # a reset at step 5, no update at steps 6-7 (e.g. --train-freq 4), the next task starts at step 7
    hook, run, points = _hook_run(every=5)
    for step in range(1, 6):
        run.learner.metric_step = step
        hook.after_optimizer_step(run)
    run.learner.metric_step = 7
    hook.on_task_start(run, 1, "t1")
    assert points == [("train/reset_count", 1, 5), ("train/reset_count", 2, 7)]


def test_a_held_count_survives_a_checkpoint():
    hook, run, points = _hook_run(every=5)
    for step in range(1, 6):
        run.learner.metric_step = step
        hook.after_optimizer_step(run)
    assert points == []  # the checkpoint at step 5 comes before the count is written
    resumed, run2, points2 = _hook_run(every=5)
    resumed.load_state_dict(hook.state_dict())
    run2.learner.metric_step = 6
    resumed.after_optimizer_step(run2)
    assert points2 == [("train/reset_count", 1, 5)]


def test_dqn_with_several_envs_logs_one_reset_count_per_step(run_root):
    # 4 envs and one update per env step: 4 updates per vector step, a reset every 2 of them
    # (fewer at a vector step where an env resets: a reset step is no env step and earns no update)
    args = gym_args(run_root, "--num-envs", "4", "--train-freq", "1", "--steps", "400", "--learning-starts", "200",
                    "--intervention", "reset", "--reset-every", "2", "--eval-every", "400", "--eval-episodes", "1",
                    "--log-every", "1", "--name", "multi")
    assert main(args) == 0
    (run_dir,) = run_root.glob("*/*/multi")
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    points = [(e.step, e.value) for e in ea.Scalars("train/reset_count")]
    updates = [(e.step, e.value) for e in ea.Scalars("train/updates")]
    resets_by_step = [(s, u // 2) for (s, u), (_, before) in zip(updates[1:], updates) if u // 2 > before // 2]
    assert len(points) > 40 and points == resets_by_step  # one point per step, the resets up to it
