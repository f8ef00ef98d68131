"""Soft Mixture of Experts layer over a sequence of tokens, ``(B, m, d) -> (B, m, d)``."""
from __future__ import annotations

import math
import operator

import torch
from torch import Tensor, nn

from crl.errors import UserError

__all__ = ["SoftMoE", "l2_normalize"]

# Standard deviation of a standard normal truncated to [-2, 2]; JAX's variance-scaling
# initialisers divide by it so the truncated draw keeps the requested variance.
_TRUNC2_STD = 0.87962566103423978


def _positive_int(name: str, value: object) -> int:
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= 1
    except TypeError:
        ok = False
    if not ok:
        raise UserError(f"SoftMoE: {name} must be a positive integer, got {value!r}")
    return operator.index(value)


def l2_normalize(x: Tensor, dim: int, eps: float = 1e-6) -> Tensor:
    """``x / sqrt(sum(x^2) + eps)`` along ``dim`` (the form of google-research/vmoe)."""
    return x * torch.rsqrt(x.square().sum(dim=dim, keepdim=True) + eps)


class SoftMoE(nn.Module):
    """Soft MoE: every slot is a softmax-weighted mix of all tokens, every token a mix of all slots.

    References: Puigcerver, Riquelme, Mustafa & Houlsby, "From Sparse to Soft Mixtures of
    Experts", ICLR 2024, arXiv:2308.00951 (router as in google-research/vmoe
    ``vmoe/projects/soft_moe/router.py``); for deep RL, Obando-Ceron, Sokar, Willi et al.,
    "Mixtures of Experts Unlock Parameter Scaling for Deep RL", ICML 2024, arXiv:2402.08609
    (google/dopamine ``labs/moes/architectures/softmoe.py``, expert ``ExpertModel`` type SMALL).

    Per sample, tokens ``X`` (m, d), ``n`` experts with ``p`` slots each, router ``phi`` (d, n, p):

    1. ``L = X phi`` (m, n, p); with ``normalize=True``: ``L = scale * l2n(X) l2n(phi)``, both
       L2-normalised over d (eps 1e-6) and ``scale`` a learnable scalar initialised to 1;
    2. dispatch ``D = softmax(L)`` over the m tokens (per slot); slot inputs
       ``Xs[n, p] = sum_m D[m, n, p] X[m]`` (the raw, unnormalised tokens);
    3. expert ``i`` maps each of its p slots: ``Ys[i, p] = W2_i^T relu(W1_i^T Xs[i, p] + b1_i) + b2_i``
       with its own weights ``W1`` (n, d, h), ``b1`` (n, h), ``W2`` (n, h, d), ``b2`` (n, d);
    4. combine ``C = softmax(L)`` jointly over all n * p slots (per token); output
       ``Y[m] = sum_{n,p} C[m, n, p] Ys[n, p]``.

    Routing is per sample (as Dopamine vmaps the layer over the batch); there is no auxiliary
    loss. ``slots_per_expert`` defaults to ``ceil(num_tokens / num_experts)`` (capacity factor 1,
    Dopamine's ceil), which needs ``num_tokens``; the layer then accepts any token count.

    Initialisation follows the JAX reference: ``phi`` uses ``jax.nn.initializers.lecun_normal``
    applied to a (d, n, p) array, i.e. a normal truncated at 2 std with variance
    ``1 / fan_in`` where JAX's fan-in of that shape is ``d * n``; expert kernels are
    Xavier-uniform per expert (fan-in/fan-out of the expert's own dense layer), biases zero.

    The hidden ReLU is the submodule ``act`` so forward hooks (dormant-neuron metrics) see the
    expert activations, shape ``(B, n, p, h)``.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int = 8,
        slots_per_expert: int | None = None,
        num_tokens: int | None = None,
        expert_hidden: int = 512,
        normalize: bool = False,
    ):
        super().__init__()
        dim = _positive_int("dim", dim)
        num_experts = _positive_int("num_experts", num_experts)
        expert_hidden = _positive_int("expert_hidden", expert_hidden)
        if slots_per_expert is None:
            if num_tokens is None:
                raise UserError("SoftMoE: give slots_per_expert, or num_tokens to derive it as "
                                "ceil(num_tokens / num_experts)")
            num_tokens = _positive_int("num_tokens", num_tokens)
            slots_per_expert = math.ceil(num_tokens * 1.0 / num_experts)
        slots_per_expert = _positive_int("slots_per_expert", slots_per_expert)

        self.dim = dim
        self.num_experts = num_experts
        self.slots_per_expert = slots_per_expert
        self.num_tokens = num_tokens
        self.expert_hidden = expert_hidden
        self.normalize = bool(normalize)

        n, p, d, h = num_experts, self.slots_per_expert, dim, expert_hidden
        self.phi = nn.Parameter(torch.empty(d, n, p))
        self.register_parameter("scale", nn.Parameter(torch.ones(())) if self.normalize else None)
        self.w1 = nn.Parameter(torch.empty(n, d, h))
        self.b1 = nn.Parameter(torch.empty(n, h))
        self.w2 = nn.Parameter(torch.empty(n, h, d))
        self.b2 = nn.Parameter(torch.empty(n, d))
        self.act = nn.ReLU()
        self.reset_parameters()

    @property
    def num_slots(self) -> int:
        """Total slots ``n * p``."""
        return self.num_experts * self.slots_per_expert

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_experts={self.num_experts}, slots_per_expert={self.slots_per_expert}, "
                f"expert_hidden={self.expert_hidden}, normalize={self.normalize}")

    @torch.no_grad()
    def reset_parameters(self) -> None:
        d, n, h = self.dim, self.num_experts, self.expert_hidden
        std = 1.0 / math.sqrt(d * n) / _TRUNC2_STD
        nn.init.trunc_normal_(self.phi, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
        bound = math.sqrt(6.0 / (d + h))  # Xavier-uniform of a (d -> h) and of a (h -> d) dense layer
        nn.init.uniform_(self.w1, -bound, bound)
        nn.init.uniform_(self.w2, -bound, bound)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)
        if self.scale is not None:
            self.scale.fill_(1.0)

    def expert_parameters(self, i: int) -> dict[str, Tensor]:
        """Views of expert ``i``'s weights: ``w1`` (d, h), ``b1`` (h,), ``w2`` (h, d), ``b2`` (d,)."""
        if not 0 <= i < self.num_experts:
            raise IndexError(f"expert {i} out of range 0..{self.num_experts - 1}")
        return {"w1": self.w1[i], "b1": self.b1[i], "w2": self.w2[i], "b2": self.b2[i]}

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"SoftMoE expects tokens (B, m, {self.dim}), got shape {tuple(x.shape)}")

    def router_logits(self, x: Tensor) -> Tensor:
        """``L = X phi`` (optionally scaled cosine similarities): ``(B, m, d) -> (B, m, n, p)``."""
        self._check_input(x)
        phi = self.phi
        if self.normalize:
            x = l2_normalize(x, dim=-1)
            phi = self.scale * l2_normalize(phi, dim=0)
        return torch.einsum("bmd,dnp->bmnp", x, phi)

    def routing(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Dispatch (softmax over tokens, dim 1) and combine (softmax over all slots) weights, ``(B, m, n, p)``."""
        logits = self.router_logits(x)
        dispatch = torch.softmax(logits, dim=1)
        combine = torch.softmax(logits.flatten(2), dim=2).view_as(logits)
        return dispatch, combine

    def expert_forward(self, slot_inputs: Tensor) -> Tensor:
        """Apply expert i to its slots: ``(B, n, p, d) -> (B, n, p, d)``."""
        hidden = torch.einsum("bnpd,ndh->bnph", slot_inputs, self.w1) + self.b1[:, None, :]
        hidden = self.act(hidden)
        return torch.einsum("bnph,nhd->bnpd", hidden, self.w2) + self.b2[:, None, :]

    def slot_outputs(self, x: Tensor) -> Tensor:
        """Expert outputs of every slot for tokens ``x``: ``(B, n, p, d)``."""
        dispatch, _ = self.routing(x)
        return self.expert_forward(torch.einsum("bmnp,bmd->bnpd", dispatch, x))

    def forward(self, x: Tensor) -> Tensor:
        dispatch, combine = self.routing(x)
        slot_in = torch.einsum("bmnp,bmd->bnpd", dispatch, x)
        slot_out = self.expert_forward(slot_in)
        return torch.einsum("bmnp,bnpd->bmd", combine, slot_out)
