"""Run directory, TensorBoard event files, config.yaml, summary.json and the progress display.

Tag scheme (same for every agent, see docs/design.md): ``train/*``, ``eval/<task>/*``,
``plasticity/<metric>`` and ``plasticity/<layer>/<metric>``, ``forgetting/*``, ``perf/*``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from crl.checkpoint import atomic_write
from crl.config import Config, save_config

LINES_PER_RUN = 1000  # plain progress lines (stderr not a terminal): at most about this many per run


def plain_line_interval(log_every: int, total_steps: int) -> int:
    """Steps between plain progress lines: ``log_every``, or the smallest multiple of it that keeps a
    run to about :data:`LINES_PER_RUN` lines (a tiny ``--log-every`` must not flood a log file).
    Counted in steps, not seconds, so the lines of a run are the same on every machine."""
    return log_every * max(1, math.ceil(total_steps / (LINES_PER_RUN * log_every)))


def _terminal_with_width(stream) -> bool:
    """Whether ``stream`` is a terminal that tqdm can draw on: a pseudo-terminal of 0 columns (some
    batch systems and containers allocate one without a size) gets plain lines instead of a bar
    tqdm would draw 0 characters wide."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):  # no file descriptor (e.g. a StringIO)
        return False


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth, replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch arrays and scalars
        return strict_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _tags_at_step(run_dir: Path, step: int) -> set[str]:
    """The scalar tags the event files of ``run_dir`` hold at ``step`` (none when ``step`` is 0: a new run)."""
    if not step:
        return set()
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    tags = set()
    for path in run_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            if event.step == step and event.HasField("summary"):
                tags.update(v.tag for v in event.summary.value)
    return tags


def _wait_past_event_files(run_dir: Path) -> None:
    """Wait until the clock's second is past that of every event file in ``run_dir``.

    TensorBoard reads a run's event files in name order, ``events.out.tfevents.<second>.<host>.<pid>``:
    a resumed run's file must sort after the killed run's, or its purge (see :class:`RunLogger`)
    comes before the events it should remove and the curves read back out of order. Within one
    second the order would be that of the process ids as strings, i.e. chance; so wait (at most a
    second, only when resuming that fast; a file stamped further ahead, by another machine's clock,
    is not waited for).
    """
    seconds = [int(m.group(1)) for p in run_dir.glob("events.out.tfevents.*")
               if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", p.name))]
    wait = max(seconds) + 1 - time.time() if seconds else 0.0
    if 0 < wait <= 2:
        time.sleep(wait)


class RunLogger:
    """Writes scalars to TensorBoard and keeps the latest value of each tag for summary.json."""

    def __init__(self, run_dir: Path, cfg: Config, total_steps: int, start_step: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")
        # A resumed run (start_step > 0, the step of its checkpoint) purges the events logged after that
        # checkpoint, so curves never double back. What the runner logs *at* that step (the evaluation,
        # train/* scalars, forgetting/* at a task end) comes before the checkpoint and must stay, hence
        # + 1; the DQN learner logs everything after a checkpoint at later env steps.
        # Tags the killed run already wrote at the checkpoint's step after the checkpoint (the next task's
        # on_task_start: e.g. train/reset_count); the purge keeps that step, so they are not written again.
        self._resume_step, self._written_at_resume = start_step, _tags_at_step(self.run_dir, start_step)
        if start_step:
            _wait_past_event_files(self.run_dir)
        self.writer = SummaryWriter(str(self.run_dir), purge_step=start_step + 1 if start_step else None)
        self.latest: dict[str, float] = {}
        tty = _terminal_with_width(sys.stderr)
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         disable=not (cfg.progress and tty), file=sys.stderr)
        self._total = total_steps
        self._line_every = plain_line_interval(cfg.log_every, total_steps) if cfg.progress and not tty else 0
        self._line_bucket = start_step // self._line_every if self._line_every else 0
        self._step = self._line_step = start_step  # where the run is; where the last plain line was
        self._last_return = float("nan")
        self._t0, self._s0 = time.perf_counter(), start_step

    def scalar(self, tag: str, value: float, step: int) -> None:
        value = float(value)
        if step != self._resume_step or tag not in self._written_at_resume:
            self.writer.add_scalar(tag, value, step)
        self.latest[tag] = value
        if tag == "train/episode_return":
            self._last_return = value

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def progress(self, step: int) -> None:
        """Move the progress display to global step ``step``.

        Learners call this with their train/* scalars (every ``--log-every`` steps) and the runner
        after each chunk. On a terminal the tqdm bar moves (tqdm redraws at most every 0.1 s); with
        stderr not a terminal (nohup, Slurm, CI) or one of 0 columns, a plain line is printed each
        time ``step`` enters a new multiple of :func:`plain_line_interval`. ``--no-progress`` turns
        both off.
        """
        self._step = step
        sps = self._sps(step)
        if not self._bar.disable:
            self._bar.set_postfix(sps=f"{sps:.0f}", ret=f"{self._last_return:.1f}", refresh=False)
            self._bar.update(step - self._bar.n)
        if self._line_every and step // self._line_every > self._line_bucket:
            self._line_bucket = step // self._line_every
            self._print_line(step, sps)

    def _sps(self, step: int) -> float:
        """Steps per second since this process started (or resumed) the run."""
        elapsed = time.perf_counter() - self._t0
        return (step - self._s0) / elapsed if elapsed > 0 else 0.0

    def _print_line(self, step: int, sps: float) -> None:
        pct = 100.0 * step / self._total if self._total else 100.0
        line = f"step {step}/{self._total} ({pct:.0f}%)  {sps:.0f} steps/s"
        if math.isfinite(self._last_return):
            line += f"  return {self._last_return:.1f}"
        elif "train/loss" in self.latest:  # supervised learners have no episodes
            line += f"  loss {self.latest['train/loss']:.4g}"
        print(line, file=sys.stderr, flush=True)
        self._line_step = step

    def flush(self) -> None:
        self.writer.flush()

    # Views; their content (layout, figure, metric list) is built in crl/metrics/hooks.py.
    def custom_scalars(self, layout: dict) -> None:
        """Custom-scalars layout ``{category: {chart: ["Multiline", [tag regexes]]}}``."""
        self.writer.add_custom_scalars(layout)

    def figure(self, tag: str, fig, step: int) -> None:
        self.writer.add_figure(tag, fig, step, close=True)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """HParams entry in this run's own event file (``add_hparams`` would start a sub-run); the
        metric columns read the last value of these (already logged) scalar tags."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(hparams, metrics):
            self.writer._get_file_writer().add_summary(summary)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """``summary.json`` as strict JSON (NaN and inf, nested ones too, become null), written
        atomically so that a kill while writing leaves the previous file or none, never half of one."""
        text = json.dumps(strict_json(summary), indent=2, sort_keys=True, allow_nan=False)
        atomic_write(self.run_dir / "summary.json", text.encode())

    def close(self) -> None:
        if self._line_every and self._step > self._line_step:  # where the run ended, if no line showed it
            self._print_line(self._step, self._sps(self._step))
        self._bar.close()
        self.writer.flush()
        self.writer.close()


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """The stdlib logger ``name`` (and its children) at ERROR for the duration, then as before:
    for third-party notices that are not the user's business (TensorBoard's reader, torch.compile)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
