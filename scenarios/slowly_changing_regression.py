"""Slowly-changing regression (``crl run slowly-changing-regression``): Dohare et al.'s bit-flipping
regression problem, generated in memory from ``--seed`` (no files, no download).

Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood, Sutton, "Loss of plasticity in deep continual
learning", Nature 632, 2024 (earlier: "Continual Backprop", arXiv 2108.06325, the "bit-flipping
problem"); official code ``shibhansh/loss-of-plasticity``, ``lop/slowly_changing_regression/``
(``slowly_changing_regression.py``, ``cfg/prob.json``, ``cfg/sgd/bp/relu.json``,
``lop/nets/fix_ltu_net.py``, ``lop/nets/ffnn.py``, ``lop/algos/bp.py``).

The problem (defaults = ``cfg/prob.json``):

* inputs: ``--scr-inputs`` (20) bits; the first ``--scr-flipping-bits`` (15) are fixed during a
  task, the other 5 are drawn uniformly for every example;
* target: a fixed random network with one hidden layer of ``--scr-target-features`` (100)
  linear threshold units: weights and biases uniform in {-1, +1}; unit ``i`` outputs 1 when
  ``w_i . x + b_i > tau_i`` with ``tau_i = beta (m + 1) - S_i``, ``S_i = (m - sum_k w_ik + b_i) / 2``,
  ``beta`` = ``--scr-beta`` (0.7), ``m`` the number of inputs; output ``v . f + c``, ``v, c`` in {-1, +1};
* tasks: ``--scr-tasks`` (100) tasks of ``--scr-examples`` (10,000) examples each (Dohare et al.'s
  learners see 1,000,000 examples, i.e. 100 tasks). Between tasks the flipping bits change:
  ``--scr-flip all`` draws all of them anew (the official data generator's default, used by
  ``cfg/prob.json``), ``one`` flips one bit chosen uniformly (``flip_one``, ``cfg/flip_one_prob.json``).

Each task's test set is every setting of the non-flipping bits with that task's flipping bits
(32 inputs for the defaults, the whole input distribution of the task; 10,000 random ones when
there are more than 2^16), so ``eval/<task>/mse`` is the task's exact expected squared error.

The scenario declares the ``slowly-changing-regression`` preset, Dohare et al.'s learner for
``cfg/sgd/bp/relu.json``: ``--agent regressor`` (MSE, ``agents/regressor.py``), ``--torso mlp
--mlp-hidden 5`` (ReLU), ``--optimizer sgd --lr 0.01`` (the largest of their step sizes 0.01,
0.003, 0.001), ``--batch-size 1`` and one pass over each task (one update per example, online
error = ``train/loss``), ``--log-every 10000`` (``train/loss`` = the mean online error of each
task). Not reproduced: their initialisation (Kaiming-uniform hidden weights, zero biases;
crl's MLP keeps PyTorch's default ``nn.Linear`` initialisation) and continual backprop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crl.config import PRESETS
from crl.errors import UserError
from crl.options import option
from crl.scenario import CycleOptions, Scenario, SupervisedTask, register_scenario
from scenarios.datasets import ArrayDataset

FLIPS = ("all", "one")
MAX_EXHAUSTIVE_BITS = 16  # test sets enumerate every setting of up to this many random bits

PRESETS.setdefault("slowly-changing-regression", {
    **PRESETS["supervised"], "agent": "regressor", "torso": "mlp", "mlp_hidden": "5", "optimizer": "sgd",
    "lr": 0.01, "batch_size": 1, "epochs": 1.0, "log_every": 10_000, "metrics_every": 10_000,
})


@dataclass
class SlowlyChangingRegressionOptions:
    """Sizes of Dohare et al.'s slowly-changing regression (their defaults)."""

    scr_inputs: int = option(20, "slowly-changing regression: input bits", check="positive")
    scr_flipping_bits: int = option(15, "slowly-changing regression: input bits held fixed within a task",
                                    check="non_negative")
    scr_target_features: int = option(100, "slowly-changing regression: threshold units of the target network",
                                      check="positive")
    scr_beta: float = option(0.7, "slowly-changing regression: beta of the target's thresholds", check="unit")
    scr_tasks: int = option(100, "slowly-changing regression: tasks (flips); 100 x 10,000 = Dohare et al.'s 1M "
                                 "examples", check="positive")
    scr_examples: int = option(10_000, "slowly-changing regression: examples per task (flip every N)",
                               check="positive")
    scr_flip: str = option("all", "slowly-changing regression: between tasks redraw all flipping bits (all, the "
                                  "official default) or flip one (one)", choices=FLIPS)

    def check(self, cfg) -> None:
        if self.scr_flipping_bits >= self.scr_inputs:
            raise UserError(f"--scr-flipping-bits: must be < --scr-inputs ({self.scr_inputs}) so that some bits vary "
                            f"within a task; got {self.scr_flipping_bits}")


class TargetNetwork:
    """The fixed data-generating network of ``lop/nets/fix_ltu_net.py`` (module docstring)."""

    def __init__(self, inputs: int, features: int, beta: float, gen: torch.Generator):
        pm = lambda *shape: torch.randint(0, 2, shape, generator=gen).float() * 2 - 1  # noqa: E731
        self.w, self.b = pm(features, inputs), pm(features)
        self.v, self.c = pm(features), pm(1)
        s = (inputs - self.w.sum(1) + self.b) / 2
        self.tau = beta * (inputs + 1) - s

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() @ self.w.T + self.b) > self.tau).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ self.v + self.c


def _inputs(fixed: torch.Tensor, random_bits: torch.Tensor) -> torch.Tensor:
    return torch.cat([fixed.expand(len(random_bits), -1), random_bits], 1).to(torch.uint8)


@register_scenario("slowly-changing-regression", "Dohare et al. 2024's bit-flipping regression: --scr-tasks (100) tasks "
                                                 "of 10,000 examples, generated from --seed (offline)",
                   kind="supervised", preset="slowly-changing-regression",
                   options=(SlowlyChangingRegressionOptions, CycleOptions))
def slowly_changing_regression(cfg) -> Scenario:
    o = cfg.options(SlowlyChangingRegressionOptions)
    o.check(cfg)
    m, f = o.scr_inputs, o.scr_flipping_bits
    gen = torch.Generator().manual_seed(cfg.seed)
    target = TargetNetwork(m, o.scr_target_features, o.scr_beta, gen)
    free = m - f
    if free <= MAX_EXHAUSTIVE_BITS:
        codes = torch.arange(2 ** free)
        grid = ((codes[:, None] >> torch.arange(free - 1, -1, -1)) & 1).float()  # every setting of the free bits
    else:
        grid = None
    bits = torch.randint(0, 2, (f,), generator=gen).float()
    tasks = []
    for k in range(o.scr_tasks):
        if k > 0 and f > 0:
            if o.scr_flip == "all":
                bits = torch.randint(0, 2, (f,), generator=gen).float()
            else:
                bits = bits.clone()
                i = int(torch.randint(f, (1,), generator=gen))
                bits[i] = 1 - bits[i]
        x = _inputs(bits, torch.randint(0, 2, (o.scr_examples, free), generator=gen).float())
        xt = _inputs(bits, grid if grid is not None else
                     torch.randint(0, 2, (10_000, free), generator=gen).float())
        train, test = ArrayDataset(x, torch.zeros(len(x))), ArrayDataset(xt, torch.zeros(len(xt)))
        train.y, test.y = target(x), target(xt)  # float targets (ArrayDataset casts labels to long)
        tasks.append(SupervisedTask(f"task{k}", train, test, [0], task_label=k,
                                    info={"flipping_bits": bits.int().tolist(), "target": "regression"}))
    return Scenario("slowly-changing-regression", tasks, cycles=cfg.cycles)
