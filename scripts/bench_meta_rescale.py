"""Benchmark of ``--intervention meta-rescale`` on label noise (crl's STORM-like design,
Heck et al., AAAI 2025, arXiv 2412.12955; meta step after Meta-Weight-Net, Shu et al. 2019).

Task: scikit-learn digits (8x8, 10 classes; offline), 70/30 split stratified by seed, a
fraction ``--noise`` (default 40%) of the *training* labels flipped to a different class
drawn uniformly (symmetric noise); test labels stay clean. Model: crl's MLP torso
(``--hidden``, ReLU, no norm) + linear output, Adam. Each seed trains once without and once
with the rescaler (the same data, flips and initial weights), driving the hook exactly as a
learner does: ``losses = hook.transform_loss(run, per_sample_loss, batch)``.

Reported per variant (mean +- std over seeds): clean-label test accuracy at the end of
training; the rescaler's weights of flipped vs. clean training samples, (a) ``w final``:
evaluated on the whole training set after training (normalised to mean 1 over it), and
(b) ``w train``: the weights the learner actually used, averaged over the last 20% of
updates, and (c) at each 10% of training, (a)'s ratio w flipped / w clean (printed per run;
the table counts the checkpoints, of 10, where it is below 1, one count per seed).
A markdown table is printed. Variants: ``none``; the ``--meta-val`` modes ``sampled``,
``uniform``, ``weighted``, ``small-loss`` (``--keep`` sets its ``--meta-keep``); ``oracle``
(clean-label meta batches); the meta loss is ``ce`` unless a ``+mae`` suffix switches to
``--meta-loss mae`` (the intervention's defaults are ``small-loss`` and ``mae``). ``--meta-lr``,
``--meta-inner-lr``, ``--meta-weight-decay``, ``--meta-optimizer`` apply to every rescaler
variant (defaults: the intervention's, Meta-Weight-Net's rescaler settings).

    python scripts/bench_meta_rescale.py                       # 3 seeds, 2,000 updates
    python scripts/bench_meta_rescale.py --seeds 5 --variants none,sampled,uniform,weighted
    python scripts/bench_meta_rescale.py --variants none,oracle,sampled,uniform,weighted,small-loss,\
        uniform+mae,small-loss+mae,sampled+mae --meta-inner-lr 0 --meta-weight-decay 0  # the old settings
    python scripts/bench_meta_rescale.py --variants none,small-loss+mae,oracle  # docs/results/meta_rescale.md
"""
from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crl.interventions.meta_rescale import MetaRescale
from crl.nn.torsos.mlp import MLPTorso


def noisy_digits(seed: int, noise: float):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(ytr)) < noise
    noisy = ytr.copy()
    noisy[flipped] = (ytr[flipped] + rng.integers(1, 10, flipped.sum())) % 10  # any other class, uniformly
    t = lambda a, dt: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return (t(xtr, torch.float32), t(noisy, torch.long), t(flipped, torch.bool),
            t(xte, torch.float32), t(yte, torch.long), t(ytr, torch.long))


class Classifier(nn.Module):
    def __init__(self, d: int, hidden: list[int], classes: int):
        super().__init__()
        self.torso = MLPTorso(d, hidden, "none")
        self.output = nn.Linear(self.torso.out_features, classes)

    def forward(self, x):
        return self.output(self.torso(x))


class BenchLearner:
    """The meta-rescale learner contract on an in-memory classification set."""

    def __init__(self, x, y, hidden, lr, seed, clean_y=None):
        torch.manual_seed(seed)
        self.x, self.y = x, y
        self.val_y = y if clean_y is None else clean_y  # labels of sample_batch (the meta step's data)
        self.network = Classifier(x.shape[1], hidden, 10)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(seed + 1)

    def train_batch(self, size):
        idx = torch.randint(len(self.x), (size,), generator=self.gen)
        return (self.x[idx], self.y[idx], idx)

    def sample_batch(self, size):
        idx = torch.randint(len(self.x), (size,), generator=self.gen)
        return (self.x[idx], self.val_y[idx], idx)

    def per_sample_loss(self, batch, params=None):
        x, y, _ = batch
        net = self.network
        logits = net(x) if params is None else torch.func.functional_call(net, params, (x,))
        return F.cross_entropy(logits, y, reduction="none"), logits


def run_one(seed: int, variant: str, args) -> dict:
    xtr, ytr, flipped, xte, yte, ytrue = noisy_digits(seed, args.noise)
    mode, _, meta_loss = variant.partition("+")
    oracle = mode == "oracle"
    learner = BenchLearner(xtr, ytr, args.hidden, args.lr, seed, clean_y=ytrue if oracle else None)
    hook = None if mode == "none" else MetaRescale(val="uniform" if oracle else mode, keep=args.keep,
                                                   meta_loss=meta_loss or "ce", lr=args.meta_lr,
                                                   inner_lr=args.meta_inner_lr, weight_decay=args.meta_weight_decay,
                                                   optimizer=args.meta_optimizer)
    run = SimpleNamespace(learner=learner, logger=None, global_step=0)
    if hook is not None:
        hook.on_run_start(run)
    used_w = torch.zeros(len(xtr))
    used_n = torch.zeros(len(xtr))
    tail = int(args.steps * 0.8)
    checkpoints = {int(round(args.steps * k / 10)) - 1 for k in range(1, 11)}
    trace = []  # (w flipped, w clean) on the whole training set at each 10% of training
    t0 = time.perf_counter()
    for step in range(args.steps):
        batch = learner.train_batch(args.batch_size)
        learner.network.train()
        losses, _ = learner.per_sample_loss(batch)
        if hook is not None:
            losses = hook.transform_loss(run, losses, batch)
            if step >= tail:
                used_w.index_add_(0, batch[2], hook.last_weights.detach().float())
                used_n.index_add_(0, batch[2], torch.ones(len(batch[2])))
        learner.optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        learner.optimizer.step()
        if hook is not None:
            hook.after_optimizer_step(run)
            if step in checkpoints:
                w = hook.sample_weights(learner, (xtr, ytr, torch.arange(len(xtr))))
                trace.append((float(w[flipped].mean()), float(w[~flipped].mean())))
    seconds = time.perf_counter() - t0
    learner.network.eval()
    with torch.no_grad():
        acc = float((learner.network(xte).argmax(1) == yte).float().mean())
    out = {"acc": acc, "seconds": seconds}
    if hook is not None:
        w = hook.sample_weights(learner, (xtr, ytr, torch.arange(len(xtr))))
        out["w_final_flipped"] = float(w[flipped].mean())
        out["w_final_clean"] = float(w[~flipped].mean())
        seen = used_n > 0
        avg = used_w[seen] / used_n[seen]
        out["w_train_flipped"] = float(avg[flipped[seen]].mean())
        out["w_train_clean"] = float(avg[~flipped[seen]].mean())
        out["below"] = sum(f < c for f, c in trace)
        out["trace"] = " ".join(f"{f / c:.2f}" for f, c in trace)
    return out


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2000, help="updates per run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--noise", type=float, default=0.4)
    p.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[256, 256])
    p.add_argument("--variants", default="none,sampled,uniform,small-loss",
                   help="none (plain training), --meta-val modes (sampled, uniform, weighted, small-loss) and "
                        "oracle (meta batches with the clean labels: a check of the meta-gradient, not a "
                        "method); append '+mae' for --meta-loss mae, e.g. small-loss+mae")
    p.add_argument("--keep", type=float, default=0.5, help="--meta-keep of the small-loss variants")
    p.add_argument("--meta-lr", type=float, default=1e-3, help="--meta-lr of every rescaler variant")
    p.add_argument("--meta-inner-lr", type=float, default=0.1, help="--meta-inner-lr (0 = the learner's lr)")
    p.add_argument("--meta-weight-decay", type=float, default=1e-4, help="--meta-weight-decay of the rescaler")
    p.add_argument("--meta-optimizer", default="adam", choices=("adam", "sgd"), help="--meta-optimizer (sgd: Nesterov momentum 0.9)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results = {v: [] for v in variants}
    for seed in range(args.seeds):
        for v in variants:
            r = run_one(seed, v, args)
            results[v].append(r)
            print(f"seed {seed} {v:>8}: acc {r['acc']:.3f}  " + "  ".join(
                f"{k} {r[k]:.3f}" for k in r if k.startswith("w_")) + f"  ({r['seconds']:.1f} s)", flush=True)
            if "trace" in r:
                print(f"    w flipped / w clean at each 10% of training: {r['trace']}", flush=True)
    print(f"\nsklearn digits, {args.noise:.0%} symmetric label noise (train), {args.steps} updates of batch "
          f"{args.batch_size}, MLP {args.hidden}, Adam lr {args.lr}, {args.seeds} seeds (mean ± std)\n")
    print("| variant | clean test acc | w flipped (final) | w clean (final) | w flipped (train) | w clean (train) "
          "| checkpoints w flipped < w clean | s/run |")
    print("|---|---|---|---|---|---|---|---|")
    for v, rs in results.items():
        mode, _, meta_loss = v.partition("+")
        name = {"none": "no rescaling", "oracle": "oracle: clean-label meta batches (MWN check, not a method)"}.get(
            mode, f"meta-rescale --meta-val {mode}")
        name += f" --meta-loss {meta_loss or 'ce'}" if mode != "none" else ""
        name += f" --meta-keep {args.keep}" if mode == "small-loss" else ""
        if mode != "none":
            extra = {"--meta-lr": (args.meta_lr, 1e-3), "--meta-inner-lr": (args.meta_inner_lr, 0.1),
                     "--meta-weight-decay": (args.meta_weight_decay, 1e-4),
                     "--meta-optimizer": (args.meta_optimizer, "adam")}
            name += "".join(f" {k} {v:g}" if isinstance(v, float) else f" {k} {v}"
                            for k, (v, d) in extra.items() if v != d)
        col = lambda k: fmt([r[k] for r in rs if k in r])  # noqa: E731
        print(f"| {name} | {col('acc')} | {col('w_final_flipped')} | {col('w_final_clean')} | "
              f"{col('w_train_flipped')} | {col('w_train_clean')} | "
              f"{'-' if 'below' not in rs[0] else '/'.join(str(r['below']) for r in rs)} | "
              f"{fmt([r['seconds'] for r in rs], 1)} |")


if __name__ == "__main__":
    main()
