"""AdaB2N vs BatchNorm in online class-incremental learning with replay (direction of Lyu et al. 2023).

Published claim (AdaB2N, NeurIPS 2023, arXiv 2310.08855, on mammoth): in online CL (one pass,
batch 10 + replay batch 10, reservoir memory, SGD lr 0.03, reduced ResNet-18) AdaB2N's final
average class-IL accuracy beats BatchNorm's on Split CIFAR-10/100 and Mini-ImageNet.

Here, offline: ``split-digits`` (scikit-learn digits, 5 tasks x 2 classes, class order shuffled
by seed; or ``--scenario split-mnist --data-dir DIR`` when MNIST is present), the same
protocol (``--online --batch-size 10``, replay batch 10, SGD lr 0.03, no momentum/wd), for each
seed once with ``--norm batchnorm`` and once with ``--norm adab2n``; everything else equal
(same seed -> same class order, data order and initial weights except the norm layers' extra
task prior). Reported: final average accuracy ``mean_j R[T-1, j]`` (class-IL), mean +- std
over seeds, and the paired per-seed difference.

AdaB2N settings are fixed before looking at any result (the official code has no defaults;
grid kappa {0.1, 0.4, 0.7, 1.0}, lambda {0.01, 0.1, 1, 10}, ada_t0 {0, 1}): ``--kappa 0.7
--lam 0.1 --t0 0`` by default, with crl's renormalised task weights (see
crl/nn/norms/adab2n.py). kappa is set on the built layers (no config flag for it yet).

    python scripts/bench_adab2n_digits.py                       # 5 seeds, resnet18 (nf 20) and small_cnn
    python scripts/bench_adab2n_digits.py --strategy er-ace --torsos resnet18
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch

from crl.api import prepare
from crl.config import make_config
from crl.runner import Runner


def one_run(scenario, torso, norm, seed, args, root):
    cfg = make_config("supervised", scenario=scenario, agent="classifier", torso=torso, norm=norm, seed=seed,
                      online=True, batch_size=10, replay_batch_size=10, replay_size=args.replay_size,
                      strategy=args.strategy, optimizer="sgd", lr=0.03, weight_decay=0.0, adab2n_lambda=args.lam,
                      adab2n_t0=args.t0, data_dir=args.data_dir, run_dir=root, name=f"{torso}-{norm}-{seed}",
                      progress=False, metrics_every=0, device=args.device, mlp_hidden="100,100")
    scenario_obj, learner, hooks = prepare(cfg)
    for m in learner.network.modules():
        if hasattr(m, "set_task_ids") and hasattr(m, "kappa"):
            m.kappa = args.kappa
    summary = Runner(cfg, scenario_obj, learner, hooks, f"{root}/{cfg.name}").run()
    R = np.array(summary["eval_matrix"])
    return float(R[-1].mean()), R


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="split-digits")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--torsos", default="resnet18,small_cnn")
    ap.add_argument("--strategy", default="replay", choices=("replay", "er-ace", "der++"))
    ap.add_argument("--replay-size", type=int, default=200)
    ap.add_argument("--kappa", type=float, default=0.7)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--t0", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="", help="write all results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as root:
        for torso in args.torsos.split(","):
            for norm in ("batchnorm", "adab2n"):
                accs = []
                for seed in range(args.seeds):
                    acc, _ = one_run(args.scenario, torso, norm, seed, args, root)
                    accs.append(acc)
                results[(torso, norm)] = accs
                print(f"{torso:10s} {norm:9s} final avg acc {statistics.mean(accs):.4f} +- "
                      f"{statistics.stdev(accs) if len(accs) > 1 else 0:.4f}  seeds {[round(a, 4) for a in accs]}",
                      flush=True)
            diff = np.array(results[(torso, "adab2n")]) - np.array(results[(torso, "batchnorm")])
            print(f"{torso:10s} adab2n - batchnorm: {diff.mean():+.4f} +- {diff.std(ddof=1) if len(diff) > 1 else 0:.4f}"
                  f" (paired over {len(diff)} seeds; adab2n better in {(diff > 0).sum()}/{len(diff)})", flush=True)
    print(f"settings: {args.scenario}, online, batch 10 + replay 10, memory {args.replay_size}, strategy "
          f"{args.strategy}, SGD lr 0.03, kappa {args.kappa}, lambda {args.lam}, ada_t0 {args.t0}; "
          f"{time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({f"{k[0]}/{k[1]}": v for k, v in results.items()}, fh, indent=2)


if __name__ == "__main__":
    main()
