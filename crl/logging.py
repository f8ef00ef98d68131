"""Run directory, TensorBoard event files, config.yaml, summary.json and the progress bar.

Tag scheme (same for every agent, see DESIGN.md): ``train/*``, ``eval/<task>/*``,
``plasticity/<metric>`` and ``plasticity/<layer>/<metric>``, ``forgetting/*``, ``perf/*``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from crl.config import Config, save_config


class RunLogger:
    """Writes scalars to TensorBoard and keeps the latest value of each tag for summary.json."""

    def __init__(self, run_dir: Path, cfg: Config, total_steps: int, start_step: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")
        # purge_step drops events logged after the checkpoint we resume from, so curves never double back.
        self.writer = SummaryWriter(str(self.run_dir), purge_step=start_step if start_step else None)
        self.latest: dict[str, float] = {}
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         disable=not (cfg.progress and sys.stderr.isatty()), file=sys.stderr)
        self._last_return = float("nan")
        self._t0, self._s0 = time.perf_counter(), start_step

    def scalar(self, tag: str, value: float, step: int) -> None:
        value = float(value)
        self.writer.add_scalar(tag, value, step)
        self.latest[tag] = value
        if tag == "train/episode_return":
            self._last_return = value

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def progress(self, step: int) -> None:
        """Advance the bar to ``step`` and report throughput (also logged as perf/sps)."""
        self._bar.update(step - self._bar.n)
        elapsed = time.perf_counter() - self._t0
        if elapsed > 0:
            sps = (step - self._s0) / elapsed
            self._bar.set_postfix(sps=f"{sps:.0f}", ret=f"{self._last_return:.1f}", refresh=False)

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
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
        (self.run_dir / "summary.json").write_text(json.dumps(clean, indent=2, sort_keys=True))

    def close(self) -> None:
        self._bar.close()
        self.writer.flush()
        self.writer.close()
