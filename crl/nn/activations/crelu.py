"""CReLU, concatenated ReLU (Shang, Sohn, Almeida & Lee, "Understanding and Improving
Convolutional Neural Networks via Concatenated Rectified Linear Units", ICML 2016, arXiv
1603.05201): ``CReLU(x) = [relu(x), relu(-x)]``, concatenated along axis 1 (the features of a
dense layer, the channels of a conv map), so the output is twice as wide as the input and
unit ``j < H`` is ``relu(x_j)``, unit ``H + j`` is ``relu(-x_j)``.

Abbas, Zhao, Modayil, White & Machado, "Loss of Plasticity in Continual Deep Reinforcement
Learning" (CoLLAs 2023, arXiv 2303.07507) use it against the sparsifying activation footprint
of DQN agents cycling through Atari games: every pre-activation unit passes gradient on
either sign. Layer widths, ``--crelu-width``:

* ``keep`` (default): the torso's widths are the units of each affine map, each activation
  returns twice as many features, and the next layer reads ``2 x`` inputs (a hidden layer's
  parameter count doubles);
* ``halve``: the torso's widths are the widths *after* CReLU: every layer crl sizes has half
  the units, so every layer's output width is the ReLU network's (and a hidden layer has half
  its parameters: ``2(H/2) x H/2``);
* ``params``: ``round(H / sqrt 2)`` units, so a hidden layer's parameter count
  (``sqrt2 H x H / sqrt2``) matches the ReLU network's ``H x H``.

Residual streams (Impala, ResNet-18) keep their width under every mode: their activations
double the stream for the convs that read them. Which of these Abbas et al. used could not be
checked in crl's references (their text was not available to us); all are offered and
``keep`` is CReLU as Shang et al. define it.

In ResNet-18 the post-addition activation doubles the residual stream, so every block's
shortcut is a 1x1 projection (an identity cannot add 2C channels to C).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crl.errors import UserError
from crl.options import option
from crl.registry import ACTIVATIONS


class CReLU(nn.Module):
    """``[relu(x), relu(-x)]`` along axis 1."""

    width = 2
    fau_kind = "relu"  # a unit (one half) is active on a sample when its output is non-zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((F.relu(x), F.relu(-x)), dim=1)


@dataclass
class CReLUOptions:
    """How CReLU's doubled width is handled (Abbas et al. 2023)."""

    crelu_width: str = option("keep", "crelu: keep (widths are units; outputs 2x wide), halve (widths are the "
                                      "outputs: half the units) or params (width/sqrt2 units: ReLU's parameter count)",
                              choices=("keep", "halve", "params"))


def units(cfg, width: int) -> int:
    """Units of a layer of configured width ``width`` under ``--crelu-width``."""
    if cfg.crelu_width == "keep":
        return width
    if cfg.crelu_width == "params":
        return max(1, round(width / math.sqrt(2)))
    if width % 2:
        raise UserError(f"--crelu-width halve: every hidden width must be even, got {width}; use even widths or "
                        "--crelu-width keep|params")
    return width // 2


@ACTIVATIONS.register("crelu", "CReLU [relu(x), relu(-x)] (Shang et al. 2016; Abbas et al. 2023), output 2x wide "
                               "(--crelu-width)", options=CReLUOptions, width=2, units=units)
def crelu(num_features: int, dims: int, crelu_width: str = "keep") -> nn.Module:
    return CReLU()
