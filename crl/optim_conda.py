"""Conda (``--optimizer conda``): Adam whose update of each hidden matrix is taken in the basis of
the singular vectors of its momentum, so that the update is normalised column-wise.

Wang, Zhou, Dong, Li, Li, Zhou, Lao, Fang & Lin, "Conda: Column-Normalized Adam for Training Large Language
Models Faster",
arXiv 2509.24218 (2025); official code: https://github.com/jie040109/Conda (``conda_torch/conda.py``,
``CondaProjector``; hyperparameters in ``examples/llama/scripts/*_conda.sh`` and
``examples/gpt2/config/*_conda.py``). Written for crl from the paper and that code's update rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from crl.optim import _excluded
from crl.options import option
from crl.registry import OPTIMIZERS

__all__ = ["Conda", "CondaOptions"]


class Conda(torch.optim.Optimizer):
    r"""Conda on hidden matrices, the reference's Adam(W) on the rest.

    Parameter groups carry ``conda`` (True: hidden weight matrices; False: biases, norm gains, the
    output layer). A Conda matrix ``W`` (``m x n``; conv kernels viewed as ``(out, in*kh*kw)``) with
    gradient ``G`` at its step ``t = 0, 1, ...`` (group values ``lr, betas=(b1, b2), eps,
    weight_decay=wd, scale, update_gap``)::

        M <- b1 M + (1 - b1) G
        if t % update_gap == 0:  U S V^T = svd(M)  (thin);  P = V^T if m >= n else U
        project:  X~ = X P^T  if m >= n  else  P^T X    (P is square: a rotation of the rows or
                                                         of the columns, the shape is kept)
        V2 <- b2 V2 + (1 - b2) G~^2                      (second moment of the PROJECTED gradient)
        N~ = M~ / (sqrt(V2) + eps)
        N  = N~ P  if m >= n  else  P N~                 (back to the weight's basis)
        W <- W - lr sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) * scale * N
        W <- W - lr wd W                                 (decoupled decay, after the step)

    With ``m >= n``, ``M P^T = U S``: the update is Adam's per-coordinate normalisation applied to
    the columns of the momentum in its own singular basis ("column-normalized Adam"). ``M`` is kept
    unprojected (the reference projects a copy), so a new basis acts on the same momentum;
    ``V2`` is not reset when the basis changes (as in the reference).

    The other group (``conda=False``) runs the same rule without projection and without
    ``scale``: the reference's Adam with decoupled decay (HuggingFace-AdamW form). It differs from
    :class:`torch.optim.AdamW` in two details, both the reference's: ``eps`` is added to
    ``sqrt(v)`` before the bias correction (torch: ``sqrt(v / (1 - b2^t)) + eps``) and the decay
    multiplies the weight after the step.

    Defaults are the official training scripts' (LLaMA 60M-1B and GPT-2 125M/355M alike):
    ``betas=(0.9, 0.99)``, ``scale=0.25``, ``update_gap=2000``, ``eps=1e-8`` (the class default;
    the scripts leave it); ``lr`` is the run's ``--lr`` (the scripts use 1e-2 to 6e-3 for LLMs).

    Choices of crl:
      * only the reference's default projection (``proj_type='std'``, the side that keeps the
        shape) is offered; its other types change the shape of the projected matrix, which the
        reference's second-moment buffer (allocated with the gradient's shape) cannot hold;
      * conv kernels (``ndim > 2``) are projected as ``(out, -1)`` matrices (the reference applies
        Conda to the ``nn.Linear`` weights of attention and MLP blocks only);
      * the SVD runs in float32 (as the reference) on the parameter's device; the basis is kept
        in the optimizer state (``state["basis"]``), so a resumed run continues exactly;
      * parameters without a gradient are skipped; sparse gradients are rejected.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0, scale: float = 0.25, update_gap: int = 2000):
        if lr < 0.0:
            raise ValueError(f"Conda: invalid lr {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Conda: invalid betas {betas}")
        if eps < 0.0 or weight_decay < 0.0 or scale <= 0.0:
            raise ValueError("Conda: eps and weight_decay must be >= 0 and scale > 0")
        if int(update_gap) != update_gap or update_gap < 1:
            raise ValueError(f"Conda: update_gap must be an integer >= 1, got {update_gap}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, scale=scale,
                        update_gap=int(update_gap))
        params = list(params)
        if params and not isinstance(params[0], dict):  # plain tensors: matrices -> Conda, the rest -> Adam
            params = [g for g in ({"params": [p for p in params if p.dim() >= 2], "conda": True},
                                  {"params": [p for p in params if p.dim() < 2], "conda": False}) if g["params"]]
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        group = dict(param_group)
        ps = group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        group.setdefault("conda", bool(ps) and all(p.dim() >= 2 for p in ps))
        if group["conda"] and any(p.dim() < 2 for p in ps):
            raise ValueError("Conda: conda=True groups may only hold tensors with ndim >= 2")
        super().add_param_group(group)

    @staticmethod
    def _project(x: Tensor, basis: Tensor, tall: bool) -> Tensor:
        return x @ basis.mT if tall else basis.mT @ x

    @staticmethod
    def _back(x: Tensor, basis: Tensor, tall: bool) -> Tensor:
        return x @ basis if tall else basis @ x

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Conda does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1.0 - b1)
                if group["conda"]:
                    shape = p.shape
                    g2, m2 = p.grad.reshape(shape[0], -1), m.reshape(shape[0], -1)
                    tall = g2.shape[0] >= g2.shape[1]
                    if "basis" not in state or t % group["update_gap"] == 0:
                        u, _, vh = torch.linalg.svd(m2.float(), full_matrices=False)
                        state["basis"] = (vh if tall else u).to(p.dtype)
                    basis = state["basis"]
                    g_proj, m_proj = self._project(g2, basis, tall), self._project(m2, basis, tall)
                    v2 = v.view(shape[0], -1)
                    v2.mul_(b2).addcmul_(g_proj, g_proj, value=1.0 - b2)
                    update = self._back(m_proj / (v2.sqrt() + eps), basis, tall).reshape(shape) * group["scale"]
                else:
                    v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
                    update = m / (v.sqrt() + eps)
                state["step"] = t + 1
                step_size = lr * math.sqrt(1.0 - b2 ** (t + 1)) / (1.0 - b1 ** (t + 1))
                p.add_(update, alpha=-step_size)
                if wd > 0.0:
                    p.mul_(1.0 - lr * wd)
        return loss


@dataclass
class CondaOptions:
    """Conda's own settings, defaults of the official training scripts (jie040109/Conda); the step size is
    --lr and the decay --weight-decay."""

    conda_beta1: float = option(0.9, "Conda: beta1 (momentum)", check="unit")
    conda_beta2: float = option(0.99, "Conda: beta2 (second moment of the projected gradient)", check="unit")
    conda_eps: float = option(1e-8, "Conda: epsilon added to sqrt(v)", check="non_negative")
    conda_scale: float = option(0.25, "Conda: scale of the projected-back update of hidden matrices", check="positive")
    conda_update_gap: int = option(2000, "Conda: steps between SVDs of the momentum (the projection basis)",
                                   check="positive")


def _conda_args(cfg) -> dict[str, Any]:
    return dict(lr=cfg.lr, eps=cfg.conda_eps, weight_decay=cfg.weight_decay,
                betas=(cfg.conda_beta1, cfg.conda_beta2), scale=cfg.conda_scale, update_gap=cfg.conda_update_gap)


@OPTIMIZERS.register("conda", "Conda (Wang et al. 2025): Adam in the singular basis of the momentum on hidden "
                              "matrices, the reference's AdamW on the rest (output layer, biases, norms)",
                     options=CondaOptions, args=_conda_args)
def _build_conda(named, *, lr, eps, weight_decay, muon_exclude, betas=(0.9, 0.99), scale=0.25, update_gap=2000):
    """Matrices (``ndim >= 2``) not named in ``muon_exclude`` (the learners pass their output layer) get Conda."""
    hidden = [p for n, p in named if p.dim() >= 2 and not _excluded(n, muon_exclude)]
    rest = [p for n, p in named if p.dim() < 2 or _excluded(n, muon_exclude)]
    groups = [g for g in ({"params": hidden, "conda": True}, {"params": rest, "conda": False}) if g["params"]]
    return Conda(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, scale=scale, update_gap=update_gap)
