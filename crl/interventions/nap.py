"""Normalize-and-Project (Lyle, Zheng, Khetarpal, Martens, van Hasselt, Pascanu, Dabney;
"Normalization and effective learning rates in reinforcement learning", NeurIPS 2024,
arXiv 2407.01800).

The norm half is ``--norm nap`` (LayerNorm before each nonlinearity, bias-free layers
feeding it, built by ``crl.nn.network``). This hook is the projection half: after every
optimizer step, each weight tensor of a layer that feeds only a norm is rescaled back to
its Frobenius norm at initialisation, ``W <- rho * W / ||W||_F`` (per layer, conv kernels
flattened), which holds the effective learning rate constant. The output layer is not
followed by a norm, so it is left alone, and so are biases. Under ``--reparam`` (``W = f(V)``,
:mod:`crl.nn.reparam`) the tensor projected is ``V``, the parameter the optimizer steps, to its
initial norm; ``f`` is not homogeneous, so this is not a rescaling of ``W`` (the network stays
invariant to rescaling ``W``, not ``V``), but it keeps the size of the optimizer's steps
relative to the parameter it updates constant, which is what the projection is for.

Norm gain/offset (gamma, beta) are left to the optimizer, not projected (the paper treats
them separately; a joint projection is only valid for positively homogeneous activations and
not for the last norm before the unprojected output layer). crl has no option to project them.

Learning-rate protocol. The paper makes the learning-rate schedule explicit and part of the
method: on sequential ALE a linear warmup followed by a cosine decay, restarted at every task
change. ``--norm nap`` alone gives that schedule (crl/optim.py :class:`LRSchedule`): unless
``--lr-schedule`` or ``--lr-warmup`` are given, they become ``cosine`` and ``--nap-warmup``
(1,000 updates, lowered to a tenth of a task's updates when a task is shorter than 10,000: by
:func:`warmup_for`, here for DQN and the classifier with ``--epochs 0``, in the classifier once its
data is loaded with ``--epochs``, per experience in the Avalanche plugin), the schedule
starts at ``--nap-init-lr`` (1e-8), rises to ``--lr`` and decays to ``--nap-final-lr``
(1e-6), and ``--lr-restart-per-task auto`` restarts it at every task. These are the values
crl's reading of the paper's sequential-ALE setup gives (its peak there is 6.25e-4; crl keeps
``--lr`` as the peak, so pass ``--lr 6.25e-4`` for that); no official code is public to check
them against. The changed options are printed as notes, like the short-budget adaptations.
Given explicitly, ``--lr-schedule`` and ``--lr-warmup`` win (``--lr-warmup`` as given, not cut
to a tenth; ``--nap-warmup`` is then recorded as 0).
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from crl.errors import UserError
from crl.hooks import Hook
from crl.options import option
from crl.registry import INTERVENTIONS


@dataclass
class NaPOptions:
    """NaP's learning-rate protocol (Lyle et al. 2024), with --norm nap: warmup + cosine decay, restarted per task."""

    nap_warmup: int = option(1000, "NaP: updates of linear warmup at the start of each task (unless --lr-warmup "
                                   "is given)", check="non_negative")
    nap_init_lr: float = option(1e-8, "NaP: learning rate at the start of each warmup", check="non_negative")
    nap_final_lr: float = option(1e-6, "NaP: learning rate at the end of each task's cosine decay",
                                 check="non_negative")

    def fit_budget(self, cfg, explicit: set[str]) -> list[str]:
        """NaP's schedule for the options the user did not set; one note per change. Only for
        ``--norm nap`` (the per-task restart, ``--lr-restart-per-task auto``, follows ``--norm``)."""
        notes = []
        if cfg.norm != "nap":
            given = sorted(n for n in ("nap_warmup", "nap_init_lr", "nap_final_lr") if n in explicit)
            if given:  # --intervention nap with another norm: the projection only, no NaP schedule to set
                raise UserError(f"--{given[0].replace('_', '-')}: sets the learning-rate protocol of --norm nap, and "
                                f"this run has --norm {cfg.norm}; accepted: --norm nap, or --lr-schedule, "
                                "--lr-warmup and --lr-restart-per-task for a schedule of your own")
            return notes
        if "lr_schedule" not in explicit and cfg.lr_schedule == "constant":
            cfg.lr_schedule = "cosine"
            notes.append("--norm nap: cosine learning-rate decay restarted at every task (NaP protocol; "
                         "--lr-schedule to change)")
        if "lr_warmup" in explicit and self.nap_warmup > 0:
            # the user's warmup replaces NaP's; nap_warmup 0 records that (the classifier tells the two
            # apart by it when it cuts a warmup to its task lengths, known only once its data is loaded)
            cfg.nap_warmup = 0
            notes.append(f"--norm nap: --lr-warmup {cfg.lr_warmup} replaces NaP's warmup (--nap-warmup 0 recorded)")
        if "lr_warmup" not in explicit and cfg.lr_warmup == 0 and self.nap_warmup > 0:
            if cfg.agent != "classifier":
                per_task = max(1, cfg.steps // max(1, cfg.train_freq))  # DQN: one update per train_freq env steps
            elif cfg.epochs == 0:
                per_task = cfg.steps
            else:
                per_task = None  # known once the data is loaded: the classifier applies warmup_for then
            cfg.lr_warmup = self.nap_warmup if per_task is None else warmup_for(self.nap_warmup, per_task)
            cut = f", or a tenth of a task shorter than {10 * self.nap_warmup:,} updates" if per_task is None else ""
            notes.append(f"--norm nap: {cfg.lr_warmup} updates of learning-rate warmup at every task{cut} (NaP "
                         "protocol; --lr-warmup to change)")
        return notes


def warmup_for(nap_warmup: int, task_updates: int) -> int:
    """NaP's warmup for a task of ``task_updates`` updates: ``--nap-warmup``, cut to a tenth of a short task."""
    return min(nap_warmup, max(1, task_updates // 10))


def schedule_ends(cfg) -> dict[str, float]:
    """``init_lr`` and ``final_lr`` of the learner's :class:`crl.optim.LRSchedule`: NaP's when it is in play."""
    if cfg.norm == "nap":
        return {"init_lr": cfg.nap_init_lr, "final_lr": cfg.nap_final_lr}
    return {}


class NaPProjection(Hook):
    name = "nap"

    def __init__(self, every: int = 1):
        self.every = every
        self.params: list[torch.nn.Parameter] = []
        self.init_norms: list[torch.Tensor] = []
        self._steps = 0

    def attach(self, network) -> None:
        """Record the initial norms (after any custom init) of every projectable weight."""
        named = network.projectable_weights()
        if not named:
            raise UserError("--intervention nap: the network has no layer followed by a norm; use --norm nap "
                            "(or another mean-and-scale norm) so projection has scale-invariant weights to act on")
        self.params = [p for _, p in named]
        if not self.init_norms:
            self.init_norms = [p.detach().norm().clone() for p in self.params]

    def on_run_start(self, run) -> None:
        self.attach(run.learner.network)

    @torch.no_grad()
    def project(self) -> None:
        for p, rho in zip(self.params, self.init_norms):
            p.mul_(rho.to(p.device) / p.norm().clamp_min(1e-12))

    def after_optimizer_step(self, run) -> None:
        self._steps += 1
        if self._steps % self.every == 0:
            self.project()

    def state_dict(self):
        return {"init_norms": [n.cpu() for n in self.init_norms], "steps": self._steps}

    def load_state_dict(self, state):
        if state:
            self.init_norms = list(state["init_norms"])
            self._steps = state["steps"]


@INTERVENTIONS.register("nap", "Normalize-and-Project: rescale each norm-fed weight to its initial norm after every step; "
                               "warmup + cosine LR schedule restarted per task", options=NaPOptions)
def nap(cfg) -> NaPProjection:
    if cfg.norm in ("none",):
        raise UserError("--intervention nap: needs normalization layers; use --norm nap")
    return NaPProjection()
