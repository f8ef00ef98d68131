"""CRReLU, Correction Regularized ReLU ("Entropy-based Activation Function Optimization: A
Method on Searching Better Activation Functions", ICLR 2025, OpenReview 7TZYM6Hm9p):

    CRReLU(x) = relu(x) + eps * x * exp(-x^2 / 2)

with ``eps`` a learnable scalar, one per activation layer, initialised to ``--crrelu-init``
(0.01: the paper's initial value, as its reviews quote it, and the default of public PyTorch
modules of this exact form). ``eps`` is an ordinary parameter: the optimizer updates it, and
weight decay and L2 Init reach it like every other parameter."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crl.options import option
from crl.registry import ACTIVATIONS


class CRReLU(nn.Module):
    def __init__(self, init: float = 0.01):
        super().__init__()
        self.init = float(init)
        self.eps = nn.Parameter(torch.tensor(self.init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) + self.eps * x * torch.exp(-0.5 * x * x)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.eps.fill_(self.init)


@dataclass
class CRReLUOptions:
    """Initial value of CRReLU's learnable correction weight."""

    crrelu_init: float = option(0.01, "crrelu: initial eps of relu(x) + eps*x*exp(-x^2/2) (paper: 0.01)")


@ACTIVATIONS.register("crrelu", "CRReLU relu(x) + eps*x*exp(-x^2/2), eps learnable per layer, init --crrelu-init "
                                "(EAFO, ICLR 2025)", options=CRReLUOptions)
def crrelu(num_features: int, dims: int, crrelu_init: float = 0.01) -> nn.Module:
    return CRReLU(crrelu_init)
