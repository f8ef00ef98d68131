"""How fast acting + env stepping can be on this machine, whatever the training loop does.

Issue 5 asks for acting + env stepping with 16 envs at >= 80% of the raw vector env. On a
CPU the acting forward is real work, so this script measures the ceiling directly, on the
same env and network as ``crl atari`` (Breakout, ``ale_py.AtariVectorEnv``, Nature CNN,
channels-last, greedy actions), each for ``--steps`` vector steps:

* ``raw``: the vector env stepped with random actions (what the benchmark divides by);
* ``forward``: the acting forward alone for the same batch of observations;
* ``sequential``: forward, then env step, nothing else (the least any loop that acts on each
  new observation can do: crl's loop adds replay writes and bookkeeping to this);
* ``pipelined``: the envs split into two vector envs of half the size; while one steps in its
  C++ threads (``send``), the other's actions are computed, then ``recv`` (the overlap an
  asynchronous two-group acting loop could get).

Ratios are over ``raw`` of the same repeat; medians over ``--repeats``.

    python scripts/bench_acting_bound.py                 # 1 torch thread, ~1 min
    python scripts/bench_acting_bound.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from agents import fast
from crl.config import make_config
from crl.nn.network import build_network
from crl.registry import HEADS
from scenarios.atari import make_atari_env


def _network(num_actions: int) -> torch.nn.Module:
    import agents.dqn  # noqa: F401  (registers the heads)

    cfg = make_config("atari")
    head = HEADS.get("scalar-huber")(cfg)
    net = build_network(cfg, (4, 84, 84), num_actions, head).eval()
    return net.to(memory_format=torch.channels_last)


def _timed(fn, steps: int, envs: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return envs * steps / (time.perf_counter() - t0)


def one_repeat(net, n: int, steps: int, rng: np.random.Generator) -> dict[str, float]:
    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return net.q_values(fast.channels_last(torch.as_tensor(obs))).argmax(dim=1).numpy()

    env = make_atari_env("breakout", n, 0)
    state = {"obs": env.reset(seed=0)[0]}
    out = {"raw": _timed(lambda: env.step(rng.integers(4, size=n)), steps, n),
           "forward": _timed(lambda: act(state["obs"]), steps, n)}

    def sequential():
        state["obs"] = env.step(act(state["obs"]))[0]

    out["sequential"] = _timed(sequential, steps, n)
    env.close()

    groups = [make_atari_env("breakout", n // 2, g) for g in range(2)]
    obs = [g.reset(seed=i)[0] for i, g in enumerate(groups)]
    groups[0].send(act(obs[0]))

    def pipelined():  # group 1 acts while group 0 steps, then the other way round
        groups[1].send(act(obs[1]))
        obs[0] = groups[0].recv()[0]
        groups[0].send(act(obs[0]))
        obs[1] = groups[1].recv()[0]

    out["pipelined"] = _timed(pipelined, steps, n)
    groups[0].recv()
    for g in groups:
        g.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300, help="vector steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the env has its own)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net, rng = _network(4), np.random.default_rng(0)
    runs = [one_repeat(net, args.num_envs, args.steps, rng) for _ in range(args.repeats)]
    print(f"{args.num_envs} envs, Breakout, Nature CNN, torch threads {args.threads}, {args.steps} vector steps, "
          f"medians of {args.repeats} repeats")
    print("| | env steps/s | / raw |")
    print("|---|---|---|")
    for key in ("raw", "forward", "sequential", "pipelined"):
        sps = statistics.median(r[key] for r in runs)
        ratio = statistics.median(r[key] / r["raw"] for r in runs)
        print(f"| {key} | {sps:,.0f} | {ratio:.0%} |")


if __name__ == "__main__":
    main()
