"""Train only the normalization layers (variant: BN-only, generalised to any crl norm).

Frankle, Schwab, Morcos, "Training BatchNorm and Only BatchNorm: On the Expressive Power of
Random Features in CNNs", ICLR 2021, arXiv 2003.00152 (no official code). Written for crl
from the paper's recipe.

At run start every weight and bias of every conv/linear layer is frozen at its random
initialisation (``requires_grad_(False)``; the optimizer skips parameters whose gradient is
``None``), and the parameters of the normalization modules stay trainable: the norm of
every ``Block`` / ``PreNormAct`` and any torch BatchNorm/LayerNorm/GroupNorm/RMSNorm found
in the network (BatchNorm's gamma and beta with ``--norm batchnorm``; LayerNorm's or another
norm's affine parameters otherwise).

Output layer: **frozen by default** (``--bn-only-train-output`` off): "only BatchNorm" is the
paper's headline setting, in which the final linear layer stays random as well (our reading
of the paper, not checked against its appendix); the paper also reports variants that train
the output layer, which is what ``--bn-only-train-output`` gives. For value-based RL with a
random output layer the only freedom is in the norm affine parameters, expect a much weaker
learner.

Not done here (pick them with other flags): the paper's random gamma init (we keep the
norm's own init, gamma = 1), SGD with momentum, no weight decay on gamma/beta (crl applies
``--weight-decay`` to whatever trains). ``on_eval`` logs ``train/bn_only_gamma_near_zero``,
the fraction of norm gains with ``|gamma| < 0.01`` (the paper finds BN learns to switch off
about a third of the features).

A :class:`UserError` is raised when the network has no norm with affine parameters
(``--norm none``, or a norm without them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crl.errors import UserError
from crl.hooks import Hook
from crl.nn.blocks import Block, PreNormAct
from crl.options import option
from crl.registry import INTERVENTIONS, NORMS

_TORCH_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def norm_modules(network: nn.Module) -> list[nn.Module]:
    """Every normalization module of a crl network (Block/PreNormAct norms and torch norms)."""
    found: dict[int, nn.Module] = {}
    for m in network.modules():
        if isinstance(m, (Block, PreNormAct)) and not isinstance(m.norm, nn.Identity):
            found[id(m.norm)] = m.norm
        elif isinstance(m, _TORCH_NORMS):
            found[id(m)] = m
    return list(found.values())


def _affine_norms() -> str:
    return ", ".join(n for n in NORMS.names() if n != "none")


class BNOnly(Hook):
    name = "bn-only"

    def __init__(self, train_output: bool = False):
        self.train_output = bool(train_output)
        self.norm_params: list[nn.Parameter] = []

    def apply(self, network: nn.Module) -> None:
        norm_params = {id(p): p for m in norm_modules(network) for p in m.parameters()}
        if not norm_params:
            raise UserError("--intervention bn-only: the network has no normalization layer with affine parameters; "
                            f"use --norm with one of: {_affine_norms()}")
        for p in network.parameters():
            p.requires_grad_(False)
            p.grad = None
        for p in norm_params.values():
            p.requires_grad_(True)
        if self.train_output:
            for p in network.output_layer.parameters():
                p.requires_grad_(True)
        self.norm_params = list(norm_params.values())

    def on_run_start(self, run) -> None:
        self.apply(run.learner.network)

    def on_eval(self, run, scores) -> None:
        logger = getattr(run, "logger", None)
        if logger is not None:
            frac = self.gamma_near_zero(run.learner.network)
            if frac == frac:
                logger.scalar("train/bn_only_gamma_near_zero", frac, run.global_step)

    @staticmethod
    def gamma_near_zero(network: nn.Module, tol: float = 0.01) -> float:
        """Fraction of norm gains with ``|gamma| < tol`` (nan when the norms have no gain)."""
        gains = [getattr(m, "weight", None) for m in norm_modules(network)]
        gains = [g for g in gains if isinstance(g, torch.Tensor)]
        if not gains:
            return float("nan")
        flat = torch.cat([g.detach().flatten() for g in gains])
        return float((flat.abs() < tol).float().mean())


@dataclass
class BNOnlyOptions:
    """What BN-only training leaves trainable (Frankle et al. 2021)."""

    bn_only_train_output: bool = option(False, "also train the output layer (default: only norm parameters)")


@INTERVENTIONS.register("bn-only", "Train only the norm affine parameters (Frankle et al. 2021); all conv/linear "
                                   "weights frozen at init, output layer too unless --bn-only-train-output",
                        options=BNOnlyOptions)
def bn_only(cfg) -> BNOnly:
    if cfg.norm == "none":
        raise UserError(f"--intervention bn-only: needs a normalization layer with affine parameters; use --norm "
                        f"with one of: {_affine_norms()}")
    return BNOnly(cfg.bn_only_train_output)
