"""Aggregate performance across tasks or games, as ``rliable`` defines it.

Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice",
NeurIPS 2021 (arXiv 2108.13264; ``google-research/rliable``, ``rliable/metrics.py``). For a
``(runs, tasks)`` matrix of final scores ``x``:

* **IQM**: the mean of the middle 50% of all ``runs x tasks`` scores (``trim_mean(x, 0.25)``);
* **mean**: the mean over tasks of each task's mean over runs;
* **median**: the median over tasks of each task's mean over runs;
* **optimality gap**: ``gamma - mean(min(x, gamma))``, how far the scores fall short of the
  target ``gamma`` (1.0 for normalised scores), lower is better.

Each comes with a 95% stratified-bootstrap CI: every draw resamples the runs with
replacement within each task, independently per task. With fewer than 5 runs per task the
paper's intervals are themselves unreliable; :func:`aggregate_table` says so. Scores of
tasks on different scales (raw game returns) should be normalised first: otherwise the
high-scoring task dominates every aggregate but the median.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from crl.errors import UserError

MIN_RUNS = 5  # Agarwal et al.'s smallest run count for which they study interval coverage


def _iqm(x: np.ndarray) -> np.ndarray:
    from scipy.stats import trim_mean

    return trim_mean(x.reshape(*x.shape[:-2], -1), proportiontocut=0.25, axis=-1)


def _mean(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=-2).mean(axis=-1)


def _median(x: np.ndarray) -> np.ndarray:
    return np.median(x.mean(axis=-2), axis=-1)


def _optimality_gap(gamma: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: gamma - np.minimum(x, gamma).reshape(*x.shape[:-2], -1).mean(axis=-1)


def metrics(gamma: float = 1.0) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> function of a ``(..., runs, tasks)`` array, reducing the last two axes."""
    return {"IQM": _iqm, "mean": _mean, "median": _median, "optimality gap": _optimality_gap(gamma)}


def aggregate(scores: Any, gamma: float = 1.0, resamples: int = 2000, seed: int = 0,
              level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{metric: (point, ci_low, ci_high)}`` for a ``(runs, tasks)`` matrix; one run: NaN bounds."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) == 0 or not np.isfinite(x).all():
        raise UserError(f"compare --aggregate: scores must be a finite (runs, tasks) matrix, got shape {x.shape}")
    runs, tasks = x.shape
    draws = None
    if runs > 1:
        idx = np.random.default_rng(seed).integers(0, runs, size=(resamples, runs, tasks))
        draws = x[idx, np.arange(tasks)]  # column t resampled from column t only: the stratified bootstrap
    out = {}
    alpha = (1.0 - level) / 2
    for name, fn in metrics(gamma).items():
        point = float(fn(x))
        if draws is None:
            out[name] = (point, math.nan, math.nan)
            continue
        lo, hi = np.percentile(fn(draws), [100 * alpha, 100 * (1 - alpha)])
        out[name] = (point, float(lo), float(hi))
    return out


def _cell(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4g}"


def aggregate_table(groups: dict[str, np.ndarray], tasks: list[str], gamma: float, resamples: int,
                    seed: int) -> tuple[list[dict[str, Any]], str]:
    """Rows ``{group, metric, value, ci_low, ci_high, n_runs, n_tasks}`` and their Markdown table."""
    rows = []
    for label, x in groups.items():
        for name, (point, lo, hi) in aggregate(x, gamma, resamples, seed).items():
            rows.append({"group": label, "metric": name, "value": point, "ci_low": lo, "ci_high": hi,
                         "n_runs": x.shape[0], "n_tasks": x.shape[1]})
    lines = [f"Aggregate over {len(tasks)} task(s): {', '.join(f'`{t}`' for t in tasks)}", "",
             "| group | metric | value | 95% CI | runs |", "|---|---|---|---|---|"]
    for r in rows:
        ci = f"[{_cell(r['ci_low'])}, {_cell(r['ci_high'])}]" if not math.isnan(r["ci_low"]) else "n/a (1 run)"
        lines.append(f"| {r['group'].replace('|', '/')} | {r['metric']} | {_cell(r['value'])} | {ci} | "
                     f"{r['n_runs']} |")
    lines += ["", f"Stratified bootstrap, {resamples} draws; optimality gap against gamma = {gamma:g} "
                  "(Agarwal et al. 2021)."]
    few = [label for label, x in groups.items() if x.shape[0] < MIN_RUNS]
    if few:
        lines.append(f"Fewer than {MIN_RUNS} runs per task in {', '.join(few)}: the intervals are unreliable "
                     "(they under-cover with so few runs); add seeds before drawing conclusions.")
    return rows, "\n".join(lines) + "\n"
