"""Plasticity metrics: pure functions of activations, features and parameters.

Shapes
    *activations* (post-nonlinearity outputs of one layer) are ``(N, units)`` or, for a conv
    layer, channels-first ``(N, C, H, W)`` (any ``(N, C, ...)``): a *unit* is axis 1 and its
    statistics run over the batch and every other axis, as in ReDo.
    *features* (by crl's convention the input of the output head) are ``(N, d)``; anything with
    more axes is flattened to ``(N, -1)`` (every element is a feature).

All computations run in float64; singular values are taken on the CPU in float64 (the
reference notes ``svdvals`` may fail to converge on GPU). Results are Python ``float``/``int``
(masks are tensors). NaN or inf in any input raises
``UserError("metrics: NaN/inf in <what>")``; so do empty or wrongly shaped inputs and
invalid arguments.

Degenerate inputs are defined, never NaN:
    * an all-zero feature matrix has ``srank = 0``, ``effective_rank = 0.0`` and
      ``stable_rank = 0.0`` (it spans no direction);
    * an all-zero layer has every unit dormant (ReDo scores are all 0);
    * one sample is allowed everywhere; its per-unit variance is 0.0 (population variance).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Sequence

import torch
from torch import nn

from crl.errors import UserError

__all__ = [
    "dormant_units_mask",
    "dormant_fraction",
    "overall_dormant_fraction",
    "active_fraction",
    "singular_values",
    "srank",
    "effective_rank",
    "stable_rank",
    "feature_norm",
    "per_unit_variance",
    "weight_norm",
    "drift",
    "update_ratio",
    "nap_effective_lr",
    "adaptive_denominator",
    "below_eps_fraction",
    "mean_abs_weight",
    "rms_weight",
    "rms_drift",
    "dohare_dormant_mask",
    "dohare_dormant_fraction",
    "predictive_entropy",
    "plasticity_probe",
]

_FAU_ACTIVATIONS = ("relu", "tanh", "sigmoid")


# ----------------------------------------------------------------------------- helpers


def _tensor(x: Any, what: str) -> torch.Tensor:
    """``x`` as a detached tensor (numpy arrays and nested lists accepted), checked finite."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"metrics: {what} must be a tensor or array, got {type(x).__name__} ({e})") from None
    if t.is_complex():
        raise UserError(f"metrics: {what} must be real, got dtype {t.dtype}")
    if (t.is_floating_point()) and not bool(torch.isfinite(t).all()):
        raise UserError(f"metrics: NaN/inf in {what}")
    return t


def _batched(x: Any, what: str, keep_dtype: bool = False) -> torch.Tensor:
    """A finite tensor of shape ``(N, units, ...)`` with ``N >= 1`` and ``units >= 1``, in float64
    unless ``keep_dtype`` (floating inputs then keep their dtype)."""
    t = _tensor(x, what)
    if t.dim() < 2:
        raise UserError(
            f"metrics: {what} must have shape (N, units) or (N, C, H, W), got {tuple(t.shape)}"
        )
    if t.shape[0] == 0 or t[0].numel() == 0:
        raise UserError(f"metrics: {what} is empty (shape {tuple(t.shape)}); need at least one sample and one unit")
    if keep_dtype and t.is_floating_point():
        return t
    return t.to(torch.float64)


def _features(x: Any, what: str) -> torch.Tensor:
    """A finite float64 feature matrix ``(N, d)`` (trailing axes flattened)."""
    return _batched(x, what).flatten(1)


def _check_tau(tau: Any) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise UserError(f"metrics: dormant threshold tau must be a finite number >= 0, got {tau!r}")
    return float(tau)


def _tensor_list(x: Any, what: str) -> list[torch.Tensor]:
    """A tensor, an ``nn.Module`` (its parameters), a mapping (its values in key order) or an
    iterable of tensors, as a list of finite detached tensors."""
    if isinstance(x, torch.Tensor):
        items = [x]
    elif isinstance(x, nn.Module):
        items = list(x.parameters())
    elif isinstance(x, Mapping):
        items = [x[k] for k in sorted(x)]
    else:
        try:
            items = list(x)
        except TypeError:
            raise UserError(
                f"metrics: {what} must be a tensor, a module, a dict or a list of tensors, got {type(x).__name__}"
            ) from None
    if not items:
        raise UserError(f"metrics: {what} holds no tensors")
    return [_tensor(t, what) for t in items]


def _sq_norm(tensors: Sequence[torch.Tensor]) -> float:
    return float(sum(float(t.to(torch.float64).pow(2).sum()) for t in tensors))


def _paired(a: Any, b: Any, what_a: str, what_b: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if isinstance(a, Mapping) and isinstance(b, Mapping) and set(a) != set(b):
        raise UserError(f"metrics: {what_a} and {what_b} have different keys")
    la, lb = _tensor_list(a, what_a), _tensor_list(b, what_b)
    if len(la) != len(lb):
        raise UserError(f"metrics: {what_a} has {len(la)} tensors but {what_b} has {len(lb)}")
    for k, (ta, tb) in enumerate(zip(la, lb)):
        if ta.shape != tb.shape:
            raise UserError(
                f"metrics: tensor {k} of {what_a} has shape {tuple(ta.shape)} but {what_b} has {tuple(tb.shape)}"
            )
    return la, lb


# ----------------------------------------------------------------------------- dormant / active units


def _unit_activity(acts: Any, what: str) -> torch.Tensor:
    """``E|h_i|`` per unit: mean absolute activation over every axis except axis 1."""
    a = _batched(acts, what)
    dims = [0] + list(range(2, a.dim()))
    return a.abs().mean(dim=dims)


def dormant_units_mask(acts: Any, tau: float) -> torch.Tensor:
    """Boolean mask of ReDo-dormant units of one layer, shape ``(units,)``, on the input's device.

    ReDo, Sokar et al., "The Dormant Neuron Phenomenon in Deep Reinforcement Learning",
    ICML 2023. Score ``s_i = E_x|h_i(x)| / ((1/H) sum_k E_x|h_k(x)|)``; unit ``i`` is dormant
    iff ``s_i <= tau`` (``<=``, so ``tau = 0`` flags exactly-zero units only). For conv
    activations the unit is the channel and ``E`` runs over batch, H and W.

    Variant notes: the Dopamine code adds ``1e-9`` to the denominator; crl does not, and
    instead defines an all-zero layer (denominator 0) as all scores 0, i.e. every unit dormant
    for any ``tau >= 0`` (the same outcome Dopamine's epsilon gives). Common thresholds:
    0.0 (Dopamine default), 0.025 (Plasticine), 0.1 (loss-of-plasticity PPO).
    """
    tau = _check_tau(tau)
    activity = _unit_activity(acts, "activations")
    mean_activity = activity.mean()
    if float(mean_activity) == 0.0:
        scores = torch.zeros_like(activity)
    else:
        scores = activity / mean_activity
    return scores <= tau


def dormant_fraction(acts: Any, tau: float) -> float:
    """Fraction of ReDo-dormant units in one layer (Sokar et al., ICML 2023), threshold ``tau``.

    ``mean_i 1[s_i <= tau]`` with the score of :func:`dormant_units_mask`; log it with its
    threshold in the name, e.g. ``dormant_redo_tau0.025``. Returns a fraction in [0, 1]
    (multiply by 100 for Dopamine's percent).
    """
    return float(dormant_units_mask(acts, tau).to(torch.float64).mean())


def overall_dormant_fraction(layers: Sequence[Any] | Mapping[str, Any], tau: float) -> float:
    """Unit-weighted dormant fraction over several layers: total dormant / total units.

    ReDo (Sokar et al., ICML 2023), aggregated as in Dopamine's ReDo code (neuron-weighted
    global fraction), not Plasticine v2's unweighted mean of per-layer fractions. ``layers`` is
    a list of activations or a dict ``name -> activations``; each layer is scored against its
    own mean activity. Leave the output layer out, as the reference does.
    """
    tau = _check_tau(tau)
    items = list(layers.values()) if isinstance(layers, Mapping) else list(layers)
    if not items:
        raise UserError("metrics: overall_dormant_fraction needs at least one layer of activations")
    dormant = 0
    units = 0
    for acts in items:
        mask = dormant_units_mask(acts, tau)
        dormant += int(mask.sum())
        units += mask.numel()
    return dormant / units


def active_fraction(acts: Any, activation: str = "relu") -> float:
    """Fraction of active units (FAU) of one layer, per sample and unit.

    Definition of the reference (Plasticine, ``plasticine_metrics/units.py``), averaged over
    every element (samples, units and, for conv, positions):

    * ``"relu"``: ``1 - mean 1[h = 0]`` (a unit is active on a sample when it is non-zero);
    * ``"tanh"``: ``1 - mean 1[|h| > 0.99]`` (saturated units are inactive);
    * ``"sigmoid"``: ``1 - mean 1[h < 0.01 or h > 0.99]``.
    """
    if activation not in _FAU_ACTIVATIONS:
        raise UserError(
            f"metrics: active_fraction activation must be one of {', '.join(_FAU_ACTIVATIONS)}; got {activation!r}"
        )
    a = _batched(acts, "activations", keep_dtype=True)  # thresholds compared in the input's precision
    if activation == "relu":
        inactive = a == 0
    elif activation == "tanh":
        inactive = a.abs() > 0.99
    else:
        inactive = (a < 0.01) | (a > 0.99)
    return 1.0 - float(inactive.to(torch.float64).mean())


# ----------------------------------------------------------------------------- rank measures


def singular_values(features: Any) -> torch.Tensor:
    """Singular values ``sigma_1 >= ... >= sigma_min(n, d)`` of the feature matrix (float64, CPU)."""
    f = _features(features, "features").cpu()
    return torch.linalg.svdvals(f)


def srank(features: Any, delta: float = 0.01) -> int:
    """``srank_delta`` (Kumar et al., "Implicit Under-Parameterization", ICLR 2021), delta 0.01 default.

    ``min{k : sum_{i<=k} sigma_i / sum_i sigma_i >= 1 - delta}`` over the singular values of
    the ``(N, d)`` feature matrix (not centred). Plasticine logs this under the name
    "stable_rank"; loss-of-plasticity calls it ``abs_approximate_rank``. An all-zero matrix
    has srank 0.
    """
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (0.0 <= delta < 1.0):
        raise UserError(f"metrics: srank delta must be a number in [0, 1), got {delta!r}")
    s = singular_values(features)
    total = s.sum()
    if float(total) == 0.0:
        return 0
    ratio = torch.cumsum(s, 0) / total
    k = int((ratio < 1.0 - delta).sum()) + 1
    return min(k, s.numel())  # rounding can leave the last ratio a hair below 1 when delta = 0


def effective_rank(features: Any) -> float:
    """Effective rank (Roy & Vetterli, EUSIPCO 2007): ``exp(-sum_i p_i log p_i)``.

    ``p_i = sigma_i / sum_j sigma_j`` over the singular values of the ``(N, d)`` feature matrix,
    natural log, terms with ``p_i = 0`` dropped. Ranges in [1, min(N, d)] for a non-zero matrix;
    an all-zero matrix is defined as 0.0.
    """
    s = singular_values(features)
    total = s.sum()
    if float(total) == 0.0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(features: Any) -> float:
    """Classical stable rank ``||F||_F^2 / ||F||_2^2 = sum_i sigma_i^2 / sigma_1^2``.

    (Rudelson & Vershynin's numerical rank; not Plasticine's "stable_rank", which is
    :func:`srank`.) An all-zero matrix is defined as 0.0.
    """
    s = singular_values(features)
    if float(s[0]) == 0.0:
        return 0.0
    return float((s * s).sum() / (s[0] * s[0]))


# ----------------------------------------------------------------------------- features, weights


def feature_norm(features: Any) -> float:
    """Mean L2 norm of the feature vectors: ``mean_x ||phi(x)||_2`` (reference section 1.4)."""
    f = _features(features, "features")
    return float(f.norm(dim=1).mean())


def per_unit_variance(features: Any) -> float:
    """Per-unit feature variance: ``mean_j Var_x phi_j(x)``, the variance across the batch.

    Population variance (divides by N), so one sample gives 0.0. This is the per-unit form
    the reference asks crl to log, not Plasticine v1's ``mean_x Var_j phi_j(x)`` across units.
    """
    f = _features(features, "features")
    return float(f.var(dim=0, correction=0).mean())


def weight_norm(weights: Any) -> float:
    """Frobenius/L2 norm ``||W||_F`` of a tensor; for a list, dict or module, the global L2 norm
    ``sqrt(sum_l ||W_l||_F^2)`` over its tensors (pass one layer's weight for the per-layer norm)."""
    return math.sqrt(_sq_norm(_tensor_list(weights, "weights")))


def drift(current: Any, reference: Any) -> float:
    """Parameter drift ``||theta - theta_ref||_2`` (reference section 1.4).

    ``current`` and ``reference`` are tensors, modules, dicts (same keys) or lists of tensors,
    matched in order and shape; the result is the global L2 norm of the differences. With
    ``reference`` the initial parameters this is drift from init; with a task-start snapshot,
    drift within the task (snapshot with ``[p.detach().clone() for p in net.parameters()]``).
    """
    cur, ref = _paired(current, reference, "current parameters", "reference parameters")
    return math.sqrt(_sq_norm([c.to(torch.float64) - r.to(torch.float64) for c, r in zip(cur, ref)]))


def update_ratio(update: Any, weights: Any) -> float:
    """Relative update size ``||Delta W||_F / ||W||_F`` of one optimizer step (the update-to-weight
    ratio; in a scale-invariant layer the angle the step turns ``W`` by, to first order).

    ``update`` is the change one optimizer step made (``W_after - W_before``) and ``weights``
    the weights it is measured against (crl's hooks pass ``W_before``). Tensors give the
    per-layer value; lists/dicts/modules give the global ratio of norms. Zero weights: 0.0 if
    the update is zero too, else ``inf``. This is a measured step size, not NaP's effective
    learning rate (:func:`nap_effective_lr`).
    """
    upd, w = _paired(update, weights, "update", "weights")
    num = math.sqrt(_sq_norm(upd))
    den = math.sqrt(_sq_norm(w))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def predictive_entropy(logits: Any) -> float:
    """Mean entropy (nats) of ``softmax(logits)`` over the last axis, averaged over all others.

    For categorical heads (HL-Gauss / two-hot / C51 bins, policy logits): ``-sum_k p_k log p_k``
    per distribution. Uniform logits over K classes give ``log K``.
    """
    t = _tensor(logits, "logits")
    if t.dim() < 1 or t.shape[-1] == 0 or t.numel() == 0:
        raise UserError(f"metrics: logits must have a non-empty last (class) axis, got shape {tuple(t.shape)}")
    logp = torch.log_softmax(t.to(torch.float64), dim=-1)
    ent = -(logp.exp() * logp).sum(dim=-1)
    return float(ent.mean())


# ----------------------------------------------------------------------------- scale-free weight measures,
# NaP's effective learning rate, dormant units after Dohare et al. (issue 13; kept apart from ReDo's
# functions above)

OPTIMIZER_FORMS = ("sgd", "adaptive")


def nap_effective_lr(weight: Any, lr: float, optimizer: str = "sgd") -> float:
    """NaP's effective learning rate of one scale-invariant weight (a layer whose output feeds only a
    normalisation, so ``f(cW) = f(W)`` for ``c > 0``).

    Lyle, Zheng, Khetarpal, Martens, van Hasselt, Pascanu, Dabney, "Normalization and effective
    learning rates in reinforcement learning", NeurIPS 2024, arXiv 2407.01800. In such a layer the
    gradient scales as ``1/||W||``, so a step of size ``eta`` moves the direction ``W/||W||`` as a
    step of ``eta/||W||^2`` on the unit sphere would:

    * ``optimizer="sgd"``: ``eta / ||W||_F^2``;
    * ``optimizer="adaptive"`` (Adam, AdamW, RMSprop, NorMuon, ...: the step does not scale with the
      gradient, so only one factor ``1/||W||`` remains): ``eta / ||W||_F``, the Adam analogue.
      This holds while the gradients' scale is far above the optimizer's epsilon. Where it is far
      below (the MinAtar preset's RMSprop, eps 0.01: ``docs/results/minatar.md``, section 2) the
      step is ``eta g / eps`` and the SGD form with ``eta / eps`` applies; this metric does not
      detect that regime: :func:`below_eps_fraction` (logged as ``plasticity/<P>/below_eps``) does.

    ``lr`` is the learning rate of the weight's parameter group at that moment (schedule
    included). Zero weights give ``inf`` (no direction to move).
    """
    if optimizer not in OPTIMIZER_FORMS:
        raise UserError(f"metrics: nap_effective_lr optimizer must be one of {', '.join(OPTIMIZER_FORMS)}; "
                        f"got {optimizer!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr >= 0):
        raise UserError(f"metrics: nap_effective_lr lr must be a finite number >= 0, got {lr!r}")
    norm = math.sqrt(_sq_norm(_tensor_list(weight, "weights")))
    if norm == 0.0:
        return math.inf
    return float(lr) / (norm * norm if optimizer == "sgd" else norm)


def adaptive_denominator(state: Mapping, group: Mapping) -> torch.Tensor | None:
    """Per-weight denominator of an adaptive optimizer's step, ``eps`` excluded, from torch's state
    of one parameter (``optimizer.state[p]``) and its parameter group; None for other optimizers.

    The step is ``lr * (numerator) / (denominator + eps)`` with (torch's update rules):

    * RMSprop (Tieleman & Hinton 2012; centered: Graves 2013, arXiv 1308.0850): ``sqrt(v)``,
      centered ``sqrt(v - m^2)`` (clamped at 0: rounding can make it slightly negative), ``v``
      the ``square_avg`` and ``m`` the ``grad_avg`` of the gradients;
    * Adam/AdamW (Kingma & Ba 2015, arXiv 1412.6980), crl's AdamP and NorMuon's Adam part:
      ``sqrt(v / (1 - beta2^t))`` with ``v`` the ``exp_avg_sq`` (``max_exp_avg_sq`` with amsgrad)
      and ``t`` the step count;
    * crl's Conda: ``sqrt(v)`` (its bias correction is in the step size), per coordinate of its
      projected basis for the tensors it projects.

    Tensors an optimizer steps by another rule (NorMuon's orthogonalised matrices, SGD) give None.
    """
    if "square_avg" in state:
        v = state["square_avg"]
        if group.get("centered"):
            v = v - state["grad_avg"] ** 2
        return v.detach().clamp_min(0).sqrt()
    if "exp_avg_sq" in state and "betas" in group:
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        if "conda" in group:
            return v.detach().sqrt()
        return (v.detach() / (1 - group["betas"][1] ** float(state["step"]))).sqrt()
    return None


def below_eps_fraction(denominators: Any, eps: Sequence[float]) -> float:
    """Share of weights whose adaptive denominator (:func:`adaptive_denominator`) is below their
    optimizer's ``eps``, one ``eps`` per tensor.

    Such a weight's step is close to ``lr * g / eps``: plain SGD with learning rate ``lr / eps``,
    proportional to the loss's gradient scale, instead of the scale-free step of about ``lr`` that
    Adam and RMSprop are chosen for. The MinAtar reference preset (centered RMSprop, eps 0.01;
    Young & Tian 2019) keeps almost every weight there (``docs/results/minatar.md``, section 2).
    """
    dens = _tensor_list(denominators, "denominators")
    if len(eps) != len(dens) or any(not (isinstance(e, (int, float)) and e >= 0) for e in eps):
        raise UserError(f"metrics: below_eps_fraction needs one eps >= 0 per tensor, got {list(eps)!r}")
    below = sum(int((d < e).sum()) for d, e in zip(dens, eps))
    return below / _count(dens)


def _count(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() for t in tensors)


def mean_abs_weight(weights: Any) -> float:
    """Average weight magnitude ``mean_i |w_i|`` over every element of the tensors.

    Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood, Sutton, "Loss of plasticity in deep continual
    learning", Nature 2024 (code ``shibhansh/loss-of-plasticity``, ``compute_average_weight_magnitude``:
    the sum of ``|p|`` over all parameters divided by their number). Unlike ``||W||_F`` it does not
    grow with the width of the network.
    """
    ts = _tensor_list(weights, "weights")
    n = _count(ts)
    if n == 0:
        raise UserError("metrics: mean_abs_weight needs at least one weight")
    return float(sum(float(t.to(torch.float64).abs().sum()) for t in ts)) / n


def rms_weight(weights: Any) -> float:
    """Root-mean-square weight magnitude ``sqrt(mean_i w_i^2) = ||W||_F / sqrt(n)``.

    Plasticine (Yuan et al., "Plasticine: Accelerating Research in Plasticity-Motivated Deep
    Reinforcement Learning", arXiv 2504.17490, 2025; ``RLE-Foundation/Plasticine``), its weight
    magnitude: the global L2 norm divided by the square root of the number of parameters.
    """
    ts = _tensor_list(weights, "weights")
    n = _count(ts)
    if n == 0:
        raise UserError("metrics: rms_weight needs at least one weight")
    return math.sqrt(_sq_norm(ts) / n)


def rms_drift(current: Any, reference: Any) -> float:
    """Root-mean-square parameter drift ``sqrt(mean_i (w_i - w_ref,i)^2) = ||W - W_ref||_F / sqrt(n)``.

    Plasticine (arXiv 2504.17490; ``plasticine_metrics/norm.py``, ``compute_l2_norm_difference``),
    with the reference the initial parameters (drift from init) or a task-start snapshot. Inputs
    as :func:`drift`.
    """
    cur, ref = _paired(current, reference, "current parameters", "reference parameters")
    n = _count(cur)
    if n == 0:
        raise UserError("metrics: rms_drift needs at least one parameter")
    return math.sqrt(_sq_norm([c.to(torch.float64) - r.to(torch.float64) for c, r in zip(cur, ref)]) / n)


def dohare_dormant_mask(acts: Any, threshold: float = 0.01) -> torch.Tensor:
    """Boolean mask ``(units,)`` of the units of one layer that are dormant as Dohare et al. define it:
    active (output ``!= 0``) on fewer than ``threshold`` (1%) of the inputs.

    Dohare et al., "Loss of plasticity in deep continual learning", Nature 2024 (code
    ``shibhansh/loss-of-plasticity``, ``compute_dormant_units_proportion``: the share of non-zero
    outputs per unit, over the batch and, for a conv layer, every position, compared with
    ``< 0.01``). A definition for activations with exact zeros (ReLU); unlike ReDo's score it
    does not compare a unit with the others of its layer.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (0.0 <= threshold <= 1.0):
        raise UserError(f"metrics: dormant threshold must be a number in [0, 1], got {threshold!r}")
    a = _batched(acts, "activations", keep_dtype=True)
    dims = [0] + list(range(2, a.dim()))
    active = (a != 0).to(torch.float64).mean(dim=dims)
    return active < threshold


def dohare_dormant_fraction(layers: Any, threshold: float = 0.01) -> float:
    """Fraction of units dormant after Dohare et al. (:func:`dohare_dormant_mask`): one layer's
    activations, or a list / dict of layers (unit-weighted: total dormant / total units, as the
    reference code sums dormant units over layers and divides by the number of units)."""
    if isinstance(layers, Mapping):
        items = list(layers.values())
    elif isinstance(layers, (list, tuple)):
        items = list(layers)
    else:
        items = [layers]
    if not items:
        raise UserError("metrics: dohare_dormant_fraction needs at least one layer of activations")
    masks = [dohare_dormant_mask(a, threshold) for a in items]
    return sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


# ----------------------------------------------------------------------------- probe task


def _devices_of(network: nn.Module) -> list[int]:
    idx = {t.device.index for t in list(network.parameters()) + list(network.buffers()) if t.device.type == "cuda"}
    return sorted(i if i is not None else torch.cuda.current_device() for i in idx)


def plasticity_probe(
    network: nn.Module,
    inputs: torch.Tensor,
    steps: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Probe-task plasticity (Lyle et al., "Understanding Plasticity in Neural Networks",
    ICML 2023, arXiv 2303.01486): how well a copy of the network can still fit a new target.

    Protocol (the reference's third-party form):

    * **copy**: ``copy.deepcopy(network)``, put in training mode; the original is untouched
      (parameters, gradients, buffers, mode), and so are the global torch RNG states (CPU and
      the network's CUDA devices): the probe runs inside ``torch.random.fork_rng`` and reseeds
      with ``seed`` there, so dropout in the copy is reproducible;
    * **data**: ``inputs`` (the probe batch, moved to the network's device), full batch;
    * **target**: ``y = stopgrad(f(X)) + eps`` with ``f(X)`` the copy's initial outputs (in
      training mode: batch statistics for BatchNorm, dropout on) and
      ``eps ~ N(0, 1)`` per output element, drawn from a CPU ``torch.Generator`` seeded with
      ``seed`` (device-independent);
    * **loss**: mean squared error over samples and output elements, so ``loss_before`` is the
      sample mean of ``eps^2`` (about 1);
    * **training**: ``steps`` full-batch steps of a fresh ``torch.optim.Adam(lr=lr)`` on every
      parameter with ``requires_grad`` (frozen parameters stay frozen);
    * **result**: ``loss_before`` (step 0), ``loss_after`` (one more forward pass after the last
      step), ``reduction = loss_before - loss_after`` (higher = more plastic).

    The network's output must be a tensor (any shape ``(N, ...)``). Forward hooks registered on
    the network are copied with it and fire during the probe.
    """
    if not isinstance(network, nn.Module):
        raise UserError(f"metrics: plasticity_probe needs an nn.Module, got {type(network).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UserError(f"metrics: plasticity_probe steps must be an integer >= 0, got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise UserError(f"metrics: plasticity_probe lr must be a finite number > 0, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"metrics: plasticity_probe seed must be an integer, got {seed!r}")
    if not isinstance(inputs, torch.Tensor):
        raise UserError(f"metrics: plasticity_probe inputs must be a tensor, got {type(inputs).__name__}")
    x = _tensor(inputs, "probe inputs")
    if x.dim() < 1 or x.shape[0] == 0:
        raise UserError(f"metrics: probe inputs need at least one sample, got shape {tuple(x.shape)}")
    params = list(network.parameters())
    if not any(p.requires_grad for p in params):
        raise UserError("metrics: plasticity_probe needs a network with trainable parameters")

    with torch.inference_mode(False), torch.enable_grad():
        x = x.to(params[0].device).clone()  # a normal tensor even if made under inference_mode
        probe = copy.deepcopy(network)
        probe.train()
        trainable = [p for p in probe.parameters() if p.requires_grad]
        for p in probe.parameters():
            p.grad = None
        devices = _devices_of(probe)
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(seed)
            for d in devices:
                with torch.cuda.device(d):
                    torch.cuda.manual_seed(seed)

            with torch.no_grad():
                out0 = probe(x)
            if not isinstance(out0, torch.Tensor) or not out0.is_floating_point():
                raise UserError(
                    f"metrics: plasticity_probe needs a network that returns a float tensor, got {type(out0).__name__}"
                )
            if not bool(torch.isfinite(out0).all()):
                raise UserError("metrics: NaN/inf in network outputs on the probe inputs")
            gen = torch.Generator(device="cpu").manual_seed(seed)
            eps = torch.randn(out0.shape, generator=gen, dtype=torch.float32)
            target = (out0 + eps.to(device=out0.device, dtype=out0.dtype)).detach()

            def loss_fn() -> torch.Tensor:
                return torch.nn.functional.mse_loss(probe(x), target)

            opt = torch.optim.Adam(trainable, lr=lr)
            loss_before = float(torch.nn.functional.mse_loss(out0, target))
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn()
                loss.backward()
                opt.step()
            with torch.no_grad():
                loss_after = float(loss_fn())
    return {"loss_before": loss_before, "loss_after": loss_after, "reduction": loss_before - loss_after}
