"""The interface of a classification loss (``--loss``) and the masking helper every loss uses."""
from __future__ import annotations

import torch


class ClassificationLoss:
    """``loss(logits, targets, mask=None)``: ``logits`` (N, C), ``targets`` (N,) class ids, ``mask``
    (N, C) booleans, True for the classes sample ``i``'s loss may see (None: all; the target class
    is always among them). Returns one term per sample (``per_sample = True``; the learner takes
    their mean) or, for a loss of the whole group such as AnyLoss, one scalar (``per_sample =
    False``)."""

    per_sample = True

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


def masked(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``logits`` with the classes outside ``mask`` set to the dtype's lowest value (softmax weight 0)."""
    return logits if mask is None else logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
