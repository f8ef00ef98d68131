"""L2 regularisation toward the initial parameters ("L2 Init", regenerative regularisation).

Kumar, Marklund, Van Roy, "Maintaining Plasticity in Continual Learning via Regenerative
Regularization", arXiv 2308.11958 (CoLLAs 2024). Written for crl from the paper.

The training loss becomes ``L(theta) + lambda * ||theta - theta_0||_2^2`` (the **squared**
norm, as in the paper; ``RLE-Foundation/Plasticine``'s unsquared form is a deviation), with
``lambda = --l2-init-coef`` and ``theta_0`` every trainable parameter of the network at the
start of the run (kept in checkpoints). Its gradient adds ``2 lambda (theta - theta_0)``.

How: through ``transform_loss``, the scalar penalty is **added to every per-sample loss**, so
the mean the learner takes is ``mean_i l_i + penalty`` and the gradient is exactly the
regularised one (a gradient hook after ``backward`` would need a runner event between
backward and the optimizer step, which crl does not have). Consequences, by design:

* the logged ``train/loss`` includes the penalty;
* gradient-norm clipping (``--max-grad-norm``) acts on the regularised gradient;
* a per-sample rescaling that keeps the mean weight at 1 (``meta-rescale``) leaves the
  penalty unchanged whatever its place in ``--intervention``;
* the penalty covers parameters with ``requires_grad`` at run start (all of them unless
  ``bn-only`` runs *before* ``l2-init`` in the list; frozen ones get no gradient anyway).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crl.errors import UserError
from crl.hooks import Hook
from crl.options import option
from crl.registry import INTERVENTIONS


class L2Init(Hook):
    name = "l2-init"

    def __init__(self, coef: float = 1e-4):
        self.coef = float(coef)
        self.params: list[torch.nn.Parameter] = []
        self.names: list[str] = []
        self.theta0: dict[str, torch.Tensor] = {}
        self._init: list[torch.Tensor] = []

    def on_run_start(self, run) -> None:
        named = [(n, p) for n, p in run.learner.network.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        if not self.theta0:
            self.theta0 = {n: p.detach().clone() for n, p in named}
        self._init = [self.theta0[n].to(p.device, p.dtype) for n, p in named]

    def penalty(self) -> torch.Tensor:
        """``coef * sum ||theta - theta_0||^2`` over the recorded parameters (with graph)."""
        total = sum((p - p0).square().sum() for p, p0 in zip(self.params, self._init))
        return self.coef * total

    def transform_loss(self, run, per_sample_loss, batch):
        if not self.params or self.coef == 0.0:
            return per_sample_loss
        return per_sample_loss + self.penalty().to(per_sample_loss.dtype)

    def state_dict(self):
        return {"theta0": {k: v.cpu() for k, v in self.theta0.items()}}

    def load_state_dict(self, state):
        if state:
            self.theta0 = dict(state["theta0"])


@dataclass
class L2InitOptions:
    """L2 Init's penalty weight (Kumar et al. 2023)."""

    l2_init_coef: float = option(0.0001, "lambda of the penalty lambda*||theta - theta0||^2", check="non_negative")


@INTERVENTIONS.register("l2-init", "L2 Init (Kumar et al. 2023): loss + l2_init_coef * ||theta - theta0||^2",
                        options=L2InitOptions)
def l2_init(cfg) -> L2Init:
    if not cfg.l2_init_coef >= 0:
        raise UserError(f"--l2-init-coef: must be >= 0, got {cfg.l2_init_coef}")
    return L2Init(cfg.l2_init_coef)
