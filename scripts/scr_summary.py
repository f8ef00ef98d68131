"""Per-task online error of ``crl run slowly-changing-regression`` runs (docs/results/slowly_changing_regression.md).

Reads ``train/loss`` from each run's event file. With the scenario's preset (``--log-every 10000``,
10,000 examples per task) the value logged at step ``10000 (k + 1)`` is the mean squared error of
task ``k``'s examples before the update on each (Dohare et al.'s online error). Prints the per-task
mean over runs with a 95% t-interval, and per run the change from the first ``--window`` tasks to
the last ``--window`` tasks and the least-squares slope of error over task index, with their mean
and 95% t-interval over runs.

    python scripts/scr_summary.py 'runs/scr_evidence/slowly-changing-regression/*/seed*' --window 4
"""
from __future__ import annotations

import argparse
import glob
import math

import numpy as np
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def per_task_error(run_dir: str) -> np.ndarray:
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return np.array([e.value for e in sorted(acc.Scalars("train/loss"), key=lambda e: e.step)])


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval (NaN half-width for one value)."""
    m = float(values.mean())
    if len(values) < 2:
        return m, math.nan, math.nan
    h = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return m, m - h, m + h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="glob of run directories")
    ap.add_argument("--window", type=int, default=4, help="tasks in the first and last windows")
    args = ap.parse_args()
    dirs = sorted(glob.glob(args.runs))
    errs = [per_task_error(d) for d in dirs]
    n = min(len(e) for e in errs)
    E = np.stack([e[:n] for e in errs])  # runs x tasks
    print(f"{len(dirs)} runs, {n} tasks each")
    print("| task | mean online MSE | 95% CI |")
    print("|---|---|---|")
    for k in range(n):
        m, lo, hi = t_interval(E[:, k])
        print(f"| {k} | {m:.3f} | [{lo:.3f}, {hi:.3f}] |")
    w = args.window
    change = E[:, n - w:].mean(1) - E[:, :w].mean(1)
    slope = np.array([np.polyfit(np.arange(n), e, 1)[0] for e in E])
    for name, v in ((f"last {w} - first {w} tasks", change), ("slope per task", slope)):
        m, lo, hi = t_interval(v)
        print(f"{name}: per run {np.round(v, 3).tolist()}, mean {m:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
    main()
