"""Normalize-and-Project (Lyle, Zheng, Khetarpal, Martens, van Hasselt, Pascanu, Dabney;
"Normalization and effective learning rates in reinforcement learning", NeurIPS 2024,
arXiv 2407.01800).

The norm half is ``--norm nap`` (LayerNorm before each nonlinearity, bias-free layers
feeding it, built by ``crl.nn.network``). This hook is the projection half: after every
optimizer step, each weight tensor of a layer that feeds only a norm is rescaled back to
its Frobenius norm at initialisation, ``W <- rho * W / ||W||_F`` (per layer, conv kernels
flattened), which holds the effective learning rate constant. The output layer is not
followed by a norm, so it is left alone, and so are biases.

Norm gain/offset (gamma, beta): by default they are left to the optimizer (the paper
treats them separately; a joint projection is only valid for positively homogeneous
activations and not for the last norm before the unprojected output layer). With
``project_affine=True`` each norm's (gamma, beta) is rescaled jointly to its initial norm
``sqrt(sum gamma0^2 + beta0^2)``, except the last norm before the output layer.

The paper pairs NaP with an explicit learning-rate schedule restarted at each task change;
``--lr-restart-per-task auto`` turns that on when ``--norm nap`` is used (crl/optim.py).
"""
from __future__ import annotations

import torch

from crl.errors import UserError
from crl.hooks import Hook
from crl.registry import INTERVENTIONS


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


@INTERVENTIONS.register("nap", "Normalize-and-Project: rescale each norm-fed weight to its initial norm after every step")
def nap(cfg) -> NaPProjection:
    if cfg.norm in ("none",):
        raise UserError("--intervention nap: needs normalization layers; use --norm nap")
    return NaPProjection()
