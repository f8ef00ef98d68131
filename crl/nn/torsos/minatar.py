"""The MinAtar reference network (Young & Tian 2019, arXiv 1903.03176; ``examples/dqn.py`` of
github.com/kenjyoung/MinAtar): one Conv 3x3 stride 1 with 16 filters (VALID padding,
10x10 -> 8x8), ReLU, flatten (16 * 8 * 8 = 1,024), Linear(128), ReLU; the Q-network's output
layer follows. PyTorch default initialisation, as the reference.

Built from :mod:`crl.nn.blocks` like every crl torso: the norm (``--norm``) sits before each
ReLU, so every norm and NaP apply; it is a conv torso (``encoder`` + ``dense``), so
``--moe softmoe`` can replace the dense layer (64 tokens of 16 channels). With ``--norm none``
it is exactly the reference network. ``--minatar-conv-channels`` and ``--minatar-hidden``
scale its width (plasticity studies vary width; the reference is 16 and 128).
``--activation`` replaces each ReLU (a widening one, CReLU, doubles the features the next
layer reads).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from crl.errors import UserError
from crl.nn.activations import layer_units
from crl.nn.blocks import conv_block
from crl.nn.torsos.nature import ConvTorso, check_image
from crl.options import option
from crl.registry import TORSOS


@dataclass
class MinAtarTorsoOptions:
    """Width of the MinAtar torso (reference: 16 filters, 128 units)."""

    minatar_conv_channels: int = option(16, "filters of the MinAtar torso's 3x3 conv (reference 16)", check="positive")
    minatar_hidden: int = option(128, "units of the MinAtar torso's dense layer (reference 128)", check="positive")


@TORSOS.register("minatar", "MinAtar reference: Conv 16 3x3 stride 1 + Linear(128) (Young & Tian 2019), norm "
                            "before each ReLU (--activation)", options=MinAtarTorsoOptions, conv=True)
def minatar(obs_shape: tuple, cfg) -> ConvTorso:
    check_image(obs_shape, "minatar")
    c, h, w = obs_shape
    if min(h, w) < 3:
        raise UserError(f"--torso: 'minatar' needs images of at least 3x3, got {h}x{w}")
    encoder = nn.Sequential(conv_block(c, layer_units(cfg, cfg.minatar_conv_channels), 3, 1, cfg.norm,
                                       activation=cfg.activation))
    return ConvTorso(encoder, obs_shape, layer_units(cfg, cfg.minatar_hidden), cfg.norm, cfg.activation)
