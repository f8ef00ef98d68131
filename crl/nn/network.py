"""The Q-network builder: torso (+ optional SoftMoE) -> output layer of ``A x K`` units.

``K`` is the value head's number of outputs per action (1 for scalar heads, the bins or
atoms of categorical heads). The output layer is a plain ``Linear`` with bias: it is not
followed by a norm, so it is never scale-invariant and NaP never projects it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crl.errors import UserError
from crl.nn.blocks import Block, PreNormAct
from crl.nn.reparam import apply_reparam, is_reparameterized, stored_weight
from crl.nn.softmoe import SoftMoE
from crl.options import declare_options, option
from crl.registry import TORSOS


@dataclass
class SoftMoEOptions:
    """Size of the SoftMoE that ``--moe softmoe`` puts in place of the penultimate dense layer."""

    num_experts: int = option(8, "SoftMoE experts", check="positive")
    expert_hidden: int = option(512, "hidden units of each SoftMoE expert", check="positive")


declare_options(SoftMoEOptions, "softmoe (--moe softmoe)", in_play=lambda cfg: cfg.moe == "softmoe")


class MoEDense(nn.Module):
    """Replaces the penultimate dense layer (Obando-Ceron et al. 2024, arXiv 2402.08609):
    PerConv tokens (one per spatial position, dim = channels) -> SoftMoE -> flatten."""

    def __init__(self, feature_map_shape: tuple, num_experts: int, expert_hidden: int):
        super().__init__()
        c, h, w = feature_map_shape
        self.moe = SoftMoE(c, num_experts=num_experts, num_tokens=h * w, expert_hidden=expert_hidden)
        self.out_features = c * h * w

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, H*W, C)
        return self.moe(tokens).flatten(1)


class Introspectable:
    """What metrics and interventions need from any crl network (Q-network or classifier).

    Subclasses have ``self.output`` (the final, never-projected layer)."""

    def hidden_activations(self) -> list[tuple[str, nn.Module]]:
        """(name, module) pairs whose outputs are post-activation hidden features, in forward order."""
        return [(name, m.activation_module()) for name, m in self.named_modules() if isinstance(m, (Block, PreNormAct))
                and not (isinstance(m, Block) and isinstance(m.act, nn.Identity) and not m.fused_activation)]

    def projectable_weights(self) -> list[tuple[str, nn.Parameter]]:
        """Weights of layers that feed only a norm (scale-invariant): what NaP projects. Under
        ``--reparam`` that is the stored tensor ``V`` the optimizer updates (:mod:`crl.nn.reparam`)."""
        return [(f"{name}.layer.parametrizations.weight.original" if is_reparameterized(m.layer)
                 else f"{name}.layer.weight", stored_weight(m.layer))
                for name, m in self.named_modules() if isinstance(m, Block) and m.projectable]

    @property
    def output_layer(self) -> nn.Linear:
        return self.output


class QNetwork(Introspectable, nn.Module):
    def __init__(self, torso: nn.Module, num_actions: int, head: nn.Module):
        super().__init__()
        self.torso = torso
        self.head = head
        self.num_actions = num_actions
        self.output = nn.Linear(torso.out_features, num_actions * head.num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.torso(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, A, K) head outputs."""
        return self.output(self.torso(x)).view(x.shape[0], self.num_actions, self.head.num_outputs)

    def q_values(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.q_values(self(x))


def build_torso(cfg, obs_shape: tuple) -> nn.Module:
    """The configured torso, with the SoftMoE swap applied when ``--moe softmoe`` and every ``Linear``
    and ``Conv2d`` weight reparameterized by ``--reparam`` (last, so the MoE's own tensors are not)."""
    entry = TORSOS.entry(cfg.torso)
    torso = entry.factory(tuple(obs_shape), cfg)
    if cfg.moe == "softmoe":
        if not entry.meta.get("conv"):
            raise UserError(f"--moe: softmoe needs a conv torso (nature or impala), got --torso {cfg.torso}")
        torso.dense = MoEDense(torso.feature_map_shape, cfg.num_experts, cfg.expert_hidden)
        torso.out_features = torso.dense.out_features
    apply_reparam(cfg, torso)
    return torso


def build_network(cfg, obs_shape: tuple, num_actions: int, head: nn.Module) -> QNetwork:
    return QNetwork(build_torso(cfg, obs_shape), num_actions, head)
