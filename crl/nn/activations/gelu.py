"""GELU (Hendrycks & Gimpel 2016, arXiv 1606.08415): ``x * Phi(x)`` with ``Phi`` the standard
normal CDF; the exact form (``torch.nn.GELU(approximate='none')``), not the tanh approximation."""
from __future__ import annotations

from torch import nn

from crl.registry import ACTIVATIONS


@ACTIVATIONS.register("gelu", "GELU x * Phi(x) (Hendrycks & Gimpel 2016), exact erf form")
def gelu(num_features: int, dims: int) -> nn.Module:
    return nn.GELU()
