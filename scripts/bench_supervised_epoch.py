"""Epoch time of crl's supervised learner vs a plain PyTorch loop on the same data and model.

Both sides train the same network (the learner's ``ClassifierNet``, copied at initialisation)
with the same optimizer settings on the same in-memory uint8 images, normalised per batch on
the device, in shuffled minibatches (``drop_last=False``). The crl side is
``ClassifierLearner.train(task, steps_per_epoch)`` driven by a real :class:`crl.runner.Runner`
(its hooks are the run's default hooks: forgetting, TensorBoard views, and plasticity metrics
only with ``--metrics-every > 0``); the plain side is::

    for idx in torch.randperm(n).split(batch):
        loss = F.cross_entropy(net(normalize(X[idx])), Y[idx])
        opt.zero_grad(); loss.backward(); opt.step()

Epochs alternate between the two (after one warm-up epoch each); the ratio is
median(crl) / median(plain). Target (issue 7): <= 1.2.

    python scripts/bench_supervised_epoch.py                       # MLP on MNIST-sized data, small CNN on CIFAR-sized
    python scripts/bench_supervised_epoch.py --device cuda --epochs 7
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import crl
from crl.api import prepare
from crl.config import make_config
from crl.runner import Runner
from scenarios.datasets import ArrayDataset, Normalize


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name, shape, n, torso, mlp_hidden, batch, epochs, device_name, metrics_every, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    tf = Normalize(1 / 255.0, (0.5,) * shape[0], (0.25,) * shape[0])
    data = ArrayDataset(x, y, tf)
    scenario = crl.Scenario(name, [crl.SupervisedTask("t0", data, ArrayDataset(x[:512], y[:512], tf), list(range(10)),
                                                      steps=10**9)])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config("supervised", scenario=name, torso=torso, mlp_hidden=mlp_hidden, batch_size=batch,
                          device=device_name, metrics_every=metrics_every, run_dir=tmp, progress=False, seed=seed)
        scenario, learner, hooks = prepare(cfg, scenario)
        runner = Runner(cfg, scenario, learner, hooks, tmp + "/run")
        hooks.on_run_start(runner)
        hooks.on_task_start(runner, 0, scenario.tasks[0])
        device = learner.device
        net = copy.deepcopy(learner.network)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        X, Y = learner.train_data[0].x, learner.train_data[0].y  # the same device tensors
        steps = -(-n // batch)
        pg = torch.Generator().manual_seed(seed + 1)

        def plain_epoch():
            net.train()
            for idx in torch.randperm(n, generator=pg).to(device).split(batch):
                loss = F.cross_entropy(net(tf(X[idx])), Y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        def crl_epoch():
            learner.train(scenario.tasks[0], steps)
            runner.global_step += steps
            runner.step_in_task += steps

        times = {"plain": [], "crl": []}
        for i in range(epochs + 1):
            for label, fn in (("plain", plain_epoch), ("crl", crl_epoch)):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                if i > 0:  # epoch 0 is warm-up
                    times[label].append(time.perf_counter() - t0)
        runner.logger.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"name": name, "device": str(device), "n": n, "batch": batch, "steps_per_epoch": steps,
            "plain_median_s": med["plain"], "crl_median_s": med["crl"], "plain_min_s": min(times["plain"]),
            "crl_min_s": min(times["crl"]), "ratio": med["crl"] / med["plain"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=5, help="measured epochs per side (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fair on a shared machine)")
    ap.add_argument("--metrics-every", type=int, default=0, help="plasticity metrics cadence of the crl side")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply dataset sizes (GPU: try 4)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [
        ("mlp-mnist-size", (1, 28, 28), int(20000 * args.scale), "mlp", "256,256", 128),
        ("mlp-mnist-size-b32", (1, 28, 28), int(10000 * args.scale), "mlp", "256,256", 32),
        ("small_cnn-cifar-size", (3, 32, 32), int(4000 * args.scale), "small_cnn", "256", 64),
    ]
    print(f"{'case':24s} {'device':6s} {'n':>6s} {'batch':>5s} {'plain s/epoch':>13s} {'crl s/epoch':>12s} {'ratio':>6s}")
    for case in cases:
        r = bench(*case, epochs=args.epochs, device_name=args.device, metrics_every=args.metrics_every)
        print(f"{r['name']:24s} {r['device']:6s} {r['n']:6d} {r['batch']:5d} {r['plain_median_s']:13.4f} "
              f"{r['crl_median_s']:12.4f} {r['ratio']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
