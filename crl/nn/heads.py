"""Value heads for DQN-style agents: scalar (Huber / MSE), HL-Gauss, two-hot and C51.

A network ends in ``Linear(d, A * K)`` reshaped to ``(..., A, K)``; a :class:`ValueHead`
says what the ``K`` numbers per action mean. Every head answers three questions:

* ``q_values(out)``: the scalar Q of every action, ``(..., A, K) -> (..., A)`` (greedy
  action selection and double-DQN argmax use these);
* ``bootstrap_target(next_out, rewards, discounts)``: the TD target built from the target
  network's output at the chosen next action ``a*`` (``next_out``: ``(B, K)``), under
  ``torch.no_grad``; ``discounts`` already hold ``gamma**n * (1 - terminated)``;
* ``loss(out, target)``: the per-sample loss ``(B,)`` in float32 of the online output at the
  taken action (``out``: ``(B, K)``).

HL-Gauss and two-hot back up only the scalar mean ``r + discount * Q(s', a*)`` and use the
categorical output purely as a loss parameterisation; C51 backs up the whole projected
next-state distribution. Softmax / log-softmax always run in float32.

Heads are registered in :data:`crl.registry.HEADS` under ``scalar-huber``, ``scalar-mse``,
``hlgauss``, ``twohot`` and ``c51``; every factory takes
``(num_bins, v_min, v_max, sigma_ratio)`` (scalar heads ignore all four).
"""
from __future__ import annotations

import abc

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crl.errors import UserError
from crl.options import option
from crl.registry import HEADS

__all__ = [
    "HLGauss",
    "TwoHot",
    "C51Support",
    "ValueHead",
    "ScalarHead",
    "HLGaussHead",
    "TwoHotHead",
    "C51Head",
]

# Smallest normaliser HL-Gauss divides by: keeps probabilities finite even if all mass
# were to fall outside the support (it cannot once y is clamped, but stay safe).
_TINY = 1e-12


def _check_support(kind: str, num_bins: int, v_min: float, v_max: float) -> None:
    try:
        ok = not isinstance(num_bins, bool) and operator.index(num_bins) >= 2
    except TypeError:
        ok = False
    if not ok:
        raise UserError(f"head '{kind}': num_bins must be an integer >= 2, got {num_bins!r}")
    if not (math.isfinite(v_min) and math.isfinite(v_max)) or not v_min < v_max:
        raise UserError(
            f"head '{kind}': the support needs finite v_min < v_max, got v_min={v_min!r}, v_max={v_max!r}"
        )


def _check_last_dim(what: str, t: Tensor, k: int) -> None:
    if t.dim() == 0 or t.shape[-1] != k:
        raise ValueError(f"{what}: expected a last dimension of {k}, got shape {tuple(t.shape)}")


def _check_batch(what: str, out: Tensor, vec: Tensor) -> None:
    if out.dim() != 2 or vec.shape != out.shape[:1]:
        raise ValueError(
            f"{what}: expected out (B, K) and a (B,) vector, got {tuple(out.shape)} and {tuple(vec.shape)}"
        )


def _hat_weights(b: Tensor, num: int) -> Tensor:
    """Triangular-kernel weights ``clamp(1 - |b - i|, 0, 1)`` for ``i = 0..num-1``: ``(..., num)``.

    For a fractional index ``b`` in ``[0, num - 1]`` this puts ``1 - frac(b)`` on ``floor(b)`` and
    ``frac(b)`` on ``floor(b) + 1`` (mass 1 on ``b`` itself when ``b`` is an integer), the linear
    interpolation used by both two-hot targets and the C51 projection; it needs no scatter, so it
    is deterministic on every device.
    """
    idx = torch.arange(num, device=b.device, dtype=b.dtype)
    return (1.0 - (b.unsqueeze(-1) - idx).abs()).clamp(min=0.0)


class HLGauss(nn.Module):
    """Histogram-loss target transform with a Gaussian smoothing kernel (HL-Gauss).

    Reference: Farebrother et al., "Stop Regressing: Training Value Functions via
    Classification for Scalable Deep RL", ICML 2024, arXiv:2403.03950 (Sec. 3, Listing 1);
    Imani & White, "Improving Regression Performance with Distributional Losses", ICML 2018.

    ``m = num_bins`` bins of width ``w = (v_max - v_min) / m`` with edges
    ``e_k = v_min + k w`` (``k = 0..m``) and centres ``c_i = (e_i + e_{i+1}) / 2``. A scalar
    target ``y`` (first clamped to ``[v_min, v_max]``) is smeared as ``N(y, sigma^2)`` with
    ``sigma = sigma_ratio * w``; bin ``i`` receives the Gaussian mass inside it, renormalised
    over the support::

        p_i = [erf((e_{i+1} - y) / (sqrt(2) sigma)) - erf((e_i - y) / (sqrt(2) sigma))]
              / [erf((e_m - y) / (sqrt(2) sigma)) - erf((e_0 - y) / (sqrt(2) sigma))]

    The normaliser is computed as the sum of the (non-negative) bin masses, which telescopes to
    the denominator above, and clamped to at least 1e-12, so no NaN arises for any finite or
    infinite ``y`` (a NaN ``y`` stays NaN: it signals a diverged target upstream). The decode is
    ``sum_i softmax(logits)_i c_i``. Everything is computed in float32. ``edges`` and
    ``centres`` are non-persistent buffers (they follow ``.to(device)``, are rebuilt from the
    constructor arguments, and are not written to checkpoints).
    """

    def __init__(self, v_min: float, v_max: float, num_bins: int, sigma_ratio: float = 0.75):
        super().__init__()
        _check_support("hlgauss", num_bins, v_min, v_max)
        if not (math.isfinite(sigma_ratio) and sigma_ratio > 0):
            raise UserError(f"head 'hlgauss': sigma_ratio must be a finite number > 0, got {sigma_ratio!r}")
        self.v_min, self.v_max = float(v_min), float(v_max)
        self.num_bins = int(num_bins)
        self.sigma_ratio = float(sigma_ratio)
        self.bin_width = (self.v_max - self.v_min) / self.num_bins
        self.sigma = self.sigma_ratio * self.bin_width
        edges = torch.linspace(self.v_min, self.v_max, self.num_bins + 1, dtype=torch.float64)
        self.register_buffer("edges", edges.float(), persistent=False)
        self.register_buffer("centres", ((edges[:-1] + edges[1:]) / 2).float(), persistent=False)

    def extra_repr(self) -> str:
        return (f"v_min={self.v_min}, v_max={self.v_max}, num_bins={self.num_bins}, "
                f"sigma_ratio={self.sigma_ratio} (sigma={self.sigma:.4g})")

    def to_probs(self, y: Tensor) -> Tensor:
        """Target distribution of scalar targets: ``(...,) -> (..., num_bins)``, float32."""
        y = y.detach().float().clamp(self.v_min, self.v_max)
        edges = self.edges.float()
        cdf = torch.erf((edges - y.unsqueeze(-1)) / (math.sqrt(2.0) * self.sigma))
        mass = (cdf[..., 1:] - cdf[..., :-1]).clamp(min=0.0)
        return mass / mass.sum(-1, keepdim=True).clamp(min=_TINY)

    def to_value(self, logits: Tensor) -> Tensor:
        """Expected value under ``softmax(logits)``: ``(..., num_bins) -> (...)``, float32."""
        _check_last_dim("HLGauss.to_value", logits, self.num_bins)
        return torch.softmax(logits.float(), dim=-1) @ self.centres.float()


class TwoHot(nn.Module):
    """Two-hot target transform: linear interpolation between the two nearest bin centres.

    Reference: Schrittwieser et al. 2020 (MuZero, Appendix F) and Hafner et al., "Mastering
    Diverse Domains through World Models" (DreamerV3), arXiv:2301.04104 (``TwoHotDist`` in
    danijar/dreamerv3); compared as "Two-Hot" in Farebrother et al. 2024, arXiv:2403.03950.

    Uses the same bins as :class:`HLGauss` (centres ``c_i = v_min + (i + 1/2) w``,
    ``w = (v_max - v_min) / m``), so both heads share one support for a given
    ``(v_min, v_max, num_bins)``. ``y`` is clipped to ``[c_0, c_{m-1}]``; for
    ``c_i <= y <= c_{i+1}``: ``p_i = (c_{i+1} - y) / w``, ``p_{i+1} = 1 - p_i``. The decode
    ``sum_i p_i c_i`` then returns ``y`` exactly inside ``[c_0, c_{m-1}]``. No symlog transform.
    """

    def __init__(self, v_min: float, v_max: float, num_bins: int):
        super().__init__()
        _check_support("twohot", num_bins, v_min, v_max)
        self.v_min, self.v_max = float(v_min), float(v_max)
        self.num_bins = int(num_bins)
        self.bin_width = (self.v_max - self.v_min) / self.num_bins
        edges = torch.linspace(self.v_min, self.v_max, self.num_bins + 1, dtype=torch.float64)
        centres = (edges[:-1] + edges[1:]) / 2
        self.c_first, self.c_last = float(centres[0]), float(centres[-1])
        self.register_buffer("centres", centres.float(), persistent=False)

    def extra_repr(self) -> str:
        return f"v_min={self.v_min}, v_max={self.v_max}, num_bins={self.num_bins}"

    def to_probs(self, y: Tensor) -> Tensor:
        """Two-hot distribution of scalar targets: ``(...,) -> (..., num_bins)``, float32."""
        y = y.detach().float().clamp(self.c_first, self.c_last)
        b = (y - self.c_first) / self.bin_width  # fractional bin index in [0, m - 1]
        return _hat_weights(b, self.num_bins)

    def to_value(self, logits: Tensor) -> Tensor:
        """Expected value under ``softmax(logits)``: ``(..., num_bins) -> (...)``, float32."""
        _check_last_dim("TwoHot.to_value", logits, self.num_bins)
        return torch.softmax(logits.float(), dim=-1) @ self.centres.float()


class C51Support(nn.Module):
    """C51 atoms and the categorical (Cramér) projection of the distributional Bellman target.

    Reference: Bellemare, Dabney & Munos, "A Distributional Perspective on Reinforcement
    Learning", ICML 2017, arXiv:1707.06887 (Algorithm 1); the closed form of the projection is
    Rowland et al., "An Analysis of Categorical Distributional RL", AISTATS 2018, arXiv:1802.08163.

    Atoms ``z_j = v_min + j dz``, ``dz = (v_max - v_min) / (N - 1)`` (``linspace``; the atoms sit
    on the support's ends, unlike HL-Gauss bin centres). ``project`` maps next-state atom
    probabilities ``p_j`` through ``Tz_j = clamp(r + discount * z_j, v_min, v_max)`` and splits
    each atom's mass between the two atoms around ``b_j = (Tz_j - v_min) / dz``:
    ``out_i = sum_j clamp(1 - |b_j - i|, 0, 1) p_j``. The result sums to 1 per row.
    """

    def __init__(self, v_min: float, v_max: float, num_atoms: int):
        super().__init__()
        _check_support("c51", num_atoms, v_min, v_max)
        self.v_min, self.v_max = float(v_min), float(v_max)
        self.num_atoms = int(num_atoms)
        self.delta_z = (self.v_max - self.v_min) / (self.num_atoms - 1)
        atoms = torch.linspace(self.v_min, self.v_max, self.num_atoms, dtype=torch.float64)
        self.register_buffer("atoms", atoms.float(), persistent=False)

    def extra_repr(self) -> str:
        return f"v_min={self.v_min}, v_max={self.v_max}, num_atoms={self.num_atoms}"

    def to_value(self, logits: Tensor) -> Tensor:
        """``sum_j softmax(logits)_j z_j``: ``(..., N) -> (...)``, float32."""
        _check_last_dim("C51Support.to_value", logits, self.num_atoms)
        return torch.softmax(logits.float(), dim=-1) @ self.atoms.float()

    def project(self, probs: Tensor, rewards: Tensor, discounts: Tensor) -> Tensor:
        """Project ``r + discount * Z`` onto the atoms: ``probs (B, N)``, ``rewards, discounts (B,)``."""
        _check_last_dim("C51Support.project", probs, self.num_atoms)
        _check_batch("C51Support.project", probs, rewards)
        _check_batch("C51Support.project", probs, discounts)
        probs = probs.float()
        tz = rewards.float().unsqueeze(-1) + discounts.float().unsqueeze(-1) * self.atoms.float()
        b = (tz.clamp(self.v_min, self.v_max) - self.v_min) / self.delta_z  # (B, N_src)
        w = _hat_weights(b, self.num_atoms)  # (B, N_src, N_dst)
        return torch.einsum("bj,bji->bi", probs, w)


class ValueHead(nn.Module, abc.ABC):
    """Base class: meaning of the ``K = num_outputs`` numbers a network emits per action."""

    num_outputs: int = 1
    categorical: bool = False

    def forward(self, out: Tensor) -> Tensor:
        return self.q_values(out)

    @abc.abstractmethod
    def q_values(self, out: Tensor) -> Tensor:
        """Decoded Q of each action: ``(..., A, K) -> (..., A)``."""

    @abc.abstractmethod
    def bootstrap_target(self, next_out: Tensor, rewards: Tensor, discounts: Tensor) -> Tensor:
        """TD target from the target net's output at ``a*`` (``(B, K)``); no gradient."""

    @abc.abstractmethod
    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss ``(B,)`` in float32 of the online output at the taken action."""

    def _check(self, what: str, out: Tensor, *vecs: Tensor) -> None:
        _check_last_dim(f"{type(self).__name__}.{what}", out, self.num_outputs)
        for v in vecs:
            _check_batch(f"{type(self).__name__}.{what}", out, v)


class ScalarHead(ValueHead):
    """Classic DQN regression head, one output per action (``K = 1``).

    Reference: Mnih et al., "Human-level control through deep reinforcement learning", Nature
    2015 (Huber loss); Farebrother et al. 2024, arXiv:2403.03950 (the MSE regression baseline).

    Target ``y = r + discount * q(s', a*)``. ``loss="huber"``: ``smooth_l1(q, y)`` with
    ``beta = 1`` (``0.5 d^2`` for ``|d| < 1``, else ``|d| - 0.5``). ``loss="mse"``:
    ``(q - y)^2``, Dopamine's ``losses.mse_loss`` (``dopamine/jax/losses.py``; CleanRL's
    ``F.mse_loss`` is the same). PQN/purejaxql use ``0.5 (q - y)^2``: with Adam that
    factor only moves epsilon (``0.5 (q - y)^2`` with eps equals ``(q - y)^2`` with 2 eps); with
    SGD it halves the step.
    """

    def __init__(self, loss: str = "huber"):
        super().__init__()
        if loss not in ("huber", "mse"):
            raise UserError(f"scalar head: loss must be 'huber' or 'mse', got {loss!r}")
        self.kind = loss
        self.num_outputs = 1

    def extra_repr(self) -> str:
        return f"loss={self.kind}"

    def q_values(self, out: Tensor) -> Tensor:
        self._check("q_values", out)
        return out[..., 0]

    @torch.no_grad()
    def bootstrap_target(self, next_out: Tensor, rewards: Tensor, discounts: Tensor) -> Tensor:
        self._check("bootstrap_target", next_out, rewards, discounts)
        return rewards.float() + discounts.float() * next_out[..., 0].float()

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        self._check("loss", out, target)
        q, y = out[..., 0].float(), target.float()
        if self.kind == "huber":
            return F.smooth_l1_loss(q, y, reduction="none", beta=1.0)
        return (q - y).square()


class _ScalarBackupCategoricalHead(ValueHead):
    """Shared code of HL-Gauss and two-hot: scalar backup, cross-entropy to a transformed target."""

    categorical = True
    transform: HLGauss | TwoHot

    def q_values(self, out: Tensor) -> Tensor:
        self._check("q_values", out)
        return self.transform.to_value(out)

    @torch.no_grad()
    def bootstrap_target(self, next_out: Tensor, rewards: Tensor, discounts: Tensor) -> Tensor:
        self._check("bootstrap_target", next_out, rewards, discounts)
        return rewards.float() + discounts.float() * self.transform.to_value(next_out)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        self._check("loss", out, target)
        probs = self.transform.to_probs(target)  # clamps the scalar target first
        return -(probs * torch.log_softmax(out.float(), dim=-1)).sum(-1)


class HLGaussHead(_ScalarBackupCategoricalHead):
    """HL-Gauss value head: ``K = num_bins`` logits per action, cross-entropy to HL-Gauss(y).

    Reference: Farebrother et al., "Stop Regressing", ICML 2024, arXiv:2403.03950; TD use as in
    google/dopamine ``labs/offline_rl/jax/offline_classy_cql_agent.py``: scalar target
    ``y = r + discount * Q_target(s', a*)``, clamp ``y`` to ``[v_min, v_max]``, then
    ``loss = -sum_i HLGauss(y)_i log_softmax(logits)_i``. See :class:`HLGauss`.
    """

    def __init__(self, num_bins: int, v_min: float, v_max: float, sigma_ratio: float = 0.75):
        super().__init__()
        self.transform = HLGauss(v_min, v_max, num_bins, sigma_ratio)
        self.num_outputs = int(num_bins)


class TwoHotHead(_ScalarBackupCategoricalHead):
    """Two-hot value head: ``K = num_bins`` logits per action, cross-entropy to TwoHot(y).

    Reference: Hafner et al. (DreamerV3), arXiv:2301.04104; the "Two-Hot" baseline of
    Farebrother et al. 2024, arXiv:2403.03950. Scalar backup as :class:`HLGaussHead`; ``y`` is
    clipped to the outer bin centres. See :class:`TwoHot`.
    """

    def __init__(self, num_bins: int, v_min: float, v_max: float):
        super().__init__()
        self.transform = TwoHot(v_min, v_max, num_bins)
        self.num_outputs = int(num_bins)


class C51Head(ValueHead):
    """C51 distributional head: ``K = num_atoms`` logits per action over fixed atoms.

    Reference: Bellemare et al., "A Distributional Perspective on Reinforcement Learning",
    ICML 2017, arXiv:1707.06887. ``Q = sum_j softmax(logits)_j z_j``; the target is the
    projection (:meth:`C51Support.project`) of the target net's next-state distribution at
    ``a*`` through ``r + discount * z``; ``loss = -sum_i target_i log_softmax(logits)_i``.
    """

    categorical = True

    def __init__(self, num_atoms: int, v_min: float, v_max: float):
        super().__init__()
        self.support = C51Support(v_min, v_max, num_atoms)
        self.num_outputs = int(num_atoms)

    def q_values(self, out: Tensor) -> Tensor:
        self._check("q_values", out)
        return self.support.to_value(out)

    @torch.no_grad()
    def bootstrap_target(self, next_out: Tensor, rewards: Tensor, discounts: Tensor) -> Tensor:
        self._check("bootstrap_target", next_out, rewards, discounts)
        next_probs = torch.softmax(next_out.float(), dim=-1)
        return self.support.project(next_probs, rewards, discounts)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        self._check("loss", out)
        if target.shape != out.shape:
            raise ValueError(f"C51Head.loss: target distribution must have shape {tuple(out.shape)}, "
                             f"got {tuple(target.shape)}")
        return -(target.detach().float() * torch.log_softmax(out.float(), dim=-1)).sum(-1)


# --- registry entries: factory(cfg) -> ValueHead ------------------------------------------


@dataclass
class SupportOptions:
    """The value support of the categorical heads."""

    num_bins: int = option(51, "bins of the categorical head (HL-Gauss, two-hot, C51 atoms)", check="positive")
    v_min: float = option(-10.0, "lower end of the value support")
    v_max: float = option(10.0, "upper end of the value support")

    def check(self, cfg) -> None:
        if not self.v_min < self.v_max:
            raise UserError(f"--v-min/--v-max: need v_min < v_max, got {self.v_min} >= {self.v_max}")


@dataclass
class HLGaussOptions:
    """HL-Gauss's smoothing (Farebrother et al. 2024)."""

    sigma_ratio: float = option(0.75, "HL-Gauss sigma / bin width (Farebrother et al. 2024)", check="positive")


@HEADS.register("scalar-huber", "one output per action, Huber (smooth L1, beta 1) TD loss (Nature DQN)",
                categorical=False)
def _scalar_huber(cfg) -> ValueHead:
    return ScalarHead("huber")


@HEADS.register("scalar-mse", "one output per action, squared TD error (Dopamine's mse_loss)", categorical=False)
def _scalar_mse(cfg) -> ValueHead:
    return ScalarHead("mse")


@HEADS.register("hlgauss", "HL-Gauss categorical head, cross-entropy to a Gaussian-smeared scalar target "
                "(Farebrother et al. 2024)", options=(SupportOptions, HLGaussOptions), categorical=True)
def _hlgauss(cfg) -> ValueHead:
    return HLGaussHead(cfg.num_bins, cfg.v_min, cfg.v_max, cfg.sigma_ratio)


@HEADS.register("twohot", "two-hot categorical head, cross-entropy to the two nearest bin centres "
                "(DreamerV3)", options=SupportOptions, categorical=True)
def _twohot(cfg) -> ValueHead:
    return TwoHotHead(cfg.num_bins, cfg.v_min, cfg.v_max)


@HEADS.register("c51", "C51 distributional head, projected distributional Bellman target "
                "(Bellemare et al. 2017)", options=SupportOptions, categorical=True)
def _c51(cfg) -> ValueHead:
    return C51Head(cfg.num_bins, cfg.v_min, cfg.v_max)
