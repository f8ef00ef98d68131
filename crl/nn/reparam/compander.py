"""Weight Compander (Cakaj, Mehnert & Yang, "Weight Compander: A Simple Weight Reparameterization
for Regularization", IJCNN 2023, arXiv 2306.16993; no official code is public).

The paper reparameterizes each weight with a nonlinear function that bounds its magnitude and
pushes it away from zero (a compressor for large values, an expander near zero), and extends
the method to learn the function's hyperparameters during training. **The paper's own
function and default values were not available in crl's references** (only its abstract), so
the function below is crl's construction with exactly those stated properties; it is not a
reproduction of the paper's equation, and results obtained with it must not be reported as
the paper's method:

    W = f(V) = s * tanh(k * V / s)

per weight tensor, with ``s = --compander-bound x max|W_0|`` (``W_0``: the layer's own
initialisation) and ``k = --compander-slope``. ``f`` is odd and increasing, ``|W| < s`` (large
weights saturate: compressed), and ``f'(0) = k``: near zero, with ``k > 1``, a weight moves
``k`` times as fast as its stored value (small weights are expanded, "pushed away from zero";
near saturation the step shrinks, ``f'(V) = k (1 - (W/s)^2)``). ``V`` is initialised with
``right_inverse`` so that ``f(V_0) = W_0``: at initialisation the network is the plain one.

``--compander-learn``: ``s`` and ``k`` of every weight tensor are learned with the network
(stored as ``log_scale`` and ``log_slope``, so they stay positive), the learnable-hyperparameter
variant the paper describes; off, they are constants (buffers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from crl.options import option
from crl.registry import REPARAMS

EDGE = 1e-6  # right_inverse clamps W/s into (-1 + EDGE, 1 - EDGE): tanh never reaches +-1


class Compander(nn.Module):
    """``W = s * tanh(k * V / s)`` for one weight tensor (scalars ``s``, ``k``)."""

    def __init__(self, scale: float, slope: float, learn: bool = False):
        super().__init__()
        if not (scale > 0 and slope > 0):
            raise ValueError(f"compander: scale and slope must be > 0, got {scale}, {slope}")
        self.scale0, self.slope0, self.learn = float(scale), float(slope), bool(learn)
        log_s = torch.tensor(math.log(self.scale0))
        log_k = torch.tensor(math.log(self.slope0))
        if learn:
            self.log_scale = nn.Parameter(log_s)
            self.log_slope = nn.Parameter(log_k)
        else:
            self.register_buffer("log_scale", log_s)
            self.register_buffer("log_slope", log_k)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        s, k = self.log_scale.exp(), self.log_slope.exp()
        return s * torch.tanh(k * v / s)

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        s, k = self.log_scale.exp().detach(), self.log_slope.exp().detach()
        return (s / k) * torch.atanh((w / s).clamp(-1 + EDGE, 1 - EDGE))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.log_scale.fill_(math.log(self.scale0))
        self.log_slope.fill_(math.log(self.slope0))

    def extra_repr(self) -> str:
        return f"scale={self.scale0:.4g}, slope={self.slope0:g}, learn={self.learn}"


@dataclass
class CompanderOptions:
    """The compander W = s tanh(k V / s) of every torso weight (crl's form; see crl help compander)."""

    compander_bound: float = option(2.0, "compander: |W| < bound x max|W_0| of its layer (the saturation level s)",
                                    check="positive")
    compander_slope: float = option(2.0, "compander: slope k = dW/dV at 0 (> 1 expands small weights)",
                                    check="positive")
    compander_learn: bool = option(False, "compander: learn s and k of every weight tensor (the paper's "
                                          "learnable-hyperparameter variant)")

    def check(self, cfg) -> None:
        from crl.errors import UserError

        if cfg.compander_bound <= 1.0 and cfg.reparam == "compander":
            raise UserError(f"--compander-bound: must be > 1 (the initial weights must lie inside the bound), got "
                            f"{cfg.compander_bound}")


@REPARAMS.register("compander", "weight compander W = s tanh(k V/s), bounded, expanded near 0 (after Cakaj et al. "
                                "2023; crl's function, the paper's is not in our references)",
                   options=CompanderOptions)
def compander(weight: torch.Tensor, compander_bound: float = 2.0, compander_slope: float = 2.0,
              compander_learn: bool = False) -> Compander:
    peak = float(weight.abs().max()) if weight.numel() else 0.0
    return Compander(compander_bound * max(peak, 1e-8), compander_slope, compander_learn)
