"""Reduced ResNet-18 of the continual-learning literature (``--torso resnet18``).

The backbone of GEM (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning",
NeurIPS 2017, arXiv 1706.08840; ``facebookresearch/GradientEpisodicMemory: model/common.py``,
``ResNet18(nclasses, nf=20)``) that mammoth, DER++ and AdaB2N reuse: ResNet-18's layout
(He et al. 2016) with ``nf = 20`` instead of 64 channels in the first stage, a 3x3 stride-1
stem without max-pool, four stages of two BasicBlocks with ``nf, 2nf, 4nf, 8nf`` channels
(strides 1, 2, 2, 2), global average pooling and ``8 nf = 160`` features (about 1.1 M
parameters with a 10-class output layer). Written from that description, not copied.

Differences from GEM's code:

* every BatchNorm is ``--norm`` through :mod:`crl.nn.blocks` (``none``: plain convs with bias;
  ``batchnorm`` reproduces the original), so all norms and NaP apply;
* GEM pools with ``avg_pool2d(out, 4)``, which assumes 32x32 inputs (a 4x4 final map); crl
  uses adaptive average pooling to 1x1, identical at 32x32 and also defined for 28x28 MNIST
  or 8x8 digits;
* the post-addition ReLU of each block is a ``PreNormAct`` with norm ``none``, so metrics see
  it as a hidden activation;
* with a norm that fuses its nonlinearity (EvoNorm), the un-activated norms (after the second
  conv and on the shortcut) keep EvoNorm's nonlinearity (the EvoNorm paper uses an affine-only
  variant there).

Width: ``--resnet-width`` (nf, default 20). Input: any ``(C, H, W)``.

``--activation``: every ReLU is that activation. With a widening one (CReLU) the
post-addition activation doubles the residual stream, so each block reads ``2C`` channels and
its shortcut is a 1x1 projection (``conv -> norm``: an identity cannot add ``2C`` channels to
``C``); conv2 reads twice conv1's channels; ``out_features`` is ``2 x 8 nf``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crl.nn.activations import layer_units
from crl.nn.blocks import Block, PreNormAct, conv_block
from crl.nn.torsos.nature import check_image
from crl.options import option
from crl.registry import TORSOS


def _conv_norm(in_ch: int, out_ch: int, kernel: int, stride: int, norm: str) -> Block:
    """``Conv -> norm`` without activation (second conv of a block, projection shortcut)."""
    pad = kernel // 2
    return Block(lambda bias: nn.Conv2d(in_ch, out_ch, kernel, stride, pad, bias=bias), out_ch, norm, dims=2,
                 act=False)


class BasicBlock(nn.Module):
    """``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``; ``in_ch`` is the width of ``x`` (after the
    previous block's activation), ``units`` the channels of conv1 (``out_ch`` unless CReLU halves them)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, activation: str = "relu",
                 units: int | None = None):
        super().__init__()
        self.conv1 = conv_block(in_ch, out_ch if units is None else units, 3, stride, norm, padding=1,
                                activation=activation)
        self.conv2 = _conv_norm(self.conv1.out_width, out_ch, 3, 1, norm)
        self.shortcut = (_conv_norm(in_ch, out_ch, 1, stride, norm) if stride != 1 or in_ch != out_ch
                         else nn.Identity())
        self.out_act = PreNormAct(out_ch, "none", activation)
        self.out_width = self.out_act.out_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet18Torso(nn.Module):
    def __init__(self, in_channels: int, nf: int, norm: str, activation: str = "relu", units=lambda width: width):
        super().__init__()
        self.stem = conv_block(in_channels, units(nf), 3, 1, norm, padding=1, activation=activation)
        blocks, ch = [], self.stem.out_width
        for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            out = nf * mult
            blocks.append(BasicBlock(ch, out, stride, norm, activation, units(out)))
            blocks.append(BasicBlock(blocks[-1].out_width, out, 1, norm, activation, units(out)))
            ch = blocks[-1].out_width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return self.pool(self.stages(self.stem(x))).flatten(1)


@dataclass
class ResNet18Options:
    """Width of the reduced ResNet-18."""

    resnet_width: int = option(20, "channels of the first stage of the reduced ResNet-18 (nf; 20 in GEM/mammoth)",
                               check="positive")


@TORSOS.register("resnet18", "reduced ResNet-18 of GEM/mammoth/AdaB2N (nf = --resnet-width, 20), norm = --norm; "
                             "for CIFAR-size images", options=ResNet18Options, conv=False)
def resnet18(obs_shape: tuple, cfg) -> ResNet18Torso:
    check_image(obs_shape, "resnet18")
    return ResNet18Torso(obs_shape[0], cfg.resnet_width, cfg.norm, cfg.activation, lambda w: layer_units(cfg, w))
