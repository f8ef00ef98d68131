"""Table of ``crl run random-labels`` runs grouped by condition (docs/results/activations_compander.md).

A condition is a run name without its ``-s<seed>`` suffix (``relu-none-s0`` -> ``relu-none``).
Per condition, mean and 95% t-interval over seeds (Student t, n - 1 degrees of freedom) of:

* trainability, from ``summary.json``'s eval matrix: ``R[i, i]`` is the accuracy on task ``i``'s
  random labels at the end of task ``i`` (random-labels evaluates on the training set), averaged
  over the first five and the last five tasks, and on the last task alone;
* plasticity metrics from the event files (``plasticity/<tag>``): their mean over the run's
  metric steps and their last value.

    python scripts/summarize_random_labels.py runs/act_comp
"""
from __future__ import annotations

import argparse
import glob
import json
import math
from collections import defaultdict

from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TAGS = ("dormant_redo_tau0", "dormant_redo_tau0.1", "dormant_dohare", "active_fraction")


def collect(root: str) -> dict[str, dict[str, list[float]]]:
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for d in sorted(glob.glob(f"{root}/random-labels/*/*")):
        cond = d.rsplit("/", 1)[1].rsplit("-s", 1)[0]
        try:
            matrix = json.load(open(f"{d}/summary.json"))["eval_matrix"]
        except FileNotFoundError:
            print(f"skipped (not finished): {d}")
            continue
        diag = [matrix[i][i] for i in range(len(matrix))]
        rows[cond]["accuracy R[i,i], tasks 1-5"].append(sum(diag[:5]) / 5)
        rows[cond]["accuracy R[i,i], last 5 tasks"].append(sum(diag[-5:]) / 5)
        rows[cond]["accuracy R[i,i], last task"].append(diag[-1])
        ea = EventAccumulator(d, size_guidance={"scalars": 0})
        ea.Reload()
        for tag in TAGS:
            if f"plasticity/{tag}" in ea.Tags()["scalars"]:
                values = [e.value for e in ea.Scalars(f"plasticity/{tag}")]
                rows[cond][f"{tag}, mean over run"].append(sum(values) / len(values))
                rows[cond][f"{tag}, last"].append(values[-1])
    return rows


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f} (n=1)"
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1))
    half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    return f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the --run-dir of the runs")
    rows = collect(parser.parse_args().root)
    conds = list(rows)
    metrics = list(dict.fromkeys(m for c in conds for m in rows[c]))
    print("| metric | " + " | ".join(conds) + " |")
    print("|---|" + "---|" * len(conds))
    for m in metrics:
        print(f"| {m} | " + " | ".join(cell(rows[c].get(m, [])) for c in conds) + " |")
    print("\nseeds: " + ", ".join(f"{c} {len(rows[c]['accuracy R[i,i], last task'])}" for c in conds))


if __name__ == "__main__":
    main()
