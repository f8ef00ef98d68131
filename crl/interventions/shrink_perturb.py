"""Shrink and perturb (Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020,
arXiv 1910.08475; code ``JordanAsh/warm_start``). Written for crl from the paper.

``theta <- lambda * theta + p * theta_new`` for every trainable parameter of the network,
with ``lambda = --sp-shrink`` and ``p = --sp-perturb``. Three variants circulate (reference
§13); crl implements two, picked with ``--sp-form``:

* ``fresh`` (default): ``theta_new`` is a **fresh random initialisation drawn at each call**
  (every module's ``reset_parameters``, the network's own init; a parameter without one
  uses its value at the start of the run). This is the paper's "perturb with a new
  initialisation" reading, used by ``awjuliani/deep-rl-plasticity`` (lambda = p = 0.5 at
  distribution shifts, or lambda = 0.999999, p = 1e-6 every update).
* ``fixed``: ``theta_new = theta_0``, the parameters saved at the start of the run (kept in
  checkpoints): a pull toward one fixed init, as in ``RLE-Foundation/Plasticine``.

The third variant, Gaussian noise every step with weight decay as the shrink
(``shibhansh/loss-of-plasticity: lop/algos/bp.py``), is not implemented here.

When: at the start of every task after the first (``--sp-task-start``, on) and/or every
``--sp-every`` optimizer updates (0 = off). Only parameters with ``requires_grad`` are
touched (frozen ones, e.g. under ``bn-only``, stay as they are); buffers (BatchNorm running
statistics) and the optimizer state are left unchanged (Ash & Adams restart training
after the shrink; in continual RL the moments simply adapt). Note that with ``--norm nap``
the NaP projection rescales norm-fed weights back to their initial norm at the next step,
so for them only the *direction* change of the shrink survives.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crl.errors import UserError
from crl.hooks import Hook
from crl.interventions.reset import _log, fresh_parameters, snapshot
from crl.options import option
from crl.registry import INTERVENTIONS

FORMS = ("fresh", "fixed")


class ShrinkPerturb(Hook):
    name = "shrink-perturb"

    def __init__(self, form: str = "fresh", shrink: float = 0.5, perturb: float = 0.5, every: int = 0,
                 at_task_start: bool = True):
        if form not in FORMS:
            raise UserError(f"--sp-form: unknown form '{form}'; accepted: {', '.join(FORMS)}")
        self.form, self.shrink, self.perturb = form, float(shrink), float(perturb)
        self.every, self.at_task_start = int(every), bool(at_task_start)
        self.theta0: dict[str, torch.Tensor] = {}
        self.applied = 0
        self._updates = 0

    def on_run_start(self, run) -> None:
        if not self.theta0:
            self.theta0 = snapshot(run.learner.network)

    @torch.no_grad()
    def apply(self, network: torch.nn.Module) -> None:
        """One shrink-and-perturb of ``network`` in place."""
        if self.form == "fixed":
            target = self.theta0
        else:
            target = fresh_parameters(network, fallback=self.theta0)
        for name, p in network.named_parameters():
            if p.requires_grad:
                p.mul_(self.shrink).add_(target[name].to(p.device, p.dtype), alpha=self.perturb)
        self.applied += 1

    def on_task_start(self, run, task_index, task) -> None:
        if self.at_task_start and task_index > 0:
            self.apply(run.learner.network)
            _log(run, "train/shrink_perturb_count", self.applied)

    def after_optimizer_step(self, run) -> None:
        self._updates += 1
        if self.every and self._updates % self.every == 0:
            self.apply(run.learner.network)

    def state_dict(self):
        return {"theta0": {k: v.cpu() for k, v in self.theta0.items()}, "applied": self.applied,
                "updates": self._updates}

    def load_state_dict(self, state):
        if state:
            self.theta0 = dict(state["theta0"])
            self.applied, self._updates = state["applied"], state["updates"]


@dataclass
class ShrinkPerturbOptions:
    """Shrink & perturb's coefficients and schedule (Ash & Adams 2020)."""

    sp_form: str = option("fresh", "perturb toward a fresh random init each time (fresh) or toward the saved initial "
                                   "parameters (fixed)", choices=("fresh", "fixed"))
    sp_shrink: float = option(0.5, "lambda in theta <- lambda*theta + p*theta_new", check="non_negative")
    sp_perturb: float = option(0.5, "p in theta <- lambda*theta + p*theta_new", check="non_negative")
    sp_every: int = option(0, "also apply every this many optimizer updates (0 = off)", check="non_negative")
    sp_task_start: bool = option(True, "apply at the start of every task after the first")


@INTERVENTIONS.register("shrink-perturb", "Shrink & perturb (Ash & Adams 2020): theta <- sp_shrink*theta + "
                                          "sp_perturb*(fresh init | theta0) at task starts / every --sp-every updates",
                        options=ShrinkPerturbOptions)
def shrink_perturb(cfg) -> ShrinkPerturb:
    if cfg.sp_every < 0:
        raise UserError(f"--sp-every: must be >= 0 (0 = off), got {cfg.sp_every}")
    if cfg.sp_shrink < 0 or cfg.sp_perturb < 0:
        raise UserError(f"--sp-shrink/--sp-perturb: must be >= 0, got {cfg.sp_shrink}, {cfg.sp_perturb}")
    if cfg.sp_every == 0 and not cfg.sp_task_start:
        raise UserError("--intervention shrink-perturb: never applied; set --sp-every N (> 0) or --sp-task-start")
    return ShrinkPerturb(cfg.sp_form, cfg.sp_shrink, cfg.sp_perturb, cfg.sp_every, cfg.sp_task_start)
