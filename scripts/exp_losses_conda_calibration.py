"""The experiment of docs/results/losses_conda_calibration.md: Z-loss / AnyLoss vs CE on a
class-imbalanced Split digits, Conda vs AdamW on digits, ECE and post-hoc recalibration.

    OMP_NUM_THREADS=1 python scripts/exp_losses_conda_calibration.py --out runs/exp_losses_conda_calibration

Every run is an ordinary crl run (its config.yaml and event file under --out); the equivalent command
line is printed for each. After each run the final network's test logits are split in two halves
(even / odd sample index); temperature scaling and h-calibration are fitted on the even half and
the ECE of the odd half is reported before and after.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from crl.api import load_scenario_file, prepare, run_directory
from crl.config import make_config
from crl.metrics.calibration import recalibrate
from crl.registry import load_builtins
from crl.runner import Runner

SCEN = "scripts/imbalanced_split_digits.py"
T975 = {2: 4.303, 3: 3.182, 4: 2.776}  # Student t quantiles for 95% CIs with n - 1 degrees of freedom

GROUPS = {
    "A: class-IL, replay, imbalanced": [
        ("ce", dict(loss="ce")),
        ("zloss", dict(loss="zloss")),
        ("anyloss f1 L=73", dict(loss="anyloss")),
        ("anyloss f1 L=10", dict(loss="anyloss", anyloss_scale=10.0)),
    ],
    "B: task-IL, naive, imbalanced": [
        ("ce", dict(loss="ce")),
        ("anyloss f1 L=73", dict(loss="anyloss")),
        ("anyloss balanced-accuracy L=73", dict(loss="anyloss", anyloss_metric="balanced-accuracy")),
        ("ce 20 epochs", dict(loss="ce", epochs=20.0)),
    ],
    "C: digits (1 task, 10 classes), optimizer": [
        ("adamw", dict(optimizer="adamw")),
        ("conda (update gap 2000)", dict(optimizer="conda")),
        ("conda (update gap 50)", dict(optimizer="conda", conda_update_gap=50)),
        ("conda lr 4e-3", dict(optimizer="conda", lr=4e-3)),
        ("adamw lr 4e-3", dict(optimizer="adamw", lr=4e-3)),
    ],
}
BASE = {
    "A: class-IL, replay, imbalanced": dict(scenario=SCEN, strategy="replay", replay_size=200, epochs=5.0),
    "B: task-IL, naive, imbalanced": dict(scenario=SCEN, il_mode="task", epochs=5.0),
    "C: digits (1 task, 10 classes), optimizer": dict(scenario="split-digits", n_tasks=1, epochs=3.0),
}


def command(values: dict) -> str:
    scen = values["scenario"]
    def flag(k, v):
        name = k.replace("_", "-")
        return (f"--{name}" if v else f"--no-{name}") if isinstance(v, bool) else f"--{name} {v}"

    flags = " ".join(flag(k, v) for k, v in values.items() if k not in ("scenario", "run_dir"))
    return f"crl run {scen} {flags}"


@torch.no_grad()
def test_logits(learner) -> tuple[torch.Tensor, torch.Tensor]:
    """Final test logits of every task (class-IL: all classes; task-IL: the task's two classes, labels 0/1)."""
    learner.network.eval()
    outs, ys = [], []
    for j, t in enumerate(learner.tasks):
        data = learner.test_data[j]
        logits = learner.network(data.inputs(slice(0, len(data)))).double()
        y = data.y
        if learner.cfg.il_mode == "task":
            cls = torch.tensor(sorted(int(c) for c in t.classes))
            logits, y = logits[:, cls], (y[:, None] == cls[None, :]).long().argmax(1)
        outs.append(logits)
        ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def one_run(values: dict, recal: bool, hcal_iterations: int) -> dict:
    cfg = make_config("supervised", **values)
    scenario, learner, hooks = prepare(cfg)
    summary = Runner(cfg, scenario, learner, hooks, run_directory(cfg, scenario)).run()
    eces = [v for k, v in summary.items() if k.endswith("/ece")]
    out = {"avg_final": summary["forgetting/avg_final"] if "forgetting/avg_final" in summary
           else statistics.mean(summary["final_scores"].values()),
           "ece_eval": statistics.mean(eces)}
    if recal:
        logits, y = test_logits(learner)
        fit, test = torch.arange(len(y)) % 2 == 0, torch.arange(len(y)) % 2 == 1
        t = recalibrate(logits[fit], y[fit], logits[test], y[test], "temperature")
        h = recalibrate(logits[fit], y[fit], logits[test], y[test], "h-calibration", iterations=hcal_iterations)
        out.update(ece_heldout=t["ece_before"], ece_temperature=t["ece_after"], ece_hcal=h["ece_after"],
                   temperature=t["calibrator"].temperature, acc_unchanged=t["acc_after"] == h["acc_after"] ==
                   t["acc_before"])
    return out


def ci(xs: list[float]) -> str:
    m = statistics.mean(xs)
    if len(xs) < 2:
        return f"{m:.3f}"
    half = T975.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))
    return f"{m:.3f} ± {half:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/exp_losses_conda_calibration")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--hcal-iterations", type=int, default=50)
    ap.add_argument("--groups", default="ABC", help="which groups to run (letters)")
    args = ap.parse_args()
    load_builtins()
    load_scenario_file(SCEN)
    results, t0 = {}, time.process_time()
    for group, arms in GROUPS.items():
        if group[0] not in args.groups:
            continue
        for label, extra in arms:
            rows = []
            for seed in range(args.seeds):
                values = {**BASE[group], **extra, "seed": seed, "mlp_hidden": "100,100", "run_dir": args.out,
                          "progress": False, "metrics_every": 0, "name": f"{group[0]}-{label.replace(' ', '_')}-seed{seed}"}
                print(command(values), flush=True)
                rows.append(one_run(values, recal=not group.startswith("C"), hcal_iterations=args.hcal_iterations))
            results[(group, label)] = rows
            print(group, "|", label, "|", {k: ci([r[k] for r in rows]) for k in rows[0] if isinstance(rows[0][k], float)},
                  flush=True)
    print(f"\nCPU time: {time.process_time() - t0:.0f} s\n")
    for (group, label), rows in results.items():
        keys = [k for k in rows[0] if isinstance(rows[0][k], float) and k != "temperature"]
        print(f"| {group} | {label} | " + " | ".join(f"{k}: {ci([r[k] for r in rows])}" for k in keys) + " |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"results_{args.groups}.json").write_text(json.dumps({f"{g} | {l}": r for (g, l), r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
