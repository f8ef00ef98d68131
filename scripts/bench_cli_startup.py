"""Wall time of the crl command's help screens, each a fresh Python process (median of repeats).

``crl --help`` imports neither torch nor gymnasium (target: under a second on an idle
machine); ``crl gym --help`` loads the built-in components to list their options.

    python scripts/bench_cli_startup.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["help", "redo"], ["gym", "--help"])


def wall_time(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "crl.cli", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args(argv).repeats
    wall_time(["--help"])  # warm the file cache once
    print("| command | median wall time (s) |\n|---|---|")
    for args in COMMANDS:
        times = [wall_time(args) for _ in range(repeats)]
        print(f"| `crl {' '.join(args)}` | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
