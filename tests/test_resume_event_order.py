"""Resuming leaves every curve as an uninterrupted run's: the resumed event file sorts after the killed
run's (so TensorBoard applies the resume's purge after reading it), a point the killed run wrote at the
checkpoint's step after the checkpoint is not written twice, and the checkpoint at a task boundary is
the state before the next task's ``on_task_start`` (crl/logging.py, crl/runner.py)."""
from __future__ import annotations

import shutil
import time
from collections import Counter

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from conftest import gym_args
from crl.checkpoint import load_latest_checkpoint
from crl.cli import main
from crl.config import make_config
from crl.logging import RunLogger


def test_resume_within_the_same_second_still_sorts_after_the_killed_runs_file(tmp_path):
    killed = SummaryWriter(str(tmp_path))
    for step in (100, 200, 300):  # 300 was logged after the checkpoint at 200, then the process died
        killed.add_scalar("train/loss", float(step), step)
    killed.close()
    (old,) = tmp_path.glob("events.out.tfevents.*")
    # Same second, and a process id that sorts after any real one: name order alone would read the
    # resumed file first.
    parts = old.name.split(".")
    parts[-2] = "9" * 12
    old.rename(tmp_path / ".".join(parts))
    started = time.time()

    resumed = RunLogger(tmp_path, make_config("gym", progress=False), total_steps=400, start_step=200)
    for step in (300, 400):
        resumed.scalar("train/loss", -float(step), step)
    resumed.writer.close()

    assert sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))[-1].split(".")[-2] != "9" * 12
    assert time.time() - started < 2.5  # waits at most until the next second
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    ea.Reload()
    assert [(e.step, e.value) for e in ea.Scalars("train/loss")] == [(100, 100.0), (200, 200.0), (300, -300.0),
                                                                     (400, -400.0)]


def _curves(run_dir):
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"] if not t.startswith("perf/")}


def _killed_copy(ref, cut: int):
    """A copy of the finished run ``ref`` as if killed after its checkpoint at step ``cut``."""
    killed = ref.parent / f"killed-{cut}"
    shutil.copytree(ref, killed)
    for p in (killed / "checkpoints").glob("step_*"):
        if int(p.name.split(".")[0].removeprefix("step_")) > cut:
            p.unlink()
    (killed / "summary.json").unlink()
    assert load_latest_checkpoint(killed)["runner"]["global_step"] == cut
    return killed


def test_resume_from_a_task_boundary_with_a_reset_at_task_start_is_exact(tmp_path):
    # 2 tasks x 20 updates, a checkpoint every 20: the boundary at 20 is a checkpoint step, and the reset
    # intervention re-initialises the output layer in on_task_start of task 1, right after that checkpoint
    argv = ["run", "split-digits", "--n-tasks", "2", "--epochs", "0", "--steps", "20", "--mlp-hidden", "16",
            "--intervention", "reset", "--run-dir", str(tmp_path), "--no-progress", "--metrics-every", "0",
            "--log-every", "1", "--checkpoint-every", "20", "--eval-every", "20", "--name", "ref"]
    assert main(argv) == 0
    (ref,) = tmp_path.glob("*/*/ref")
    killed = _killed_copy(ref, 20)  # during task 1: its events are all there, its last checkpoint the boundary's
    state = load_latest_checkpoint(killed)
    assert state["runner"]["task_index"] == 1
    (reset_state,) = [v for k, v in state["hooks"].items() if k.endswith(":reset")]
    assert reset_state["resets"] == 0  # taken before task 1's on_task_start, so resuming resets exactly once

    assert main(["run", "split-digits", "--resume", str(killed)]) == 0
    got, want = _curves(killed), _curves(ref)
    assert got == want
    assert want["train/reset_count"] == [(20, 1.0)]
    assert all(max(Counter(s for s, _ in points).values()) == 1 for points in got.values())
    a, b = (load_latest_checkpoint(d)["learner"]["network"] for d in (ref, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_keeps_the_metric_points_due_right_after_the_checkpoint(tmp_path):
    # DQN on CartPole, plasticity metrics every 100 env steps, a checkpoint every 200: at the checkpoint's
    # step the state metrics and the armed step metrics (grad_norm, update_ratio of the next update) fall
    # just after it; the resumed run must log them where the uninterrupted run did
    root = tmp_path / "runs"
    argv = gym_args(root, "--steps", "800", "--learning-starts", "100", "--eval-every", "400", "--eval-episodes", "1",
                    "--checkpoint-every", "200", "--log-every", "50", "--metrics-every", "100", "--probe-steps", "2",
                    "--name", "ref")
    assert main(argv) == 0
    (ref,) = root.glob("*/*/ref")
    killed = _killed_copy(ref, 600)
    assert main(["gym", "--resume", str(killed)]) == 0
    got, want = _curves(killed), _curves(ref)
    assert any(st > 600 and st < 700 for st, _ in want["plasticity/grad_norm"])  # the case this test is about
    assert got == want
    a, b = (load_latest_checkpoint(d)["learner"]["network"] for d in (ref, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)
