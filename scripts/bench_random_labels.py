"""Random-label memorisation: does a plain MLP lose trainability over tasks, and does NaP keep it?

Published direction: on continual random-label tasks a plain MLP fits each new labelling worse
than the last (Kumar et al., "Maintaining Plasticity in Continual Learning via Regenerative
Regularization", arXiv 2308.11958: Random-Label MNIST/CIFAR; Lyle et al., "Normalization and
effective learning rates in reinforcement learning", NeurIPS 2024, arXiv 2407.01800: growing
dead-ReLU fraction with Adam), while Normalize-and-Project (``--norm nap``: LayerNorm before
each ReLU + projection of the normalised layers' weights to their initial norm) keeps it.

Protocol here (offline): ``random-labels`` on ``--dataset digits`` (scikit-learn; or ``mnist``
with ``--data-dir``), a fixed subset of 1,200 training images (Kumar et al.'s size), ``--tasks``
tasks of ``--epochs`` epochs each at batch 16 (Kumar et al.: 50 tasks x 400 epochs; reduced to
fit a 2-core CPU), MLP ``--hidden`` with Adam lr 1e-3 (crl's supervised preset), once with
``--norm none`` and once with ``--norm nap``, same seed. At the end of every task: training
accuracy on that task's labels (``R[i, i]``: the eval set of random-labels is the training set)
and ReDo dormant fraction (Sokar et al. 2023; ``crl.metrics.plasticity.overall_dormant_fraction``,
unit-weighted over hidden layers, output excluded) at tau 0 (dead units) and 0.025 on the first
256 training inputs.

    python scripts/bench_random_labels.py                   # ~4 min per arm on 2 CPU cores
    python scripts/bench_random_labels.py --tasks 50 --epochs 400 --dataset mnist --data-dir data
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from crl.api import prepare
from crl.config import make_config
from crl.hooks import Hook
from crl.metrics.plasticity import overall_dormant_fraction
from crl.runner import Runner


class TaskEndProbe(Hook):
    name = "bench-probe"

    def __init__(self):
        self.rows = []

    @torch.no_grad()
    def on_task_end(self, run, task_index, task):
        learner = run.learner
        net = learner.network
        acts = {}
        handles = [m.register_forward_hook(lambda mod, inp, out, n=name: acts.__setitem__(n, out.detach()))
                   for name, m in net.hidden_activations()]
        was = net.training
        net.eval()
        net(learner.probe_batch(task, 256))
        net.train(was)
        for h in handles:
            h.remove()
        self.rows.append({"task": task_index, "train_acc": float(run.eval_matrix[task_index, task_index]),
                          "dormant_tau0": overall_dormant_fraction(acts, 0.0),
                          "dormant_tau0.025": overall_dormant_fraction(acts, 0.025)})


def run_arm(norm: str, args, root: str) -> list[dict]:
    cfg = make_config("supervised", scenario="random-labels", dataset=args.dataset, data_dir=args.data_dir,
                      max_train_samples=args.samples, n_tasks=args.tasks, epochs=args.epochs, batch_size=16,
                      mlp_hidden=args.hidden, norm=norm, seed=args.seed, run_dir=root, name=norm, progress=False,
                      metrics_every=0, device=args.device, log_every=1000, eval_batch_size=2048)
    scenario, learner, hooks = prepare(cfg)
    probe = TaskEndProbe()
    hooks.append(probe)
    Runner(cfg, scenario, learner, hooks, f"{root}/{norm}").run()
    return probe.rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--samples", type=int, default=1200)
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--epochs", type=float, default=40)
    ap.add_argument("--hidden", default="256,256")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--norms", default="none,nap", help="arms to run")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {}
    with tempfile.TemporaryDirectory() as root:
        for norm in args.norms.split(","):
            t0 = time.time()
            rows = run_arm(norm, args, root)
            out[norm] = rows
            if len(rows) < args.tasks:
                print(f"  WARNING: --norm {norm} stopped early after {len(rows)} of {args.tasks} tasks", flush=True)
            print(f"--norm {norm}: {time.time() - t0:.0f} s", flush=True)
            print("  task  train_acc  dormant_tau0  dormant_tau0.025")
            for r in rows:
                if r["task"] in (0, 1, 2) or r["task"] % 5 == 4 or r["task"] == len(rows) - 1:
                    print(f"  {r['task']:4d}  {r['train_acc']:9.4f}  {r['dormant_tau0']:12.4f}  "
                          f"{r['dormant_tau0.025']:16.4f}", flush=True)
    print(f"settings: random-labels on {args.dataset} ({args.samples} images), {args.tasks} tasks x {args.epochs} "
          f"epochs, batch 16, MLP {args.hidden}, Adam lr 1e-3, seed {args.seed}")
    for norm, rows in out.items():
        first, last = rows[0], rows[-1]
        print(f"{norm:5s} first-task train acc {first['train_acc']:.4f} -> final-task {last['train_acc']:.4f}; "
              f"dead units {first['dormant_tau0']:.4f} -> {last['dormant_tau0']:.4f}; "
              f"dormant(0.025) {first['dormant_tau0.025']:.4f} -> {last['dormant_tau0.025']:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
