"""Bytes per stored transition of agents.replay.ReplayBuffer, as one markdown table row.

Default: 84x84 uint8 frames, stack 4, capacity 100,000, 8 envs (the Atari DQN setting).
Compares with one frame (7,056 B) and with the naive obs + next_obs layout (56,448 B).

    python scripts/bench_replay_memory.py [--capacity 100000] [--num-envs 8] [--size 84] [--stack 4]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.replay import ReplayBuffer  # noqa: E402


def measure(capacity: int, num_envs: int, size: int, stack: int, device: str = "cpu") -> dict[str, float]:
    buf = ReplayBuffer(capacity, num_envs, (stack, size, size), stack, torch.uint8, device)
    frame = size * size
    per = buf.bytes_per_transition()
    return {"capacity": buf.capacity, "bytes": per, "frame": frame, "ratio": per / frame,
            "naive": 2 * stack * frame, "total_mib": buf.nbytes() / 2**20}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capacity", type=int, default=100_000)
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--size", type=int, default=84, help="frame height = width")
    ap.add_argument("--stack", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    r = measure(args.capacity, args.num_envs, args.size, args.stack, args.device)
    print("| frames | capacity | envs | B / transition | x one frame | naive obs+next_obs B | total MiB |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.stack}x{args.size}x{args.size} uint8 | {r['capacity']:,} | {args.num_envs} | {r['bytes']:,.1f} | "
          f"{r['ratio']:.4f} (frame {r['frame']:,} B) | {r['naive']:,} | {r['total_mib']:,.1f} |")


if __name__ == "__main__":
    main()
