"""How large the optimizer's per-weight steps are, read from a run's checkpoint.

RMSprop and Adam divide each weight's gradient by ``sqrt(second moment) + eps``. When the
gradient's scale is far above ``eps`` the step is about ``lr`` whatever the loss's scale; when it
is far below, the step is about ``lr * g / eps``: plain SGD with learning rate ``lr / eps``, so a
loss whose gradients are k times smaller takes k times smaller steps. The MinAtar reference
preset uses centered RMSprop with ``eps = 0.01`` (Young & Tian 2019), large next to DQN's gradients,
so swapping the loss (Huber, MSE, HL-Gauss cross-entropy) also changes the effective step size.
This script measures that from the optimizer state in a checkpoint, per run (default: its newest):

* ``below eps``: share of weights whose denominator (without ``eps``) is below ``eps``;
* ``grad rms``: median over weights of ``sqrt(E[g^2])`` (the second-moment average);
* ``step rms`` / ``step median``: per-weight RMS step ``lr * sqrt(E[g^2]) / (denominator + eps)``
  (the size of the step a typical gradient gets now), its RMS and median over all weights.

``--windows 0,100000,300000,500000`` reads the whole training instead, from the run's event
files: the mean of a network-level metric, ``--tag`` (default ``plasticity/update_ratio``,
``||Delta W|| / ||W||`` over one optimizer step; ``plasticity/below_eps`` is the share above, logged
by crl from commit ``d4cc0a3`` on), logged every ``--metrics-every`` steps, in each window of env
steps, the number of points in brackets; no checkpoint needed.

Denominators: :func:`crl.metrics.plasticity.adaptive_denominator` (torch's update rules), the
same as the ``plasticity/below_eps`` metric runs log as they train; for Adam/AdamW the size of a
typical step is read from the second moment, as for RMSprop (the step itself uses the first
moment). Other optimizers are refused.

    python scripts/optimizer_steps.py runs/minatar/dqn-none-none/ref-breakout-s0 runs/minatar/dqn-mse-none-none/*
    python scripts/optimizer_steps.py RUN --step 500000 --per-layer
    python scripts/optimizer_steps.py runs/minatar/*/*-breakout-s0 --windows 0,100000,300000,500000
    python scripts/optimizer_steps.py RUN --windows 0,250000,500000 --tag plasticity/below_eps
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crl.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from crl.metrics.plasticity import adaptive_denominator  # noqa: E402


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def denominators(state: dict, group: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sqrt(E[g^2]), denominator without eps)`` of one parameter's optimizer state."""
    den = adaptive_denominator(state, group)
    if den is None:
        fail(f"optimizer state with keys {sorted(state)}: only RMSprop and Adam/AdamW are read")
    if "square_avg" in state:  # RMSprop
        return state["square_avg"].sqrt(), den
    return adaptive_denominator(state, {**group, "amsgrad": False}), den  # Adam's from exp_avg_sq, amsgrad or not


def measure(run: Path, step: int | None, per_layer: bool) -> None:
    paths = list_checkpoints(run)
    if step is not None:
        paths = [p for p in paths if int(p.stem.split("_")[1]) == step]
    if not paths:
        fail(f"{run}: no checkpoint" + (f" at --step {step}" if step is not None else ""))
    ckpt = load_checkpoint(paths[-1])
    opt = ckpt["learner"]["optimizer"]
    group_of = {i: g for g in opt["param_groups"] for i in g["params"]}
    rows, totals = [], []
    for i, state in sorted(opt["state"].items()):
        group = group_of[i]
        rms, den = denominators(state, group)
        steps = group["lr"] * rms / (den + group["eps"])
        totals.append((rms.flatten(), den.flatten() < group["eps"], steps.flatten()))
        if per_layer:
            rows.append(f"  parameter {i} {tuple(rms.shape)}: " + summary(*totals[-1]))
    rms, below, steps = (torch.cat(parts) for parts in zip(*totals))
    print(f"{run} @ {paths[-1].stem.split('_')[1].lstrip('0')}: " + summary(rms, below, steps))
    for row in rows:
        print(row)


def windows(run: Path, edges: list[int], tag: str) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        fail(f"{run}: no {tag} in its event files (run with --metrics-every > 0)")
    points = [(e.step, e.value) for e in acc.Scalars(tag)]
    cells = []
    for lo, hi in zip(edges, edges[1:]):
        inside = [v for step, v in points if lo < step <= hi]
        cells.append(f"{sum(inside) / len(inside):.2e} ({len(inside)})" if inside else "-")
    print(f"{run}: " + " | ".join(cells))


def summary(rms: torch.Tensor, below: torch.Tensor, steps: torch.Tensor) -> str:
    return (f"below eps {below.float().mean():.3f}  grad rms {rms.median():.2e}  "
            f"step rms {steps.pow(2).mean().sqrt():.2e}  step median {steps.median():.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories (with checkpoints/)")
    p.add_argument("--step", type=int, default=None, help="the checkpoint at this env step (default: the newest)")
    p.add_argument("--per-layer", action="store_true", help="also one line per parameter tensor (in the optimizer's order)")
    p.add_argument("--windows", default="", help="comma-separated env-step edges: mean of --tag per window "
                                                  "from the event files instead")
    p.add_argument("--tag", default="plasticity/update_ratio", help="with --windows: the scalar tag averaged")
    args = p.parse_args()
    parts = args.windows.split(",") if args.windows else []
    edges = [int(x) for x in parts if x.strip().isdigit()]
    if len(edges) != len(parts) or len(edges) == 1 or any(a >= b for a, b in zip(edges, edges[1:])):
        p.error(f"--windows: comma-separated increasing env steps, at least two, got {args.windows!r}")
    for run in args.runs:
        if edges:
            windows(run, edges, args.tag)
        else:
            measure(run, args.step, args.per_layer)


if __name__ == "__main__":
    main()
