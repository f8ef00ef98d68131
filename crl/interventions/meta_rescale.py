"""Meta loss-rescaling: per-sample loss weights from a small meta-learned rescaler.

Inspired by STORM, Heck, Geishauser, Lubis, van Niekerk, Lin, Gasic, "Learning from Noisy
Labels via Self-Taught On-the-Fly Meta Loss Rescaling", AAAI 2025, arXiv 2412.12955 (code on
GitLab ``general/dsml/storm-public``, not public to us / not read). The meta step follows
Meta-Weight-Net (Shu et al., NeurIPS 2019, arXiv 1902.07379; ``xjtushujun/meta-weight-net``),
one-step look-ahead. **This is crl's own design, not a reproduction of STORM**: what the
STORM abstract states is kept (rescaler fed only with features computed from the model being
trained; validation data drawn from the noisy training data itself, with the rescaler's
help; online, no clean data); everything else below is a choice, each switchable by a flag.

Algorithm, at every optimizer update of the learner (through ``transform_loss``):

1. ``f_i = features(model, x_i, y_i)`` on the training batch (one extra forward with the
   live parameters), from ``--meta-features`` (comma list, default all five):

   ==========  ==================================================================
   loss        ``log(1 + l_i)``, the per-sample loss
   loss_z      ``(l_i - mu) / sigma`` clipped to [-5, 5]; mu, sigma: running mean/std
               of training-batch losses (EMA decay 0.99, first batch sets them)
   entropy     entropy of ``softmax(outputs_i)`` / ``log K`` (0 when K = 1)
   margin      ``p_top1 - p_top2`` of ``softmax(outputs_i)`` (0 when K = 1)
   gradnorm    ``log(1 + ||d l_i / d outputs_i||)``, gradient norm at the output
               (for a linear output layer, proportional to the per-sample gradient
               norm of its weights up to the feature norm)
   ==========  ==================================================================

   ``outputs`` are what the learner's :meth:`per_sample_loss` returns next to the loss:
   class logits for a classifier, the value-head outputs at the taken action for DQN
   (bins/atoms for HL-Gauss/two-hot/C51; a single value for scalar heads, where entropy and
   margin carry no information). No MC-dropout passes (STORM's "G forward passes" are
   unconfirmed; crl networks have no dropout).
2. ``w_i = Omega(f_i)``: MLP ``F -> --meta-hidden (ReLU) -> 1``, output ``--meta-output``
   ``sigmoid`` (``2 sigmoid(z)``, in (0, 2)) or ``softplus`` (``softplus(z) / log 2``); the last
   layer starts at zero, so every weight starts at exactly 1. ``--meta-normalize`` (on)
   divides by the batch mean (mean weight 1, gradient flows through the division), so the
   loss scale and the effective learning rate of the learner are unchanged.
3. **Meta step** every ``--meta-every`` updates (after ``--meta-warmup`` updates with weights 1):
   virtual step ``theta' = theta - alpha * grad_theta mean_i(w_i l_i(theta))`` with plain SGD
   (``alpha = --meta-inner-lr``, default 0.1, Meta-Weight-Net's look-ahead step: its official
   ``MW-Net.py`` uses the learner's SGD lr, 0.1, before decay; 0 = the learner's current lr of
   its first param group, the default until the late drift below was measured),
   graph kept (``create_graph``), evaluated with ``torch.func.functional_call``; then a
   validation batch V from the training stream (``learner.sample_batch``), ``--meta-val``:

   * ``sampled`` (the STORM-like reading of "with the help of the rescaler"; the default until
     it was measured to up-weight flipped labels): draw ``--meta-pool`` x size candidates
     uniformly, weight them with the current Omega, draw V from them proportionally to ``w``
     without replacement;
   * ``uniform``: V is a plain uniform sample (Meta-Weight-Net with noisy meta data);
   * ``weighted``: uniform V, meta loss weighted by the (detached, normalised) ``w_j``;
   * ``small-loss`` (default): draw ``ceil(size / --meta-keep)`` candidates uniformly and keep
     as V the ``size`` with the smallest current loss (live parameters, no gradient), i.e. the fraction
     ``--meta-keep`` (default 0.5) of the candidates. This is the small-loss criterion of
     Co-teaching (Han et al., NeurIPS 2018, arXiv 1804.06872), which keeps the fraction
     ``R(T) = 1 - tau`` of each mini-batch with the smallest loss, and of MentorNet's
     self-paced curriculum (Jiang et al., ICML 2018, arXiv 1712.05055): networks fit the
     clean/regular samples before they memorise the noisy ones (Arpit et al., ICML 2017,
     arXiv 1706.05394), so the small-loss part of the noisy training data is a mostly clean
     proxy of a validation set. Chosen over "highest current rescaler weight" because that
     selection feeds Omega's own errors back into its training signal: ``sampled`` does
     exactly that and, once Omega leans towards the flipped samples, it draws them into V
     and is rewarded for it (measured below); the loss comes from the model, not from Omega,
     so it does not reinforce Omega's mistakes. This reads STORM's "with the help of the
     rescaler being trained" loosely (the help comes from the model being trained). ``--meta-keep``
     should not exceed 1 minus the expected noise rate (Co-teaching's tau); it is fixed, with
     no noise-rate estimate and no Co-teaching-style ramp from 1 down to it (at the start all
     losses are about equal and the choice is close to uniform). ``--meta-pool`` is not used.

   Meta loss ``m_j``, ``--meta-loss``: ``ce`` is the learner's per-sample loss as is;
   ``mae`` (default) is ``1 - exp(-l_j)``: for a cross-entropy loss with a hard label that is
   ``1 - p(y_j | x_j)``, half the mean absolute error between softmax and one-hot, a
   symmetric loss, hence tolerant to symmetric label noise below ``(K - 1) / K`` (Ghosh,
   Kumar, Sastry, AAAI 2017, arXiv 1712.09482); its gradient is the CE gradient times
   ``p(y_j | x_j)``, so meta samples that the model contradicts (likely flipped) barely
   count, and lowering the confidence of the model no longer pays off on noisy V. For TD
   losses (DQN: Huber, MSE, CE to a soft target) it is only a bounded, monotone transform of
   the loss (each sample's influence capped, like the Welsch / correntropy loss); no
   noise-tolerance result applies there.

   ``omega <- Adam(--meta-lr, weight_decay=--meta-weight-decay)`` step (defaults 1e-3 and 1e-4:
   Meta-Weight-Net's official ``MW-Net.py``, ``Adam(vnet.params(), 1e-3, weight_decay=1e-4)``;
   ``--meta-optimizer sgd``: SGD, Nesterov momentum 0.9, as in its ``train_WRN-28-10_Meta_PGC.py``)
   on ``mean_{j in V} m_j(theta')`` (the exact meta-gradient: second-order through the virtual
   step; only Omega's parameters receive gradients).
4. The learner's update uses ``stopgrad(w_i')`` from the **updated** Omega on the same
   features: ``transform_loss`` returns ``w' * l``.

Other choices: V's size is ``--meta-val-size`` (0 = the training batch size); the
virtual step ignores gradient clipping, weight decay and the other hooks' loss terms
(e.g. ``l2-init``'s penalty); its extra forwards run in train mode (batch statistics) but
leave no norm state behind: the learners call ``transform_loss`` inside
:func:`crl.nn.norms.state.preserved`, so running statistics and counters advance only with the
learner's own forward, once per update. Task boundaries: with ``--meta-reset-per-task`` Omega, its optimizer and the
loss statistics restart at every new task (default off: the rescaler carries over).
Cost per update: 1 extra forward (features); per meta step additionally a double-backward
on the training batch, a forward/backward of the validation batch, and (``sampled``,
``small-loss``) a forward of the candidates.

RL (DQN): the per-sample loss is each transition's TD loss of the value head (Huber / MSE /
cross-entropy to the projected target); the meta loss is the mean TD loss of ``theta'`` on a
fresh replay batch (``small-loss``: the transitions of smallest TD loss among the
candidates; ``mae``: ``1 - exp(-TD loss)``), with targets from the live online/target
networks (no gradient, not recomputed for ``theta'``).

**Measured** (``scripts/bench_meta_rescale.py``; sklearn digits, 40% symmetric label flips,
MLP 256-256, Adam 1e-3, 2,000 updates of 64, 3 seeds, CPU; table and command in
``docs/results/meta_rescale.md``). Clean test accuracy: 0.718 without rescaling;
``--meta-loss ce`` with ``--meta-val sampled / uniform / weighted`` 0.575 / 0.623 / 0.551,
the rescaler **up-weighting** the flipped samples at every checkpoint (a CE meta loss on
*noisy* meta batches rewards lowering the confidence of an already confident model, which is
what the flipped samples' gradients do; clean-label meta batches, an oracle, give 0.915);
``small-loss`` 0.902, ``--meta-loss mae`` 0.915-0.922 with any meta batch,
``small-loss`` + ``mae`` 0.918 +- 0.008 (every seed above its no-rescaling run). Weights
(ratio w flipped / w clean on the training set at each 10% of training): with ``small-loss``
(either meta loss) 0.05-0.12 at 10-20% and at most 0.35 at 30%; ``uniform`` / ``sampled`` +
``mae`` hold ~0.1 only at 10%. The separation **does not last**: later the ratio drifts
above 1 at many checkpoints, and after training the mean weight of flipped samples
is not reliably below that of clean ones (default: below on 1 of 3 seeds; over the last 20%
of updates 0.83 vs 1.11, below on 3 of 3 seeds). The oracle drifted the same way, so the
late drift came from the shared machinery, not from the meta batch. All of the above used a
virtual step equal to the learner's lr (1e-3) and no weight decay on Omega. **Meta-Weight-Net's
official rescaler settings** (virtual step 0.1, Adam 1e-3 with weight decay 1e-4; the current
defaults) remove the drift: ``small-loss`` + ``mae`` 0.912 +- 0.016 (0.902 / 0.930 / 0.904 vs
0.754 / 0.700 / 0.700 without rescaling), after training flipped 0.176 +- 0.033 vs clean
1.536 +- 0.032 (below on 3 of 3 seeds, ratio <= 0.14; below at 10 of 10 checkpoints on every
seed), the oracle 0.941 with 0.081 vs 1.597. SGD (Nesterov momentum 0.9, lr 1e-3, weight
decay 5e-4, as ``train_WRN-28-10_Meta_PGC.py``) instead of Adam barely moves Omega here
(seed 0: accuracy 0.754, as without rescaling). The defaults were switched to ``small-loss`` +
``mae`` and then to MWN's rescaler settings after these numbers (the earlier ``sampled`` +
``ce`` was fixed before any run).
None of this was measured on RL (small TD loss is no evidence of a "clean" transition).

**Learner contract** (what a learner must provide for ``--intervention meta-rescale``):

* ``learner.network`` (``nn.Module``), ``learner.optimizer`` (its first group's ``lr`` is the
  default inner lr);
* ``learner.per_sample_loss(batch, params=None) -> (losses (B,), outputs (B, K))``: the
  training loss of each sample of ``batch`` (the same ``batch`` object the learner passes to
  ``transform_loss``) and the model's outputs it was computed from, with graph; when
  ``params`` (a ``name -> tensor`` dict of some of ``learner.network``'s parameters) is
  given, the network is evaluated with them via ``torch.func.functional_call``;
* ``learner.sample_batch(size) -> batch``: a fresh batch of ``size`` samples from the
  training data of the current task (replay for RL), in the learner's batch format; a batch
  is a tensor, a tuple/list or a dict of tensors, indexed along dim 0 by ``sampled``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crl.errors import UserError
from crl.hooks import Hook, learner_step
from crl.options import option
from crl.registry import INTERVENTIONS

FEATURES = ("loss", "loss_z", "entropy", "margin", "gradnorm")
OUTPUTS = ("sigmoid", "softplus")
VAL_MODES = ("sampled", "uniform", "weighted", "small-loss")
META_LOSSES = ("ce", "mae")
META_OPTIMIZERS = ("adam", "sgd")


def parse_features(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in FEATURES]
    if not names or bad:
        raise UserError(f"--meta-features: unknown feature '{', '.join(bad) or spec}'; accepted: {', '.join(FEATURES)}")
    return names


def index_batch(batch: Any, idx: torch.Tensor, size: int) -> Any:
    """Rows ``idx`` of a batch (tensor, tuple/list or dict of tensors with leading dim ``size``)."""
    if isinstance(batch, torch.Tensor):
        return batch[idx.to(batch.device)] if batch.dim() and batch.shape[0] == size else batch
    if isinstance(batch, dict):
        return {k: index_batch(v, idx, size) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(index_batch(v, idx, size) for v in batch)
    return batch


class Rescaler(nn.Module):
    """Omega: per-sample features -> positive weight (before the batch normalisation)."""

    def __init__(self, num_features: int, hidden: int = 64, output: str = "sigmoid"):
        super().__init__()
        self.output = output
        self.body = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.body[0].reset_parameters()
        nn.init.zeros_(self.body[2].weight)
        nn.init.zeros_(self.body[2].bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        z = self.body(feats).squeeze(-1)
        if self.output == "sigmoid":
            return 2.0 * torch.sigmoid(z)
        return F.softplus(z) / math.log(2.0)


class MetaRescale(Hook):
    name = "meta-rescale"

    def __init__(self, features: str = ",".join(FEATURES), hidden: int = 64, output: str = "sigmoid",
                 normalize: bool = True, lr: float = 1e-3, inner_lr: float = 0.1, every: int = 1,
                 val: str = "small-loss", val_size: int = 0, pool: int = 4, warmup: int = 0,
                 reset_per_task: bool = False, stats_decay: float = 0.99, keep: float = 0.5,
                 meta_loss: str = "mae", weight_decay: float = 1e-4, optimizer: str = "adam"):
        if output not in OUTPUTS:
            raise UserError(f"--meta-output: unknown output '{output}'; accepted: {', '.join(OUTPUTS)}")
        if val not in VAL_MODES:
            raise UserError(f"--meta-val: unknown mode '{val}'; accepted: {', '.join(VAL_MODES)}")
        if meta_loss not in META_LOSSES:
            raise UserError(f"--meta-loss: unknown loss '{meta_loss}'; accepted: {', '.join(META_LOSSES)}")
        if not 0.0 < float(keep) <= 1.0:
            raise UserError(f"--meta-keep: must be in (0, 1], got {keep}")
        if optimizer not in META_OPTIMIZERS:
            raise UserError(f"--meta-optimizer: unknown optimizer '{optimizer}'; "
                            f"accepted: {', '.join(META_OPTIMIZERS)}")
        if not float(weight_decay) >= 0:
            raise UserError(f"--meta-weight-decay: must be >= 0, got {weight_decay}")
        self.weight_decay, self.optimizer = float(weight_decay), optimizer
        self.features = parse_features(features)
        self.hidden, self.output, self.normalize = int(hidden), output, bool(normalize)
        self.lr, self.inner_lr, self.every = float(lr), float(inner_lr), int(every)
        self.val, self.val_size, self.pool, self.warmup = val, int(val_size), int(pool), int(warmup)
        self.reset_per_task, self.stats_decay = bool(reset_per_task), float(stats_decay)
        self.keep, self.meta_loss = float(keep), meta_loss
        self.rescaler = Rescaler(len(self.features), self.hidden, self.output)
        self.meta_opt = self.make_meta_optimizer()
        self.loss_mean = torch.zeros(())
        self.loss_var = torch.ones(())
        self.stats_ready = False
        self.updates = 0
        self.meta_steps = 0
        self.last_weights: torch.Tensor | None = None
        self.last_meta_loss = float("nan")
        self._pending: dict | None = None

    # ------------------------------------------------------------------ setup
    def attach(self, learner) -> None:
        missing = [m for m in ("per_sample_loss", "sample_batch") if not callable(getattr(learner, m, None))]
        if missing:
            raise UserError(f"--intervention meta-rescale: learner {type(learner).__name__} lacks "
                            f"{', '.join(missing)}(); it needs per_sample_loss(batch, params=None) and "
                            "sample_batch(size) (see crl/interventions/meta_rescale.py)")
        device = next(learner.network.parameters()).device
        self.rescaler.to(device)
        self.loss_mean, self.loss_var = self.loss_mean.to(device), self.loss_var.to(device)
        if self._pending is not None:  # optimizer state after the move, so it lands on the device
            self.meta_opt.load_state_dict(self._pending)
            self._pending = None

    def on_run_start(self, run) -> None:
        self.attach(run.learner)

    def make_meta_optimizer(self) -> torch.optim.Optimizer:
        """Omega's optimizer (``--meta-optimizer``): Adam, or SGD with Nesterov momentum 0.9 (Meta-Weight-Net's
        ``train_WRN-28-10_Meta_PGC.py``); L2 weight decay ``--meta-weight-decay``."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.rescaler.parameters(), lr=self.lr, momentum=0.9, nesterov=True,
                                   weight_decay=self.weight_decay)
        return torch.optim.Adam(self.rescaler.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def restart(self) -> None:
        """Fresh Omega, meta optimizer and loss statistics."""
        self.rescaler.reset_parameters()
        self.meta_opt = self.make_meta_optimizer()
        self.loss_mean.zero_()
        self.loss_var.fill_(1.0)
        self.stats_ready = False

    def on_task_start(self, run, task_index, task) -> None:
        if self.reset_per_task and task_index > 0:
            self.restart()

    # ------------------------------------------------------------------ features and weights
    def compute_features(self, losses: torch.Tensor, outputs: torch.Tensor, update_stats: bool,
                         retain_graph: bool = False) -> torch.Tensor:
        """(B, F) detached features of the samples whose ``losses``/``outputs`` are given."""
        l = losses.detach().float().clamp_min(0.0)
        if update_stats:
            with torch.no_grad():
                mean, var = l.mean(), l.var(unbiased=False) if l.numel() > 1 else torch.zeros_like(l.mean())
                if not self.stats_ready:
                    self.loss_mean.copy_(mean)
                    self.loss_var.copy_(var)
                    self.stats_ready = True
                else:
                    d = self.stats_decay
                    self.loss_mean.mul_(d).add_(mean, alpha=1 - d)
                    self.loss_var.mul_(d).add_(var, alpha=1 - d)
        out = outputs.detach().float().reshape(len(l), -1)
        k = out.shape[1]
        cols = []
        for name in self.features:
            if name == "loss":
                cols.append(torch.log1p(l))
            elif name == "loss_z":
                cols.append(((l - self.loss_mean) / (self.loss_var.sqrt() + 1e-8)).clamp(-5.0, 5.0))
            elif name == "entropy":
                if k > 1:
                    logp = torch.log_softmax(out, dim=1)
                    cols.append(-(logp.exp() * logp).sum(1) / math.log(k))
                else:
                    cols.append(torch.zeros_like(l))
            elif name == "margin":
                if k > 1:
                    top = torch.softmax(out, dim=1).topk(2, dim=1).values
                    cols.append(top[:, 0] - top[:, 1])
                else:
                    cols.append(torch.zeros_like(l))
            elif name == "gradnorm":
                with torch.enable_grad():
                    (g,) = torch.autograd.grad(losses.sum(), outputs, retain_graph=retain_graph)
                cols.append(torch.log1p(g.detach().float().reshape(len(l), -1).norm(dim=1)))
        return torch.stack(cols, dim=1)

    def weights(self, feats: torch.Tensor) -> torch.Tensor:
        """Omega's weights for ``feats`` (normalised to mean 1 when ``normalize``), with graph."""
        w = self.rescaler(feats)
        if self.normalize:
            w = w / w.mean().clamp_min(1e-12)
        return w

    @torch.no_grad()
    def sample_weights(self, learner, batch) -> torch.Tensor:
        """Current weights of the samples of ``batch`` (no statistics update, no meta step)."""
        with torch.enable_grad():
            losses, outputs = learner.per_sample_loss(batch)
            feats = self.compute_features(losses, outputs, update_stats=False)
        return self.weights(feats)

    # ------------------------------------------------------------------ meta step
    def validation_batch(self, learner, size: int):
        if self.val == "small-loss":
            # Small-loss criterion (Co-teaching, Han et al. 2018; MentorNet, Jiang et al. 2018):
            # of ceil(size / keep) uniform candidates, the `size` with the smallest current loss.
            pool_size = max(size, math.ceil(size / self.keep - 1e-9))
            pool = learner.sample_batch(pool_size)
            with torch.no_grad():
                losses, _ = learner.per_sample_loss(pool)
            idx = torch.topk(losses.detach().float(), size, largest=False).indices
            return index_batch(pool, idx, pool_size)
        if self.val != "sampled":
            return learner.sample_batch(size)
        pool_size = size * max(1, self.pool)
        pool = learner.sample_batch(pool_size)
        w = self.sample_weights(learner, pool)
        idx = torch.multinomial(w.clamp_min(1e-12), size, replacement=False)
        return index_batch(pool, idx, pool_size)

    def meta_step(self, learner, batch) -> torch.Tensor:
        """One look-ahead update of Omega; returns the training batch's features."""
        net = learner.network
        named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        losses, outputs = learner.per_sample_loss(batch)
        feats = self.compute_features(losses, outputs, update_stats=True, retain_graph=True)
        w = self.weights(feats)
        grads = torch.autograd.grad((w * losses).mean(), [p for _, p in named], create_graph=True,
                                    allow_unused=True)
        alpha = self.inner_lr or float(learner.optimizer.param_groups[0]["lr"])
        fast = {n: (p if g is None else p - alpha * g) for (n, p), g in zip(named, grads)}
        size = self.val_size or len(losses)
        val = self.validation_batch(learner, size)
        val_losses, _ = learner.per_sample_loss(val, params=fast)
        if self.meta_loss == "mae":
            # 1 - exp(-l): for a cross-entropy loss with a hard label, 1 - p(y|x), i.e. half the MAE
            # between softmax and one-hot (Ghosh et al. 2017), a symmetric, noise-tolerant loss.
            val_losses = 1.0 - torch.exp(-val_losses)
        if self.val == "weighted":
            with torch.no_grad():
                vw = self.sample_weights(learner, val)
            meta_loss = (vw * val_losses).mean()
        else:
            meta_loss = val_losses.mean()
        self.meta_opt.zero_grad(set_to_none=True)
        meta_loss.backward(inputs=list(self.rescaler.parameters()))
        self.meta_opt.step()
        self.meta_steps += 1
        self.last_meta_loss = float(meta_loss.detach())
        return feats

    # ------------------------------------------------------------------ the hook
    def transform_loss(self, run, per_sample_loss, batch):
        learner = run.learner
        self.updates += 1
        if self.updates <= self.warmup:
            return per_sample_loss
        if (self.updates - self.warmup - 1) % self.every == 0:
            feats = self.meta_step(learner, batch)
        else:
            losses, outputs = learner.per_sample_loss(batch)
            feats = self.compute_features(losses, outputs, update_stats=True)
        with torch.no_grad():
            w = self.weights(feats).to(per_sample_loss.dtype)
        self.last_weights = w
        logger = getattr(run, "logger", None)
        if logger is not None and self.updates % 100 == 0:
            step = learner_step(run) if hasattr(run, "learner") else self.updates
            logger.scalar("train/meta_rescale_weight_std", float(w.std()) if w.numel() > 1 else 0.0, step)
            logger.scalar("train/meta_rescale_weight_min", float(w.min()), step)
            logger.scalar("train/meta_rescale_meta_loss", self.last_meta_loss, step)
        return per_sample_loss * w

    def state_dict(self):
        return {"rescaler": {k: v.cpu() for k, v in self.rescaler.state_dict().items()},
                "meta_opt": self.meta_opt.state_dict(), "loss_mean": self.loss_mean.cpu(),
                "loss_var": self.loss_var.cpu(), "stats_ready": self.stats_ready, "updates": self.updates,
                "meta_steps": self.meta_steps, "last_meta_loss": self.last_meta_loss}

    def load_state_dict(self, state):
        if state:
            self.rescaler.load_state_dict(state["rescaler"])
            self._pending = state["meta_opt"]
            self.loss_mean = state["loss_mean"].clone()
            self.loss_var = state["loss_var"].clone()
            self.stats_ready, self.updates, self.meta_steps = state["stats_ready"], state["updates"], state["meta_steps"]
            self.last_meta_loss = state.get("last_meta_loss", float("nan"))  # logged with the next scalars


def from_config(cfg) -> MetaRescale:
    for name in ("meta_hidden", "meta_every", "meta_pool"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')}: must be > 0, got {getattr(cfg, name)}")
    for name in ("meta_val_size", "meta_warmup"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(cfg, name)}")
    if not 0.0 < cfg.meta_keep <= 1.0:
        raise UserError(f"--meta-keep: must be in (0, 1], got {cfg.meta_keep}")
    if not cfg.meta_lr > 0:
        raise UserError(f"--meta-lr: must be > 0, got {cfg.meta_lr}")
    if not cfg.meta_inner_lr >= 0:
        raise UserError(f"--meta-inner-lr: must be >= 0 (0 = the learner's lr), got {cfg.meta_inner_lr}")
    return MetaRescale(cfg.meta_features, cfg.meta_hidden, cfg.meta_output, cfg.meta_normalize, cfg.meta_lr,
                       cfg.meta_inner_lr, cfg.meta_every, cfg.meta_val, cfg.meta_val_size, cfg.meta_pool,
                       cfg.meta_warmup, cfg.meta_reset_per_task, keep=cfg.meta_keep, meta_loss=cfg.meta_loss,
                       weight_decay=cfg.meta_weight_decay, optimizer=cfg.meta_optimizer)


@dataclass
class MetaRescaleOptions:
    """The rescaler, its meta step and its validation batch."""

    meta_features: str = option("loss,loss_z,entropy,margin,gradnorm", "rescaler inputs, comma-separated from loss, "
                                                                       "loss_z, entropy, margin, gradnorm")
    meta_hidden: int = option(64, "hidden units of the rescaler MLP", check="positive")
    meta_output: str = option("sigmoid", "rescaler output, 2*sigmoid or softplus/log(2)",
                                         choices=("sigmoid", "softplus"))
    meta_normalize: bool = option(True, "normalise the weights to mean 1 over each batch")
    meta_lr: float = option(0.001, "learning rate of the rescaler's optimizer", check="positive")
    meta_inner_lr: float = option(0.1, "SGD lr of the virtual look-ahead step (Meta-Weight-Net: 0.1; 0 = the "
                                       "learner's lr)", check="non_negative")
    meta_weight_decay: float = option(0.0001, "L2 weight decay of the rescaler's optimizer (Meta-Weight-Net: 1e-4)",
                                              check="non_negative")
    meta_optimizer: str = option("adam", "the rescaler's optimizer, adam or sgd (Nesterov momentum 0.9)",
                                         choices=("adam", "sgd"))
    meta_every: int = option(1, "optimizer updates between meta steps", check="positive")
    meta_val: str = option("small-loss", "validation batch from the training data: small-loss (the smallest-loss "
                                         "fraction --meta-keep of uniform candidates; Co-teaching's criterion), "
                                         "sampled (drawn from a pool in proportion to the weights), uniform, or "
                                         "weighted (uniform, loss weighted)",
                                         choices=("small-loss", "sampled", "uniform", "weighted"))
    meta_keep: float = option(0.5, "--meta-val small-loss keeps this fraction of its candidates (Co-teaching's 1 - "
                                   "noise rate; should not exceed 1 - the expected noise rate)")
    meta_loss: str = option("mae", "meta loss on the validation batch: mae (1 - exp(-loss): 1 - p(y|x) for cross-"
                                   "entropy, noise-robust) or ce (the learner's per-sample loss as is)",
                                   choices=("mae", "ce"))
    meta_val_size: int = option(0, "validation batch size (0 = the training batch size)", check="non_negative")
    meta_pool: int = option(4, "candidate pool for --meta-val sampled, in validation batches", check="positive")
    meta_warmup: int = option(0, "updates with all weights 1 before the rescaler is used", check="non_negative")
    meta_reset_per_task: bool = option(False, "restart the rescaler and its statistics at each task")

    def check(self, cfg) -> None:
        if not 0.0 < self.meta_keep <= 1.0:
            raise UserError(f"--meta-keep: must be in (0, 1], got {self.meta_keep}")


@INTERVENTIONS.register("meta-rescale", "Meta loss-rescaling (crl's STORM-like design, Heck et al. 2025): a meta-"
                                        "learned rescaler weights each sample's loss (look-ahead meta step)",
                        options=MetaRescaleOptions)
def meta_rescale(cfg) -> MetaRescale:
    return from_config(cfg)
