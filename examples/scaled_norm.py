"""A norm with its own option, in one file: LayerNorm whose output is multiplied by a fixed gain.

    crl run examples/scaled_norm.py:gym --norm scaled-layernorm --scaled-gain 2.0 --steps 5000
    crl run examples/scaled_norm.py:gym --norm scaled-layernorm --help     # lists --scaled-gain

``crl run FILE.py:gym`` imports this file (registering the norm and its option), then runs
the built-in ``gym`` scenario. The gain is a toy; the pattern is the point: a dataclass of
options with one-line help, named in the registry line. crl passes each option to the factory
as a keyword argument of the same name.
"""
from dataclasses import dataclass

import torch
from torch import nn

import crl


@dataclass
class ScaledNormOptions:
    """LayerNorm times a fixed gain."""

    scaled_gain: float = crl.option(1.0, "output gain of scaled-layernorm", check="positive")


class ScaledLayerNorm(nn.LayerNorm):
    def __init__(self, num_features: int, gain: float):
        super().__init__(num_features)
        self.register_buffer("gain", torch.tensor(float(gain)))  # a buffer: saved in checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gain


@crl.NORMS.register("scaled-layernorm", "LayerNorm times --scaled-gain (dense layers)", options=ScaledNormOptions,
                    dims=(1,), scale_invariant=True)
def scaled_layernorm(num_features: int, dims: int, scaled_gain: float, **_) -> nn.Module:
    return ScaledLayerNorm(num_features, scaled_gain)
