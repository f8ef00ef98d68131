"""Training returns of the reference-style MinAtar DQN loop, to set beside crl's runs.

The MinAtar paper's DQN curves (Young & Tian 2019) are figures only; this runs the
reference-style loop of ``scripts/bench_minatar.py`` (written for crl from the facts of
``examples/dqn.py``: same network, replay, schedule, loss and centered RMSprop; its update is
tested equal to crl's in ``tests/test_minatar_reference_update.py``) as a whole training run and
writes the return of every training episode to a CSV (``step,return``), then prints the mean
return of the episodes ending in each ``--window`` of env steps, the curve
``scripts/minatar_returns.py --window`` prints for crl's runs. The loop keeps no checkpoints:
a run is one process (about 2-4 ms per env step on one CPU thread).

    OMP_NUM_THREADS=1 python scripts/minatar_reference_returns.py --game breakout --seed 0 \\
        --steps 150000 --out reference-breakout-s0.csv
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_minatar import LEARNING_STARTS, reference_loop  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--game", default="breakout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=500_000, help="env steps in all (the first 5,000 random)")
    p.add_argument("--window", type=int, default=50_000)
    p.add_argument("--out", required=True, help="CSV of step,return for every training episode")
    args = p.parse_args(argv)
    if args.steps <= LEARNING_STARTS:
        print(f"--steps: must exceed the {LEARNING_STARTS} random steps, got {args.steps}", file=sys.stderr)
        return 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    returns: list[tuple[int, float]] = []
    reference_loop(args.game, args.steps - LEARNING_STARTS, args.seed, warmup=0, eps_decay=100_000, returns=returns)
    with open(args.out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "return"])
        writer.writerows(returns)
    windows = []
    for k in range(args.steps // args.window):
        inside = [g for t, g in returns if k * args.window < t <= (k + 1) * args.window]
        if inside:
            windows.append(sum(inside) / len(inside))
    last = [g for _, g in returns[-100:]]
    print(f"{args.game} seed {args.seed}, {args.steps} env steps, {len(returns)} episodes; "
          f"mean of the last {len(last)}: {sum(last) / max(len(last), 1):.2f}")
    print(f"mean return per {args.window}-step window: " + ", ".join(f"{v:.2f}" for v in windows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
