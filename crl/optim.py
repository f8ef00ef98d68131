"""Optimizers (Adam, AdamW, SGD, AdamP, NorMuon) and learning-rate schedules.

Pick an optimizer by name with :func:`build_optimizer` (``--optimizer``); the names live
in :data:`crl.registry.OPTIMIZERS`. :class:`LRSchedule` is the warmup + decay schedule of
the NaP protocol, optionally restarted at every task change.

Both optimizers here are written for crl from the papers and the update rules of their
official code (read, not copied); every choice that differs from that code is listed in
the class docstring.
"""
from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from crl.errors import UserError
from crl.options import option
from crl.registry import OPTIMIZERS

__all__ = [
    "AdamP",
    "NorMuon",
    "newton_schulz5",
    "build_optimizer",
    "LRSchedule",
    "LR_SCHEDULES",
]


# --------------------------------------------------------------------------- AdamP


def _cosine_abs(x: Tensor, y: Tensor, eps: float) -> Tensor:
    """|cos(x_i, y_i)| for every row i of two 2-D tensors (norms clamped below by eps)."""
    dot = (x * y).sum(dim=1)
    nx = x.norm(dim=1).clamp_min(eps)
    ny = y.norm(dim=1).clamp_min(eps)
    return (dot / (nx * ny)).abs()


class AdamP(torch.optim.Optimizer):
    r"""Adam with projection of the radial update component for scale-invariant weights.

    Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha, "AdamP: Slowing Down the Slowdown for Momentum
    Optimizers on Scale-invariant Weights", ICLR 2021, arXiv 2006.08217. Official code:
    https://github.com/clovaai/AdamP (``adamp/adamp.py``). Written from the paper and
    that code's update rule; the order of operations below is the official one.

    Per parameter ``p`` with gradient ``g`` at step ``t`` (group values ``lr``,
    ``betas=(b1, b2)``, ``eps``, ``weight_decay=wd``, ``delta``, ``wd_ratio``)::

        m  <- b1 m + (1 - b1) g
        v  <- b2 v + (1 - b2) g^2
        denom = sqrt(v) / sqrt(1 - b2^t) + eps
        u = m / denom                                   (nesterov: (b1 m + (1-b1) g) / denom)
        if p.ndim > 1:                                  (1-D tensors: never projected)
            for view in [channel: p.view(p.size(0), -1), layer: p.view(1, -1)]:
                c = max over rows of |cos(g_row, p_row)|
                if c < delta / sqrt(row length of the view):
                    p_hat = p_row / (||p_row|| + eps)   (per row of that view)
                    u <- u - p_hat <p_hat, u>_row       (remove the radial part)
                    wd <- wd * wd_ratio
                    break                               (first view that fires wins)
        p <- p (1 - lr wd)                              (decoupled decay, AFTER the test)
        p <- p - lr / (1 - b1^t) * u

    The cosine test and ``p_hat`` use the weight *before* decay, as the official code does.
    Without projection (and with ``nesterov=False``) the step equals
    :class:`torch.optim.AdamW` with the same hyperparameters.

    Choices of crl (not in the official code):
      * ``|cos|`` is ``<g, p> / (max(||g||, eps) max(||p||, eps))`` per row (the official
        code calls ``F.cosine_similarity(eps=eps)``; they differ only for near-zero rows).
      * ``state["projected"]`` records, for each ``ndim > 1`` tensor, which view fired at
        its last step: 0 none, 1 channel, 2 layer. :meth:`projection_rate` is the fraction
        of such tensors projected at their last step (the "hit rate" worth logging).
      * Sparse gradients are rejected.

    Defaults are the official ones: ``lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, delta=0.1, wd_ratio=0.1, nesterov=False``.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
    ):
        if lr < 0.0:
            raise ValueError(f"AdamP: invalid lr {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamP: invalid betas {betas}")
        if eps < 0.0 or weight_decay < 0.0 or delta < 0.0 or wd_ratio < 0.0:
            raise ValueError("AdamP: eps, weight_decay, delta and wd_ratio must be >= 0")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _project(p: Tensor, grad: Tensor, update: Tensor, delta: float, eps: float) -> tuple[Tensor, int]:
        """Return (update with radial part removed, view code) or (update, 0) if no view fires."""
        expand = [-1] + [1] * (p.dim() - 1)  # row statistic -> broadcast over the row
        for code, rows in ((1, p.size(0)), (2, 1)):
            w = p.reshape(rows, -1)
            cos = _cosine_abs(grad.reshape(rows, -1), w, eps)
            if cos.max() < delta / math.sqrt(w.size(1)):
                p_hat = p / (w.norm(dim=1) + eps).view(expand)
                radial = (p_hat * update).reshape(rows, -1).sum(dim=1).view(expand)
                return update - p_hat * radial, code
        return update, 0

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdamP does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                t = state["step"]
                bc1 = 1.0 - b1**t
                bc2 = 1.0 - b2**t

                m.mul_(b1).add_(grad, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
                denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
                if group["nesterov"]:
                    update = (b1 * m + (1.0 - b1) * grad) / denom
                else:
                    update = m / denom

                wd = group["weight_decay"]
                if p.dim() > 1:
                    update, code = self._project(p, grad, update, group["delta"], eps)
                    state["projected"] = code
                    if code:
                        wd = wd * group["wd_ratio"]
                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)
                p.add_(update, alpha=-lr / bc1)
        return loss

    def projection_rate(self) -> float:
        """Fraction of ``ndim > 1`` tensors whose last step was projected (nan if none)."""
        codes = [s["projected"] for s in self.state.values() if "projected" in s]
        return sum(1 for c in codes if c) / len(codes) if codes else float("nan")


# --------------------------------------------------------------------------- NorMuon

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(
    G: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Approximate orthogonalisation ``U S' V^T`` of a 2-D ``G = U S V^T`` (Muon's NS5).

    Quintic Newton–Schulz iteration of K. Jordan's Muon (https://github.com/KellerJordan/Muon),
    used unchanged by NorMuon: work on the wide orientation (transpose if rows > cols),
    ``X = G / (||G||_F + eps)``, then ``steps`` times ``A = X X^T; X = a X + (b A + c A A) X``.
    The coefficients maximise the slope at 0, so singular values do not converge to 1 but
    oscillate in a band around it (about 0.7–1.2 after 5 steps). Returns ``dtype``
    (default: ``G``'s dtype, promoted to at least float32; pass ``torch.bfloat16`` for the
    reference's GPU setting).
    """
    if G.dim() != 2:
        raise ValueError(f"newton_schulz5 expects a 2-D tensor, got shape {tuple(G.shape)}")
    if dtype is None:
        dtype = torch.promote_types(G.dtype, torch.float32)
    a, b, c = coefficients
    X = G.to(dtype)
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.mT
    X = X / (X.norm() + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if tall else X


class NorMuon(torch.optim.Optimizer):
    r"""NorMuon: Muon (orthogonalised momentum) + neuron-wise second-moment normalisation,
    with an internal AdamW for the parameters Muon should not touch.

    Li, Liu, Liang, Chen, Zhao, "NorMuon: Making Muon more efficient and scalable",
    arXiv 2510.05491. Official code: https://github.com/zichongli5/NorMuon (``normuon.py``,
    classes ``SingleDeviceNorMuonWithAuxAdam`` / ``normuon_update``), itself built on
    K. Jordan's Muon (https://github.com/KellerJordan/Muon). Written for crl from the
    reference's update rule.

    Parameter groups carry ``use_muon``. Passing plain tensors splits them automatically:
    ``ndim >= 2`` -> Muon side, the rest (biases, norm gains) -> AdamW side. To send a matrix
    to the AdamW side (output layer, embeddings) pass dict groups with ``use_muon=False``,
    or use :func:`build_optimizer` with ``muon_exclude``.

    Muon side, per matrix ``W`` (conv kernels and any ``ndim > 2`` tensor are viewed as
    ``(out, -1)`` for the WHOLE update), gradient ``G``, group values ``lr, momentum=beta,
    beta2, weight_decay=wd, nesterov, ns_steps, row_eps``::

        M <- beta M + (1 - beta) G                      (EMA, as the reference; torch's Muon sums)
        U = (1 - beta) G + beta M   if nesterov else M  (reference default: nesterov=True)
        O = NS5(U)                                      (newton_schulz5, ns_steps=5)
        v <- beta2 v + (1 - beta2) mean_row(O * O)      (one scalar per output row; no bias corr.)
        Ô = O / (sqrt(v) + row_eps)
        Ô <- Ô * ||O||_F / (||Ô||_F + row_eps)           (keep the pre-normalisation norm)
        Ô <- Ô * sqrt(max(1, rows / cols))
        W <- W (1 - lr wd) - lr Ô

    AdamW side (the reference's aux Adam; identical to :class:`torch.optim.AdamW`)::

        m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
        p <- p (1 - lr wd) - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)

    Defaults are the reference's: Muon ``lr=0.02, momentum=0.95, beta2=0.95,
    weight_decay=0, nesterov=True``, NS coefficients (3.4445, -4.7750, 2.0315), 5 steps,
    row eps 1e-10; AdamW ``aux_lr=3e-4, aux_betas=(0.9, 0.95), aux_eps=1e-10,
    aux_weight_decay=0``.

    Choices of crl:
      * Step size is the reference CODE's rule (rescale to ``||O||_F``, times
        ``sqrt(max(1, rows/cols))``), not the paper-form ``0.2 lr sqrt(mn) / ||Ô||_F``.
      * ``rows/cols`` and the per-row ``v`` use the flattened ``(out, in*kh*kw)`` view, so
        ``v`` is per output neuron for convs too (the reference reshapes 4-D updates back
        before the second-moment step, giving ``v`` per (out, in, kh) slice, and takes
        rows/cols from the kernel's last two dims).
      * NS runs in the parameter's dtype promoted to at least float32 (``ns_dtype=None``);
        ``ns_dtype=torch.bfloat16`` gives the reference's GPU setting. The normalisation
        runs in the same promoted dtype; the result is cast to the parameter's dtype.
      * ``p.grad`` is not modified (the reference overwrites it with the Nesterov blend).
      * Parameters with no gradient are skipped, state untouched (the reference gives them
        a zero gradient, which still moves momentum and applies the update).
      * Sparse gradients are rejected.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.02,
        momentum: float = 0.95,
        beta2: float = 0.95,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        ns_steps: int = 5,
        row_eps: float = 1e-10,
        ns_dtype: torch.dtype | None = None,
        aux_lr: float = 3e-4,
        aux_betas: tuple[float, float] = (0.9, 0.95),
        aux_eps: float = 1e-10,
        aux_weight_decay: float = 0.0,
    ):
        if lr < 0.0 or aux_lr < 0.0:
            raise ValueError("NorMuon: lr and aux_lr must be >= 0")
        if not (0.0 <= momentum < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError("NorMuon: momentum and beta2 must be in [0, 1)")
        if not (0.0 <= aux_betas[0] < 1.0 and 0.0 <= aux_betas[1] < 1.0):
            raise ValueError(f"NorMuon: invalid aux_betas {aux_betas}")
        if ns_steps < 1:
            raise ValueError("NorMuon: ns_steps must be >= 1")
        self._muon_defaults = dict(
            lr=lr,
            momentum=momentum,
            beta2=beta2,
            weight_decay=weight_decay,
            nesterov=nesterov,
            ns_steps=ns_steps,
            row_eps=row_eps,
            ns_dtype=ns_dtype,
        )
        self._aux_defaults = dict(
            lr=aux_lr, betas=tuple(aux_betas), eps=aux_eps, weight_decay=aux_weight_decay
        )
        super().__init__(self._split(params), {})

    @staticmethod
    def _split(params: Iterable) -> list[dict]:
        params = list(params)
        if not params or isinstance(params[0], dict):
            return params
        if any(isinstance(p, dict) for p in params):
            raise ValueError("NorMuon: pass either tensors or dict groups, not both")
        muon = [p for p in params if p.dim() >= 2]
        aux = [p for p in params if p.dim() < 2]
        groups = []
        if muon:
            groups.append({"params": muon, "use_muon": True})
        if aux:
            groups.append({"params": aux, "use_muon": False})
        return groups

    def add_param_group(self, param_group: dict) -> None:
        group = dict(param_group)
        ps = group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        if "use_muon" not in group:
            if ps and all(p.dim() >= 2 for p in ps):
                group["use_muon"] = True
            elif all(p.dim() < 2 for p in ps):
                group["use_muon"] = False
            else:
                raise ValueError(
                    "NorMuon: a group mixing matrices and vectors needs an explicit use_muon"
                )
        if group["use_muon"] and any(p.dim() < 2 for p in ps):
            raise ValueError("NorMuon: use_muon=True groups may only hold tensors with ndim >= 2")
        for k, v in (self._muon_defaults if group["use_muon"] else self._aux_defaults).items():
            group.setdefault(k, v)
        super().add_param_group(group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, but keeps ``second_momentum_buffer`` in its saved dtype (torch casts
        state to the parameter's dtype, which for bf16 weights would round ``v`` to bf16)."""
        saved = {
            k: s["second_momentum_buffer"]
            for k, s in state_dict["state"].items()
            if "second_momentum_buffer" in s
        }
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved_ids, params):
            if i in saved:
                self.state[p]["second_momentum_buffer"] = saved[i].to(device=p.device, copy=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._aux_step(group)
        return loss

    def _muon_step(self, group: dict) -> None:
        beta, beta2, lr, wd = group["momentum"], group["beta2"], group["lr"], group["weight_decay"]
        row_eps = group["row_eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            if grad.is_sparse:
                raise RuntimeError("NorMuon does not support sparse gradients")
            work = torch.promote_types(p.dtype, torch.float32)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["second_momentum_buffer"] = torch.zeros(p.size(0), 1, dtype=work, device=p.device)
            state["step"] += 1
            buf, v = state["momentum_buffer"], state["second_momentum_buffer"]
            if v.dtype != work:  # e.g. state loaded by plain torch code
                v = state["second_momentum_buffer"] = v.to(work)
            buf.lerp_(grad, 1.0 - beta)
            update = grad.lerp(buf, beta) if group["nesterov"] else buf
            U = update.reshape(p.size(0), -1)
            rows, cols = U.shape
            O = newton_schulz5(U, steps=group["ns_steps"], dtype=group["ns_dtype"]).to(work)
            o_norm = O.norm()
            v.lerp_(O.square().mean(dim=1, keepdim=True), 1.0 - beta2)
            O_hat = O / (v.sqrt() + row_eps)
            O_hat.mul_(o_norm / (O_hat.norm() + row_eps))
            O_hat.mul_(math.sqrt(max(1.0, rows / cols)))
            if wd != 0.0:
                p.mul_(1.0 - lr * wd)
            p.add_(O_hat.view(p.shape).to(p.dtype), alpha=-lr)

    def _aux_step(self, group: dict) -> None:
        b1, b2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            if grad.is_sparse:
                raise RuntimeError("NorMuon does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            t = state["step"]
            m, s = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(grad, 1.0 - b1)
            s.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
            denom = (s.sqrt() / math.sqrt(1.0 - b2**t)).add_(eps)
            if wd != 0.0:
                p.mul_(1.0 - lr * wd)
            p.addcdiv_(m, denom, value=-lr / (1.0 - b1**t))


# --------------------------------------------------------------------------- factory

_NamedParams = list[tuple[str, torch.nn.Parameter]]


def _params(named: _NamedParams) -> list[torch.nn.Parameter]:
    return [p for _, p in named]


def _excluded(name: str, exclude: frozenset[str]) -> bool:
    return name in exclude or any(name.startswith(e + ".") for e in exclude)


@dataclass
class AdamOptions:
    """Settings of the Adam family (adam, adamw, adamp)."""

    adam_eps: float = option(1.5e-4, "Adam epsilon", check="non_negative")
    fused_optimizer: bool = option(True, "Adam/AdamW: PyTorch's fused kernel, one for all parameters (same update "
                                         "rule)")


@OPTIMIZERS.register("adam", "Adam (torch.optim.Adam); weight decay is coupled L2", options=AdamOptions)
def _build_adam(named, *, lr, eps, weight_decay, muon_exclude, betas=(0.9, 0.999), amsgrad=False):
    return torch.optim.Adam(
        _params(named), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
    )


@OPTIMIZERS.register("adamw", "AdamW (torch.optim.AdamW); decoupled weight decay", options=AdamOptions)
def _build_adamw(named, *, lr, eps, weight_decay, muon_exclude, betas=(0.9, 0.999), amsgrad=False):
    return torch.optim.AdamW(
        _params(named), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
    )


@dataclass
class SGDOptions:
    """SGD's momentum (torch.optim.SGD's rule: buffer = momentum * buffer + grad; step lr * buffer)."""

    sgd_momentum: float = option(0.0, "SGD: momentum (0 = plain SGD; Dohare et al.'s incremental CIFAR-100: 0.9)",
                                 check="non_negative")
    sgd_nesterov: bool = option(False, "SGD: Nesterov momentum (needs --sgd-momentum > 0)")


def _sgd_args(cfg) -> dict[str, Any]:
    """A run's SGD keywords, passed explicitly (a learner built outside ``crl.api.prepare`` gets them too)."""
    return {**_common_args(cfg), "momentum": cfg.sgd_momentum, "nesterov": cfg.sgd_nesterov}


@OPTIMIZERS.register("sgd", "SGD (torch.optim.SGD); plain unless --sgd-momentum > 0", options=SGDOptions,
                     args=_sgd_args)
def _build_sgd(named, *, lr, eps, weight_decay, muon_exclude, momentum=None, dampening=0.0, nesterov=None):
    """``momentum`` / ``nesterov``: a run's ``--sgd-momentum`` / ``--sgd-nesterov`` (:func:`_sgd_args`);
    when not given, those of the run being built (``crl.options.current``), else the defaults."""
    from crl.options import current

    o = current(SGDOptions)
    momentum = o.sgd_momentum if momentum is None else momentum
    nesterov = o.sgd_nesterov if nesterov is None else nesterov
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise UserError("--sgd-nesterov: needs --sgd-momentum > 0 (and no dampening)")
    return torch.optim.SGD(
        _params(named),
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
    )


@OPTIMIZERS.register("adamp", "AdamP (Heo et al. 2021): Adam that projects out radial updates of scale-invariant weights",
                     options=AdamOptions)
def _build_adamp(
    named, *, lr, eps, weight_decay, muon_exclude, betas=(0.9, 0.999), delta=0.1, wd_ratio=0.1, nesterov=False
):
    return AdamP(
        _params(named),
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        delta=delta,
        wd_ratio=wd_ratio,
        nesterov=nesterov,
    )


@dataclass
class NorMuonOptions:
    """NorMuon's own settings, defaults of the reference code (zichongli5/NorMuon, ``normuon.py``);
    none is inherited from --lr or --adam-eps (the Atari preset's Adam values)."""

    muon_lr: float = option(0.02, "NorMuon: step size of the Muon side (hidden matrices); peak when --lr-schedule "
                                  "is used", check="positive")
    muon_momentum: float = option(0.95, "NorMuon: Muon momentum (EMA, Nesterov)", check="unit")
    muon_beta2: float = option(0.95, "NorMuon: decay of the per-neuron second moment", check="unit")
    muon_aux_lr: float = option(3e-4, "NorMuon: lr of the auxiliary AdamW (output layer, biases, norm gains)",
                                check="positive")
    muon_aux_eps: float = option(1e-10, "NorMuon: epsilon of the auxiliary AdamW", check="non_negative")
    muon_aux_beta1: float = option(0.9, "NorMuon: beta1 of the auxiliary AdamW", check="unit")
    muon_aux_beta2: float = option(0.95, "NorMuon: beta2 of the auxiliary AdamW", check="unit")


def _normuon_args(cfg) -> dict[str, Any]:
    return dict(lr=cfg.muon_lr, eps=cfg.muon_aux_eps, weight_decay=cfg.weight_decay, aux_lr=cfg.muon_aux_lr,
                momentum=cfg.muon_momentum, beta2=cfg.muon_beta2, aux_betas=(cfg.muon_aux_beta1, cfg.muon_aux_beta2))


@OPTIMIZERS.register("normuon", "NorMuon (Li et al. 2025) on hidden matrices (--muon-lr) + AdamW (--muon-aux-lr) "
                                "on the rest", options=NorMuonOptions, args=_normuon_args)
def _build_normuon(
    named,
    *,
    lr,
    eps,
    weight_decay,
    muon_exclude,
    aux_lr=3e-4,
    momentum=0.95,
    beta2=0.95,
    nesterov=True,
    ns_steps=5,
    row_eps=1e-10,
    ns_dtype=None,
    aux_betas=(0.9, 0.95),
):
    muon = [p for n, p in named if p.dim() >= 2 and not _excluded(n, muon_exclude)]
    aux = [p for n, p in named if p.dim() < 2 or _excluded(n, muon_exclude)]
    groups = []
    if muon:
        groups.append({"params": muon, "use_muon": True})
    if aux:
        groups.append({"params": aux, "use_muon": False})
    return NorMuon(
        groups,
        lr=lr,
        momentum=momentum,
        beta2=beta2,
        weight_decay=weight_decay,
        nesterov=nesterov,
        ns_steps=ns_steps,
        row_eps=row_eps,
        ns_dtype=ns_dtype,
        aux_lr=aux_lr,
        aux_betas=aux_betas,
        aux_eps=eps,
        aux_weight_decay=weight_decay,
    )


_COMMON = ("lr", "eps", "weight_decay", "muon_exclude")


def optimizer_args(cfg) -> dict[str, Any]:
    """The :func:`build_optimizer` keywords of a run's ``--optimizer`` from its config: ``lr``
    (``--lr``), ``eps`` (``--adam-eps``) and ``weight_decay`` for the Adam family and SGD; an
    optimizer with options of its own maps them itself (registry meta ``args``; NorMuon:
    ``--muon-lr`` as ``lr``, ``--muon-aux-eps`` as ``eps``, ``--muon-aux-lr``, ...). Learners
    use ``args["lr"]`` as the schedule's base lr, so ``train/lr`` is that optimizer's step size."""
    entry = OPTIMIZERS.entry(cfg.optimizer)
    mapping = entry.meta.get("args")
    if mapping is not None:
        return mapping(cfg)
    return _common_args(cfg)


def _common_args(cfg) -> dict[str, Any]:
    """``--lr``, ``--adam-eps`` and ``--weight-decay`` as :func:`build_optimizer`'s keywords."""
    return dict(lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)


def build_optimizer(
    name: str,
    named_params: Iterable[tuple[str, torch.nn.Parameter]],
    lr: float,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    muon_exclude: Iterable[str] = frozenset(),
    **kw: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer registered as ``name`` (``--optimizer``) over ``named_params``.

    ``named_params`` is ``model.named_parameters()`` (or a list of its pairs). ``lr``,
    ``eps`` and ``weight_decay`` mean, per optimizer:

    ==========  ==========================================================================
    adam        torch Adam; ``weight_decay`` is coupled L2 (added to the gradient).
                kw: ``betas=(0.9, 0.999)``, ``amsgrad=False``.
    adamw       torch AdamW; decoupled ``weight_decay`` (default here 0, not torch's 1e-2).
                kw: ``betas``, ``amsgrad``.
    sgd         torch SGD; ``eps`` unused. kw: ``momentum`` (default ``--sgd-momentum``, 0),
                ``dampening=0.0``, ``nesterov`` (default ``--sgd-nesterov``).
    adamp       :class:`AdamP`. kw: ``betas``, ``delta=0.1``, ``wd_ratio=0.1``,
                ``nesterov=False``.
    normuon     :class:`NorMuon`. ``lr`` is the Muon (matrix) lr (reference 0.02); the
                AdamW side uses ``aux_lr`` (kw, default 3e-4), ``eps`` (so 1e-8 here
                unless given; the reference uses 1e-10) and the same ``weight_decay``.
                Runs build it with :func:`optimizer_args`, which passes NorMuon's own
                options (``--muon-lr 0.02``, ``--muon-aux-eps 1e-10``, ...).
                Matrices (``ndim >= 2``) go to Muon unless their name is in
                ``muon_exclude``; vectors always go to AdamW. kw: ``aux_lr``,
                ``momentum=0.95``, ``beta2=0.95``, ``nesterov=True``, ``ns_steps=5``,
                ``row_eps=1e-10``, ``ns_dtype=None``, ``aux_betas=(0.9, 0.95)``.
    ==========  ==========================================================================

    ``muon_exclude`` holds parameter names (``"head.weight"``) or module prefixes
    (``"head"`` covers ``head.weight`` and ``head.bias``); an entry matching no parameter is
    an error (a typo would silently put the output layer under Muon). Other optimizers
    ignore it after that check.

    Raises :class:`UserError` for an unknown name (``--optimizer``), a bad ``lr`` / ``eps`` /
    ``weight_decay``, an option the optimizer does not take, or no parameters.
    """
    factory = OPTIMIZERS.get(name)
    named = [(str(n), p) for n, p in named_params]
    if not named:
        raise UserError(f"--optimizer {name}: the model has no parameters to optimize")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr: must be a positive number, got {lr!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise UserError(f"--eps: must be a number >= 0, got {eps!r}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise UserError(f"--weight-decay: must be a number >= 0, got {weight_decay!r}")
    if isinstance(muon_exclude, str):
        muon_exclude = [muon_exclude]
    exclude = frozenset(muon_exclude)
    names = [n for n, _ in named]
    unknown = sorted(e for e in exclude if not any(_excluded(n, frozenset([e])) for n in names))
    if unknown:
        raise UserError(
            f"muon_exclude: no parameter or module named {', '.join(map(repr, unknown))}; "
            f"parameters: {', '.join(names)}"
        )
    accepted = [
        k
        for k, prm in inspect.signature(factory).parameters.items()
        if prm.kind is inspect.Parameter.KEYWORD_ONLY and k not in _COMMON
    ]
    bad = sorted(k for k in kw if k not in accepted)
    if bad:
        raise UserError(
            f"--optimizer {name}: unknown option(s) {', '.join(bad)}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )
    try:
        return factory(
            named, lr=float(lr), eps=float(eps), weight_decay=float(weight_decay), muon_exclude=exclude, **kw
        )
    except ValueError as err:  # a bad value in kw (betas, momentum, ...) rejected by the class
        raise UserError(f"--optimizer {name}: {err}") from None


# --------------------------------------------------------------------------- LR schedules

LR_SCHEDULES = ("constant", "linear", "cosine")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class LRSchedule:
    """Warmup then constant / linear / cosine decay, optionally restarted at every task.

    The NaP protocol (Lyle et al., "Normalization and effective learning rates in
    reinforcement learning", NeurIPS 2024, arXiv 2407.01800) on sequential ALE uses a
    cosine schedule restarted at every task change: start 1e-8, 1,000-step linear warmup to
    6.25e-4, cosine to 1e-6 (as crl reads the paper; ``--norm nap`` sets it up with ``--lr``
    as the peak, see :mod:`crl.interventions.nap`)::

        LRSchedule(opt, "cosine", base_lr=6.25e-4, total_steps=T, warmup_steps=1000,
                   init_lr=1e-8, final_lr=1e-6, restart_per_task=True, steps_per_task=S)

    ``s`` counts optimizer steps since the start (or the last restart); ``H`` is the horizon
    (``total_steps``, or the task's steps when restarting); ``W = warmup_steps``. The lr
    used by the next optimizer step is::

        s < W:         init_lr + (base_lr - init_lr) * s / W
        constant:      base_lr                                   (for s >= W)
        s >= H:        final_lr                                  (linear / cosine)
        linear:        base_lr + (final_lr - base_lr) * (s - W) / (H - W)
        cosine:        final_lr + (base_lr - final_lr) * (1 + cos(pi (s - W) / (H - W))) / 2

    Construct it right after the optimizer: it sets the step-0 lr at once, and reads each
    param group's lr as ``ratio * base_lr`` (so NorMuon's AdamW side, at ``aux_lr``, moves
    in proportion). A group added later is read the same way when first seen. Call
    :meth:`step` after every ``optimizer.step()`` and :meth:`on_task_start` at each task
    start (a no-op unless ``restart_per_task``). Optimizer moments are not reset.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str,
        base_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        init_lr: float = 0.0,
        final_lr: float = 0.0,
        restart_per_task: bool = False,
        steps_per_task: int | None = None,
    ):
        if kind not in LR_SCHEDULES:
            raise UserError(f"--lr-schedule: unknown schedule '{kind}'; accepted: {', '.join(LR_SCHEDULES)}")
        for field, value in (("base_lr", base_lr),):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"LR schedule: {field} must be a positive number, got {value!r}")
        for field, value in (("init_lr", init_lr), ("final_lr", final_lr)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UserError(f"LR schedule: {field} must be a number >= 0, got {value!r}")
        if not _is_int(warmup_steps) or warmup_steps < 0:
            raise UserError(f"LR schedule: warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self._check_horizon("total_steps", total_steps, warmup_steps)
        if steps_per_task is not None:
            self._check_horizon("steps_per_task", steps_per_task, warmup_steps)
        self.optimizer = optimizer
        self.kind = kind
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.init_lr = float(init_lr)
        self.final_lr = float(final_lr)
        self.restart_per_task = bool(restart_per_task)
        self.steps_per_task = None if steps_per_task is None else int(steps_per_task)
        self.ratios: list[float] = []
        self._step = 0
        # the first task's horizon is already the per-task one (on_task_start may follow)
        self._horizon = int(steps_per_task) if restart_per_task and steps_per_task is not None else self.total_steps
        self._apply()

    def _check_horizon(self, field: str, value: Any, warmup: int) -> None:
        if not _is_int(value) or value < 1:
            raise UserError(f"LR schedule: {field} must be an integer >= 1, got {value!r}")
        if warmup > value:
            raise UserError(f"LR schedule: warmup_steps ({warmup}) must be <= {field} ({value})")

    def lr_at(self, s: int, horizon: int | None = None) -> float:
        """The scheduled (base-scale) lr after ``s`` steps of a segment of length ``horizon``."""
        H = self._horizon if horizon is None else horizon
        W = self.warmup_steps
        if s < W:
            return self.init_lr + (self.base_lr - self.init_lr) * s / W
        if self.kind == "constant":
            return self.base_lr
        if s >= H:
            return self.final_lr
        frac = (s - W) / (H - W)
        if self.kind == "linear":
            return self.base_lr + (self.final_lr - self.base_lr) * frac
        return self.final_lr + (self.base_lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))

    @property
    def lr(self) -> float:
        """The scheduled (base-scale) lr the next optimizer step uses."""
        return self.lr_at(self._step)

    @property
    def steps(self) -> int:
        """Optimizer steps since the start or the last restart."""
        return self._step

    @property
    def horizon(self) -> int:
        return self._horizon

    def _apply(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            if i == len(self.ratios):
                self.ratios.append(float(group["lr"]) / self.base_lr)
        value = self.lr
        for ratio, group in zip(self.ratios, self.optimizer.param_groups):
            if isinstance(group["lr"], torch.Tensor):  # --compile-optimizer: the compiled step reads it in place
                group["lr"].fill_(ratio * value)
            else:
                group["lr"] = ratio * value

    def step(self) -> None:
        """Advance one optimizer step and set the next lr on every param group."""
        self._step += 1
        self._apply()

    def on_task_start(self, task_steps: int | None = None) -> None:
        """Restart at step 0 if ``restart_per_task``; horizon ``task_steps``, else
        ``steps_per_task``, else ``total_steps``. No-op otherwise."""
        if not self.restart_per_task:
            return
        if task_steps is not None:
            self._check_horizon("task_steps", task_steps, self.warmup_steps)
            horizon = int(task_steps)
        elif self.steps_per_task is not None:
            horizon = int(self.steps_per_task)
        else:
            horizon = self.total_steps
        self._step = 0
        self._horizon = horizon
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "init_lr": self.init_lr,
            "final_lr": self.final_lr,
            "restart_per_task": self.restart_per_task,
            "steps_per_task": self.steps_per_task,
            "ratios": list(self.ratios),
            "step": self._step,
            "horizon": self._horizon,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything (settings included, as torch schedulers do) and re-set the lrs."""
        self.kind = state["kind"]
        self.base_lr = float(state["base_lr"])
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.init_lr = float(state["init_lr"])
        self.final_lr = float(state["final_lr"])
        self.restart_per_task = bool(state["restart_per_task"])
        self.steps_per_task = state["steps_per_task"]
        self.ratios = [float(r) for r in state["ratios"]]
        self._step = int(state["step"])
        self._horizon = int(state["horizon"])
        self._apply()


# --------------------------------------------------------------------------- RMSprop (MinAtar's reference)


@dataclass
class RMSpropOptions:
    """RMSprop; defaults: centered, as the MinAtar reference DQN (Young & Tian 2019, examples/dqn.py)."""

    rmsprop_alpha: float = option(0.95, "RMSprop: decay of the squared-gradient average (MinAtar reference 0.95)",
                                  check="unit")
    rmsprop_eps: float = option(0.01, "RMSprop: added to the root of the (centered) average (MinAtar reference 0.01)",
                                check="non_negative")
    rmsprop_centered: bool = option(True, "RMSprop: divide by the root of the gradient variance, not of its second "
                                          "moment (Graves 2013; MinAtar reference: on)")
    rmsprop_momentum: float = option(0.0, "RMSprop: momentum (MinAtar reference 0)", check="non_negative")


def _rmsprop_args(cfg) -> dict[str, Any]:
    """A run's RMSprop keywords, passed explicitly (a learner built outside ``crl.api.prepare`` gets them too)."""
    return {**_common_args(cfg), "alpha": cfg.rmsprop_alpha, "rms_eps": cfg.rmsprop_eps,
            "centered": cfg.rmsprop_centered, "momentum": cfg.rmsprop_momentum}


@OPTIMIZERS.register("rmsprop", "RMSprop (torch.optim.RMSprop), centered by default: the MinAtar reference DQN's "
                                "optimizer", options=RMSpropOptions, args=_rmsprop_args)
def _build_rmsprop(named, *, lr, eps, weight_decay, muon_exclude, alpha=None, rms_eps=None, centered=None,
                   momentum=None):
    """``eps`` (the Adam epsilon the learners pass) is not used: RMSprop's is ``--rmsprop-eps``. The
    keywords: a run's options (:func:`_rmsprop_args`); when not given, those of the run being built
    (``crl.options.current``), else RMSpropOptions' defaults."""
    from crl.options import current

    o = current(RMSpropOptions)
    return torch.optim.RMSprop(
        _params(named),
        lr=lr,
        alpha=o.rmsprop_alpha if alpha is None else alpha,
        eps=o.rmsprop_eps if rms_eps is None else rms_eps,
        weight_decay=weight_decay,
        momentum=o.rmsprop_momentum if momentum is None else momentum,
        centered=o.rmsprop_centered if centered is None else centered,
        foreach=None,  # torch picks: one kernel over all parameters on CUDA, a loop over them on CPU (faster there)
    )
