"""alpha-BN: test-time mixing of BatchNorm's running (source) statistics with the statistics of
the test batch. Not a ``--norm`` entry and not reachable from the command line (no flag selects
it): apply it in Python to a built model with :func:`apply_alpha_bn` (undo with
:func:`remove_alpha_bn`), e.g. on a learner's network before calling its ``evaluate``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crl.errors import UserError


class _AlphaBNMixin:
    """Eval-mode forward with mixed statistics; training-mode forward is BatchNorm's own.

    You, Li, Zhao, "Test-time Batch Statistics Calibration for Covariate Shift",
    arXiv 2110.04065 (2021); no official code found; the common re-implementation is
    ``AlphaBatchNorm`` in https://github.com/mariodoebler/test-time-adaptation
    (``classification/methods/bn.py``). Written from the equations:

        mu  = alpha * mu_batch  + (1 - alpha) * running_mean
        var = alpha * var_batch + (1 - alpha) * running_var
        y   = gamma * (x - mu) / sqrt(var + eps) + beta

    Convention: **alpha weights the test batch** (alpha = 0: plain eval BN; alpha = 1: the batch's
    own statistics, i.e. train-mode normalization without a running update). This matches the
    test-time-adaptation repo ("(1-alpha)*src + alpha*test"); bethgelab/robustness weights the
    source instead. Batch statistics are per channel over (B, *spatial); ``var_batch`` is biased
    by default (then alpha = 1 equals train-mode BN exactly); ``unbiased=True`` uses the
    Bessel-corrected variance like the test-time-adaptation repo's shadow BN. Mixing is linear
    in the variance (it ignores the alpha(1-alpha)(mu_s - mu_t)^2 term of a true mixture). Running
    statistics are never updated by the eval forward. Needs test batches of more than one value
    per channel to mean anything (a single dense sample has zero variance).
    """

    alpha: float
    alpha_unbiased: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.training or self.running_mean is None:
            return super().forward(x)  # type: ignore[misc]
        self._check_input_dim(x)  # type: ignore[attr-defined]
        dims = (0,) + tuple(range(2, x.dim()))
        var_b, mean_b = torch.var_mean(x, dim=dims, correction=1 if self.alpha_unbiased else 0)
        a = self.alpha
        mean = a * mean_b + (1.0 - a) * self.running_mean
        var = a * var_b + (1.0 - a) * self.running_var
        return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)  # type: ignore[attr-defined]


class AlphaBatchNorm1d(_AlphaBNMixin, nn.BatchNorm1d):
    pass


class AlphaBatchNorm2d(_AlphaBNMixin, nn.BatchNorm2d):
    pass


class AlphaBatchNorm3d(_AlphaBNMixin, nn.BatchNorm3d):
    pass


_SWAP = {nn.BatchNorm1d: AlphaBatchNorm1d, nn.BatchNorm2d: AlphaBatchNorm2d, nn.BatchNorm3d: AlphaBatchNorm3d}
_UNSWAP = {v: k for k, v in _SWAP.items()}


def apply_alpha_bn(model: nn.Module, alpha: float, unbiased: bool = False) -> list[str]:
    """Make every ``BatchNorm1d/2d/3d`` of ``model`` use alpha-BN statistics in eval mode.

    The modules are changed in place (their class becomes an ``AlphaBatchNorm*`` subclass of the
    same BatchNorm class), so parameters, buffers, state_dict keys and optimizer references stay
    the same; training-mode behaviour is unchanged. Calling it again updates alpha. BN modules
    without running statistics (``track_running_stats=False``) already use batch statistics and
    are left alone. Returns the names of the affected modules; raises :class:`UserError` if there
    are none or alpha is outside [0, 1].
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"apply_alpha_bn: alpha (the weight on the test batch) must be in [0, 1], got {alpha}")
    names = []
    for name, m in model.named_modules():
        cls = type(m)
        if cls in _SWAP and m.track_running_stats:
            m.__class__ = _SWAP[cls]
        if isinstance(m, _AlphaBNMixin):
            m.alpha = alpha
            m.alpha_unbiased = bool(unbiased)
            names.append(name)
    if not names:
        raise UserError("apply_alpha_bn: the network has no BatchNorm layer with running statistics "
                        "(build it with --norm batchnorm)")
    return names


def remove_alpha_bn(model: nn.Module) -> int:
    """Undo :func:`apply_alpha_bn`: restore the plain BatchNorm classes. Returns how many were restored."""
    n = 0
    for m in model.modules():
        cls = type(m)
        if cls in _UNSWAP:
            m.__class__ = _UNSWAP[cls]
            for attr in ("alpha", "alpha_unbiased"):
                m.__dict__.pop(attr, None)
            n += 1
    return n


def alpha_bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _AlphaBNMixin)]
