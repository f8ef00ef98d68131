"""Forgetting and transfer metrics from the eval matrix.

``R`` is a square ``T x T`` matrix (numpy array, tensor or list of lists), **0-indexed**:
``R[i, j]`` = score on task ``j`` after training through task ``i`` (the runner fills it at
each task end). The reference (``metrics_and_scenarios.md`` section 2) writes the same
formulas 1-indexed; its optional row ``R[0, j]`` (score at initialisation) is not part of
crl's matrix: pass those scores as the ``baseline`` of :func:`forward_transfer` instead.

Missing values: ``NaN`` marks an entry that was not evaluated (e.g. unseen tasks, when a
scenario evaluates only seen tasks). A per-task term that needs a NaN entry is left out of
the average; if every term is left out the metric is ``NaN`` ("not evaluated"). ``inf`` is an
error. A run with one task (``1 x 1``) has no earlier task and no later one: average
forgetting, BWT and FWT have no value there (their averages run over an empty set), so those
functions return ``None``, never ``0.0`` (which would read as "no forgetting") nor NaN
(which means "not evaluated"); :func:`summarize` keeps the key with ``None`` and the
``ForgettingHook`` logs no scalar for it. To score a run in progress after task ``k``, pass
``R[:k + 1, :k + 1]``.

Class-incremental FWT: ``R[i-1, i]`` must be scored as mammoth scores the upcoming task (its
classes *included* in the argmax: ``utils/training.py`` evaluates task ``t`` after its data
loaders are built, before training it); crl's classifier does that (``agents/classifier.py``,
:meth:`accuracies`). With the upcoming task's classes masked the term is always 0 and FWT
degenerates to ``-mean(b_i)``.

RL returns should be put on a common scale per task first (:func:`normalize_returns`,
:func:`cora_scale`); the ``ForgettingHook`` logs the normalised forms beside the raw ones.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from crl.errors import UserError

__all__ = [
    "average_final",
    "average_seen",
    "task_forgetting",
    "average_forgetting",
    "backward_transfer",
    "forward_transfer",
    "normalize_returns",
    "cora_scale",
    "cora_isolated_forgetting",
    "cora_zero_shot_transfer",
    "summarize",
]

FORGETTING_VARIANTS = ("max", "first")


# ----------------------------------------------------------------------------- helpers


def _array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"metrics: {what} must be numeric and rectangular (a matrix or list of equal-length rows)") from None
    if np.isinf(a).any():
        raise UserError(f"metrics: NaN/inf in {what} (inf is not allowed; NaN marks 'not evaluated')")
    return a


def _matrix(R: Any) -> np.ndarray:
    a = _array(R, "eval matrix R")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise UserError(
            f"metrics: eval matrix R must be square T x T with T >= 1 (R[i, j] = score on task j after task i), "
            f"got shape {a.shape}"
        )
    return a


def _mean(terms: Sequence[float] | np.ndarray) -> float:
    """Mean of the non-NaN terms; NaN if there are none."""
    t = np.asarray(terms, dtype=np.float64)
    t = t[~np.isnan(t)]
    return float(t.mean()) if t.size else math.nan


def _per_task(value: Any, T: int, what: str) -> np.ndarray:
    """A scalar or a length-T sequence, as a float64 vector of length T."""
    v = _array(value, what)
    if v.ndim == 0:
        return np.full(T, float(v))
    if v.shape != (T,):
        raise UserError(f"metrics: {what} must be a number or one value per task ({T}), got shape {v.shape}")
    return v


# ----------------------------------------------------------------------------- matrix metrics


def average_final(R: Any) -> float:
    """Average final score ``(1/T) sum_j R[T-1, j]``: mean over all tasks after the last one.

    The standard "average accuracy" ``A_T`` (e.g. Chaudhry et al. 2018; Lopez-Paz & Ranzato
    2017's ACC). NaN entries of the last row are left out.
    """
    a = _matrix(R)
    return _mean(a[-1])


def average_seen(R: Any) -> np.ndarray:
    """Average score over seen tasks after each task: ``A_i = (1/(i+1)) sum_{j<=i} R[i, j]``.

    Returns a length-T vector (mammoth's per-task average accuracy); ``A_{T-1}`` equals
    :func:`average_final`.
    """
    a = _matrix(R)
    return np.array([_mean(a[i, : i + 1]) for i in range(a.shape[0])])


def task_forgetting(R: Any, variant: str = "max") -> np.ndarray:
    """Forgetting of each earlier task ``j < T-1``, a vector of length ``T-1`` (empty for T = 1).

    * ``variant="max"`` (max - last; Chaudhry et al., "Riemannian Walk", ECCV 2018,
      arXiv 1801.10112): ``f_j = max_{j <= l <= T-2} R[l, j] - R[T-1, j]``; the max runs over
      the rows from the task's own training to the one before the last (scores before task j
      was trained are not counted), NaN rows ignored. Unlike mammoth, the last row is not in
      the max, so ``f_j`` is negative when the final score beats every earlier one.
    * ``variant="first"`` (first - last; Avalanche ``forgetting_metrics``, Continual World):
      ``f_j = R[j, j] - R[T-1, j]``; ``first`` forgetting equals ``-BWT`` per task.

    A term is NaN when the entries it needs were not evaluated.
    """
    if variant not in FORGETTING_VARIANTS:
        raise UserError(f"metrics: forgetting variant must be one of {', '.join(FORGETTING_VARIANTS)}; got {variant!r}")
    a = _matrix(R)
    T = a.shape[0]
    out = np.full(T - 1, math.nan)
    for j in range(T - 1):
        if variant == "max":
            earlier = a[j : T - 1, j]
            earlier = earlier[~np.isnan(earlier)]
            ref = earlier.max() if earlier.size else math.nan
        else:
            ref = a[j, j]
        out[j] = ref - a[T - 1, j]
    return out


def average_forgetting(R: Any, variant: str = "max") -> float | None:
    """Average forgetting over the tasks before the last: mean of :func:`task_forgetting`.

    ``variant`` is ``"max"`` (max - last, Chaudhry et al. 2018) or ``"first"`` (first - last,
    Avalanche / Continual World). Positive = forgotten. ``None`` for a single task (undefined).
    """
    terms = task_forgetting(R, variant)
    return None if terms.size == 0 else _mean(terms)


def backward_transfer(R: Any) -> float | None:
    """Backward transfer (Lopez-Paz & Ranzato, "Gradient Episodic Memory", NeurIPS 2017,
    arXiv 1706.08840): ``BWT = (1/(T-1)) sum_{j<T-1} (R[T-1, j] - R[j, j])``.

    Negative = forgetting (equals minus first-last forgetting). ``None`` for a single task
    (mammoth's ``np.mean`` of an empty list; undefined).
    """
    a = _matrix(R)
    T = a.shape[0]
    if T == 1:
        return None
    return _mean([a[T - 1, j] - a[j, j] for j in range(T - 1)])


def forward_transfer(R: Any, baseline: Any = None) -> float | None:
    """Forward transfer (Lopez-Paz & Ranzato 2017, GEM): ``FWT = (1/(T-1)) sum_{i>=1} (R[i-1, i] - b_i)``.

    The zero-shot score on task ``i`` just before training it, minus a baseline ``b_i``.
    ``baseline`` is one score per task (``b_0`` is unused) or a scalar; ``None`` means zeros,
    i.e. FWT is the mean zero-shot score. Pass the scores of a randomly initialised model for
    GEM's form, or the scores of this run's network at initialisation for Avalanche's
    ``R[i-1, i] - R[init, i]``. Needs the unseen tasks evaluated (NaN otherwise). ``None`` for a
    single task (undefined).

    mammoth (``utils/metrics.py`` ``forward_transfer(results, random_results)``) computes the
    same sum with ``b_i`` = the randomly initialised network's accuracy on task ``i`` over all
    classes, and, in class-IL, ``R[i-1, i]`` scored with task ``i``'s classes in the argmax.
    """
    a = _matrix(R)
    T = a.shape[0]
    b = np.zeros(T) if baseline is None else _per_task(baseline, T, "baseline")
    if T == 1:
        return None
    return _mean([a[i - 1, i] - b[i] for i in range(1, T)])


def normalize_returns(R: Any, low: Any, high: Any) -> np.ndarray:
    """Per-task affine normalisation ``(R[:, j] - low_j) / (high_j - low_j)`` for RL returns.

    ``R`` is any matrix whose columns are tasks (the eval matrix, or a curve ``(evals, T)``) or a
    single row; ``low`` and ``high`` are scalars or one value per task. Human-normalised Atari
    scores: ``low`` = random, ``high`` = human. CORA's scale (Powers et al. 2022):
    ``low = 0``, ``high = max |R_j|`` over evals and runs. NaN entries stay NaN.
    """
    a = _array(R, "returns")
    if a.ndim not in (1, 2) or a.size == 0:
        raise UserError(f"metrics: returns must be a non-empty row or matrix with one column per task, got shape {a.shape}")
    T = a.shape[-1]
    lo = _per_task(low, T, "low")
    hi = _per_task(high, T, "high")
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise UserError("metrics: NaN/inf in normalisation bounds low/high")
    span = hi - lo
    if (span == 0).any():
        bad = [int(j) for j in np.flatnonzero(span == 0)]
        raise UserError(f"metrics: normalize_returns needs high != low for every task; equal for task(s) {bad}")
    return (a - lo) / span


def cora_scale(history: Any) -> np.ndarray:
    """CORA's per-task return scale (Powers et al. 2022; ``continual_rl`` ``utils/metrics.py``
    ``compute_metrics``): ``max_e |R_e,j|`` over every evaluation ``e`` of task ``j`` (CORA: over
    all evals of all runs of an agent; returns are multiplied by its inverse before the metrics).

    ``history`` is ``(evals, T)`` (NaN = not evaluated). Returns the ``high`` of
    :func:`normalize_returns` (``low = 0``); a task never evaluated, or only with returns of 0,
    gets NaN (no scale).
    """
    a = _array(history, "returns")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.size == 0:
        raise UserError(f"metrics: return history must be (evals, tasks), got shape {a.shape}")
    out = np.full(a.shape[1], math.nan)
    for j in range(a.shape[1]):
        col = np.abs(a[:, j][~np.isnan(a[:, j])])
        if col.size and col.max() > 0:
            out[j] = col.max()
    return out


# ----------------------------------------------------------------------------- CORA (curves)


def _curves(curves: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        items = list(curves)
    except TypeError:
        raise UserError("metrics: curves must be a list with one (steps, values) pair per task") from None
    if not items:
        raise UserError("metrics: curves must hold one (steps, values) pair per task; got none")
    out = []
    for i, item in enumerate(items):
        try:
            steps, values = item
        except (TypeError, ValueError):
            raise UserError(f"metrics: curve {i} must be a (steps, values) pair") from None
        s = _array(steps, f"steps of curve {i}")
        v = _array(values, f"values of curve {i}")
        if s.ndim != 1 or s.shape != v.shape:
            raise UserError(
                f"metrics: curve {i} needs 1-D steps and values of equal length, got {s.shape} and {v.shape}"
            )
        if np.isnan(s).any():
            raise UserError(f"metrics: NaN/inf in steps of curve {i}")
        keep = ~np.isnan(v)
        order = np.argsort(s[keep], kind="stable")
        out.append((s[keep][order], v[keep][order]))
    return out


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"metrics: {what} must be a positive integer, got {value!r}")
    return int(value)


def _last_in(steps: np.ndarray, values: np.ndarray, start: float | None, end: float) -> float:
    """Value of the last eval with ``start < step <= end`` (no lower bound if start is None)."""
    mask = steps <= end
    if start is not None:
        mask &= steps > start
    idx = np.flatnonzero(mask)
    return float(values[idx[-1]]) if idx.size else math.nan


def cora_isolated_forgetting(curves: Any, steps_per_task: int, num_cycles: int = 1) -> np.ndarray:
    """CORA isolated forgetting (Powers et al., "CORA: Benchmarks, Baselines, and Metrics as a
    Platform for Continual Reinforcement Learning Agents", CoLLAs 2022; ``continual_rl``
    ``utils/metrics.py``).

    ``curves[i] = (steps, values)``: the continual-eval curve of task ``i`` (global step of each
    eval and its score, already normalised, CORA divides by ``max |R_i|`` over evals and runs).
    Tasks are trained in order ``0..N-1``, ``steps_per_task`` steps each, repeated for
    ``num_cycles`` cycles. Returns ``F`` of shape ``(num_cycles, N, N)`` with

        ``F[c, i, j] = R_i(last eval before task j of cycle c starts)
                       - R_i(last eval during that training window)``,

    the window of task ``j`` in cycle ``c`` being ``((j + cN) T, (j + cN + 1) T]``. An eval at a
    boundary step counts as the end of the window it closes (crl evaluates at task end);
    CORA's code excludes evals exactly on a boundary, which only matters when evals fall there.
    ``F[0, i, j]`` for ``j <= i`` is NaN (task i not learnt yet), as is any entry without an
    eval in its window. Positive = forgotten. Aggregate with ``np.nanmean`` (per task: over
    axes (0, 2); per impactor: over axes (0, 1)). NaN values in a curve are dropped.
    """
    data = _curves(curves)
    T = _check_positive_int(steps_per_task, "steps_per_task")
    C = _check_positive_int(num_cycles, "num_cycles")
    N = len(data)
    F = np.full((C, N, N), math.nan)
    for i, (s, v) in enumerate(data):
        for c in range(C):
            for j in range(N):
                if c == 0 and j <= i:
                    continue
                start = (j + c * N) * T
                before = _last_in(s, v, None, start)
                during = _last_in(s, v, start, start + T)
                F[c, i, j] = before - during
    return F


def cora_zero_shot_transfer(curves: Any, steps_per_task: int) -> np.ndarray:
    """CORA isolated zero-shot forward transfer (Powers et al., CoLLAs 2022), first cycle.

    Same ``curves`` as :func:`cora_isolated_forgetting`. Returns ``Z`` of shape ``(N, N)`` with,
    for ``j < i``,

        ``Z[i, j] = R_i(last eval during task j's window (jT, (j+1)T]) - R_i(last eval before it)``

    (for ``j = 0`` the baseline is the first eval of the curve, as in CORA). Entries ``j >= i``
    and those without the needed evals are NaN. Positive = training on j helped task i.
    """
    data = _curves(curves)
    T = _check_positive_int(steps_per_task, "steps_per_task")
    N = len(data)
    Z = np.full((N, N), math.nan)
    for i, (s, v) in enumerate(data):
        if s.size == 0:
            continue
        for j in range(i):
            start = j * T
            base = float(v[0]) if j == 0 else _last_in(s, v, None, start)
            Z[i, j] = _last_in(s, v, start, start + T) - base
    return Z


# ----------------------------------------------------------------------------- summary


def summarize(R: Any, baseline: Any = None, variant: str = "max") -> dict[str, float | int | None]:
    """The standard summary of an eval matrix, as plain floats (``None`` where undefined: the
    forgetting, BWT and FWT keys of a one-task matrix).

    Keys: ``avg_final`` (:func:`average_final`), ``avg_forgetting`` (:func:`average_forgetting`
    with ``variant``), ``bwt`` (:func:`backward_transfer`), ``fwt`` (:func:`forward_transfer`
    with ``baseline``), plus both forgetting forms under the names the logger uses,
    ``forgetting_max_minus_last`` and ``forgetting_first_minus_last``, and ``num_tasks``.
    """
    a = _matrix(R)
    return {
        "avg_final": average_final(a),
        "avg_forgetting": average_forgetting(a, variant),
        "bwt": backward_transfer(a),
        "fwt": forward_transfer(a, baseline),
        "forgetting_max_minus_last": average_forgetting(a, "max"),
        "forgetting_first_minus_last": average_forgetting(a, "first"),
        "num_tasks": int(a.shape[0]),
    }
