"""Plasticity benchmarks over any dataset (``--dataset digits|mnist|cifar10|cifar100``).

============== ===================================================================================
random-labels  the same inputs every task, each task a fresh uniformly random label per input
               (Kumar et al.'s Random-Label MNIST/CIFAR: 1,200 images, 50 tasks, 400 epochs,
               batch 16 -> ``--max-train-samples 1200 --n-tasks 50 --epochs 400 --batch-size 16``;
               Lyle et al.'s "labels re-randomised every K steps" -> ``--relabel-every K``).
               Evaluated on the task's own training set (memorisation = trainability).
label-shuffle  task 0 has the true labels; each later task re-draws a fraction ``--label-shuffle-eps``
               of the previous task's labels uniformly at random (Lyle et al. 2024, "Disentangling
               the Causes of Plasticity Loss", arXiv 2402.18762: a fraction eps of CIFAR-10 labels
               re-randomised; per task here, not per iteration). Evaluated on the training set.
pixel-permute  task 0 the original inputs, each later task a new fixed pixel permutation; all
               classes; evaluated on the permuted test set.
warm-start     Ash & Adams 2020 ("On Warm-Starting Neural Network Training", NeurIPS 2020, arXiv
               1910.08475), its two arms: ``--arm warm`` (default) two tasks, ``part`` (a fixed
               ``--warm-start-fraction`` of the training set), then ``all``; ``--arm cold`` the
               task ``all`` alone, from a fresh initialisation (their randomly initialised
               baseline trained on the full data). Both evaluated on the test set; the arms'
               ``eval/all/score`` compare warm with cold start at the same budget.
============== ===================================================================================

Tasks default to ``--n-tasks 10`` (warm-start: 2). Labels and permutations are drawn from
``--seed``; random-label tasks share the input tensor (one device copy). ``--relabel-every K``
sets each relabelled task's budget to K updates (else ``--epochs`` passes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crl.errors import UserError
from crl.options import option
from crl.scenario import CycleOptions, Scenario, SupervisedTask, register_scenario
from scenarios.datasets import ArrayDataset, DataOptions, load_for
from scenarios.split import permuted_tasks


@dataclass
class PlasticityOptions:
    """The offline plasticity benchmarks' dataset and task changes."""

    dataset: str = option("digits", "dataset of the plasticity scenarios: digits (scikit-learn, offline), mnist, "
                                    "cifar10, cifar100 (read from --data-dir)",
                                    choices=("digits", "mnist", "cifar10", "cifar100"))
    label_shuffle_eps: float = option(0.2, "label-shuffle: fraction of labels re-drawn at each task", check="unit")
    relabel_every: int = option(0, "random-labels / label-shuffle: updates per task, i.e. labels re-drawn every K "
                                   "updates (0 = use --epochs)", check="non_negative")
    warm_start_fraction: float = option(0.5, "warm-start: fraction of the training data of the first task",
                                             check="unit")
    arm: str = option("warm", "warm-start: warm (train on the fraction, then on all data) or cold (all data from "
                              "a fresh initialisation; Ash & Adams 2020)", choices=("warm", "cold"))


OPTIONS = (DataOptions, PlasticityOptions, CycleOptions)


def _relabelled(ds, y: torch.Tensor) -> ArrayDataset:
    return ArrayDataset(ds.train.x, y, ds.train.transform)


def _steps(cfg) -> int | None:
    if cfg.relabel_every < 0:
        raise UserError(f"--relabel-every: must be >= 0, got {cfg.relabel_every}")
    return cfg.relabel_every or None


@register_scenario("random-labels", "same inputs, new random labels every task (--relabel-every K updates or "
                                    "--epochs); trainability on --dataset", kind="supervised",
                   options=OPTIONS)
def random_labels(cfg) -> Scenario:
    ds = load_for(cfg, cfg.dataset)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, C = len(ds.train), ds.num_classes
    tasks = []
    for i in range(cfg.n_tasks or 10):
        data = _relabelled(ds, torch.randint(C, (n,), generator=gen))
        tasks.append(SupervisedTask(f"labels{i}", data, data, list(range(C)), task_label=i, steps=_steps(cfg),
                                    info={"dataset": ds.name, "eval_on": "train"}))
    return Scenario("random-labels", tasks, cycles=cfg.cycles)


@register_scenario("label-shuffle", "true labels, then a fraction --label-shuffle-eps of them re-drawn at every "
                                    "task; trainability on --dataset", kind="supervised",
                   options=OPTIONS)
def label_shuffle(cfg) -> Scenario:
    eps = cfg.label_shuffle_eps
    if not 0.0 <= eps <= 1.0:
        raise UserError(f"--label-shuffle-eps: must be in [0, 1], got {eps}")
    ds = load_for(cfg, cfg.dataset)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, C = len(ds.train), ds.num_classes
    y = ds.train.y.clone()
    tasks = []
    for i in range(cfg.n_tasks or 10):
        if i > 0:
            k = int(round(eps * n))
            idx = torch.randperm(n, generator=gen)[:k]
            y = y.clone()
            y[idx] = torch.randint(C, (k,), generator=gen)
        data = _relabelled(ds, y)
        tasks.append(SupervisedTask(f"shuffle{i}", data, data, list(range(C)), task_label=i, steps=_steps(cfg),
                                    info={"dataset": ds.name, "eps": eps, "eval_on": "train"}))
    return Scenario("label-shuffle", tasks, cycles=cfg.cycles)


@register_scenario("pixel-permute", "original inputs, then a new pixel permutation every task; all classes of "
                                    "--dataset", kind="supervised",
                   options=OPTIONS)
def pixel_permute(cfg) -> Scenario:
    ds = load_for(cfg, cfg.dataset)
    return Scenario("pixel-permute", permuted_tasks(ds, cfg.n_tasks or 10, cfg.seed, keep_first=True),
                    cycles=cfg.cycles)


@register_scenario("warm-start", "train on --warm-start-fraction of --dataset, then on all of it; --arm cold: all "
                                 "of it from scratch (Ash & Adams 2020)", kind="supervised",
                   options=OPTIONS)
def warm_start(cfg) -> Scenario:
    frac = cfg.warm_start_fraction
    if not 0.0 < frac < 1.0:
        raise UserError(f"--warm-start-fraction: must be in (0, 1), got {frac}")
    ds = load_for(cfg, cfg.dataset)
    n = len(ds.train)
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))[:max(1, int(round(frac * n)))]
    classes = list(range(ds.num_classes))
    part = SupervisedTask("part", ds.train.subset(keep.sort().values), ds.test, classes, task_label=0,
                          info={"dataset": ds.name, "fraction": frac})
    full = SupervisedTask("all", ds.train, ds.test, classes, task_label=1,
                          info={"dataset": ds.name, "fraction": 1.0, "arm": cfg.arm})
    if cfg.arm == "cold":
        return Scenario("warm-start", [full], cycles=cfg.cycles)
    if cfg.arm != "warm":
        raise UserError(f"--arm: unknown arm '{cfg.arm}'; accepted: warm, cold")
    return Scenario("warm-start", [part, full], cycles=cfg.cycles)
