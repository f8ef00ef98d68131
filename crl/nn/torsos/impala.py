"""Impala ResNet (Espeholt et al. 2018, ``google-deepmind/scalable_agent: experiment.py``).

Per stage (16, 32, 32 channels x ``--impala-width``): Conv3x3 -> MaxPool 3x3 s2 -> two
residual blocks ``x + Conv(act(Conv(act(x))))``; then act -> flatten -> Linear(256)
(``--impala-dense``; 512 for Dopamine's Impala baseline of the SoftMoE paper, ``labs/moes``).
84 -> 42 -> 21 -> 11, output 32x11x11 = 3872 at width 1.

Norm placement: before each nonlinearity, as everywhere in crl. Inside a residual block
that is ``x + Conv2(act(norm(Conv1(act(norm(x))))))``: the stream itself is normalised
before its ReLU (pre-activation), and Conv1 feeds only a norm, so it is the
scale-invariant (NaP-projectable) weight; Conv2 and the stage conv write into the
un-normalised residual stream and are not projected.

``--activation``: every ReLU above is that activation. A widening one (CReLU) doubles what
it activates: Conv1 reads ``2C`` channels and Conv2 reads twice Conv1's channels; the residual
stream stays ``C`` wide (``--crelu-width halve`` halves Conv1's channels and the dense layer).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crl.nn.activations import layer_units
from crl.nn.blocks import Block, PreNormAct, conv_block
from crl.nn.torsos.nature import ConvTorso, check_image
from crl.options import option
from crl.registry import TORSOS


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str, activation: str = "relu", units: int | None = None):
        super().__init__()
        units = channels if units is None else units  # conv1's channels (half under --crelu-width halve)
        self.pre = PreNormAct(channels, norm, activation)
        self.conv1 = conv_block(self.pre.out_width, units, 3, 1, norm, padding=1, activation=activation)
        # conv2 adds into the residual stream: keeps its bias, no norm of its own.
        mid = self.conv1.out_width
        self.conv2 = Block(lambda bias: nn.Conv2d(mid, channels, 3, 1, 1, bias=True), channels, "none", dims=2,
                           act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(self.pre(x)))


class ImpalaStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, norm: str, activation: str = "relu", units: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.res = nn.Sequential(ResidualBlock(out_ch, norm, activation, units),
                                 ResidualBlock(out_ch, norm, activation, units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.pool(self.conv(x)))


@dataclass
class ImpalaOptions:
    """Width of the Impala ResNet."""

    impala_width: int = option(1, "channel multiplier of the Impala ResNet", check="positive")
    impala_dense: int = option(256, "units of the Impala torso's dense layer (Espeholt et al. 2018: 256; Dopamine's "
                                    "Impala baseline in labs/moes: 512)", check="positive")


@TORSOS.register("impala", "Impala ResNet (16,32,32 x --impala-width) + Linear(--impala-dense, 256), pre-activation "
                           "norms",
                 options=ImpalaOptions, conv=True)
def impala(obs_shape: tuple, cfg) -> ConvTorso:
    check_image(obs_shape, "impala")
    chans = [obs_shape[0]] + [k * cfg.impala_width for k in (16, 32, 32)]
    stages = [ImpalaStage(a, b, cfg.norm, cfg.activation, layer_units(cfg, b)) for a, b in zip(chans, chans[1:])]
    encoder = nn.Sequential(*stages, PreNormAct(chans[-1], cfg.norm, cfg.activation))
    return ConvTorso(encoder, obs_shape, layer_units(cfg, cfg.impala_dense), cfg.norm, cfg.activation)
