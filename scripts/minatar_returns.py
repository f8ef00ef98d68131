"""Mean return of the last 100 training episodes of MinAtar runs, with a 95% CI over seeds.

The MinAtar paper (Young & Tian 2019) plots the returns of training episodes against frames;
this reads ``train/episode_return`` from each run's event files (``--at STEP``: only episodes
that ended at or before STEP, to compare runs at one budget), takes the mean of the last 100,
groups runs by their ``config.yaml`` (agent, game or games, norm, intervention) and prints per
group the mean over runs with a 95% percentile-bootstrap CI (resampling runs; with 2-4 runs it
under-covers, as ``crl compare`` notes too).

    python scripts/minatar_returns.py runs/minatar --at 500000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

KEY = ("scenario", "agent", "game", "games", "norm", "intervention", "steps")


def last_returns(run_dir: Path, at: int | None, n: int) -> tuple[float, int, int] | None:
    """(mean of the last ``n`` episode returns, episodes used, step of the last one), None without episodes."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if "train/episode_return" not in acc.Tags()["scalars"]:
        return None
    points = [(e.step, e.value) for e in acc.Scalars("train/episode_return") if at is None or e.step <= at]
    if not points:
        return None
    values = np.array([v for _, v in points[-n:]])
    return float(values.mean()), len(values), points[-1][0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", help="run directories or folders above them")
    p.add_argument("--at", type=int, default=None, help="only episodes that ended at or before this env step")
    p.add_argument("--last", type=int, default=100, help="episodes averaged per run")
    p.add_argument("--resamples", type=int, default=2000)
    args = p.parse_args(argv)
    groups: dict[tuple, list[tuple[str, float, int, int]]] = {}
    for root in map(Path, args.roots):
        files = [root / "config.yaml"] if (root / "config.yaml").exists() else root.rglob("config.yaml")
        for cfg_file in sorted(files):
            cfg = yaml.safe_load(cfg_file.read_text())
            got = last_returns(cfg_file.parent, args.at, args.last)
            if got is not None:
                groups.setdefault(tuple(cfg.get(k) for k in KEY), []).append((str(cfg_file.parent), *got))
    if not groups:
        print("no run with train/episode_return under " + ", ".join(args.roots), file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    print(f"| {' | '.join(KEY)} | runs | mean of last {args.last} training episodes | 95% CI | last step (min-max) |")
    print("|" + "---|" * (len(KEY) + 4))
    for key, runs in groups.items():
        x = np.array([r[1] for r in runs])
        if len(x) > 1:
            boot = x[rng.integers(len(x), size=(args.resamples, len(x)))].mean(1)
            ci = f"[{np.percentile(boot, 2.5):.2f}, {np.percentile(boot, 97.5):.2f}]"
        else:
            ci = "n/a (1 run)"
        steps = [r[3] for r in runs]
        print(f"| {' | '.join(str(k) for k in key)} | {len(x)} | {x.mean():.2f} | {ci} | {min(steps)}-{max(steps)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
