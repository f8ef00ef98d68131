"""RMSNorm and GroupNorm baselines, plus the group-count rule shared by the grouped norms.

``resolve_groups`` is the one place that decides how a requested number of groups is fitted
to a channel count; GroupNorm, EvoNorm-S0 and PowerNorm's group scaling all use it.
"""
from __future__ import annotations

import torch
from torch import nn

from crl.errors import UserError
from crl.registry import NORMS


def resolve_groups(num_channels: int, groups: int, option: str = "groups") -> int:
    """Largest divisor of ``num_channels`` that is ``<= groups`` (and ``<= num_channels``).

    This is the rule of the official EvoNorm code (tensorflow/tpu ``_group_std``: decrement the
    group count until it divides C), so e.g. C=48, groups=32 -> 24; C=20, groups=32 -> 20.
    """
    if int(groups) != groups or groups < 1:
        raise UserError(f"{option}: the number of groups must be a positive integer, got {groups!r}")
    g = min(int(groups), int(num_channels))
    while num_channels % g:
        g -= 1
    return g


def _param_shape(x: torch.Tensor) -> tuple[int, ...]:
    """(1, C, 1, ...) for broadcasting a per-channel vector over a (B, C, *) tensor."""
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


class RMSNorm(nn.Module):
    """Root-mean-square normalization with a per-channel gain *and* offset.

    Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019 (arXiv 1910.07467);
    reference code https://github.com/bzhangGo/rmsnorm. Written from the equations:

        dense (B, C):        y = x / sqrt(mean_C(x^2) + eps) * gamma + beta
        conv  (B, C, H, W):  y = x / sqrt(mean_{C,H,W}(x^2) + eps) * gamma_c + beta_c

    i.e. per sample over all of the sample's features, with a per-channel affine (the conv
    form mirrors ``layernorm`` here, which is GroupNorm(1, C)). The paper's RMSNorm has a gain
    only; RMSNorm does not remove the mean, so we keep the offset beta after it (the layer
    feeding it is built without bias; crl reference section 14, rule 4). ``eps`` defaults to
    1e-5 like our LayerNorm (``torch.nn.RMSNorm`` defaults to ``finfo.eps`` instead).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = x.pow(2).mean(dim=tuple(range(1, x.dim())), keepdim=True)
        y = x * torch.rsqrt(ms + self.eps)
        if self.affine:
            shape = _param_shape(x)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


@NORMS.register("rmsnorm", "RMSNorm (dense: over features; conv: over C,H,W per sample) with per-channel gain and "
                           "offset (mean-free, so the offset is kept)", dims=(1, 2), scale_invariant=True)
def _rmsnorm(num_features: int, dims: int, eps: float = 1e-5, **_) -> nn.Module:
    return RMSNorm(num_features, eps=eps)


@NORMS.register("groupnorm", "GroupNorm (Wu & He 2018), conv only; groups (default 32) reduced to the largest "
                             "divisor of C not above it", dims=(2,), scale_invariant=True)
def _groupnorm(num_features: int, dims: int, groups: int = 32, eps: float = 1e-5, **_) -> nn.Module:
    """``torch.nn.GroupNorm`` (Wu & He, ECCV 2018, arXiv 1803.08494).

    Groups: the requested count (default 32) is lowered to the largest divisor of C that does
    not exceed it (:func:`resolve_groups`), e.g. C=48 -> 24 groups, C=16 -> 16 (= InstanceNorm
    with affine). Dense layers are refused: GN's statistics are taken over (C/G, H, W), which for a
    dense layer leaves only C/G values per group (2 for C=64, G=32 -- each pair collapses to
    +-1); use ``layernorm`` (= GroupNorm with one group) there.
    """
    return nn.GroupNorm(resolve_groups(num_features, groups, "--norm groupnorm groups"), num_features, eps=eps)
