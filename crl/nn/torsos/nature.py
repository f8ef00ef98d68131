"""Nature CNN (Mnih et al. 2015, "Human-level control through deep RL").

PyTorch/CleanRL layout (``vwxyzjn/cleanrl: cleanrl/dqn_atari.py``): VALID padding,
84 -> 20 -> 9 -> 7, flatten 3136, Linear(512); PyTorch default init; input uint8 / 255.
"""
from __future__ import annotations

import torch
from torch import nn

from crl.errors import UserError
from crl.nn.blocks import conv_block, dense_block
from crl.registry import NORMS, TORSOS


class ConvTorso(nn.Module):
    """``encoder`` (conv feature map) -> ``dense`` (flatten + penultimate layer; SoftMoE can replace it)."""

    def __init__(self, encoder: nn.Module, obs_shape: tuple, hidden: int, norm: str):
        super().__init__()
        self.encoder = encoder
        encoder.eval()  # probe the output shape without touching running statistics
        with torch.no_grad():
            self.feature_map_shape = tuple(encoder(torch.zeros(2, *obs_shape)).shape[1:])
        encoder.train()
        flat = self.feature_map_shape[0] * self.feature_map_shape[1] * self.feature_map_shape[2]
        # A conv-only norm (GroupNorm, EvoNorm: not defined for dense features) normalises the conv
        # stack only, as in the ResNets of their papers; this dense layer is then Linear -> ReLU.
        dense_norm = norm if 1 in NORMS.entry(norm).meta.get("dims", (1, 2)) else "none"
        self.dense = nn.Sequential(nn.Flatten(), dense_block(flat, hidden, dense_norm))
        self.out_features = hidden

    def features_map(self, x: torch.Tensor) -> torch.Tensor:
        # uint8 frames are scaled here, on the device, so replay can stay uint8.
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features_map(x))


def check_image(obs_shape: tuple, torso: str) -> None:
    if len(obs_shape) != 3:
        raise UserError(f"--torso: '{torso}' needs image observations (C, H, W), got shape {tuple(obs_shape)}; use mlp")


@TORSOS.register("nature", "Nature DQN CNN: 3 convs (VALID) + Linear(512), norm before each ReLU", conv=True)
def nature(obs_shape: tuple, cfg) -> ConvTorso:
    check_image(obs_shape, "nature")
    c = obs_shape[0]
    encoder = nn.Sequential(
        conv_block(c, 32, 8, 4, cfg.norm),
        conv_block(32, 64, 4, 2, cfg.norm),
        conv_block(64, 64, 3, 1, cfg.norm),
    )
    return ConvTorso(encoder, obs_shape, 512, cfg.norm)
