"""ReLU, ``max(0, x)`` (Nair & Hinton 2010): crl's default nonlinearity. It is ``torch.nn.ReLU``
itself, so networks built with ``--activation relu`` are the ones crl built before activations
became a choice (same modules, same ``state_dict``)."""
from __future__ import annotations

from torch import nn

from crl.registry import ACTIVATIONS


@ACTIVATIONS.register("relu", "ReLU max(0, x) (default)")
def relu(num_features: int, dims: int) -> nn.Module:
    return nn.ReLU()
