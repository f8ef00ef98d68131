"""Normalization layers, all built through :func:`make_norm`.

The network builder (``crl.nn.network``) places the module returned here between each
hidden layer's affine map and its nonlinearity: ``Linear/Conv(bias=False) -> norm -> act``.
A norm registered with ``includes_activation=True`` (EvoNorm) replaces norm *and*
activation together; the builder then adds no activation of its own.

Adding a norm: write ``crl/nn/norms/<name>.py`` with the module and one
``@NORMS.register(name, help, dims=(1, 2))`` factory ``(num_features, dims, **kw) -> Module``,
then import that file at the bottom of this one. A norm with options names their dataclass
(``options=MyNormOptions``); :func:`make_norm` passes each option of the run being built to
the factory as a keyword argument of the same name.
"""
from __future__ import annotations

from torch import nn

from crl import options as opts
from crl.errors import UserError
from crl.registry import NORMS


def make_norm(name: str, num_features: int, dims: int, **kwargs) -> nn.Module:
    """Build norm ``name`` for ``num_features`` features; ``dims`` 1 = dense (B, C), 2 = conv (B, C, H, W)."""
    entry = NORMS.entry(name)
    allowed = entry.meta.get("dims", (1, 2))
    if dims not in allowed:
        kind = {1: "dense (MLP) layers", 2: "conv feature maps"}[dims]
        raise UserError(f"--norm: '{name}' is not defined for {kind}; the method defines it for "
                        f"{' and '.join({1: 'dense', 2: 'conv'}[d] for d in allowed)} only")
    return entry.factory(num_features, dims, **{**opts.values(entry.options), **kwargs})


def includes_activation(name: str) -> bool:
    """True for norms that fuse the nonlinearity (EvoNorm): the builder adds no ReLU."""
    return bool(NORMS.entry(name).meta.get("includes_activation", False))


def scale_invariant(name: str) -> bool:
    """True when the norm's output is unchanged by rescaling the weight of the layer feeding it
    (per-sample or per-batch mean/scale normalisation): the weights NaP may project."""
    return bool(NORMS.entry(name).meta.get("scale_invariant", False))


def drops_bias(name: str) -> bool:
    """True when the norm removes the mean, so a bias on the layer feeding it is redundant."""
    return bool(NORMS.entry(name).meta.get("drops_bias", name != "none"))


@NORMS.register("none", "no normalization", drops_bias=False)
def _none(num_features: int, dims: int, **_) -> nn.Module:
    return nn.Identity()


@NORMS.register("layernorm", "LayerNorm (dense: over features; conv: over C,H,W with per-channel affine = GroupNorm(1, C))",
                scale_invariant=True)
def _layernorm(num_features: int, dims: int, eps: float = 1e-5, **_) -> nn.Module:
    if dims == 1:
        return nn.LayerNorm(num_features, eps=eps)
    return nn.GroupNorm(1, num_features, eps=eps)


@NORMS.register("nap", "Normalize-and-Project (Lyle et al. 2024): LayerNorm here plus the 'nap' weight projection",
                scale_invariant=True)
def _nap(num_features: int, dims: int, eps: float = 1e-5, **_) -> nn.Module:
    return _layernorm(num_features, dims, eps=eps)


@NORMS.register("batchnorm", "BatchNorm (torch defaults: momentum 0.1, eps 1e-5)", scale_invariant=True)
def _batchnorm(num_features: int, dims: int, eps: float = 1e-5, momentum: float = 0.1, **_) -> nn.Module:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(num_features, eps=eps, momentum=momentum)


# Norms defined in their own files register themselves on import.
from crl.nn.norms import rms_group, evonorm, powernorm, unified, adab2n  # noqa: E402,F401
from crl.nn.norms.alpha_bn import apply_alpha_bn, remove_alpha_bn  # noqa: E402,F401
