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

Split protocol (AdaB2N / mammoth, ``metrics_and_scenarios.md`` 3.4-3.5): task ``i`` holds the
classes ``order[i*k:(i+1)*k]`` with their train and test samples; the task label is ``i``.
``--class-order`` picks ``order`` (:func:`class_order`):

* ``seed`` (default): a permutation drawn with ``torch.randperm`` from ``--seed`` (identity with
  ``--no-shuffle-classes``);
* ``fixed``: the dataset's class ids in increasing order, mammoth's order (its ``seq-cifar10`` /
  ``seq-cifar100`` without ``--permute_classes``);
* ``adab2n``: AdaB2N's (Lyu et al., NeurIPS 2023; ``lvyilin/AdaB2N``
  ``datasets/utils/continual_dataset.py`` ``get_task_order``): the identity for ``--seed 0``,
  otherwise ``numpy.random.default_rng(42 + seed).permutation(C)``, which AdaB2N applies as a
  label map (class ``c`` becomes label ``perm[c]``; task ``i`` takes labels ``i*k..(i+1)*k-1``),
  so ``order = argsort(perm)``.

Labels stay the dataset's class ids (one head over all classes: class-incremental by default,
``--il-mode task`` for task-incremental); ``task.info["class_order"]`` lists the task's classes
in the order's sequence, the rank ER-ACE's mask uses (``agents/classifier.py``). A class count
that ``--n-tasks`` does not divide is an error, never a silent drop (unlike Avalanche's
``class_incremental_benchmark``).

Training augmentation (``--augment``): ``standard`` (default) is the published one of each
dataset: for CIFAR-10/100 ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``, as mammoth's
and AdaB2N's ``seq-cifar10/100`` (:class:`scenarios.datasets.CropFlip`, on the device, on the
joint batch of incoming and replayed samples); none for MNIST and digits (mammoth's
``seq-mnist`` has none). ``none`` turns it off. Test sets are never augmented.

Permuted MNIST (Goodfellow et al. 2013; GEM): permutations drawn from ``--seed``, every task
permuted (task 0 too); the permutation is applied per batch on the device (Avalanche applies
it per sample, 3x slower on tiny data, notes 4). ``--max-train-samples 10000`` gives the
10,000-image tasks of Kumar et al.'s suite. ``--cycles`` repeats the stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crl.errors import UserError
from crl.options import option
from crl.scenario import CycleOptions, Scenario, SupervisedTask, register_scenario
from scenarios.datasets import ArrayDataset, CropFlip, DataOptions, Dataset, Normalize, PixelPermute, load_for

CLASS_ORDERS = ("seed", "fixed", "adab2n")
AUGMENTS = ("standard", "none")


def class_order(num_classes: int, seed: int, kind: str | bool = "seed") -> list[int]:
    """The dataset's class ids in the order the tasks take them (module docstring). ``kind`` is one of
    :data:`CLASS_ORDERS`; ``True`` / ``False`` mean ``seed`` / ``fixed``."""
    kind = {True: "seed", False: "fixed"}.get(kind, kind) if isinstance(kind, bool) else kind
    if kind == "fixed":
        return list(range(num_classes))
    if kind == "adab2n":
        if seed == 0:
            return list(range(num_classes))
        label_of = np.random.default_rng(42 + seed).permutation(num_classes)  # class c -> AdaB2N label label_of[c]
        return np.argsort(label_of).tolist()  # the class holding label 0, 1, 2, ...
    if kind == "seed":
        return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    raise UserError(f"--class-order: unknown order '{kind}'; accepted: {', '.join(CLASS_ORDERS)}")


def augmentation(ds: Dataset, kind: str):
    """``--augment``: the dataset's published training augmentation (``standard``) or none."""
    if kind not in AUGMENTS:
        raise UserError(f"--augment: unknown augmentation '{kind}'; accepted: {', '.join(AUGMENTS)}")
    if kind == "none" or ds.name not in ("cifar10", "cifar100"):
        return None
    norm = ds.train.transform
    return CropFlip.for_normalized(norm, 4) if isinstance(norm, Normalize) else CropFlip(4)


def with_augment(ds: Dataset, augment) -> Dataset:
    """``ds`` whose training set carries ``augment`` (the test set never does)."""
    train = ArrayDataset(ds.train.x, ds.train.y, ds.train.transform, augment)
    return Dataset(ds.name, train, ds.test, ds.num_classes, ds.class_names)


def split_tasks(ds: Dataset, n_tasks: int, seed: int, shuffle: bool | str, option: str = "--n-tasks") -> list[SupervisedTask]:
    """One task per group of ``num_classes / n_tasks`` classes (error if that is not an integer);
    ``shuffle`` is a :func:`class_order` kind (``True`` / ``False``: ``seed`` / ``fixed``)."""
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
                                          "dataset": ds.name, "class_order": order[i * k:(i + 1) * k]}))
    return tasks


@dataclass
class SplitOptions:
    """Class order and training augmentation of the split scenarios."""

    shuffle_classes: bool = option(True, "split scenarios, --class-order seed: class order shuffled by --seed (else "
                                         "0, 1, 2, ...)")
    class_order: str = option("seed", "split scenarios: seed (a permutation from --seed), fixed (0, 1, 2, ...: "
                                      "mammoth's), adab2n (AdaB2N's: identity for seed 0, else "
                                      "default_rng(42 + seed))", choices=CLASS_ORDERS)
    augment: str = option("standard", "training augmentation: standard (CIFAR: RandomCrop(32, padding 4) + "
                                      "horizontal flip, also on replayed samples; MNIST/digits: none) or none",
                          choices=AUGMENTS)


def order_kind(cfg) -> str:
    """``--class-order``, with ``--no-shuffle-classes`` making ``seed`` the identity."""
    return "fixed" if cfg.class_order == "seed" and not cfg.shuffle_classes else cfg.class_order


def _split(name: str, dataset: str, default_tasks: int):
    def build(cfg) -> Scenario:
        ds = load_for(cfg, dataset)
        ds = with_augment(ds, augmentation(ds, cfg.augment))
        tasks = split_tasks(ds, cfg.n_tasks or default_tasks, cfg.seed, order_kind(cfg))
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
