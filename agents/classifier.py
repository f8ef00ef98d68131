"""A learner for supervised task streams (``--agent classifier``), on the same runner as RL.

Strategies (``--strategy``), all in crl's own training loop:

=========  ================================================================================
naive      cross-entropy on the incoming batch (fine-tuning; the lower bound).
replay     Experience Replay as in mammoth's ``er`` (Chaudhry et al. 2019, "On Tiny Episodic
           Memories in Continual Learning", arXiv 1902.10486): a reservoir memory
           (Vitter 1985, Algorithm R) of ``--replay-size`` samples; each update concatenates
           ``--replay-batch-size`` memory samples to the incoming batch and takes the mean
           cross-entropy over the joint batch.
er-ace     ER with Asymmetric Cross-Entropy (Caccia, Aljundi, Asadi, Tuytelaars, Pineau,
           Belilovsky, "New Insights on Reducing Abrupt Representation Change in Online
           Continual Learning", ICLR 2022, arXiv 2104.05025): the incoming batch's
           cross-entropy masks the logits of the classes absent from that batch, except the
           class ids at or above the highest id seen so far, which stay visible (the official
           code's rule, also mammoth's ``er_ace.py``); memory samples get the ordinary
           cross-entropy; loss = mean(ACE incoming) + mean(CE memory).
           As in mammoth's ``er_ace``, masking and replay start with the second task of the
           stream (in the first task there is nothing to protect).
der++      Dark Experience Replay++ (Buzzega, Boschini, Porrello, Abati, Calderara, "Dark
           Experience for General Continual Learning: a Strong, Simple Baseline", NeurIPS
           2020, arXiv 2004.07211): the memory also stores the logits a sample got when it
           was inserted; loss = CE(incoming) + ``--der-alpha`` MSE(logits, stored logits) on
           one memory batch + ``--der-beta`` CE on a second, independent memory batch.
=========  ================================================================================

``--loss`` (crl/losses/: ce, zloss, anyloss) replaces the cross-entropy of every term above (incoming,
masked, replayed; DER++'s logit MSE stays); a loss of the whole batch (AnyLoss) is computed once per
group (incoming batch, each memory draw) and repeated on the group's samples. Refused: AnyLoss with
``--intervention meta-rescale`` (no per-sample terms to reweight); the Z-loss where a sample may see
fewer than 3 classes (``--il-mode task`` or ER-ACE's incoming mask on tasks of 2 classes), where it is
constant. ``evaluate`` also logs ``eval/<task>/ece``, the ECE (crl/metrics/calibration.py) of the
softmax over the classes the score's argmax sees.

Why not Avalanche's strategies (``avalanche_notes.md``): its template costs 4-9 ms per
``train()`` call in online mode and its replay storage 27-83 ms per sub-experience
(sections 6 and 8), which breaks the epoch-time target (within 1.2x a plain PyTorch loop);
its online forgetting/BWT metrics key on sub-experiences (section 7); and crl's hooks
(``transform_loss``, ``after_optimizer_step``) and AdaB2N's per-sample task ids need to sit
inside the update. The loop here is a plain PyTorch loop over tensors held on the device.
All replay terms are computed in **one** forward of ``cat(incoming, memory)`` (mammoth's
``er`` does the same; its ``er_ace``/``derpp`` use separate forwards): this is what AdaB2N
needs (its statistics weigh stream and memory samples of one batch) and changes the batch
statistics of BatchNorm-like layers compared to separate forwards.

Modes. ``--online``: one pass over each task's data in small batches (AdaB2N protocol:
``--batch-size 10``, replay batch 10, SGD lr 0.03); otherwise ``--epochs`` passes. One *step*
of the runner is one update. A task without its own ``steps`` gets ``ceil(n / batch_size)``
steps per pass (the last batch of a pass may be short, but never a single sample: that one joins
the batch before; passes never mix); such tasks are
given that budget in place (``task.steps``, marked ``task.info["crl_auto_steps"]``). A task
whose own budget exceeds one pass continues with a new shuffled pass, also in online mode.

Evaluation (``evaluate``): accuracy on the task's test set, both class-incremental (argmax
over the classes of every task trained so far, as mammoth does; all classes before any
training) and task-incremental (argmax over the task's own classes); the score returned to
the eval matrix is the one of ``--il-mode``; both are logged as ``eval/<task>/acc_class_il``
and ``eval/<task>/acc_task_il``. ``--il-mode task`` also masks training logits to each
sample's task classes (multi-head training). ``train/online_accuracy`` is the accuracy on
incoming batches *before* the update on them (online accuracy, Kumar et al.).

AdaB2N (``--norm adab2n``): before each training forward every module with
``set_task_ids`` gets the task index of each sample (incoming: the current task; memory:
the task it was stored from; for split scenarios this is the class -> task map), each task
start calls ``begin_task(i)``, and ``--adab2n-lambda * sum aux_loss()`` is added to the loss
from task ``--adab2n-t0`` on. Guarded with ``hasattr``: any norm offering these methods works.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agents.fast import use_fused_kernel
from crl.errors import UserError
from crl.nn.network import Introspectable, build_torso
from crl.nn.norms import state as norm_state
from crl.interventions import nap
from crl.optim import LRSchedule, build_optimizer, optimizer_args
from crl.options import option
from crl.metrics.calibration import binned_ece
from crl.registry import AGENTS, LOSSES
from crl.learner import optimizer_step

STRATEGIES = ("naive", "replay", "er-ace", "der++")


@dataclass
class ClassifierOptions:
    """Settings of the supervised classifier (the `supervised` preset)."""

    strategy: str = option("naive", "naive, replay (ER, reservoir), er-ace (Caccia et al. 2022), der++ (Buzzega et "
                                     "al. 2020)", choices=STRATEGIES)
    online: bool = option(False, "online continual learning: one pass over each task's data (AdaB2N protocol: "
                                 "--batch-size 10, replay batch 10)")
    epochs: float = option(1.0, "offline: passes over each task's training data (a task's own steps win); "
                                "0 = --steps updates per task", check="non_negative")
    il_mode: str = option("class", "class: one head over all classes (class-incremental); task: logits masked to "
                                   "the sample's task classes in training and evaluation (task-incremental)",
                          choices=("class", "task"))
    replay_size: int = option(500, "replay memory in samples (reservoir sampling)", check="non_negative")
    replay_batch_size: int = option(0, "replay samples per update (0 = --batch-size)", check="non_negative")
    der_alpha: float = option(0.2, "DER++ weight of the logit-matching (MSE) term", check="non_negative")
    der_beta: float = option(0.5, "DER++ weight of the replayed-label cross-entropy term", check="non_negative")
    eval_batch_size: int = option(512, "samples per forward in evaluation", check="positive")
    loss: str = option("ce", "classification loss (crl help: losses): ce, zloss (Z-loss), anyloss (AnyLoss)")


def steps_per_pass(n: int, batch_size: int) -> int:
    """Minibatches in one pass over ``n`` samples: ``ceil(n / batch_size)``, except that a last batch
    of a single sample is merged into the one before it (BatchNorm-like layers cannot train on one)."""
    steps = math.ceil(n / batch_size)
    return steps - 1 if steps > 1 and n % batch_size == 1 else steps


class ClassifierNet(Introspectable, nn.Module):
    """Torso from ``crl.nn`` -> ``output`` Linear over every class of the scenario."""

    def __init__(self, torso: nn.Module, num_classes: int):
        super().__init__()
        self.torso = torso
        self.output = nn.Linear(torso.out_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.torso(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.torso(x))


class ReservoirBuffer:
    """A tensor memory filled by reservoir sampling (Vitter 1985, Algorithm R): after ``n``
    samples were offered, each of them is in memory with probability ``capacity / n``.

    Stores model inputs (already transformed), labels, task indices and (for DER++) logits,
    on the device. Random draws come from the learner's generator (exact resume)."""

    def __init__(self, capacity: int, generator: torch.Generator, device: torch.device):
        self.capacity, self.gen, self.device = capacity, generator, device
        self.seen = 0
        self.size = 0
        self.data: dict[str, torch.Tensor] = {}

    def add(self, **items: torch.Tensor) -> None:
        n = len(items["y"])
        if self.capacity <= 0 or n == 0:
            return
        if not self.data:
            self.data = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=self.device)
                         for k, v in items.items()}
        counts = torch.arange(self.seen + 1, self.seen + n + 1, dtype=torch.float64)  # n-th sample offered
        draws = (torch.rand(n, generator=self.gen, dtype=torch.float64) * counts).long()
        slots = torch.where(counts <= self.capacity, counts.long() - 1, draws)
        keep = slots < self.capacity
        self.seen += n
        self.size = min(self.seen, self.capacity)
        if not bool(keep.any()):
            return
        src, dst = torch.nonzero(keep).flatten().numpy(), slots[keep].numpy()
        # a slot drawn twice in one batch ends with the later sample, as with sequential insertion
        _, last = np.unique(dst[::-1], return_index=True)
        src, dst = src[::-1][last], dst[::-1][last]
        src_t, dst_t = torch.from_numpy(src.copy()).to(self.device), torch.from_numpy(dst.copy()).to(self.device)
        for k, v in items.items():
            self.data[k][dst_t] = v[src_t].detach().to(self.data[k].dtype)

    def sample(self, k: int) -> dict[str, torch.Tensor] | None:
        """``min(k, size)`` distinct memory samples, uniformly."""
        if self.size == 0:
            return None
        idx = torch.randperm(self.size, generator=self.gen)[: min(k, self.size)].to(self.device)
        return {key: v[idx] for key, v in self.data.items()}

    def state_dict(self) -> dict:
        return {"seen": self.seen, "size": self.size,
                "data": {k: v[: self.size].cpu() for k, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.size = state["seen"], state["size"]
        self.data = {}
        for k, v in state["data"].items():
            full = torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=self.device)
            full[: len(v)] = v.to(self.device)
            self.data[k] = full


class _Data:
    """One dataset as device tensors: raw inputs ``x``, labels ``y`` and a batch ``transform``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform, augment=None):
        self.x, self.y, self.transform = x, y, transform
        self.augment = augment  # training-only batch augmentation (scenarios.datasets.CropFlip), or None

    def __len__(self) -> int:
        return len(self.y)

    def inputs(self, idx) -> torch.Tensor:
        x = self.x[idx]
        return self.transform(x) if self.transform is not None else x


def _as_tensors(ds, what: str):
    """``(x, y, transform)`` of a dataset: fast paths for crl's ArrayDataset and TensorDataset,
    otherwise every item is read once (``(x, y, ...)`` items, equal shapes)."""
    if all(hasattr(ds, a) for a in ("x", "y", "transform")) and isinstance(getattr(ds, "x"), torch.Tensor):
        x, y, tf = ds.x, ds.y, ds.transform
    elif isinstance(ds, torch.utils.data.TensorDataset):
        x, y, tf = ds.tensors[0], ds.tensors[1], None
    else:
        xs, ys = [], []
        for i in range(len(ds)):
            item = ds[i]
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise UserError(f"{what}: items must be (x, y) pairs, got {type(item).__name__}")
            xs.append(torch.as_tensor(np.asarray(item[0])))
            ys.append(torch.as_tensor(np.asarray(item[1])))
        try:
            x, y = torch.stack(xs), torch.stack(ys)
        except RuntimeError:
            raise UserError(f"{what}: inputs have different shapes") from None
        tf = None
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.is_floating_point() or y.is_complex():
        raise UserError(f"{what}: labels must be a 1-D tensor of integer class ids, got {y.dtype} {tuple(y.shape)}")
    if x.is_floating_point() and x.dtype != torch.float32:
        x = x.float()
    return x, y.long(), tf


class ClassifierLearner:
    """The runner's learner for supervised scenarios; see the module docstring."""

    classifies = True  # False in agents/regressor.py: no online accuracy

    def __init__(self, cfg, scenario, device: torch.device):
        self.cfg, self.device, self.scenario = cfg, device, scenario
        self._check_config(cfg)
        self.loss_fn = self._build_loss(cfg, scenario)
        self.last_ece = float("nan")  # ECE of the last accuracies() pass (eval/<task>/ece)
        self.tasks = list(scenario.tasks)
        self.task_pos = {t.name: j for j, t in enumerate(self.tasks)}
        self._device_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.train_data = [self._data(t.train, f"task '{t.name}' train") for t in self.tasks]
        self.test_data = [self._data(t.test, f"task '{t.name}' test") for t in self.tasks]
        self.num_classes = self._check_classes()
        C, T = self.num_classes, len(self.tasks)
        self.class_mask = torch.zeros(T, C, dtype=torch.bool)
        for j, t in enumerate(self.tasks):
            self.class_mask[j, list(t.classes)] = True
        self.class_mask = self.class_mask.to(device)
        self.class_rank = self._class_ranks().to(device)  # ER-ACE: position of each class in the scenario's order
        self.seen_classes = torch.zeros(C, dtype=torch.bool, device=device)
        self.ace_seen = torch.zeros(C, dtype=torch.bool, device=device)  # ER-ACE: labels of incoming batches so far
        self.input_shape = self._input_shape()
        self.network = self._build_network().to(device)
        self._assign_budgets(scenario)
        out_names = {f"output.{n}" for n, _ in self.network.output.named_parameters()}
        opt_args = optimizer_args(cfg)  # --lr/--adam-eps, or the optimizer's own options (NorMuon: --muon-lr, ...)
        self.optimizer = build_optimizer(cfg.optimizer, list(self.network.named_parameters()), muon_exclude=out_names,
                                         **opt_args)
        if cfg.fused_optimizer:  # speed: Adam/AdamW's fused kernel, same update rule (agents/fast.py)
            use_fused_kernel(self.optimizer)
        stream = scenario.stream()
        budgets = [t.steps or cfg.steps for t in stream]
        restart = cfg.lr_restart_per_task == "on" or (cfg.lr_restart_per_task == "auto" and cfg.norm == "nap")
        self.schedule = LRSchedule(self.optimizer, cfg.lr_schedule, opt_args["lr"], total_steps=sum(budgets),
                                   warmup_steps=self._warmup(cfg, min(budgets)), restart_per_task=restart,
                                   steps_per_task=budgets[0], **nap.schedule_ends(cfg))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.strategy = cfg.strategy
        self.replay_batch = cfg.replay_batch_size or cfg.batch_size
        self.buffer = ReservoirBuffer(cfg.replay_size if self.strategy != "naive" else 0, self.gen, device)
        self.task_aware = [m for m in self.network.modules() if hasattr(m, "set_task_ids")]
        self.aux_modules = [m for m in self.network.modules() if hasattr(m, "aux_loss")]
        self.stream_index = -1  # stream position the data iterator belongs to
        self.task_j = 0  # index of that task in scenario.tasks
        self.perm: torch.Tensor | None = None
        self.cursor = 0
        self.passes = 0
        self.updates = 0
        self.metric_step = 0  # updates, the one in progress included (what hooks log at; docs/design.md)
        self.probes: dict[str, torch.Tensor] = {}
        self.probe_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)  # ReDo's scoring batches
        self.run = None  # set by the runner
        self._loss_sum = torch.zeros((), device=device)
        self._correct = torch.zeros((), device=device)
        self._count = 0
        self._n_upd = 0
        self._log_t0 = time.perf_counter()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _warmup(cfg, shortest_task: int) -> int:
        """The schedule's warmup: NaP's (``--norm nap`` without ``--lr-warmup``: fit_budget copied
        ``--nap-warmup`` into ``lr_warmup``) cut to a tenth of a task shorter than ten warmups,
        :func:`crl.interventions.nap.warmup_for`, as in DQN; any other ``--lr-warmup`` as given,
        cut to a tenth of the shortest task's updates only when it would outlast that task (so a
        per-task schedule still decays)."""
        if cfg.norm == "nap" and 0 < cfg.nap_warmup == cfg.lr_warmup:
            return nap.warmup_for(cfg.nap_warmup, shortest_task)
        return cfg.lr_warmup if cfg.lr_warmup <= shortest_task else max(1, shortest_task // 10)

    @staticmethod
    def _check_config(cfg) -> None:
        if cfg.strategy not in STRATEGIES:
            raise UserError(f"--strategy: unknown strategy '{cfg.strategy}'; accepted: {', '.join(STRATEGIES)}")
        for name in ("replay_size", "replay_batch_size", "der_alpha", "der_beta", "adab2n_lambda", "epochs"):
            if getattr(cfg, name) < 0:
                raise UserError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(cfg, name)}")
        if cfg.eval_batch_size <= 0:
            raise UserError(f"--eval-batch-size: must be > 0, got {cfg.eval_batch_size}")
        if cfg.strategy != "naive" and cfg.replay_size <= 0:
            raise UserError(f"--replay-size: strategy '{cfg.strategy}' needs a memory; got {cfg.replay_size}")

    @staticmethod
    def _build_loss(cfg, scenario):
        """``--loss``, refused (one line) where the combination is not defined."""
        entry = LOSSES.entry(cfg.loss)
        if not entry.meta.get("per_sample", True) and "meta-rescale" in cfg.interventions():
            raise UserError(f"--loss {cfg.loss}: a loss of the whole batch has no per-sample terms for "
                            "--intervention meta-rescale to reweight; use --loss ce or zloss with it")
        need = entry.meta.get("min_classes", 1)
        fewest = min(len(t.classes) for t in scenario.tasks)
        if fewest < need and (cfg.il_mode == "task" or cfg.strategy == "er-ace"):
            why = "--il-mode task" if cfg.il_mode == "task" else "--strategy er-ace (incoming batch)"
            raise UserError(f"--loss {cfg.loss}: needs at least {need} visible classes per sample, but {why} leaves "
                            f"as few as {fewest} (a task of scenario '{scenario.name}' has {fewest}); use --loss ce "
                            "or anyloss, or --il-mode class with a strategy other than er-ace")
        return entry.factory(cfg)

    def _terms(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``--loss`` of one group of samples as one term per sample (a whole-group loss, e.g. AnyLoss,
        is repeated on each sample, so the group's mean is its value). Classes the strategy masks are
        the logits set to the lowest float; the loss sees that mask."""
        low = torch.finfo(logits.dtype).min
        mask = logits > low
        terms = self.loss_fn(logits, y, None if bool(mask.all()) else mask)
        return terms if self.loss_fn.per_sample else terms.expand(len(y))

    def _data(self, ds, what: str) -> _Data:
        x, y, tf = _as_tensors(ds, what)
        key = id(x)
        if key not in self._device_cache:  # tasks sharing inputs (permutations, relabelling) share one copy
            self._device_cache[key] = (x, x.to(self.device))
        return _Data(self._device_cache[key][1], y.to(self.device), tf, getattr(ds, "augment", None))

    def _check_classes(self) -> int:
        top = -1
        for j, t in enumerate(self.tasks):
            try:
                classes = [int(c) for c in t.classes]
            except (TypeError, ValueError):
                raise UserError(f"task '{t.name}': classes must be integer class ids, got {t.classes!r}") from None
            if min(classes) < 0:
                raise UserError(f"task '{t.name}': class ids must be >= 0, got {classes}")
            allowed = set(classes)
            for part, data in (("train", self.train_data[j]), ("test", self.test_data[j])):
                present = set(torch.unique(data.y).tolist())
                if not present <= allowed:
                    raise UserError(f"task '{t.name}': {part} labels {sorted(present - allowed)} are not among its "
                                    f"classes {sorted(allowed)}")
            top = max(top, max(classes))
        return top + 1

    def _class_ranks(self) -> torch.Tensor:
        """Rank of every class in the order the scenario introduces them: the tasks in order, each
        task's ``info["class_order"]`` (split scenarios: the published order) or else its ``classes``.
        For mammoth's and AdaB2N's orders the rank is their label id."""
        rank = torch.full((self.num_classes,), self.num_classes, dtype=torch.long)
        k = 0
        for t in self.tasks:
            for c in t.info.get("class_order", t.classes):
                if rank[int(c)] == self.num_classes:
                    rank[int(c)] = k
                    k += 1
        return rank

    def _input_shape(self) -> tuple[int, ...]:
        shapes = {}
        for t, d in zip(self.tasks, self.train_data):
            shapes[t.name] = tuple(d.inputs(slice(0, 1)).shape[1:])
        if len(set(shapes.values())) > 1:
            raise UserError(f"scenario '{self.scenario.name}': tasks give model inputs of different shapes {shapes}")
        return next(iter(shapes.values()))

    def _build_network(self) -> ClassifierNet:
        shape = self.input_shape
        if self.cfg.torso == "mlp" and len(shape) > 1:
            shape = (math.prod(shape),)  # the MLP flattens images
        try:
            torso = build_torso(self.cfg, shape)
            net = ClassifierNet(torso, self.num_classes)
            net.eval()
            with torch.no_grad():
                net(self.train_data[0].inputs(slice(0, 2)).cpu())
            net.train()
        except RuntimeError as err:
            raise UserError(f"--torso: '{self.cfg.torso}' cannot take inputs of shape {self.input_shape} "
                            f"({str(err).splitlines()[0]}); for small images use small_cnn, resnet18 or mlp") from None
        return net

    def _assign_budgets(self, scenario) -> None:
        cfg = self.cfg
        for t, d in zip(self.tasks, self.train_data):
            if t.steps is not None and not t.info.get("crl_auto_steps"):
                continue
            per_pass = steps_per_pass(len(d), cfg.batch_size)
            if cfg.online:
                t.steps = per_pass
            elif cfg.epochs > 0:
                t.steps = max(1, round(cfg.epochs * per_pass))
            else:
                t.steps = None  # --steps
                t.info.pop("crl_auto_steps", None)
                continue
            t.info["crl_auto_steps"] = True

    # ------------------------------------------------------------------ training
    def _start_task(self, stream_index: int, task) -> None:
        self.stream_index = stream_index
        self.task_j = self.task_pos[task.name]
        self.seen_classes |= self.class_mask[self.task_j]
        self.perm, self.cursor, self.passes = None, 0, 0
        for m in self.network.modules():
            if hasattr(m, "begin_task"):
                m.begin_task(self.task_j)
        self.schedule.on_task_start(task.steps or self.cfg.steps)

    def _next_indices(self, n: int) -> torch.Tensor:
        if self.perm is None or self.cursor >= n:
            if self.perm is not None:
                self.passes += 1
            self.perm = torch.randperm(n, generator=self.gen)
            self._perm_dev = self.perm.to(self.device)
            self.cursor = 0
        end = min(self.cursor + self.cfg.batch_size, n)
        if n - end == 1:  # never leave a batch of one (batch-statistics norms cannot train on it)
            end = n
        idx = self._perm_dev[self.cursor:end]
        self.cursor = end
        return idx

    def train(self, task, steps: int) -> int:
        """``steps`` updates on ``task`` (the runner's chunk); returns the updates done (fewer on a stop request)."""
        run = self.run
        stream_index = run.task_index if run is not None else self.task_pos[task.name]
        if stream_index != self.stream_index:
            self._start_task(stream_index, task)
        data = self.train_data[self.task_j]
        self.network.train()
        base = run.global_step if run is not None else self.updates
        for i in range(steps):
            if getattr(run, "stop_requested", False):  # SIGINT/SIGTERM: return early, the runner checkpoints
                return i
            self._update(data, self._next_indices(len(data)))
            if run is not None and (base + i + 1) % self.cfg.log_every == 0:
                self._log_train(base + i + 1)
        return steps

    def _ce_logits(self, logits: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.il_mode == "task":
            return logits.masked_fill(~self.class_mask[task_ids], torch.finfo(logits.dtype).min)
        return logits

    def _update(self, data: _Data, idx: torch.Tensor) -> None:
        cfg, j = self.cfg, self.task_j
        self.metric_step = self.updates + 1
        x, y = data.inputs(idx), data.y[idx]
        B = len(y)
        t = torch.full((B,), j, dtype=torch.long, device=self.device)
        if self.strategy == "er-ace":
            self._observe_labels(y)
        mems = []
        if self.buffer.size and (self.strategy in ("replay", "der++")
                                 or (self.strategy == "er-ace" and self.stream_index > 0)):
            mems.append(self.buffer.sample(self.replay_batch))
            if self.strategy == "der++":
                mems.append(self.buffer.sample(self.replay_batch))
        batch = self._batch(x, y, t, mems)
        if data.augment is not None:  # e.g. Split CIFAR's crop + flip, on incoming and replayed samples alike
            batch["x"] = batch["obs"] = data.augment(batch["x"], self.gen)
        logits = self._forward(batch)
        aux = None  # taken now: hooks may run extra forwards that replace the layers' last aux loss
        if self.aux_modules and cfg.adab2n_lambda > 0 and j >= cfg.adab2n_t0:
            aux = cfg.adab2n_lambda * torch.stack([m.aux_loss() for m in self.aux_modules]).sum()
        per_sample = self._loss_terms(logits, batch)
        if self.run is not None:
            if norm_state.transforms_loss(self.run):  # e.g. meta-rescale: its forwards leave no norm state behind
                with norm_state.preserved(self.network):
                    per_sample = self.run.hooks.transform_loss(self.run, per_sample, batch)
            else:
                per_sample = self.run.hooks.transform_loss(self.run, per_sample, batch)
        loss = per_sample.mean() if aux is None else per_sample.mean() + aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(self, loss, step=self.updates)  # NaN guard, clip, step, schedule, hooks
        with torch.no_grad():
            self._loss_sum += loss.detach()
            self._correct += (self._ce_logits(logits[:B], t).argmax(1) == y).sum()
        self._count += B
        self._n_upd += 1
        if self.buffer.capacity:
            items = {"x": x, "y": y, "t": t}
            if self.strategy == "der++":
                items["logits"] = logits[:B].detach()
            self.buffer.add(**items)

    @staticmethod
    def _batch(x, y, t, mems) -> dict:
        """The joint batch: incoming samples first, then each memory draw (the format hooks see)."""
        if mems:
            x = torch.cat([x] + [m["x"] for m in mems])
            y_all = torch.cat([y] + [m["y"] for m in mems])
            t = torch.cat([t] + [m["t"] for m in mems])
        else:
            y_all = y
        return {"obs": x, "x": x, "y": y_all, "task_ids": t, "num_incoming": len(y),
                "mem_sizes": [len(m["y"]) for m in mems],
                "mem_logits": mems[0]["logits"] if mems and "logits" in mems[0] else None}

    def _forward(self, batch: dict, params: dict | None = None) -> torch.Tensor:
        """Training-mode logits of ``batch["x"]``, task ids given to task-aware norms (AdaB2N) first."""
        for m in self.task_aware:
            m.set_task_ids(batch["task_ids"])
        try:
            if params is None:
                return self.network(batch["x"])
            return torch.func.functional_call(self.network, params, (batch["x"],), strict=False)
        finally:
            for m in self.task_aware:
                if hasattr(m, "clear_task_ids"):
                    m.clear_task_ids()

    def _loss_terms(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """One loss term per sample of the joint batch, scaled so that their mean is the strategy's loss."""
        Y, T, B = batch["y"], batch["task_ids"], batch["num_incoming"]
        ce_logits = self._ce_logits(logits, T)
        if self.strategy in ("naive", "replay") or not batch["mem_sizes"]:
            return self._terms(ce_logits, Y)
        N = len(Y)
        low = torch.finfo(logits.dtype).min
        if self.strategy == "er-ace":
            incoming = ce_logits[:B].masked_fill(~self._ace_visible(Y[:B]), low)
            mem = ce_logits[B:]
            return torch.cat([self._terms(incoming, Y[:B]) * (N / B),
                              self._terms(mem, Y[B:]) * (N / len(mem))])
        # der++: incoming CE, alpha * logit MSE on the first memory draw, beta * CE on the second
        r1 = batch["mem_sizes"][0]
        cur = self._terms(ce_logits[:B], Y[:B]) * (N / B)
        mse = (logits[B:B + r1] - batch["mem_logits"]).pow(2).mean(1) * (self.cfg.der_alpha * N / r1)
        ce2 = self._terms(ce_logits[B + r1:], Y[B + r1:]) * (self.cfg.der_beta * N / (N - B - r1))
        return torch.cat([cur, mse, ce2])

    def _ace_visible(self, y_in: torch.Tensor) -> torch.Tensor:
        """ER-ACE's logit mask of the incoming batch, as the official code (Caccia et al.'s
        ``er_ace``, mammoth's ``models/er_ace.py``): the classes present in the batch, plus every class
        id at or above the highest id seen so far when that is below the last class (new classes
        not met yet stay in the softmax); the rest are masked. ``seen`` is the set of labels of
        every incoming batch so far (:meth:`_observe_labels`), this one included. The official code
        relies on label ids that follow the task order; crl keeps the dataset's ids, so "id" here
        is the class's rank in the scenario's order (:meth:`_class_ranks`), which equals mammoth's
        and AdaB2N's label id under ``--class-order fixed`` / ``adab2n``."""
        visible = torch.zeros(self.num_classes, dtype=torch.bool, device=y_in.device)
        visible[y_in] = True
        if bool(self.ace_seen.any()):
            top = int(self.class_rank[self.ace_seen].max())  # the highest label id of the official code, as a rank
            if top < self.num_classes - 1:
                visible |= self.class_rank >= top
        return visible

    def _observe_labels(self, y_in: torch.Tensor) -> None:
        self.ace_seen[y_in] = True

    # learner contract of --intervention meta-rescale (crl/interventions/meta_rescale.py)
    def per_sample_loss(self, batch: dict, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample training loss, logits) of ``batch`` (with graph; ``params`` via functional_call)."""
        logits = self._forward(batch, params)
        return self._loss_terms(logits, batch), logits

    def sample_batch(self, size: int) -> dict:
        """``size`` samples of the current task's training data (uniform, with replacement), no memory."""
        data = self.train_data[self.task_j]
        idx = torch.randint(len(data), (size,), generator=self.gen).to(self.device)
        t = torch.full((size,), self.task_j, dtype=torch.long, device=self.device)
        return self._batch(data.inputs(idx), data.y[idx], t, [])

    def _log_train(self, step: int) -> None:
        log = self.run.logger
        now = time.perf_counter()
        log.scalar("train/lr", self.schedule.lr, step)
        log.scalar("train/updates", self.updates, step)
        log.scalar("train/replay_size", self.buffer.size, step)
        if self._count:
            n_updates = self._n_upd
            log.scalar("train/loss", (self._loss_sum / n_updates).item(), step)
            if self.classifies:
                log.scalar("train/online_accuracy", (self._correct / self._count).item(), step)
            log.scalar("perf/updates_per_second", n_updates / max(now - self._log_t0, 1e-9), step)
        self._loss_sum.zero_()
        self._correct.zero_()
        self._count = 0
        self._n_upd = 0
        self._log_t0 = now
        log.progress(step)  # the progress display moves with the train/* scalars (crl/logging.py)

    # ------------------------------------------------------------------ evaluation and probes
    @torch.no_grad()
    def accuracies(self, task, data: _Data | None = None) -> tuple[float, float]:
        """(class-incremental, task-incremental) accuracy on ``task``'s test set (or ``data``)."""
        j = self.task_pos[task.name]
        data = self.test_data[j] if data is None else data
        was_training = self.network.training
        self.network.eval()
        # class-IL: the classes of every task trained so far plus this task's own (for a task not trained yet,
        # mammoth's FWT term: the upcoming task scored with its classes in the argmax); all before any training
        seen = self.seen_classes | self.class_mask[j] if bool(self.seen_classes.any()) else \
            torch.ones_like(self.seen_classes)
        low = torch.finfo(torch.float32).min
        cil = torch.zeros((), device=self.device)
        til = torch.zeros((), device=self.device)
        scored = self.class_mask[j] if self.cfg.il_mode == "task" else seen  # the prediction the score uses
        conf, hit = [], []
        for s in range(0, len(data), self.cfg.eval_batch_size):
            sl = slice(s, s + self.cfg.eval_batch_size)
            logits = self.network(data.inputs(sl)).float()
            y = data.y[sl]
            cil += (logits.masked_fill(~seen, low).argmax(1) == y).sum()
            til += (logits.masked_fill(~self.class_mask[j], low).argmax(1) == y).sum()
            top, pred = torch.softmax(logits.masked_fill(~scored, low), dim=1).max(1)
            conf.append(top)
            hit.append(pred == y)
        self.network.train(was_training)
        # ECE (Guo et al. 2017, 15 bins) of the softmax over the classes the score's argmax sees
        self.last_ece = binned_ece(torch.cat(conf).cpu(), torch.cat(hit).cpu()) if conf else float("nan")
        n = max(1, len(data))
        return cil.item() / n, til.item() / n

    def evaluate(self, task, eval_index: int = 0) -> float:
        acc_cil, acc_til = self.accuracies(task)
        if self.run is not None:
            step = self.run.global_step
            self.run.logger.scalar(f"eval/{task.name}/acc_class_il", acc_cil, step)
            self.run.logger.scalar(f"eval/{task.name}/acc_task_il", acc_til, step)
            self.run.logger.scalar(f"eval/{task.name}/ece", self.last_ece, step)
        return acc_til if self.cfg.il_mode == "task" else acc_cil

    def train_accuracy(self, task) -> tuple[float, float]:
        """(class-IL, task-IL) accuracy on ``task``'s *training* set (trainability benchmarks)."""
        return self.accuracies(task, self.train_data[self.task_pos[task.name]])

    @torch.no_grad()
    def probe_batch(self, task, size: int = 256) -> torch.Tensor:
        """The first ``size`` training inputs of ``task`` (model-ready, on the device); fixed per task."""
        if task.name not in self.probes:
            data = self.train_data[self.task_pos[task.name]]
            self.probes[task.name] = data.inputs(slice(0, min(size, len(data)))).clone()
        return self.probes[task.name]

    @torch.no_grad()
    def scoring_batch(self, size: int = 256) -> torch.Tensor:
        """A fresh uniform sample (with replacement) of ``size`` training inputs of the current task
        (ReDo's scoring batch), drawn with the learner's own probe generator."""
        data = self.train_data[self.task_j]
        idx = torch.randint(len(data), (size,), generator=self.probe_gen).to(self.device)
        return data.inputs(idx)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {
            "network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "buffer": self.buffer.state_dict(),
            "generator": self.gen.get_state(), "stream_index": self.stream_index, "task_j": self.task_j,
            "perm": self.perm, "cursor": self.cursor, "passes": self.passes, "updates": self.updates,
            "seen_classes": self.seen_classes.cpu(), "probe_gen": self.probe_gen.get_state(),
            "ace_seen": self.ace_seen.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.buffer.load_state_dict(state["buffer"])
        self.gen.set_state(state["generator"])
        self.stream_index, self.task_j = state["stream_index"], state["task_j"]
        self.perm, self.cursor, self.passes = state["perm"], state["cursor"], state["passes"]
        if self.perm is not None:
            self._perm_dev = self.perm.to(self.device)
        self.updates = self.metric_step = state["updates"]
        self.seen_classes = state["seen_classes"].to(self.device)
        if "probe_gen" in state:  # absent in checkpoints written before it existed
            self.probe_gen.set_state(state["probe_gen"])
        if "ace_seen" in state:
            self.ace_seen = state["ace_seen"].to(self.device)


AGENTS.register("classifier", "supervised classifier for task streams: --strategy naive|replay|er-ace|der++, "
                              "--online or --epochs, --il-mode class|task", options=ClassifierOptions,
                kind="supervised")(
    lambda cfg, scenario, device: ClassifierLearner(cfg, scenario, device))
