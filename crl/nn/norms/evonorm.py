"""EvoNorm-B0 and EvoNorm-S0: normalization-activation layers that replace ``BN -> ReLU``.

Registered with ``includes_activation=True``: the network builder adds no ReLU after them.
Both are conv-only here (``dims=(2,)``): B0's instance variance over (H, W) and S0's group
variance over (C/G, H, W) have no meaningful dense counterpart (one value / C/G values).
"""
from __future__ import annotations

import torch
from torch import nn

from crl.nn.norms.rms_group import resolve_groups
from crl.registry import NORMS


class _EvoNormBase(nn.Module):
    def __init__(self, num_features: int, eps: float, nonlinearity: bool, init_zero: bool):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.nonlinearity = nonlinearity
        self.weight = nn.Parameter(torch.zeros(num_features) if init_zero else torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        if nonlinearity:
            self.v = nn.Parameter(torch.ones(num_features))
        else:
            self.register_parameter("v", None)

    def _affine(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"EvoNorm expects (B, C, H, W) input, got shape {tuple(x.shape)}")


class EvoNormB0(_EvoNormBase):
    """EvoNorm-B0 (batch-dependent).

    Liu, Brock, Simonyan, Le, "Evolving Normalization-Activation Layers", NeurIPS 2020
    (arXiv 2004.02967); official code https://github.com/tensorflow/tpu
    (``models/official/resnet/resnet_layers.py``, ``evonorm``). Written from the equations:

        y = x / max( sqrt(Var_{B,H,W}(x) + eps),  v * x + sqrt(Var_{H,W}(x) + eps) ) * gamma + beta

    with biased variances. Training uses the batch variance (differentiable) and updates
    ``running_var <- running_var - (1 - decay) * (running_var - Var_batch)`` (decay 0.9, biased
    batch variance, as the official code; timm instead stores the unbiased one); eval uses
    ``running_var``. The instance term is per sample in both modes. ``nonlinearity=False`` gives
    the official affine-only form ``y = gamma * x + beta`` (no normalization at all);
    ``init_zero`` starts gamma at 0. Defaults eps 1e-5, decay 0.9 as official.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, decay: float = 0.9, nonlinearity: bool = True,
                 init_zero: bool = False):
        super().__init__(num_features, eps, nonlinearity, init_zero)
        self.decay = decay
        self.register_buffer("running_var", torch.ones(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, decay={self.decay}, nonlinearity={self.nonlinearity}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if not self.nonlinearity:
            return self._affine(x)
        if self.training:
            batch_var = x.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                self.running_var.sub_((1.0 - self.decay) * (self.running_var - batch_var.detach()))
        else:
            batch_var = self.running_var
        left = (batch_var + self.eps).sqrt().view(1, -1, 1, 1)
        inst_std = (x.var(dim=(2, 3), unbiased=False, keepdim=True) + self.eps).sqrt()
        right = self.v.view(1, -1, 1, 1) * x + inst_std
        return self._affine(x / torch.maximum(left, right))


class EvoNormS0(_EvoNormBase):
    """EvoNorm-S0 (sample-based, no running state).

    Liu, Brock, Simonyan, Le, "Evolving Normalization-Activation Layers", NeurIPS 2020
    (arXiv 2004.02967); official code https://github.com/tensorflow/tpu
    (``models/official/resnet/resnet_layers.py``, ``evonorm`` / ``_group_std``). From the equations:

        y = x * sigmoid(v * x) / sqrt(Var_{C/G,H,W}(x) + eps) * gamma + beta

    with the biased group variance per sample. Groups: the requested count (default 32) is
    lowered to the largest divisor of C not above it, as the official code does (timm asserts
    divisibility instead). Same train and eval behaviour. ``nonlinearity=False``: ``gamma*x+beta``.
    """

    def __init__(self, num_features: int, groups: int = 32, eps: float = 1e-5, nonlinearity: bool = True,
                 init_zero: bool = False):
        super().__init__(num_features, eps, nonlinearity, init_zero)
        self.groups = resolve_groups(num_features, groups, "--norm evonorm-s0 groups")

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, eps={self.eps}, nonlinearity={self.nonlinearity}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if not self.nonlinearity:
            return self._affine(x)
        b, c, h, w = x.shape
        xg = x.reshape(b, self.groups, c // self.groups, h, w)
        std = (xg.var(dim=(2, 3, 4), unbiased=False, keepdim=True) + self.eps).sqrt()
        std = std.expand_as(xg).reshape(b, c, h, w)
        return self._affine(x * torch.sigmoid(self.v.view(1, -1, 1, 1) * x) / std)


@NORMS.register("evonorm-b0", "EvoNorm-B0 (Liu et al. 2020), replaces BN+ReLU; batch var + running var (decay 0.9) "
                              "and instance std; conv only", dims=(2,), includes_activation=True)
def _evonorm_b0(num_features: int, dims: int, eps: float = 1e-5, decay: float = 0.9, **_) -> nn.Module:
    return EvoNormB0(num_features, eps=eps, decay=decay)


@NORMS.register("evonorm-s0", "EvoNorm-S0 (Liu et al. 2020), replaces norm+ReLU; x*sigmoid(v*x) over group std "
                              "(groups 32); no running state; conv only", dims=(2,), includes_activation=True)
def _evonorm_s0(num_features: int, dims: int, groups: int = 32, eps: float = 1e-5, **_) -> nn.Module:
    return EvoNormS0(num_features, groups=groups, eps=eps)
