"""Z-loss (``--loss zloss``): a shift- and scale-invariant loss of the spherical family.

de Brébisson & Vincent, "The Z-loss: a shift and scale invariant classification loss belonging to
the Spherical Family", arXiv 1604.08859 (2016). No official code was found; written from the
paper's definition. For the outputs ``o`` (the logits) of one sample over its ``D`` visible classes
and its target ``c``::

    mu = mean_k o_k,   sigma = sqrt(mean_k o_k^2 - mu^2)      (population std of the D outputs)
    z_c = (o_c - mu) / sigma
    L = (1/a) log(1 + exp(a (b - z_c))) = softplus_a(b - z_c)

``a > 0`` (sharpness) and ``b`` (location: where the loss starts to saturate) are the paper's two
hyperparameters. ``z_c`` is unchanged by adding a constant to every output or multiplying them by
a positive number, so the loss only sees the *ranking geometry* of the outputs, never their scale.
The gradient is ``dL/dz_c = -sigmoid(a (b - z_c))`` and ``dz_c/do_k = (1[k=c] - 1/D - z_c z_k / D)
/ sigma``.

Choices of crl: the paper tunes ``a`` and ``b`` per task; the defaults here (``a = 1``, ``b = 3``)
are crl's, not the paper's (for ``D = 10`` classes ``z_c <= sqrt(D - 1) = 3``, so with ``b = 3``
the loss keeps a gradient until the target is as far ahead as it can be). ``sigma`` is computed
as ``sqrt(var + 1e-12)`` so equal logits (``sigma = 0``) give ``z = 0`` instead of 0/0. With
``mask`` (ER-ACE's incoming batch, ``--il-mode task``) the statistics run over the visible classes
only. For ``D = 2`` visible classes ``z = +-1`` whatever the logits (the loss is constant), so the
classifier refuses settings where a sample may see fewer than 3 classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from crl.losses.base import ClassificationLoss
from crl.options import option
from crl.registry import LOSSES

SIGMA_EPS = 1e-12


@dataclass
class ZLossOptions:
    """Z-loss hyperparameters (de Brébisson & Vincent 2016)."""

    zloss_a: float = option(1.0, "Z-loss: sharpness a of the softplus (crl default; the paper tunes it)",
                            check="positive")
    zloss_b: float = option(3.0, "Z-loss: location b, the z-score of the target where the loss saturates (crl "
                                 "default; the paper tunes it)")


def z_scores(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(o - mu) / sigma`` per row over the visible classes (masked entries are returned as 0)."""
    if mask is None:
        mu = logits.mean(dim=1, keepdim=True)
        var = (logits - mu).square().mean(dim=1, keepdim=True)
        return (logits - mu) / torch.sqrt(var + SIGMA_EPS)
    m = mask.to(logits.dtype)
    d = m.sum(dim=1, keepdim=True)
    o = logits * m
    mu = o.sum(dim=1, keepdim=True) / d
    var = ((logits - mu) * m).square().sum(dim=1, keepdim=True) / d
    return (logits - mu) * m / torch.sqrt(var + SIGMA_EPS)


class ZLoss(ClassificationLoss):
    """``softplus_a(b - z_c)`` per sample (module docstring)."""

    per_sample = True

    def __init__(self, a: float = 1.0, b: float = 3.0):
        if not a > 0:
            raise ValueError(f"Z-loss: a must be > 0, got {a}")
        self.a, self.b = float(a), float(b)

    def __call__(self, logits, targets, mask=None):
        z_c = z_scores(logits, mask).gather(1, targets.view(-1, 1)).squeeze(1)
        return F.softplus(self.b - z_c, beta=self.a)


@LOSSES.register("zloss", "Z-loss (de Brebisson & Vincent 2016): softplus of the target's z-score, shift and "
                          "scale invariant; --zloss-a, --zloss-b", options=ZLossOptions, min_classes=3)
def _zloss(cfg) -> ZLoss:
    return ZLoss(cfg.zloss_a, cfg.zloss_b)
