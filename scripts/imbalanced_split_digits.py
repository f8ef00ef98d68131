"""A class-imbalanced Split digits for ``crl run scripts/imbalanced_split_digits.py``.

scikit-learn's 8x8 digits (offline), split as ``split-digits`` (5 tasks x 2 classes, class order from
``--seed``); in each task's *training* set only every ``KEEP``-th sample of the task's second class
(in the scenario's class order) is kept, so each task is about 10:1 imbalanced. Test sets stay
balanced, so accuracy on them weighs both classes equally. Used by
docs/results/losses_conda_calibration.md.
"""
from __future__ import annotations

import torch

import crl
from crl.scenario import Scenario
from scenarios.datasets import load_digits
from scenarios.split import order_kind, split_tasks

KEEP = 10  # keep 1 in KEEP training samples of each task's minority class


@crl.register_scenario("imbalanced-split-digits", "Split digits with each task's second class cut to 1/10 of its "
                                                  "training samples (balanced test sets)", kind="supervised")
def imbalanced_split_digits(cfg) -> Scenario:
    tasks = split_tasks(load_digits(), cfg.n_tasks or 5, cfg.seed, order_kind(cfg))
    for t in tasks:
        minority = int(t.info["class_order"][1])
        idx = torch.nonzero(t.train.y == minority).flatten()
        drop = idx[torch.arange(len(idx)) % KEEP != 0]
        keep = torch.ones(len(t.train.y), dtype=torch.bool)
        keep[drop] = False
        t.train = t.train.subset(torch.nonzero(keep).flatten())
        t.info["minority_class"] = minority
    return Scenario("imbalanced-split-digits", tasks, cycles=cfg.cycles)
