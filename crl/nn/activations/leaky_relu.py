"""Leaky ReLU (Maas, Hannun & Ng 2013, "Rectifier Nonlinearities Improve Neural Network Acoustic
Models"): ``x`` for ``x >= 0``, ``slope * x`` otherwise, ``slope = --leaky-slope`` (0.01, the
paper's and torch's value)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from crl.options import option
from crl.registry import ACTIVATIONS


@dataclass
class LeakyReLUOptions:
    """Slope of leaky ReLU on negative inputs."""

    leaky_slope: float = option(0.01, "leaky-relu: slope on negative inputs (Maas et al. 2013: 0.01)",
                                check="non_negative")


@ACTIVATIONS.register("leaky-relu", "leaky ReLU max(x, slope*x), slope --leaky-slope (Maas et al. 2013)",
                      options=LeakyReLUOptions)
def leaky_relu(num_features: int, dims: int, leaky_slope: float = 0.01) -> nn.Module:
    return nn.LeakyReLU(leaky_slope)
