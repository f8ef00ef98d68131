"""Cost of the plasticity-metrics hook at its default cadence, relative to training time.

For each configuration (a CartPole run of ``crl gym`` and a small Atari run of ``crl atari``,
both at their preset ``--metrics-every``), the same run is made twice, metrics on and off,
and reported as one markdown table row:

* ``hook s``: wall seconds inside :class:`crl.metrics.hooks.PlasticityHook` (its own timer,
  which also feeds ``perf/metrics_seconds``), of which ``probe s`` in the probe task;
* ``measured``: hook seconds / (run seconds - hook seconds) of the metrics-on run;
* ``amortized``: the same ratio with the probe counted at its real cadence (every
  ``probe_every``-th metric step) and per metric period, i.e.
  ``(c_metric + c_probe / probe_every) / (train seconds per metrics_every env steps)``;
  a short run probes on its first metric step, so ``measured`` over-counts the probe;
* ``on/off``: wall time of the metrics-on run over the metrics-off run, minus 1 (noisy on a
  shared machine; the hook's own timer is the precise number).

Usage::

    python scripts/bench_metrics_overhead.py                    # both, CPU, ~10 min
    python scripts/bench_metrics_overhead.py --which cartpole --cartpole-steps 20000
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from crl.api import prepare
from crl.config import make_config
from crl.metrics.hooks import PlasticityHook
from crl.runner import Runner


def timed_run(cfg, run_dir: Path) -> dict:
    """One run; returns wall seconds and the plasticity hook's own timings."""
    scenario, learner, hooks = prepare(cfg)
    hook = next((h for h in hooks.hooks if isinstance(h, PlasticityHook)), None)
    probe = {"seconds": 0.0, "calls": 0}
    if hook is not None:
        inner = hook._probe_metrics

        def probe_timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                probe["seconds"] += time.perf_counter() - t0
                probe["calls"] += 1

        hook._probe_metrics = probe_timed
    runner = Runner(cfg, scenario, learner, hooks, run_dir)
    t0 = time.perf_counter()
    runner.run()
    wall = time.perf_counter() - t0
    out = {"wall": wall, "hook": 0.0, "metric_steps": 0, "probe": probe["seconds"], "probes": probe["calls"]}
    if hook is not None:
        out.update(hook=hook.seconds, metric_steps=hook.count, probe_every=hook.probe_every, every=hook.every)
    return out


def bench(label: str, preset: str, steps: int, root: Path, **overrides) -> str:
    results = {}
    for metrics in ("on", "off"):
        cfg = make_config(preset, steps=steps, progress=False, run_dir=str(root), name=f"{label}-{metrics}",
                          **overrides)
        if metrics == "off":
            cfg.metrics_every = 0
        results[metrics] = timed_run(cfg, root / cfg.name)
    on, off = results["on"], results["off"]
    train = on["wall"] - on["hook"]
    measured = on["hook"] / train
    c_metric = (on["hook"] - on["probe"]) / max(on["metric_steps"], 1)
    c_probe = on["probe"] / max(on["probes"], 1)
    per_period = train * on["every"] / steps
    amortized = (c_metric + c_probe / on["probe_every"]) / per_period
    return (f"| {label} | {steps} | {on['every']} | {on['metric_steps']} | {on['probes']} | {on['hook']:.2f} | "
            f"{on['probe']:.2f} | {train:.1f} | {100 * measured:.2f}% | {100 * amortized:.2f}% | "
            f"{100 * (on['wall'] / off['wall'] - 1):+.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--which", choices=("cartpole", "atari", "both"), default="both")
    parser.add_argument("--cartpole-steps", type=int, default=20_000)
    parser.add_argument("--atari-steps", type=int, default=20_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest on a shared 2-core box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.which in ("cartpole", "both"):
            rows.append(bench("CartPole-v1 (gym preset, MLP 256x256)", "gym", args.cartpole_steps, root,
                              scenario="gym", device=args.device, eval_every=args.cartpole_steps,
                              eval_episodes=2, checkpoint_every=10 ** 9, learning_starts=1_000,
                              eps_decay_steps=args.cartpole_steps // 10))
        if args.which in ("atari", "both"):
            rows.append(bench("Pong (atari preset, Nature CNN, 8 envs)", "atari", args.atari_steps, root,
                              scenario="atari", game="pong", device=args.device, eval_every=args.atari_steps,
                              eval_episodes=1, eval_max_steps=200, checkpoint_every=10 ** 9,
                              learning_starts=1_000, buffer_size=30_000, eps_decay_steps=args.atari_steps // 10,
                              target_update=2_000))
    print(f"device {args.device}, torch threads {args.threads}, default cadence (preset --metrics-every), "
          f"probe every {PlasticityHook(1).probe_every}th metric step, {PlasticityHook(1).probe_steps} probe steps")
    print("| config | env steps | metrics every | metric steps | probes | hook s | probe s | train s | measured | "
          "amortized | on/off wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
