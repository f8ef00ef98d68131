"""Class-split and permuted streams, written with the public API (``crl.SupervisedTask``).

============== ========= ====================================================================
name           default   tasks
============== ========= ====================================================================
split-cifar10  5 x 2     CIFAR-10 classes split into ``--n-tasks`` disjoint groups
split-cifar100 10 x 10   CIFAR-100 (fine labels)
split-mnist    5 x 2     MNIST (IDX files)
split-digits   5 x 2     scikit-learn's digits: the offline default, no download
permuted-mnist 10 tasks  MNIST, every task a new fixed pixel permutation, all 10 classes
============== ========= ====================================================================

Split protocol (AdaB2N / mammoth, ``metrics_and_scenarios.md`` 3.4-3.5): class order
shuffled by ``--seed`` unless ``--no-shuffle-classes``; task ``i`` holds classes
``order[i*k:(i+1)*k]`` with their train and test samples; the task label is ``i``. Labels
stay the dataset's class ids (one head over all classes: class-incremental by default,
``--il-mode task`` for task-incremental). A class count that ``--n-tasks`` does not divide is
an error, never a silent drop (unlike Avalanche's ``class_incremental_benchmark``).

Permuted MNIST (Goodfellow et al. 2013; GEM): permutations drawn from ``--seed``, every task
permuted (task 0 too); the permutation is applied per batch on the device (Avalanche applies
it per sample, 3x slower on tiny data, notes 4). ``--max-train-samples 10000`` gives the
10,000-image tasks of Kumar et al.'s suite. ``--cycles`` repeats the stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crl.errors import UserError
from crl.options import option
from crl.scenario import CycleOptions, Scenario, SupervisedTask, register_scenario
from scenarios.datasets import ArrayDataset, DataOptions, Dataset, PixelPermute, load_for


def class_order(num_classes: int, seed: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(num_classes))
    return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()


def split_tasks(ds: Dataset, n_tasks: int, seed: int, shuffle: bool, option: str = "--n-tasks") -> list[SupervisedTask]:
    """One task per group of ``num_classes / n_tasks`` classes (error if that is not an integer)."""
    C = ds.num_classes
    if n_tasks < 1 or C % n_tasks:
        divisors = [d for d in range(1, C + 1) if C % d == 0]
        raise UserError(f"{option}: the {C} classes of {ds.name} cannot be split evenly into {n_tasks} tasks; "
                        f"accepted: {', '.join(map(str, divisors))}")
    order = class_order(C, seed, shuffle)
    k = C // n_tasks
    tasks = []
    for i in range(n_tasks):
        classes = sorted(order[i * k:(i + 1) * k])
        cls = torch.tensor(classes)
        train = ds.train.subset(torch.nonzero(torch.isin(ds.train.y, cls)).flatten())
        test = ds.test.subset(torch.nonzero(torch.isin(ds.test.y, cls)).flatten())
        tasks.append(SupervisedTask(f"task{i}", train, test, classes, task_label=i,
                                    info={"classes": classes, "class_names": [ds.class_names[c] for c in classes],
                                          "dataset": ds.name}))
    return tasks


@dataclass
class SplitOptions:
    """Class order of the split scenarios."""

    shuffle_classes: bool = option(True, "split scenarios: class order shuffled by --seed (else 0, 1, 2, ...)")


def _split(name: str, dataset: str, default_tasks: int):
    def build(cfg) -> Scenario:
        ds = load_for(cfg, dataset)
        tasks = split_tasks(ds, cfg.n_tasks or default_tasks, cfg.seed, cfg.shuffle_classes)
        return Scenario(name, tasks, cycles=cfg.cycles)

    return build


for _name, _ds, _n, _help in (
    ("split-cifar10", "cifar10", 5, "Split CIFAR-10: 5 tasks x 2 classes (CIFAR-10 in --data-dir, downloaded on first use)"),
    ("split-cifar100", "cifar100", 10, "Split CIFAR-100: 10 tasks x 10 classes (CIFAR-100 in --data-dir, downloaded on first use)"),
    ("split-mnist", "mnist", 5, "Split MNIST: 5 tasks x 2 classes (MNIST in --data-dir/MNIST/raw, downloaded on first use)"),
    ("split-digits", "digits", 5, "Split digits: 5 tasks x 2 classes of scikit-learn's 8x8 digits (offline)"),
):
    register_scenario(_name, _help, kind="supervised", options=(DataOptions, SplitOptions, CycleOptions))(
        _split(_name, _ds, _n))


def permuted_tasks(ds: Dataset, n_tasks: int, seed: int, keep_first: bool = False,
                   prefix: str = "perm") -> list[SupervisedTask]:
    """``n_tasks`` tasks over all classes, task ``i`` seeing inputs under permutation ``i``
    (the identity for task 0 when ``keep_first``)."""
    if n_tasks < 1:
        raise UserError(f"--n-tasks: must be >= 1, got {n_tasks}")
    gen = torch.Generator().manual_seed(seed)
    numel = int(torch.tensor(ds.input_shape).prod())
    classes = list(range(ds.num_classes))
    tasks = []
    for i in range(n_tasks):
        perm = torch.arange(numel) if (keep_first and i == 0) else torch.randperm(numel, generator=gen)
        tf = PixelPermute(perm, ds.train.transform)
        # every task shares the input tensors (the learner keeps one device copy)
        train = ArrayDataset(ds.train.x, ds.train.y, tf)
        test = ArrayDataset(ds.test.x, ds.test.y, PixelPermute(perm, ds.test.transform))
        tasks.append(SupervisedTask(f"{prefix}{i}", train, test, classes, task_label=i,
                                    info={"dataset": ds.name, "permutation_seed": seed, "identity": keep_first and i == 0}))
    return tasks


@register_scenario("permuted-mnist", "Permuted MNIST: --n-tasks (10) tasks, a new pixel permutation each, all "
                                     "classes (MNIST in --data-dir/MNIST/raw, downloaded on first use)", kind="supervised",
                   options=(DataOptions, CycleOptions))
def permuted_mnist(cfg) -> Scenario:
    ds = load_for(cfg, "mnist")
    return Scenario("permuted-mnist", permuted_tasks(ds, cfg.n_tasks or 10, cfg.seed), cycles=cfg.cycles)
