"""AdaB2N: BatchNorm with task-wise Bayesian weighting of the batch statistics, a modified
running-statistics momentum and an adaptation loss (Lyu et al., NeurIPS 2023).

Learner-facing API (the norm cannot see labels or task boundaries by itself):

* ``set_task_ids(ids)`` before each training forward: ``ids`` is a LongTensor (B,) with the
  task index of every sample in the batch (stream + replay samples). The ids stay set until
  replaced or cleared (``clear_task_ids()``); without ids the layer is a plain BN with the
  modified momentum.
* ``begin_task(i)`` at the start of task i, ``end_task()`` at its end (either one is enough:
  ``end_task`` increments the current task like the official code, ``begin_task`` sets it).
* ``aux_loss()`` after the forward: the adaptation loss of this layer for the last training
  forward (a scalar with graph); the learner adds ``lambda * sum over layers`` to its loss
  (the official code does so only once the task index is >= ``ada_t0``).

The model-wide helpers :func:`set_task_ids`, :func:`begin_task`, :func:`end_task` and
:func:`aux_loss` do the same for every AdaB2N layer of a network.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crl.errors import UserError
from crl.nn.norms.rms_group import _param_shape
from crl.options import option
from crl.registry import NORMS


def effective_momentum_limit(momentum: float, kappa: float) -> float:
    """Fixed point of the modified momentum recursion: ``1 - (1 - m)^kappa`` (0 < kappa <= 1)."""
    return 1.0 - (1.0 - momentum) ** kappa


class AdaB2N(nn.Module):
    """Adaptive Balance of BN (AdaB2N) for (B, C) or (B, C, H, W) inputs.

    Lyu, Wang, Zhang, Sun, Su, Zhu, Jing, "Overcoming Recency Bias of Normalization Statistics
    in Continual Learning: Balance and Adaptation", NeurIPS 2023 (arXiv 2310.08855); official
    code https://github.com/lvyilin/AdaB2N (``models/utils/adab2n.py``). Written from the
    equations (crl reference section 2):

    Training, with task ids set (tasks 0..K-1, K = 1 + max(current task, max id), n_k samples
    of task k in the batch, learnable log-prior w (``task_weight``, init 0)):

        pi_k = (exp(w_k) + n_k) / sum_j (exp(w_j) + n_j)      a_i = pi_{k(i)} / n_{k(i)}
        mu_c = sum_i a_i mean_{hw} x_ic                         sigma2_c = sum_i a_i mean_{hw} (x_ic - mu_c)^2
        y = gamma (x - mu) / sqrt(sigma2 + eps) + beta         (gradients flow into w through mu, sigma2)

    Without ids, or with a single task, mu and sigma2 are the plain biased batch moments.
    Running statistics with the modified momentum eta_t (``get_eta``; m = ``momentum``):
    kappa = 0: eta_t = 1 / num_batches_tracked; kappa = 1: eta_t = m; otherwise eta_1 = m^kappa,
    eta_t = eta_{t-1} / (eta_{t-1} + (1 - m)^kappa), which converges to 1 - (1 - m)^kappa;
    ``rm <- rm + eta (mu - rm)``, ``rv <- (1 - eta) rv + eta sigma2`` (biased, no Bessel).
    Adaptation loss (after the update, running stats constant): ``MSE(mu, rm) + MSE(sigma2, rv)``.
    Eval: BN with the running statistics.

    Where we follow the official code: all equations above, the defaults momentum 0.1,
    eps 1e-5, init_weight 0, the update order, ``eta`` not reset at task boundaries.
    Where we differ:

    * ``renormalize=True`` (default) fixes the official defect: when a seen task is absent
      from the batch it still gets pi_k > 0, so sum_i a_i < 1 and the statistics shrink. We
      take pi over the tasks present in the batch (= dividing a by sum_i a_i).
      ``renormalize=False`` reproduces the official weights.
    * Task ids come from the learner (``set_task_ids``), not from ``label // classes_per_task``;
      a batch may hold tasks above the current one (task-free streams); ids must be < num_tasks.
    * The weighted path is taken whenever K > 1, i.e. the current task is > 0 (official
      condition) or the ids name a task > 0; with K = 1 both paths give the same statistics.
    * ``last_eta``, the current task and the batch counter are Python numbers kept in the
      state_dict as extra state (official: ``last_eta`` is an attribute lost on save; the others
      are buffers). Python numbers avoid a GPU sync per layer and forward, and keep eta exact
      under ``model.half()``.
    * Dense (B, C) inputs are accepted (no spatial mean); the official code swaps only
      ``BatchNorm2d``. kappa and num_tasks have defaults here (1.0, 100) so ``--norm adab2n``
      builds without extra flags; the official script requires kappa. Unused entries of
      ``task_weight`` receive zero gradient.
    """

    def __init__(self, num_features: int, num_tasks: int = 100, kappa: float = 1.0, momentum: float = 0.1,
                 eps: float = 1e-5, init_weight: float = 0.0, renormalize: bool = True):
        super().__init__()
        if not 0.0 <= kappa <= 1.0:
            raise UserError(f"--norm adab2n kappa: must be in [0, 1], got {kappa}")
        if not 0.0 < momentum <= 1.0:
            raise UserError(f"--norm adab2n momentum: must be in (0, 1], got {momentum}")
        if int(num_tasks) < 1:
            raise UserError(f"--norm adab2n num_tasks: must be >= 1, got {num_tasks}")
        self.num_features = num_features
        self.num_tasks = int(num_tasks)
        self.kappa = float(kappa)
        self.momentum = float(momentum)
        self.eps = eps
        self.renormalize = bool(renormalize)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.task_weight = nn.Parameter(torch.full((self.num_tasks,), float(init_weight)))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.num_batches_tracked = 0  # training forwards so far
        self.cur_task = 0
        self.last_eta: float | None = None
        self._task_ids: torch.Tensor | None = None
        self._max_id = -1
        self._aux: torch.Tensor | None = None
        self.last_task_probs: torch.Tensor | None = None  # pi of the last weighted forward (for logging)

    def get_extra_state(self) -> dict:
        return {"cur_task": self.cur_task, "last_eta": self.last_eta, "num_batches_tracked": self.num_batches_tracked}

    def set_extra_state(self, state: dict) -> None:
        self.cur_task = int(state["cur_task"])
        self.last_eta = None if state["last_eta"] is None else float(state["last_eta"])
        self.num_batches_tracked = int(state["num_batches_tracked"])

    def __getstate__(self):
        # the last adaptation loss carries a graph, which copy.deepcopy (target networks) refuses
        state = self.__dict__.copy()
        state["_aux"] = None
        return state

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_tasks={self.num_tasks}, kappa={self.kappa}, momentum={self.momentum}, "
                f"eps={self.eps}, renormalize={self.renormalize}")

    # ------------------------------------------------------------------ learner hooks
    def set_task_ids(self, ids: torch.Tensor) -> None:
        """Per-sample task indices (LongTensor (B,)) of the next training batch(es)."""
        ids = torch.as_tensor(ids)
        self._max_id = -1
        if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"AdaB2N.set_task_ids expects an integer tensor of shape (B,), got "
                             f"{ids.dtype} {tuple(ids.shape)}")
        if ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0:
                raise ValueError(f"AdaB2N.set_task_ids: negative task id {lo}")
            if hi >= self.num_tasks:
                raise UserError(f"--norm adab2n: task id {hi} >= num_tasks={self.num_tasks}; build the norm with "
                                f"num_tasks at least the number of tasks of the scenario")
            self._max_id = hi
        self._task_ids = ids.long()

    def clear_task_ids(self) -> None:
        self._task_ids = None

    def begin_task(self, task_index: int) -> None:
        self.cur_task = int(task_index)

    def end_task(self) -> None:
        self.cur_task += 1

    def aux_loss(self) -> torch.Tensor:
        """Adaptation loss ``MSE(mu, running_mean) + MSE(sigma2, running_var)`` of the last training forward."""
        if self._aux is None:
            return self.weight.new_zeros(())
        return self._aux

    # ------------------------------------------------------------------ statistics
    @property
    def eta(self) -> float | None:
        """Momentum used by the last training forward (None before the first one)."""
        return self.last_eta

    def get_eta(self) -> float:
        """Advance and return the modified momentum (call once per training forward, after counting)."""
        m, k = self.momentum, self.kappa
        if k == 0.0:
            eta = 1.0 / float(self.num_batches_tracked)
        elif k == 1.0:
            eta = m
        elif self.last_eta is None:
            eta = m ** k
        else:
            eta = self.last_eta / (self.last_eta + (1.0 - m) ** k)
        self.last_eta = eta
        return eta

    def sample_weights(self, ids: torch.Tensor, max_id: int | None = None) -> torch.Tensor:
        """Per-sample weights a_i (sum 1 when ``renormalize``; < 1 officially if a seen task is absent)."""
        k = max(self.cur_task, int(ids.max()) if max_id is None else max_id) + 1
        w = self.task_weight[:k]
        counts = w.new_zeros(k).index_add_(0, ids, w.new_ones(ids.shape[0]))  # n_k (no GPU sync, unlike bincount)
        conc = w.exp() + counts
        if self.renormalize:
            conc = conc * (counts > 0)
        pi = conc / conc.sum()
        self.last_task_probs = pi.detach()
        return pi[ids] / counts[ids]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"AdaB2N({self.num_features}) expects (B, {self.num_features}) or "
                             f"(B, {self.num_features}, H, W), got {tuple(x.shape)}")
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        shape = _param_shape(x)
        spatial = tuple(range(2, x.dim()))
        self.num_batches_tracked += 1
        eta = self.get_eta()
        ids = self._task_ids
        if ids is not None and ids.shape[0] != x.shape[0]:
            raise ValueError(f"AdaB2N: {ids.shape[0]} task ids set for a batch of {x.shape[0]}; call set_task_ids "
                             f"before each training forward (or clear_task_ids)")
        if ids is not None and ids.numel() and max(self.cur_task, self._max_id) > 0:
            if ids.device != x.device:
                ids = self._task_ids = ids.to(x.device)
            a = self.sample_weights(ids, self._max_id)
            per_sample = x.mean(dim=spatial) if spatial else x  # (B, C)
            mean = (a[:, None] * per_sample).sum(0)
            dev2 = (x - mean.view(shape)).pow(2)
            dev2 = dev2.mean(dim=spatial) if spatial else dev2
            var = (a[:, None] * dev2).sum(0)
        else:
            var, mean = torch.var_mean(x, dim=(0,) + spatial, correction=0)
        y = (x - mean.view(shape)) / (var.view(shape) + self.eps).sqrt()
        y = y * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            self.running_mean.add_(eta * (mean.detach() - self.running_mean))
            self.running_var.mul_(1.0 - eta).add_(eta * var.detach())
        self._aux = F.mse_loss(mean, self.running_mean.clone()) + F.mse_loss(var, self.running_var.clone())
        return y


def adab2n_layers(model: nn.Module) -> list[AdaB2N]:
    return [m for m in model.modules() if isinstance(m, AdaB2N)]


def set_task_ids(model: nn.Module, ids: torch.Tensor) -> None:
    """Give every AdaB2N layer of ``model`` the per-sample task ids of the next batch."""
    layers = adab2n_layers(model)
    if layers:
        layers[0].set_task_ids(ids)  # validates once (a GPU tensor costs one sync), then shared
        for m in layers[1:]:
            if m.num_tasks <= layers[0]._max_id:
                m.set_task_ids(ids)  # raises the num_tasks error
            m._task_ids, m._max_id = layers[0]._task_ids, layers[0]._max_id


def begin_task(model: nn.Module, task_index: int) -> None:
    for m in adab2n_layers(model):
        m.begin_task(task_index)


def end_task(model: nn.Module) -> None:
    for m in adab2n_layers(model):
        m.end_task()


def aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the AdaB2N adaptation losses of ``model`` (multiply by lambda, add to the loss)."""
    terms = [m.aux_loss() for m in adab2n_layers(model)]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros(()) if p is None else p.new_zeros(())
    return torch.stack(terms).sum()


@dataclass
class AdaB2NOptions:
    """AdaB2N's adaptation loss, added by the learner (official ``ada_lambda``, ``ada_t0``)."""

    adab2n_lambda: float = option(0.1, "weight of the AdaB2N adaptation loss (official grid 0.01-10; no official "
                                       "default)", check="non_negative")
    adab2n_t0: int = option(0, "task index from which the AdaB2N adaptation loss is added (official ada_t0)",
                            check="non_negative")


@NORMS.register("adab2n", "AdaB2N (Lyu et al. 2023): BN with task-balanced batch statistics (learnable task prior), "
                          "modified momentum (kappa) and an adaptation loss; needs task ids from the learner",
                options=AdaB2NOptions, dims=(1, 2))
def _adab2n(num_features: int, dims: int, num_tasks: int = 100, kappa: float = 1.0, momentum: float = 0.1,
            eps: float = 1e-5, renormalize: bool = True, **_) -> nn.Module:
    return AdaB2N(num_features, num_tasks=num_tasks, kappa=kappa, momentum=momentum, eps=eps,
                  renormalize=renormalize)
