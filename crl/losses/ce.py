"""Cross-entropy (``--loss ce``, the default): ``-log softmax(o)_y`` per sample."""
from __future__ import annotations

import torch.nn.functional as F

from crl.losses.base import ClassificationLoss, masked
from crl.registry import LOSSES


class CrossEntropy(ClassificationLoss):
    """``l_i = -o_{i,y_i} + log sum_{k in mask_i} exp(o_{i,k})``: torch's ``cross_entropy`` of the
    logits with the classes outside the mask at the lowest float (exactly what the classifier did
    before losses were selectable)."""

    per_sample = True

    def __call__(self, logits, targets, mask=None):
        return F.cross_entropy(masked(logits, mask), targets, reduction="none")


@LOSSES.register("ce", "cross-entropy on the softmax of the logits (default)")
def _ce(cfg) -> CrossEntropy:
    return CrossEntropy()
