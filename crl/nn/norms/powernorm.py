"""PowerNorm (Shen et al. 2020): batch quadratic-mean normalization with running statistics
in the forward pass and an approximate ("power") backward pass.

Layouts: the official module takes Transformer activations (T, B, C) and takes its statistics
per channel over all tokens (T*B). Here a dense input (B, C) has B tokens (the official
module's 2-D path does the same: it adds T = 1), and a conv map (B, C, H, W) has B*H*W tokens
(every pixel is a token; the official autograd function is itself written for (N, C, H, W)
with statistics over N, H, W). Group scaling is per token over channel groups.
"""
from __future__ import annotations

import torch
from torch import nn

from crl.nn.norms.rms_group import _param_shape, resolve_groups
from crl.registry import NORMS


def _stat_dims(x: torch.Tensor) -> tuple[int, ...]:
    """All dims but the channel dim 1: the tokens of a (B, C) or (B, C, H, W) tensor."""
    return (0,) + tuple(range(2, x.dim()))


def group_scaling(x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """Per token, per channel group: ``x / sqrt(mean_group(x^2) + eps)`` (official ``GroupScaling1D``)."""
    b, c = x.shape[:2]
    xg = x.reshape(b, groups, c // groups, *x.shape[2:])
    ms = xg.pow(2).mean(dim=2, keepdim=True)
    return (xg / (ms + eps).sqrt()).reshape(x.shape)


class _PowerFunction(torch.autograd.Function):
    """Training-mode PowerNorm core with the official approximate backward.

    forward:  psi2_B = mean_tokens(x^2);  z = x / sqrt(psi2_B + eps) if t <= warmup else x / sqrt(psi2 + eps)
              (psi2 = running value from previous steps); then the running update; y = gamma*z + beta.
    backward: g = dy*gamma;  xt = g - (1 - alpha_bkw) * Gamma * z;  Gamma += mean_tokens(xt * z);
              dx = xt / sqrt(psi2_B + eps)  (batch psi2_B even after warmup, as the official code);
              dgamma = sum(dy * z);  dbeta = sum(dy).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_phi, ema_gz, eps, alpha_fwd, alpha_bkw, warmup_iters, t):
        dims, shape = _stat_dims(x), _param_shape(x)
        var = (x * x).mean(dim=dims)
        denom = var if t <= warmup_iters else running_phi.clone()
        z = x / (denom + eps).sqrt().view(shape)
        if t < warmup_iters:  # cumulative average during warmup ...
            running_phi.mul_((t - 1) / t).add_(var / t)
        running_phi.mul_(alpha_fwd).add_((1.0 - alpha_fwd) * var)  # ... followed by the EMA, always
        ctx.save_for_backward(z, var, weight)
        ctx.ema_gz, ctx.eps, ctx.alpha_bkw = ema_gz, eps, alpha_bkw
        return weight.view(shape) * z + bias.view(shape)

    @staticmethod
    def backward(ctx, grad_out):
        z, var, weight = ctx.saved_tensors
        dims, shape = _stat_dims(z), _param_shape(z)
        ema_gz = ctx.ema_gz
        g = grad_out * weight.view(shape)
        xt = g - (1.0 - ctx.alpha_bkw) * ema_gz.view(shape) * z
        ema_gz.add_((xt * z).mean(dim=dims))
        gx = xt / (var + ctx.eps).sqrt().view(shape)
        return gx, (grad_out * z).sum(dim=dims), grad_out.sum(dim=dims), *([None] * 7)


class PowerNorm(nn.Module):
    """PowerNorm (PN).

    Shen, Yao, Gholami, Mahoney, Keutzer, "PowerNorm: Rethinking Batch Normalization in
    Transformers", ICML 2020 (arXiv 2003.07845); official code https://github.com/sIncerass/powernorm
    (``fairseq/modules/norms/mask_powernorm.py``). Written from that code's algorithm (see
    :class:`_PowerFunction`); defaults as official: eps 1e-5, alpha_fwd 0.9, alpha_bkw 0.9,
    warmup_iters 10000, groups 1.

    Forward, every mode: ``x <- group_scaling(x)`` (per token over channel groups; with the
    default single group that is an RMS normalization of each token, easy to miss). Training
    (``iters`` t counts training forwards from 1): statistics of the batch while t <= warmup,
    the running quadratic mean ``running_phi`` afterwards; running update
    ``phi <- phi*(t-1)/t + psi2_B/t`` while t < warmup, then always ``phi <- 0.9 phi + 0.1 psi2_B``.
    Eval: ``y = gamma * x / sqrt(running_phi + eps) + beta``. Mean-free: beta is kept.

    Differences from the official module: buffers are (C,) instead of (1, C, 1, 1); no padding
    mask; inputs (B, C) / (B, C, H, W) as described in the module docstring; groups that do not
    divide C are lowered to the largest divisor (official: reshape error). The gradient reaching
    the input is the official approximation, not the gradient of the forward: finite-difference
    checks fail by design. :meth:`restart_warmup` sets t back to 0 (e.g. at a task switch).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, alpha_fwd: float = 0.9, alpha_bkw: float = 0.9,
                 warmup_iters: int = 10000, groups: int = 1):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.alpha_fwd = alpha_fwd
        self.alpha_bkw = alpha_bkw
        self.warmup_iters = int(warmup_iters)
        self.groups = resolve_groups(num_features, groups, "--norm powernorm groups")
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_phi", torch.ones(num_features))
        self.register_buffer("ema_gz", torch.zeros(num_features))
        self.register_buffer("iters", torch.zeros((), dtype=torch.long))
        self._t = 0  # Python mirror of ``iters`` (no GPU sync per forward); read back from state_dicts

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, alpha_fwd={self.alpha_fwd}, alpha_bkw={self.alpha_bkw}, "
                f"warmup_iters={self.warmup_iters}, groups={self.groups}")

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._t = int(self.iters)

    def restart_warmup(self) -> None:
        """Set the iteration counter to 0: batch statistics again for ``warmup_iters`` steps.

        Use this, not a write to the ``iters`` buffer: the count lives in a Python int, written to
        ``iters`` every step and read back only by ``load_state_dict``.
        """
        self.iters.zero_()
        self._t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = group_scaling(x, self.groups)
        if self.training:
            self._t += 1
            self.iters.fill_(self._t)
            return _PowerFunction.apply(x, self.weight, self.bias, self.running_phi, self.ema_gz, self.eps,
                                        self.alpha_fwd, self.alpha_bkw, self.warmup_iters, self._t)
        shape = _param_shape(x)
        return self.weight.view(shape) * x / (self.running_phi + self.eps).sqrt().view(shape) + self.bias.view(shape)


@NORMS.register("powernorm", "PowerNorm (Shen et al. 2020): group scaling + batch quadratic mean, running psi^2 "
                             "(alpha 0.9) after warmup (10000), approximate backward", dims=(1, 2))
def _powernorm(num_features: int, dims: int, eps: float = 1e-5, alpha_fwd: float = 0.9, alpha_bkw: float = 0.9,
               warmup_iters: int = 10000, groups: int = 1, **_) -> nn.Module:
    return PowerNorm(num_features, eps=eps, alpha_fwd=alpha_fwd, alpha_bkw=alpha_bkw, warmup_iters=warmup_iters,
                     groups=groups)
