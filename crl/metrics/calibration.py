"""Calibration: expected calibration error and post-hoc recalibration (pure functions).

``expected_calibration_error``
    The standard equal-width ECE of Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern
    Neural Networks", ICML 2017 (arXiv 1706.04599): the top-label confidence ``c_i = max_k p_ik``
    and correctness ``a_i = 1[argmax_k p_ik = y_i]`` of ``n`` samples, ``M = 15`` bins
    ``B_m = {i : (m-1)/M < c_i <= m/M}``::

        ECE = sum_m |B_m| / n * | mean_{i in B_m} a_i - mean_{i in B_m} c_i |

    The classifier logs it as ``eval/<task>/ece`` at every evaluation (agents/classifier.py).

``HCalibrator`` / ``h_calibration_loss``
    The post-hoc recalibration of Huang, Cao, Xia, Chen, Wang & Zhang, "h-calibration: Rethinking
    Classifier Recalibration with Probabilistic Error-Bounded Objective", IEEE TPAMI 2025,
    arXiv 2506.17968; official code by W. Huang (``loss/hcalibration.py``, ``calibrate.py``,
    ``models/`` monotonic model; read, not copied). A map that preserves the order of the logits
    of every sample (so the accuracy is unchanged) is fitted on a held-out split by minimising the
    h-calibration objective:

    * map: ``q = softmax(f(z))``, ``z = (log_softmax(o) - mu) / sd`` (``mu``, ``sd``: mean and std
      of the fit split's log-probabilities), ``f(z) = int_0^z g(t) dt`` with
      ``g(t) = ELU(MLP(t)) + 1 > 0`` (an unconstrained monotonic neural network, UMNN, applied to
      every class's value alike), so ``f`` is strictly increasing;
    * objective: every (sample, class) pair is an event with predicted probability ``q_ik`` and
      outcome ``y_ik = 1[y_i = k]``; the events are sorted by ``q``; at each sorted position the
      mean of ``q - y`` over a window of ``window + 1`` neighbours (zero-padded at the ends) is the
      local calibration error ``T``; ``relu(|T| - epsilon)`` is averaged within each of 15 clusters
      of the ``q`` values (1-D k-means) and the clusters are averaged ("cluaceweighted", the
      official default); this is repeated leaving out the samples of each class in turn and the
      ``C`` values averaged, times ``loss_weight``.

    What differs from the official code (the paper's exact training configuration was not
    available offline): the integral is the trapezoid rule on a grid of ``steps`` points over the
    fit split's range of ``z`` (one more unit each side), linearly interpolated and extended (UMNN:
    Clenshaw-Curtis quadrature at every value; the grid makes the fit ~50x cheaper); the k-means starts from the quantiles of ``q`` and runs
    25 Lloyd iterations (official: faiss' k-means, random start); the fit is full-batch Adam for
    ``iterations`` steps keeping the parameters of the lowest fit-split ECE (official: mini-batch
    epochs with model selection by ECE); the MLP's width (2 x 32) and the optimiser settings are
    crl's choices. The window (200), ``epsilon`` (1e-20), the leave-one-class-out average and
    ``loss_weight`` (1e5) are the official defaults.

``TemperatureScaler``
    Temperature scaling (Guo et al. 2017), the standard baseline: ``softmax(o / T)``, ``T > 0``
    fitted by minimising the negative log-likelihood on the held-out split (L-BFGS on ``log T``).

``recalibrate(fit_logits, fit_labels, test_logits, test_labels, method)`` fits one of them on the
fit split and reports ECE and accuracy on the test split before and after.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from crl.errors import UserError

ECE_BINS = 15


def _check(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.dim() != 2 or labels.dim() != 1 or len(probs) != len(labels):
        raise UserError(f"calibration: expected probabilities (N, C) and labels (N,), got {tuple(probs.shape)} "
                        f"and {tuple(labels.shape)}")
    if not bool(torch.isfinite(probs).all()):
        raise UserError("calibration: probabilities contain NaN or inf")


def binned_ece(confidences: torch.Tensor, correct: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """Equal-width ECE of top-label ``confidences`` in [0, 1] and 0/1 ``correct`` (bins ``((m-1)/M, m/M]``;
    a confidence of exactly 0 joins the first bin). 0 for no samples."""
    c = confidences.detach().double().flatten()
    a = correct.detach().double().flatten()
    n = len(c)
    if n == 0:
        return 0.0
    bins = torch.clamp(torch.ceil(c * n_bins).long() - 1, 0, n_bins - 1)
    conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, c)
    acc = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, a)
    return float((acc - conf).abs().sum() / n)  # sum_m |B_m|/n |acc_m - conf_m| = sum_m |sum a - sum c| / n


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017) of the probabilities ``probs`` (N, C) for ``labels`` (N,)."""
    _check(probs, labels)
    conf, pred = probs.max(dim=1)
    return binned_ece(conf, (pred == labels).double(), n_bins)


# ----------------------------------------------------------------------------- temperature scaling


class TemperatureScaler:
    """``softmax(o / T)`` with ``T`` fitted by NLL on a held-out split (Guo et al. 2017)."""

    def __init__(self) -> None:
        self.temperature = 1.0

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> "TemperatureScaler":
        logits, labels = logits.detach().double(), labels.detach()
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        opt.step(closure)
        self.temperature = float(log_t.detach().exp())
        return self

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.detach().double() / self.temperature, dim=1)


# ----------------------------------------------------------------------------- h-calibration


def _kmeans_1d(x: torch.Tensor, k: int, iterations: int = 25) -> torch.Tensor:
    """Cluster index of each value of ``x`` (1-D k-means, started at the quantiles (j + 0.5) / k; the
    nearest center is found by bisecting the midpoints of the sorted centers)."""
    centers = torch.quantile(x, (torch.arange(k, dtype=x.dtype) + 0.5) / k)
    ones = torch.ones_like(x)
    for _ in range(iterations + 1):
        centers = torch.sort(centers).values
        assign = torch.searchsorted((centers[1:] + centers[:-1]) / 2, x)
        sums = torch.zeros(k, dtype=x.dtype).index_add_(0, assign, x)
        counts = torch.zeros(k, dtype=x.dtype).index_add_(0, assign, ones)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centers)
        if bool(torch.equal(new, centers)):
            break
        centers = new
    return assign


def local_calibration_errors(probs: torch.Tensor, onehot: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted event probabilities, |mean of (q - y) over a window of ``window`` + 1 sorted neighbours|),
    windows zero-padded at the ends and always divided by ``window + 1`` (as the official code)."""
    q, y = probs.flatten(), onehot.flatten().to(probs.dtype)
    order = torch.argsort(q.detach())
    q, y = q[order], y[order]
    half = window // 2
    padded = F.pad(q - y, (half + 1, half))  # one more zero in front: window sums as differences of a cumsum
    c = torch.cumsum(padded, 0)
    t = (c[2 * half + 1:] - c[: len(c) - 2 * half - 1]) / (2 * half + 1)
    return q, t.abs()


def h_calibration_loss(probs: torch.Tensor, labels: torch.Tensor, window: int = 200, epsilon: float = 1e-20,
                       clusters: int = 15, leave_one_class_out: bool = True, loss_weight: float = 1e5) -> torch.Tensor:
    """The h-calibration objective (module docstring) of probabilities ``probs`` (N, C), with graph."""
    _check(probs.detach(), labels)
    if window < 2 or window % 2:
        raise UserError(f"h-calibration: window must be an even number >= 2, got {window}")
    onehot = F.one_hot(labels, probs.shape[1])
    groups = [labels != c for c in range(probs.shape[1])] if leave_one_class_out else [torch.ones_like(labels, dtype=torch.bool)]
    values = []
    for keep in groups:
        if not bool(keep.any()):
            continue
        q, t = local_calibration_errors(probs[keep], onehot[keep], window)
        err = F.relu(t - epsilon)
        k = min(clusters, len(q))
        assign = _kmeans_1d(q.detach(), k)
        sums = torch.zeros(k, dtype=err.dtype).index_add(0, assign, err)
        counts = torch.zeros(k, dtype=err.dtype).index_add_(0, assign, torch.ones_like(err.detach()))
        values.append((sums / (counts + 1e-5)).mean())
    return torch.stack(values).mean() * loss_weight


class _Integrand(nn.Module):
    def __init__(self, hidden: tuple[int, ...]):
        super().__init__()
        sizes = (1, *hidden, 1)
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return F.elu(self.net(t)) + 1.0


class MonotoneMap(nn.Module):
    """``f(z) = int_0^z g(t) dt``, ``g > 0`` (UMNN's form), integrated by the trapezoid rule on a grid of
    ``steps`` points over ``[lo, hi]`` and linearly interpolated (linearly extended outside with the end
    values of ``g``): strictly increasing in ``z``."""

    def __init__(self, hidden: tuple[int, ...] = (32, 32), steps: int = 1024, lo: float = -5.0, hi: float = 5.0):
        super().__init__()
        self.integrand = _Integrand(hidden)
        grid = torch.linspace(min(lo, 0.0), max(hi, 0.0), steps, dtype=torch.float64)
        self.register_buffer("grid", grid)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = self.grid
        g = self.integrand(grid[:, None]).squeeze(1)
        cum = torch.cat([g.new_zeros(1), torch.cumsum((g[1:] + g[:-1]) / 2 * (grid[1:] - grid[:-1]), 0)])
        cum = cum - _interp(torch.zeros(1, dtype=grid.dtype), grid, cum, g)  # f(0) = 0
        return _interp(z.reshape(-1), grid, cum, g).reshape(z.shape)


def _interp(x: torch.Tensor, grid: torch.Tensor, values: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of ``values`` on ``grid`` at ``x``; outside, lines of slope ``slope[0]`` /
    ``slope[-1]`` (the integrand at the ends)."""
    idx = torch.clamp(torch.searchsorted(grid, x.detach().contiguous()) - 1, 0, len(grid) - 2)
    x0, x1 = grid[idx], grid[idx + 1]
    inside = values[idx] + (values[idx + 1] - values[idx]) * (x - x0) / (x1 - x0)
    below = values[0] + slope[0] * (x - grid[0])
    above = values[-1] + slope[-1] * (x - grid[-1])
    return torch.where(x < grid[0], below, torch.where(x > grid[-1], above, inside))


class HCalibrator:
    """Post-hoc h-calibration (module docstring): ``fit(logits, labels)`` on a held-out split, then
    ``calibrator(logits)`` gives the recalibrated probabilities (same argmax as ``logits``)."""

    def __init__(self, hidden: tuple[int, ...] = (32, 32), steps: int = 1024, iterations: int = 100, lr: float = 1e-2,
                 window: int = 200, epsilon: float = 1e-20, loss_weight: float = 1e5, select_every: int = 10,
                 seed: int = 0):
        self.hidden, self.steps, self.iterations, self.lr = hidden, steps, iterations, lr
        self.window, self.epsilon, self.loss_weight, self.select_every, self.seed = (window, epsilon, loss_weight,
                                                                                  select_every, seed)
        self.mu, self.sd = 0.0, 1.0
        self.map: MonotoneMap | None = None
        self.losses: list[float] = []

    def _standardised(self, logits: torch.Tensor) -> torch.Tensor:
        return (torch.log_softmax(logits.detach().double(), dim=1) - self.mu) / self.sd

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.map(self._standardised(logits)), dim=1)

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> "HCalibrator":
        _check(logits.detach(), labels)
        lp = torch.log_softmax(logits.detach().double(), dim=1)
        self.mu, self.sd = float(lp.mean()), float(lp.std().clamp_min(1e-12))
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            z = self._standardised(logits)
            self.map = MonotoneMap(self.hidden, self.steps, float(z.min()) - 1.0, float(z.max()) + 1.0).double()
        opt = torch.optim.Adam(self.map.parameters(), lr=self.lr)
        best = (math.inf, copy.deepcopy(self.map.state_dict()))
        for it in range(self.iterations + 1):
            if it % self.select_every == 0 or it == self.iterations:
                with torch.no_grad():
                    ece = expected_calibration_error(self.probs(logits), labels)
                if ece < best[0]:
                    best = (ece, copy.deepcopy(self.map.state_dict()))
            if it == self.iterations:
                break
            loss = h_calibration_loss(self.probs(logits), labels, self.window, self.epsilon,
                                      loss_weight=self.loss_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.losses.append(float(loss.detach()))
        self.map.load_state_dict(best[1])
        return self

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.map is None:
            raise RuntimeError("HCalibrator: call fit() first")
        return self.probs(logits)


METHODS = ("h-calibration", "temperature")


def recalibrate(fit_logits: torch.Tensor, fit_labels: torch.Tensor, test_logits: torch.Tensor,
                test_labels: torch.Tensor, method: str = "h-calibration", **kw) -> dict:
    """Fit ``method`` on the fit split; ECE and accuracy of the test split before and after."""
    if method not in METHODS:
        raise UserError(f"recalibrate: unknown method '{method}'; accepted: {', '.join(METHODS)}")
    calibrator = HCalibrator(**kw) if method == "h-calibration" else TemperatureScaler(**kw)
    calibrator.fit(fit_logits, fit_labels)
    before = torch.softmax(test_logits.detach().double(), dim=1)
    after = calibrator(test_logits)
    return {"method": method,
            "ece_before": expected_calibration_error(before, test_labels),
            "ece_after": expected_calibration_error(after, test_labels),
            "acc_before": float((before.argmax(1) == test_labels).double().mean()),
            "acc_after": float((after.argmax(1) == test_labels).double().mean()),
            "calibrator": calibrator}
