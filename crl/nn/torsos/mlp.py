"""MLP torso for vector observations (``crl gym``): ``--mlp-hidden`` blocks ``Linear -> norm ->
activation``; with a widening activation (CReLU) each layer reads its predecessor's output width."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from crl.errors import UserError
from crl.nn.activations import layer_units
from crl.nn.blocks import dense_block
from crl.options import option
from crl.registry import TORSOS


class MLPTorso(nn.Module):
    def __init__(self, in_features: int, sizes: list[int], norm: str, activation: str = "relu"):
        super().__init__()
        blocks, width = [], in_features
        for units in sizes:
            blocks.append(dense_block(width, units, norm, activation))
            width = blocks[-1].out_width
        self.blocks = nn.Sequential(*blocks)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.flatten(1).float())


@dataclass
class MLPOptions:
    """Layer sizes of the MLP torso."""

    mlp_hidden: str = option("256,256", "hidden sizes of the MLP torso, comma-separated")

    def sizes(self) -> list[int]:
        try:
            sizes = [int(s) for s in self.mlp_hidden.split(",") if s.strip()]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) <= 0:
            raise UserError(f"--mlp-hidden: expected positive integers like '256,256', got '{self.mlp_hidden}'")
        return sizes

    def check(self, cfg) -> None:
        self.sizes()


@TORSOS.register("mlp", "MLP for vector observations (--mlp-hidden sizes), norm before each activation",
                 options=MLPOptions, conv=False)
def mlp(obs_shape: tuple, cfg) -> MLPTorso:
    if len(obs_shape) > 2:
        raise UserError(f"--torso: 'mlp' needs vector observations, got shape {tuple(obs_shape)}; use nature or impala")
    sizes = [layer_units(cfg, size) for size in cfg.options(MLPOptions).sizes()]
    return MLPTorso(math.prod(obs_shape), sizes, cfg.norm, cfg.activation)
