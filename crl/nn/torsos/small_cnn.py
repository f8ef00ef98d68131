"""A small CNN for 8x8 to 32x32 images (digits, MNIST, CIFAR) in supervised scenarios.

Two stages ``Conv3x3(pad 1) -> norm -> ReLU -> MaxPool 2x2`` with 32 and 64 channels, then
flatten -> ``Linear(256) -> norm -> ReLU``: the shape of the small convnets used in plasticity
studies on MNIST/CIFAR (e.g. the CNN arm of Lyle et al. 2023/2024; their exact widths are not
published in what crl's references hold, so these are crl's choice). 8x8 -> 4 -> 2,
28 -> 14 -> 7, 32 -> 16 -> 8. Norm placement as everywhere in crl (before each ReLU), so every
norm and NaP apply (``--activation`` replaces each ReLU; CReLU doubles what the next layer reads);
it is a conv torso (``encoder`` + ``dense``), so ``--moe softmoe`` applies.
"""
from __future__ import annotations

from torch import nn

from crl.errors import UserError
from crl.nn.activations import layer_units
from crl.nn.blocks import conv_block
from crl.nn.torsos.nature import ConvTorso, check_image
from crl.registry import TORSOS


@TORSOS.register("small_cnn", "small CNN for small images: 2 x (Conv3x3 -> norm -> ReLU -> MaxPool2) with 32, 64 "
                              "channels + Linear(256)", conv=True)
def small_cnn(obs_shape: tuple, cfg) -> ConvTorso:
    check_image(obs_shape, "small_cnn")
    c, h, w = obs_shape
    if min(h, w) < 4:
        raise UserError(f"--torso: 'small_cnn' needs images of at least 4x4, got {h}x{w}")
    first = conv_block(c, layer_units(cfg, 32), 3, 1, cfg.norm, padding=1, activation=cfg.activation)
    second = conv_block(first.out_width, layer_units(cfg, 64), 3, 1, cfg.norm, padding=1, activation=cfg.activation)
    encoder = nn.Sequential(first, nn.MaxPool2d(2), second, nn.MaxPool2d(2))
    return ConvTorso(encoder, obs_shape, layer_units(cfg, 256), cfg.norm, cfg.activation)
