"""Nonlinearities, all built through :func:`make_activation` (``--activation``, default relu).

The network builder (:mod:`crl.nn.blocks`) puts the module returned here after each hidden
layer's norm: ``Linear/Conv -> norm -> activation``, in every torso. A norm registered with
``includes_activation=True`` (EvoNorm) replaces norm *and* activation; ``--activation`` must
then stay ``relu`` (one error line otherwise).

Width. An activation registered with ``width=2`` (CReLU) returns twice as many features as it
receives (concatenated along axis 1: features of a dense layer, channels of a conv map); the
torsos size the layer that reads it with the block's ``out_width`` (:func:`output_width`). The torso's configured widths
(``--mlp-hidden``, 512 of the Nature CNN, ...) are the units of each affine map unless the
activation registers ``units(cfg, width)`` (``--crelu-width halve|params``): :func:`layer_units`
then gives the units of every layer crl sizes itself (not a residual stream, whose width the
skip connection fixes).

Dormant units (``crl/metrics``): a unit is one output feature (one channel of a conv map) of
the activation module, scored by ReDo's normalised mean |activation| (Sokar et al. 2023) for
every activation: for relu a (near-)zero mean output, for leaky-relu, gelu and crrelu a near-zero mean
|output| (these are never exactly 0 on a negative input, so tau = 0 flags almost nothing).
For crelu each half, ``relu(x)`` and ``relu(-x)``, is a unit of its own (an output the next
layer reads; one half is dead exactly when its pre-activation never has that sign); ReDo's
recycling, which re-initialises a pre-activation unit, scores the pre-split unit by the sum
of its two halves' mean |output|, that is ``E|x|`` (see :mod:`crl.interventions.redo`). The
fraction of active units (FAU) is logged for relu and crelu (non-zero outputs) only; for crelu
it is 1/2 by construction (exactly one half is non-zero wherever ``x != 0``), so only its
dormant fractions are informative.

Adding an activation: a file here with one ``@ACTIVATIONS.register(name, help, options=...)``
factory ``(num_features, dims, **options) -> nn.Module``, imported at the bottom of this file.
"""
from __future__ import annotations

from torch import nn

from crl import options as opts
from crl.errors import UserError
from crl.registry import ACTIVATIONS


def make_activation(name: str, num_features: int, dims: int) -> nn.Module:
    """Build activation ``name`` after ``num_features`` units (``dims`` 1 = dense, 2 = conv)."""
    entry = ACTIVATIONS.entry(name)
    return entry.factory(num_features, dims, **opts.values(entry.options))


def width_factor(name: str) -> int:
    """Output features per input feature of activation ``name`` (2 for crelu, else 1)."""
    return int(ACTIVATIONS.entry(name).meta.get("width", 1))


def layer_units(cfg, width: int) -> int:
    """Units of the affine map of a hidden layer whose configured width is ``width``."""
    units = ACTIVATIONS.entry(cfg.activation).meta.get("units")
    return width if units is None else units(cfg, width)


def output_width(cfg, units: int) -> int:
    """Features after the activation of a layer of ``units`` units."""
    return units * width_factor(cfg.activation)


def check_activation(cfg) -> None:
    """The activation exists and composes with the norm (a fused norm+activation keeps its own)."""
    from crl.nn.norms import includes_activation

    ACTIVATIONS.entry(cfg.activation)
    if cfg.activation != "relu" and includes_activation(cfg.norm):
        raise UserError(f"--activation: '{cfg.activation}' cannot be used with --norm {cfg.norm}, which includes its "
                        "own nonlinearity; use --activation relu or another norm")


# Activations defined in their own files register themselves on import.
from crl.nn.activations import relu, crelu, crrelu, gelu, leaky_relu  # noqa: E402,F401
