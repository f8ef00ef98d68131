"""Unified Normalization (Yang et al. 2022): a LayerNorm replacement for Transformers that can
be folded into the preceding linear layer at inference.

Layouts as for PowerNorm: the official ``UN1d`` takes (B, N, C) and takes statistics per channel
over all B*N tokens; its 2-D path treats (B, C) as one sequence of B tokens, which is our dense
form. A conv map (B, C, H, W) uses the B*H*W pixels as tokens (the official autograd function
is written for (N, C, H, W) with statistics over N, H, W).
"""
from __future__ import annotations

import torch
from torch import nn

from crl.nn.norms.powernorm import _stat_dims
from crl.nn.norms.rms_group import _param_shape
from crl.registry import NORMS


class _UNFunction(torch.autograd.Function):
    """Training-mode UN core (forward window statistics, backward gradient compensation).

    t = iteration (from 1), Wf/Wb = forward/backward window sizes, m = momentum (keep fraction).

    forward:
        x2 = mean_tokens(x^2);  prev_spread = Var_unbiased(sqrt(buffer_x2)) (one scalar over the window);
        buffer_x2[t % Wf] = x2;  skip = (Wf <= 1)
        if outlier_filtration and t >= warmup:
            if any_c( AM_c(buffer_x2) - GM_c(buffer_x2) > prev_spread * Wf ):
                buffer_x2[t % Wf] = running_var;  skip = True;  skip_counter += 1
        var = x2  if t <= Wf or t < warmup or skip  else GM(buffer_x2)
        r = sqrt(var+eps)/sqrt(running_var+eps), replaced by 1 if t <= max(r_warmup, warmup) or skip,
            else clamped to [1/5, 5];
        z = x / sqrt(var+eps);  running_var <- m running_var + (1-m) var;  y = gamma z + beta
    backward (dy):
        g = dy * gamma * r;  gz = mean_tokens(g z);  buffer_gz[t % Wb] = ema_gz if skip else gz
        mean_gz = gz  if t <= Wb or t < warmup or skip  else mean(buffer_gz)
        ema_gz <- m ema_gz + (1-m) mean_gz
        dx = (g - c z) / sqrt(var+eps) with c = mean_gz if skip else ema_gz (the updated one)
        dgamma = sum(dy * r * z);  dbeta = sum(dy)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, st, t):
        dims, shape = _stat_dims(x), _param_shape(x)
        wf = st.buffer_x2.shape[0]
        skip = wf <= 1
        x2 = (x * x).mean(dim=dims)
        prev_spread = torch.var(torch.sqrt(st.buffer_x2))
        st.buffer_x2[t % wf].copy_(x2)
        if t >= st.warmup_iters and st.outlier_filtration:
            am = st.buffer_x2.mean(dim=0)
            gm = torch.exp(torch.log(st.buffer_x2).mean(dim=0))
            if bool(((am - gm) > prev_spread * wf).any()):
                st.buffer_x2[t % wf].copy_(st.running_var)
                skip = True
                st.skip_counter.add_(1)
        if t <= wf or t < st.warmup_iters or skip:
            var = x2
        else:
            var = torch.exp(torch.log(st.buffer_x2).mean(dim=0))
        if t <= max(st.r_warmup, st.warmup_iters) or skip:
            r = torch.ones_like(var)
        else:
            r = ((var + st.eps).sqrt() / (st.running_var + st.eps).sqrt()).clamp(1 / 5, 5)
        z = x / (var + st.eps).sqrt().view(shape)
        st.running_var.mul_(st.momentum).add_((1.0 - st.momentum) * var)
        ctx.save_for_backward(z, var, weight, r)
        ctx.st, ctx.t, ctx.skip = st, t, skip
        return weight.view(shape) * z + bias.view(shape)

    @staticmethod
    def backward(ctx, grad_out):
        z, var, weight, r = ctx.saved_tensors
        st, t, skip = ctx.st, ctx.t, ctx.skip
        dims, shape = _stat_dims(z), _param_shape(z)
        wb = st.buffer_gz.shape[0]
        g = grad_out * (weight * r).view(shape)
        gz = (g * z).mean(dim=dims)
        st.buffer_gz[t % wb].copy_(st.ema_gz if skip else gz)
        if t <= wb or t < st.warmup_iters or skip:
            mean_gz = gz
        else:
            mean_gz = st.buffer_gz.mean(dim=0)
        st.ema_gz.mul_(st.momentum).add_((1.0 - st.momentum) * mean_gz)
        c = mean_gz if skip else st.ema_gz
        gx = (g - c.view(shape) * z) / (var + st.eps).sqrt().view(shape)
        return gx, (grad_out * r.view(shape) * z).sum(dim=dims), grad_out.sum(dim=dims), None, None


class UnifiedNorm(nn.Module):
    """Unified Normalization (UN).

    Yang, Zhou, Wang, Qian, Guo, Liu, Pu, Zhang, Yao, "Unified Normalization for Accelerating and
    Stabilizing Transformers", ACM MM 2022 (arXiv 2208.01313); official code
    https://github.com/hikvision-research/Unified-Normalization
    (``.../unified_normalization/unified_normalization.py``, ``UN1d`` / ``UN2dFunction``).
    Written from that code's algorithm, spelled out in :class:`_UNFunction`. Defaults as official:
    window 4 (an int, or a pair (forward window, backward window)), warmup_iters 4000,
    outlier_filtration False (the authors suggest True for vision), eps 1e-5, momentum 0.9 (the
    fraction *kept*: ``running_var <- 0.9 running_var + 0.1 var``, opposite of torch's BN).

    Mean-free (a root second moment, no centring), so beta is kept. Eval:
    ``y = gamma * x / sqrt(running_var + eps) + beta``.

    Faithful quirks of the official code, kept: the scale ``r`` (1 for the first
    ``max(r_warmup=1000, warmup_iters)`` iterations) enters only the backward pass, including
    the gamma gradient ``sum(dy * r * z)`` although the forward output is ``gamma * z + beta``;
    the backward subtracts the EMA of the gradient statistic also during warmup; the
    backward updates buffers (``buffer_gz``, ``ema_gz``), so a forward without backward skips
    that update. Differences: no padding mask; dense and conv layouts as in the module docstring;
    ``r_warmup`` (official hard-coded 1000) is a keyword so tests can reach it. The authors'
    README asks to reset ``iters`` after loading weights so the warmup reruns: :meth:`restart_warmup`
    (also a candidate at each task switch).
    """

    def __init__(self, num_features: int, window_size: int | tuple[int, int] = 4, warmup_iters: int = 4000,
                 outlier_filtration: bool = False, eps: float = 1e-5, momentum: float = 0.9, r_warmup: int = 1000):
        super().__init__()
        wf, wb = (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)
        self.num_features = num_features
        self.window_size = (int(wf), int(wb))
        self.warmup_iters = int(warmup_iters)
        self.outlier_filtration = bool(outlier_filtration)
        self.eps = eps
        self.momentum = momentum
        self.r_warmup = int(r_warmup)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("ema_gz", torch.zeros(num_features))
        self.register_buffer("iters", torch.zeros((), dtype=torch.long))
        self._t = 0  # Python mirror of ``iters`` (no GPU sync per forward); read back from state_dicts
        self.register_buffer("buffer_x2", torch.zeros(self.window_size[0], num_features))
        self.register_buffer("buffer_gz", torch.zeros(self.window_size[1], num_features))
        self.register_buffer("skip_counter", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, window={self.window_size}, warmup_iters={self.warmup_iters}, "
                f"outlier_filtration={self.outlier_filtration}, eps={self.eps}, momentum={self.momentum}")

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._t = int(self.iters)

    def restart_warmup(self) -> None:
        """Set the iteration counter to 0 (official README: do it after loading weights).

        Use this, not a write to the ``iters`` buffer: the count lives in a Python int, written to
        ``iters`` every step and read back only by ``load_state_dict``.
        """
        self.iters.zero_()
        self._t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._t += 1
            self.iters.fill_(self._t)
            return _UNFunction.apply(x, self.weight, self.bias, self, self._t)
        shape = _param_shape(x)
        return self.weight.view(shape) * x / (self.running_var + self.eps).sqrt().view(shape) + self.bias.view(shape)


@NORMS.register("unified", "Unified Normalization (Yang et al. 2022): windowed geometric-mean second moment, "
                           "warmup 4000, running var (keep 0.9), gradient-compensating backward", dims=(1, 2))
def _unified(num_features: int, dims: int, window_size: int = 4, warmup_iters: int = 4000,
             outlier_filtration: bool = False, eps: float = 1e-5, momentum: float = 0.9, r_warmup: int = 1000,
             **_) -> nn.Module:
    return UnifiedNorm(num_features, window_size=window_size, warmup_iters=warmup_iters,
                       outlier_filtration=outlier_filtration, eps=eps, momentum=momentum, r_warmup=r_warmup)
