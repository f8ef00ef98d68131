"""A resumed run's event file sorts after the killed run's (crl/logging.py), so TensorBoard applies the
resume's purge after reading the killed run's events and every curve reads back in step order."""
from __future__ import annotations

import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

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
