"""Incremental CIFAR-100 (``crl run incremental-cifar100``): Dohare et al.'s continual CIFAR-100,
classes added in increments to one growing training set.

Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood, Sutton, "Loss of plasticity in deep continual
learning", Nature 632, 2024; official code ``shibhansh/loss-of-plasticity``,
``lop/incremental_cifar/incremental_cifar_experiment.py``: the 100 classes in a random order,
training starts with the first 5 and adds 5 more every 200 epochs (20 increments, 4,000
epochs); at every increment the network trains on **all** training images of the classes
introduced so far and is tested on their test images; one ResNet-18 head over the 100 classes
whose logits are restricted to the classes introduced so far, in training and in testing
(``self.net.forward(x)[:, self.all_classes[:self.current_num_classes]]``).

Here: task ``k`` (``inc<k>``) holds the train and test samples of the first
``--class-increment * (k + 1)`` classes of the order (``--class-order``, ``--seed``; see
``scenarios/split.py``), so its ``classes`` are every class introduced so far; ``--n-tasks``
keeps the first N increments (0 = all, 100 / ``--class-increment``). The scenario's preset,
``incremental-cifar100``, sets ``--il-mode task``: the classifier then masks the logits to the
sample's task classes in training and evaluation, which for this scenario are exactly the
classes introduced so far, Dohare et al.'s restriction; and ``--torso resnet18``,
``--optimizer sgd --lr 0.1 --weight-decay 0.0005 --batch-size 90 --epochs 200`` (their
``cfg/base_deep_learning_system.json`` and batch size), with their SGD momentum 0.9
(``--sgd-momentum 0.9``). Not reproduced: their 50-images-per-class validation split and
early stopping, their data augmentation (``--augment standard`` applies crl's crop + flip).
The task tensors are slices of one class-sorted copy of the data (no per-task copies).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crl.config import PRESETS
from crl.errors import UserError
from crl.options import option
from crl.scenario import CycleOptions, Scenario, SupervisedTask, register_scenario
from scenarios.datasets import ArrayDataset, DataOptions, load_for
from scenarios.split import SplitOptions, augmentation, class_order, order_kind

PRESETS.setdefault("incremental-cifar100", {
    **PRESETS["supervised"], "torso": "resnet18", "il_mode": "task", "optimizer": "sgd", "lr": 0.1,
    "weight_decay": 5e-4, "sgd_momentum": 0.9, "batch_size": 90, "epochs": 200.0,
})


@dataclass
class IncrementalOptions:
    """Size of each increment of incremental CIFAR-100."""

    class_increment: int = option(5, "incremental-cifar100: classes added at each task (Dohare et al.: 5)",
                                  check="positive")


def _sorted_by_rank(ds: ArrayDataset, rank: torch.Tensor):
    """The samples of ``ds`` sorted by their class's rank in the order (stable), and the cumulative count
    of samples up to each rank."""
    idx = torch.argsort(rank[ds.y], stable=True)
    counts = torch.bincount(rank[ds.y], minlength=len(rank)).cumsum(0)
    return ds.x[idx], ds.y[idx], counts


def incremental_tasks(ds, increment: int, order: list[int], n_tasks: int = 0, augment=None) -> list[SupervisedTask]:
    """Task ``k``: every sample of the first ``increment * (k + 1)`` classes of ``order``."""
    C = ds.num_classes
    if C % increment:
        divisors = [d for d in range(1, C + 1) if C % d == 0]
        raise UserError(f"--class-increment: the {C} classes of {ds.name} cannot be added in equal increments of "
                        f"{increment}; accepted: {', '.join(map(str, divisors))}")
    total = C // increment
    if n_tasks > total:
        raise UserError(f"--n-tasks: incremental {ds.name} has {total} increments of {increment} classes; got {n_tasks}")
    rank = torch.empty(C, dtype=torch.long)
    rank[torch.tensor(order)] = torch.arange(C)
    xtr, ytr, ctr = _sorted_by_rank(ds.train, rank)
    xte, yte, cte = _sorted_by_rank(ds.test, rank)
    tasks = []
    for k in range(n_tasks or total):
        top = increment * (k + 1)
        classes = order[:top]
        ntr, nte = int(ctr[top - 1]), int(cte[top - 1])
        train = ArrayDataset(xtr[:ntr], ytr[:ntr], ds.train.transform, augment)
        test = ArrayDataset(xte[:nte], yte[:nte], ds.test.transform)
        tasks.append(SupervisedTask(f"inc{k}", train, test, sorted(classes), task_label=k,
                                    info={"dataset": ds.name, "class_order": classes, "new_classes": order[top - increment:top]}))
    return tasks


@register_scenario("incremental-cifar100", "Dohare et al. 2024's incremental CIFAR-100: 5 new classes per task, "
                                           "trained on every class so far (CIFAR-100 in --data-dir)",
                   kind="supervised", preset="incremental-cifar100",
                   options=(DataOptions, SplitOptions, IncrementalOptions, CycleOptions))
def incremental_cifar100(cfg) -> Scenario:
    ds = load_for(cfg, "cifar100")
    order = class_order(ds.num_classes, cfg.seed, order_kind(cfg))
    tasks = incremental_tasks(ds, cfg.class_increment, order, cfg.n_tasks, augmentation(ds, cfg.augment))
    return Scenario("incremental-cifar100", tasks, cycles=cfg.cycles)
