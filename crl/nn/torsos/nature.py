"""Nature CNN (Mnih et al. 2015, "Human-level control through deep RL").

Default (``--nature-padding valid``), the PyTorch/CleanRL layout (``vwxyzjn/cleanrl:
cleanrl/dqn_atari.py``): VALID padding, 84 -> 20 -> 9 -> 7, flatten 3136, Linear(512);
PyTorch default init; input uint8 / 255.

``--nature-padding same``: Dopamine's JAX ``NatureDQNNetwork`` (``dopamine/jax/networks.py``,
flax ``nn.Conv`` whose default padding is SAME): 84 -> 21 -> 11 -> 11, flatten 7744. SAME is
TensorFlow's rule, ``out = ceil(in / stride)`` with the padding split low/high as
``total // 2`` / the rest (asymmetric where total is odd: 1/2 on the second conv), done by
:class:`SameConv2d`. The SoftMoE paper's networks (Obando-Ceron et al. 2024, Dopamine's
``labs/moes``) use this torso: 121 tokens of 64 channels, 16 slots per expert for 8 experts.
``auto`` (the default) is SAME with ``--moe softmoe`` and VALID otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crl.errors import UserError
from crl.nn.activations import layer_units
from crl.nn.blocks import Block, conv_block, dense_block
from crl.options import option
from crl.registry import NORMS, TORSOS


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow/flax SAME padding for any stride: ``out = ceil(in / stride)``,
    zero padding ``total = max((out - 1) * stride + kernel - in, 0)`` per spatial dim, ``total // 2``
    before and the rest after (computed from each input's size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def same_conv_block(in_ch: int, out_ch: int, kernel: int, stride: int, norm: str, activation: str = "relu") -> Block:
    return Block(lambda bias: SameConv2d(in_ch, out_ch, kernel, stride, 0, bias=bias), out_ch, norm, dims=2,
                 activation=activation)


@dataclass
class NatureOptions:
    """Padding of the Nature CNN."""

    nature_padding: str = option("auto", "valid (CleanRL, 7x7 feature map), same (Dopamine JAX, 11x11) or auto "
                                         "(same with --moe softmoe, as the SoftMoE paper; valid otherwise)",
                                 choices=("auto", "valid", "same"))


class ConvTorso(nn.Module):
    """``encoder`` (conv feature map) -> ``dense`` (flatten + penultimate layer; SoftMoE can replace it)."""

    def __init__(self, encoder: nn.Module, obs_shape: tuple, hidden: int, norm: str, activation: str = "relu"):
        super().__init__()
        self.encoder = encoder
        encoder.eval()  # probe the output shape without touching running statistics
        try:
            with torch.no_grad():
                self.feature_map_shape = tuple(encoder(torch.zeros(2, *obs_shape)).shape[1:])
        except RuntimeError as err:  # e.g. the Nature CNN's 8x8 / 4x4 convs on MinAtar's 10x10 frames
            if "too small" not in str(err) and "size" not in str(err):
                raise
            raise UserError(f"--torso: observations of shape {tuple(obs_shape)} are too small for this torso's "
                            "convolutions; use a torso for small images (minatar, small_cnn, impala)") from None
        encoder.train()
        flat = self.feature_map_shape[0] * self.feature_map_shape[1] * self.feature_map_shape[2]
        # A conv-only norm (GroupNorm, EvoNorm: not defined for dense features) normalises the conv
        # stack only, as in the ResNets of their papers; this dense layer is then Linear -> activation.
        dense_norm = norm if 1 in NORMS.entry(norm).meta.get("dims", (1, 2)) else "none"
        block = dense_block(flat, hidden, dense_norm, activation)
        self.dense = nn.Sequential(nn.Flatten(), block)
        self.out_features = block.out_width

    def features_map(self, x: torch.Tensor) -> torch.Tensor:
        # uint8 frames are scaled here, on the device, so replay can stay uint8.
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features_map(x))


def check_image(obs_shape: tuple, torso: str) -> None:
    if len(obs_shape) != 3:
        raise UserError(f"--torso: '{torso}' needs image observations (C, H, W), got shape {tuple(obs_shape)}; use mlp")


def nature_padding(cfg) -> str:
    """``valid`` or ``same``: ``--nature-padding``, with ``auto`` resolved (same under ``--moe softmoe``)."""
    if cfg.nature_padding == "auto":
        return "same" if cfg.moe == "softmoe" else "valid"
    return cfg.nature_padding


@TORSOS.register("nature", "Nature DQN CNN: 3 convs (VALID; SAME with --nature-padding same or under --moe "
                           "softmoe) + Linear(512), norm before each activation", options=NatureOptions, conv=True)
def nature(obs_shape: tuple, cfg) -> ConvTorso:
    check_image(obs_shape, "nature")
    block = same_conv_block if nature_padding(cfg) == "same" else conv_block
    blocks, width = [], obs_shape[0]
    for channels, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
        blocks.append(block(width, layer_units(cfg, channels), kernel, stride, cfg.norm, activation=cfg.activation))
        width = blocks[-1].out_width
    return ConvTorso(nn.Sequential(*blocks), obs_shape, layer_units(cfg, 512), cfg.norm, cfg.activation)
