"""AnyLoss (``--loss anyloss``): a confusion-matrix metric made differentiable, used as the loss.

Han, Moniz & Chawla, "AnyLoss: Transforming Classification Metrics into Loss Functions", KDD 2024,
arXiv 2405.14745; official code: https://github.com/doheonhan/anyloss_extension
(``AnyLoss_Code.ipynb``; TensorFlow). Written for crl from the paper and that code's formulas.

The paper's approximation function pushes a predicted probability ``p`` towards 0 or 1 without
reaching them, so the confusion matrix built from it is differentiable::

    A(p) = 1 / (1 + exp(-L (p - 0.5)))                 (L: amplifying scale; official code: L = 73)

With labels ``y`` in {0, 1} and ``yhat = A(p)`` over the ``N`` samples of the group::

    TP = sum y yhat     FN = sum y - TP     FP = sum yhat - TP     TN = N - sum y - sum yhat + TP

and the loss is ``1 - metric(TN, FP, FN, TP)``, with the official code's formulas (``s = 1e-5``
keeps the denominators positive; ``y1 = sum y``, ``y0 = N - y1``)::

    accuracy            (TP + TN) / N
    f1, fbeta           (1 + beta^2) TP / (beta^2 y1 + sum yhat + s)
    balanced-accuracy   (y0 TP + y1 TN) / (2 y1 y0 + s)
    gmean               TP TN / (y1 y0 + s)       (the official code's surrogate: the square of
                                                   the G-mean sqrt(TPR TNR), whose sqrt has an
                                                   infinite gradient at 0)

Multi-class (the paper is binary and leaves multi-class to future work): **one-vs-rest, macro**.
``p = softmax(logits)`` (over the visible classes when a mask is given); for every class ``c``
that has at least one sample in the group, the binary problem ``y = 1[target = c]``,
``p = p_c`` gives ``metric_c``; the loss is ``1 - mean_c metric_c``. For two classes each term is
the paper's binary loss with that class as the positive one. Classes without a sample in the group
are left out (their F1 and balanced accuracy are undefined; a class with no positive contributes
no gradient to F1 anyway).

AnyLoss is a loss of the whole group (a batch), not of each sample: ``per_sample = False``. The
classifier computes it once per group of its strategy (incoming batch, each memory draw) and
refuses interventions that reweight per-sample losses (``meta-rescale``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crl.losses.base import ClassificationLoss, masked
from crl.options import option
from crl.registry import LOSSES

METRICS = ("f1", "fbeta", "accuracy", "balanced-accuracy", "gmean")
SMOOTH = 1e-5  # the official code's s


@dataclass
class AnyLossOptions:
    """AnyLoss settings (Han et al. 2024; defaults of the official code)."""

    anyloss_metric: str = option("f1", "AnyLoss: the confusion-matrix metric to maximise (one-vs-rest macro over "
                                       "the classes in the batch)", choices=METRICS)
    anyloss_scale: float = option(73.0, "AnyLoss: amplifying scale L of A(p) = sigmoid(L (p - 0.5)) (official "
                                        "code: 73)", check="positive")
    anyloss_beta: float = option(1.0, "AnyLoss: beta of --anyloss-metric fbeta", check="positive")


def approximate(p: torch.Tensor, scale: float) -> torch.Tensor:
    """The paper's approximation function ``A(p) = 1 / (1 + exp(-L (p - 0.5)))``."""
    return torch.sigmoid(scale * (p - 0.5))


def confusion(y: torch.Tensor, yhat: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Soft ``(TN, FP, FN, TP, y1, y0)`` of each column of ``y``, ``yhat`` (N, K); sums over rows."""
    n = y.shape[0]
    tp = (y * yhat).sum(0)
    y1 = y.sum(0)
    s = yhat.sum(0)
    return n - y1 - s + tp, s - tp, y1 - tp, tp, y1, n - y1


def metric_value(name: str, y: torch.Tensor, yhat: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """The metric of each column (class) of binary labels ``y`` and soft predictions ``yhat`` (N, K)."""
    tn, fp, fn, tp, y1, y0 = confusion(y, yhat)
    n = y.shape[0]
    if name == "accuracy":
        return (tp + tn) / n
    if name in ("f1", "fbeta"):
        b2 = 1.0 if name == "f1" else beta * beta
        return (1 + b2) * tp / (b2 * y1 + yhat.sum(0) + SMOOTH)
    if name == "balanced-accuracy":
        return (y0 * tp + y1 * tn) / (2 * y1 * y0 + SMOOTH)
    if name == "gmean":
        return tp * tn / (y1 * y0 + SMOOTH)
    raise ValueError(f"AnyLoss: unknown metric '{name}'; accepted: {', '.join(METRICS)}")


class AnyLoss(ClassificationLoss):
    """``1 - mean_c metric_c(A(softmax(logits)_c), 1[y = c])`` over the classes present in the group."""

    per_sample = False

    def __init__(self, metric: str = "f1", scale: float = 73.0, beta: float = 1.0):
        if metric not in METRICS:
            raise ValueError(f"AnyLoss: unknown metric '{metric}'; accepted: {', '.join(METRICS)}")
        self.metric, self.scale, self.beta = metric, float(scale), float(beta)

    def __call__(self, logits, targets, mask=None):
        p = torch.softmax(masked(logits, mask), dim=1)
        y = torch.nn.functional.one_hot(targets, p.shape[1]).to(p.dtype)
        present = y.sum(0) > 0
        values = metric_value(self.metric, y[:, present], approximate(p[:, present], self.scale), self.beta)
        return 1.0 - values.mean()


@LOSSES.register("anyloss", "AnyLoss (Han et al. 2024): 1 - a differentiable confusion-matrix metric of the batch "
                            "(--anyloss-metric f1|fbeta|accuracy|balanced-accuracy|gmean), one-vs-rest macro",
                 options=AnyLossOptions, per_sample=False)
def _anyloss(cfg) -> AnyLoss:
    return AnyLoss(cfg.anyloss_metric, cfg.anyloss_scale, cfg.anyloss_beta)
