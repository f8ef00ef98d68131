"""Run directories for ``crl compare`` tests, written with the real writers: a ``config.yaml``
(yaml) and TensorBoard event files (``torch.utils.tensorboard.SummaryWriter``), one file per
writing process, in the order given (file names fix the order TensorBoard reads them in)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import yaml
from torch.utils.tensorboard import SummaryWriter

Points = dict[str, list[tuple[int, float]]]


def write_events(run_dir: Path, index: int, points: Points, purge_step: int | None = None) -> Path:
    """One writing process: ``points`` (tag -> [(step, value)]) in step order, after TensorBoard's
    purge marker when ``purge_step`` is given (what a resumed crl run writes first)."""
    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp, purge_step=purge_step)
        for step, tag, value in sorted((s, t, v) for t, pts in points.items() for s, v in pts):
            writer.add_scalar(tag, value, step)
        writer.close()
        (made,) = Path(tmp).glob("events.out.tfevents.*")
        # the writer names files by the wall-clock second; fixed names keep the order of `index`
        target = run_dir / f"events.out.tfevents.{index:010d}.test.0.0"
        shutil.move(str(made), target)
    return target


def write_run(root: Path, name: str, *files: Points, purge_steps: Sequence[int | None] = (), seed: int = 0,
              **config) -> Path:
    """``root/name`` with a config.yaml (scenario, agent, norm, seed, name and ``config``) and one event
    file per ``files`` entry; ``purge_steps[i]`` is file i's purge step."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = {"scenario": "toy", "agent": "dqn", "norm": "none", "steps": 1000, **config, "seed": seed, "name": name}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for i, points in enumerate(files):
        write_events(run_dir, i + 1, points, purge_steps[i] if i < len(purge_steps) else None)
    return run_dir
