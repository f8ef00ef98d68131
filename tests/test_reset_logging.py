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


def test_count_held_for_a_task_start_that_does_not_come_is_still_logged_once():
    # the runner says task 0 (10 steps) ends at this update and task 1 follows, but the run ends first
    # (on_run_end without on_task_start): the held-back count is written at its step all the same
    points = []
    net = _Net()
    learner = SimpleNamespace(network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), metric_step=0)
    run = SimpleNamespace(learner=learner, logger=SimpleNamespace(scalar=lambda *a: points.append(a)),
                          global_step=0, step_in_task=0, task_index=0, task="t0", stream=["t0", "t1"],
                          budget=lambda task: 10)
    hook = LayerReset(every_task=True, every=5)
    hook.on_run_start(run)
    for step in range(1, 11):
        learner.metric_step = step
        hook.after_optimizer_step(run)
    assert points == [("train/reset_count", 1, 5)]  # the reset at step 10 waits for the task start
    hook.on_run_end(run)
    assert points == [("train/reset_count", 1, 5), ("train/reset_count", 2, 10)]
