"""Cost of the plasticity-metrics hook at its default cadence, relative to training time.

For each configuration (a CartPole run of ``crl gym`` and a small Atari run of ``crl atari``,
both at their preset ``--metrics-every``), the same run is made twice, metrics on and off,
and reported as one markdown table row:

* ``hook s``: wall seconds inside :class:`crl.metrics.hooks.PlasticityHook` (its own timer,
  which also feeds ``perf/metrics_seconds``), of which ``probe s`` in the probe task;
* ``per metric period``: the hook's seconds per metric step over the training seconds (run minus
  hook) per ``--metrics-every`` env steps of the metrics-on run, i.e. the cost at the default
  cadence; with the default ``--probe-every 1`` every metric step includes the probe, so
  nothing is extrapolated;
* ``on/off``: wall time of the metrics-on run over the metrics-off run, minus 1 (noisy on a
  shared machine; the hook's own timer is the precise number).

Each config runs ``--repeats`` pairs (on/off, then off/on, ...); the table gives the last
pair's seconds and the medians of the per-pair percentages.

Usage::

    python scripts/bench_metrics_overhead.py                    # both, 3 pairs each, CPU, ~30 min
    python scripts/bench_metrics_overhead.py --which cartpole --cartpole-steps 20000
"""
from __future__ import annotations

import argparse
import statistics
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
        out.update(hook=hook.seconds, metric_steps=hook.count, every=hook.every)
    return out


def bench(label: str, preset: str, steps: int, root: Path, repeats: int, **overrides) -> str:
    """``repeats`` pairs of runs, on/off then off/on alternately (the first run of a process is
    slower: imports, page faults); medians of the per-pair numbers."""
    measured, on_off, last = [], [], None
    for r in range(repeats):
        results = {}
        for metrics in (("on", "off") if r % 2 == 0 else ("off", "on")):
            cfg = make_config(preset, steps=steps, progress=False, run_dir=str(root), name=f"{label}-{metrics}-{r}",
                              **overrides)
            if metrics == "off":
                cfg.metrics_every = 0
            results[metrics] = timed_run(cfg, root / cfg.name)
        on, off = results["on"], results["off"]
        # one metric step's cost over the training time of one metric period (--metrics-every env steps):
        # the run's last metric step may not fire (it fires after the next update), so per step, not per run
        per_period_train = (on["wall"] - on["hook"]) * on["every"] / steps
        measured.append(on["hook"] / max(on["metric_steps"], 1) / per_period_train)
        on_off.append(on["wall"] / off["wall"] - 1)
        last = on
    train = last["wall"] - last["hook"]
    return (f"| {label} | {steps} | {repeats} | {last['every']} | {last['metric_steps']} | {last['probes']} | "
            f"{last['hook']:.2f} | {last['probe']:.2f} | {train:.1f} | {100 * statistics.median(measured):.2f}% | "
            f"{100 * statistics.median(on_off):+.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--which", choices=("cartpole", "atari", "both"), default="both")
    parser.add_argument("--cartpole-steps", type=int, default=20_000)
    parser.add_argument("--atari-steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (metrics on and off) per config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest on a shared 2-core box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.which in ("cartpole", "both"):
            rows.append(bench("CartPole-v1 (gym preset, MLP 128x128)", "gym", args.cartpole_steps, root, args.repeats,
                              scenario="gym", device=args.device, eval_every=args.cartpole_steps,
                              eval_episodes=2, checkpoint_every=10 ** 9, learning_starts=1_000,
                              eps_decay_steps=args.cartpole_steps // 10))
        if args.which in ("atari", "both"):
            rows.append(bench("Pong (atari preset, Nature CNN, 8 envs)", "atari", args.atari_steps, root, args.repeats,
                              scenario="atari", game="pong", device=args.device, eval_every=args.atari_steps,
                              eval_episodes=1, eval_max_steps=200, checkpoint_every=10 ** 9,
                              learning_starts=1_000, buffer_size=30_000, eps_decay_steps=args.atari_steps // 10,
                              target_update=2_000))
    default = make_config("atari")
    print(f"device {args.device}, torch threads {args.threads}, default cadence (preset --metrics-every), "
          f"--probe-every {default.probe_every}, --probe-steps {default.probe_steps}")
    print("| config | env steps | pairs | metrics every | metric steps | probes | hook s | probe s | train s | "
          "per metric period (median) | on/off wall (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
