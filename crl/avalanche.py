"""Avalanche both ways: Avalanche benchmarks as crl scenarios, crl's tools inside Avalanche.

Into crl:

* :func:`from_avalanche` turns any Avalanche benchmark (its ``train_stream`` and ``test_stream``:
  class-, domain- or task-incremental) into a :class:`crl.Scenario`, one
  :class:`crl.SupervisedTask` per experience: the experience's samples (through the dataset's
  *eval* transforms, so without augmentation; in Avalanche's order), its classes and its task label.
* ``crl run avalanche:<ClassName>`` builds one benchmark of ``avalanche.benchmarks.classic`` by name
  (``scenarios/avalanche.py``) with ``--data-dir`` as its ``dataset_root``, ``--seed`` and ``--n-tasks``.

Into Avalanche (an Avalanche user keeps their strategy):

* :func:`crl_model` builds a crl classifier (crl's torsos and norms, e.g. ``norm="nap"``) as a plain
  ``nn.Module`` for any Avalanche strategy.
* :class:`InterventionPlugin` runs crl's interventions (``nap``, ``redo``, ``shrink-perturb``,
  ``l2-init``, ``reset``; not ``meta-rescale``) as an Avalanche ``SupervisedPlugin``: the same hook objects
  (``crl.interventions``) that crl's runner drives, fed from Avalanche's events
  (``before_training`` -> ``on_run_start`` once, ``before_training_exp`` -> ``on_task_start``,
  ``before_backward`` -> ``transform_loss`` on the mini-batch loss, ``after_update`` ->
  ``after_optimizer_step``). With ``nap`` it also runs NaP's learning-rate protocol (warmup, then
  cosine decay, restarted at every experience) on the strategy's optimizer, as crl's learners do.
* :class:`PlasticityMetrics` is crl's plasticity hook (``crl.metrics.hooks.PlasticityHook``: dormant
  units, feature ranks, weight magnitudes and drift, relative update size, probe plasticity) as an
  Avalanche ``PluginMetric`` for an ``EvaluationPlugin``: every ``every`` updates it emits
  ``plasticity/<tag>`` values (the gradient norms and relative update at the update after), on a
  fixed probe batch of the current experience (its first 256 inputs).

References: Lomonaco et al. 2021, "Avalanche: an End-to-End Library for Continual Learning",
CVPR Workshops; Carta et al. 2023, "Avalanche: A PyTorch Library for Deep Continual Learning", JMLR
24(363); https://avalanche-api.continualai.org (benchmarks, ``SupervisedPlugin``, ``PluginMetric``).
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from crl.errors import UserError
from crl.scenario import Scenario, SupervisedTask


# ----------------------------------------------------------------------------- Avalanche -> crl

def _materialize(dataset, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(x, y, ...)`` of an Avalanche dataset, through its eval transforms, as two tensors."""
    ds = dataset.eval() if hasattr(dataset, "eval") else dataset
    xs, ys = [], []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in loader:
        x, y = batch[0], batch[1]
        if not isinstance(x, torch.Tensor):
            raise UserError(f"from_avalanche: the benchmark's samples are {type(x).__name__}, not tensors; give it "
                            "transforms that end with ToTensor()")
        xs.append(x)
        ys.append(torch.as_tensor(y))
    if not xs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys).long()


def _task_label(exp, what: str) -> int:
    labels = sorted(set(int(t) for t in getattr(exp, "task_labels", [0])))
    if len(labels) != 1:
        raise UserError(f"from_avalanche: {what} holds samples of several task labels {labels}; crl's tasks have one")
    return labels[0]


def from_avalanche(benchmark, name: str = "avalanche", cycles: int = 1) -> Scenario:
    """A :class:`crl.Scenario` with one task per experience of ``benchmark.train_stream``.

    Task ``i`` (named ``exp<i>``) trains on train experience ``i`` and is evaluated on test experience
    ``i`` (so the streams must have the same length, as Avalanche's class-, domain- and task-incremental
    benchmarks do); its ``classes`` are ``classes_in_this_experience`` and its ``task_label`` the
    experience's task label (0 for class-incremental benchmarks). Inputs are materialized once through
    each dataset's eval transforms (augmentations are not applied) and kept in Avalanche's sample order.
    """
    from scenarios.datasets import ArrayDataset

    train, test = list(benchmark.train_stream), list(benchmark.test_stream)
    if not train:
        raise UserError(f"from_avalanche: benchmark {type(benchmark).__name__} has an empty train stream")
    if len(train) != len(test):
        raise UserError(f"from_avalanche: {type(benchmark).__name__} has {len(train)} train but {len(test)} test "
                        "experiences; crl evaluates task i on test experience i")
    tasks = []
    for i, (tr, te) in enumerate(zip(train, test)):
        x, y = _materialize(tr.dataset)
        xt, yt = _materialize(te.dataset)
        label = _task_label(tr, f"train experience {i}")
        classes = sorted(int(c) for c in tr.classes_in_this_experience)
        tasks.append(SupervisedTask(f"exp{i}", ArrayDataset(x, y), ArrayDataset(xt, yt), classes, task_label=label,
                                    info={"avalanche": type(benchmark).__name__, "experience": i, "classes": classes}))
    scenario = Scenario(name, tasks, cycles=cycles)
    scenario.validate()
    return scenario


# ----------------------------------------------------------------------------- crl -> Avalanche

def crl_model(input_shape: tuple[int, ...], num_classes: int, torso: str = "mlp", norm: str = "none",
              **options: Any) -> nn.Module:
    """A crl classifier (``agents.classifier.ClassifierNet``: a crl torso with crl's norm layers, then a
    linear output over ``num_classes``) for an Avalanche strategy. ``options``: crl options of the torso
    and norm (e.g. ``mlp_hidden="256,256"``). Its ``projectable_weights()`` and ``hidden_activations()``
    are what :class:`InterventionPlugin` and :class:`PlasticityMetrics` act on."""
    from agents.classifier import ClassifierNet
    from crl.config import make_config
    from crl.nn.network import build_torso
    from crl.options import building
    from crl.registry import load_builtins

    load_builtins()
    cfg = make_config("supervised", torso=torso, norm=norm, **options)
    shape = (math.prod(input_shape),) if torso == "mlp" else tuple(input_shape)
    with building(cfg):
        return ClassifierNet(build_torso(cfg, shape), num_classes)


class _Logger:
    """What crl's hooks log (``run.logger.scalar``), kept in memory."""

    def __init__(self) -> None:
        self.points: list[tuple[str, float, int]] = []
        self.latest: dict[str, float] = {}

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.points.append((tag, float(value), int(step)))
        self.latest[tag] = float(value)

    def flush(self) -> None:
        pass

    def progress(self, step: int) -> None:
        pass


class _Learner:
    """crl's learner interface read from an Avalanche strategy (``model``, ``optimizer``, batches)."""

    def __init__(self, cfg, probe_size: int = 256):
        self.cfg, self.strategy, self.updates, self.probe_size = cfg, None, 0, probe_size
        self.probes: dict[str, torch.Tensor] = {}

    @property
    def metric_step(self) -> int:
        """Updates so far, the one whose ``after_update`` runs included (what crl's hooks log at)."""
        return self.updates

    @property
    def network(self) -> nn.Module:
        return self.strategy.model

    @property
    def optimizer(self):
        return self.strategy.optimizer

    def _device(self) -> torch.device:
        return next(self.network.parameters()).device

    def probe_batch(self, task) -> torch.Tensor | None:
        """The first ``probe_size`` inputs of the current experience (eval transforms), fixed per experience."""
        if task.name not in self.probes:
            exp = self.strategy.experience
            if exp is None:
                return None
            x, _ = _materialize(exp.dataset, batch_size=self.probe_size) if len(exp.dataset) <= self.probe_size else \
                _first(exp.dataset, self.probe_size)
            self.probes[task.name] = x.to(self._device())
        return self.probes[task.name]

    def scoring_batch(self, size: int = 256) -> torch.Tensor | None:
        """The current mini-batch's inputs (ReDo scores units on it)."""
        mb = getattr(self.strategy, "mb_x", None)
        return None if mb is None else mb[:size]


def _first(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = dataset.eval() if hasattr(dataset, "eval") else dataset
    items = [ds[i] for i in range(n)]
    return torch.stack([it[0] for it in items]), torch.tensor([int(it[1]) for it in items])


class _Run:
    """The part of crl's ``Runner`` that crl's hooks read, fed from an Avalanche strategy."""

    def __init__(self, cfg, hooks):
        self.config, self.hooks, self.learner, self.logger = cfg, hooks, _Learner(cfg), _Logger()
        self.scenario = SimpleNamespace(kind="supervised", name="avalanche")
        self.task_index, self.task, self.global_step = -1, None, 0
        self.stop_requested, self.started = False, False

    def bind(self, strategy) -> None:
        self.learner.strategy = strategy
        if not self.started:
            self.started = True
            self.hooks.on_run_start(self)

    def start_experience(self, strategy) -> None:
        exp = strategy.experience
        index = int(getattr(exp, "current_experience", self.task_index + 1))
        self.task_index = index
        self.task = SimpleNamespace(name=f"exp{index}", classes=list(getattr(exp, "classes_in_this_experience", [])))
        self.hooks.on_task_start(self, index, self.task)

    def update(self) -> None:
        self.global_step += 1
        self.learner.updates += 1
        self.hooks.after_optimizer_step(self)


def _supervised_plugin():
    from avalanche.core import SupervisedPlugin

    return SupervisedPlugin


def _plugin_metric():
    from avalanche.evaluation import PluginMetric

    return PluginMetric


# interventions that call into crl's learner beyond its network and optimizer
NEEDS_CRL_LEARNER = {"meta-rescale": "re-weights per-sample losses of replay batches drawn from crl's learner"}


def _intervention_config(names: tuple[str, ...], options: dict[str, Any]):
    from crl.config import make_config
    from crl.registry import INTERVENTIONS, load_builtins

    load_builtins()
    for n in names:
        INTERVENTIONS.entry(n)  # an unknown name: one UserError listing the accepted ones
        if n in NEEDS_CRL_LEARNER:
            raise UserError(f"InterventionPlugin: '{n}' {NEEDS_CRL_LEARNER[n]}; it runs with crl's learners only")
    # NaP's factory asks for crl's norm option; here the model's own layers decide (attach() checks them)
    norm = options.pop("norm", "nap" if "nap" in names else "none")
    return make_config("supervised", intervention=",".join(names), norm=norm, **options)


class _NaPSchedule:
    """NaP's learning-rate protocol (Lyle et al. 2024) on an Avalanche strategy's optimizer: at every
    experience a fresh segment of crl's :class:`crl.optim.LRSchedule` (``restart_per_task``) whose
    horizon is the experience's updates, ``len(strategy.dataloader) * strategy.train_epochs``."""

    def __init__(self, cfg):
        self.cfg, self.schedule = cfg, None

    def start_experience(self, strategy) -> None:
        from crl.interventions.nap import warmup_for

        # Avalanche builds the experience's dataloader and updates the optimizer in place (make_optimizer)
        # before plugins' before_training_exp fire, so both are the ones this experience trains with
        updates = max(1, len(strategy.dataloader) * int(getattr(strategy, "train_epochs", 1)))
        warmup = warmup_for(self.cfg.nap_warmup, updates)
        if self.schedule is None or self.schedule.optimizer is not strategy.optimizer:
            self.schedule = self._build(strategy.optimizer, warmup, updates)
        self.schedule.warmup_steps = warmup  # per experience: a short one gets a shorter warmup
        self.schedule.on_task_start(updates)

    def _build(self, optimizer, warmup: int, updates: int):
        from crl.optim import LRSchedule

        # the peak is the lr the user gave (read before the schedule first overwrites it); other
        # param groups keep their ratio to it
        peak = float(optimizer.param_groups[0]["lr"])
        return LRSchedule(optimizer, "cosine", peak, total_steps=updates, warmup_steps=warmup,
                          init_lr=self.cfg.nap_init_lr, final_lr=self.cfg.nap_final_lr, restart_per_task=True,
                          steps_per_task=updates)

    def step(self) -> None:
        if self.schedule is not None:
            self.schedule.step()


def _nap_schedule_flag(options: dict[str, Any], names: tuple[str, ...]) -> bool:
    if "nap_schedule" in options and "nap" not in names:
        raise UserError(f"InterventionPlugin: nap_schedule is NaP's learning-rate protocol, and the interventions "
                        f"are {', '.join(names)}; accepted: nap_schedule with 'nap' among them")
    value = options.pop("nap_schedule", True)
    if not isinstance(value, bool):
        raise UserError(f"InterventionPlugin: nap_schedule must be True or False, got {value!r}")
    return value and "nap" in names


def InterventionPlugin(*names: str, **options: Any):  # noqa: N802  (a class to its users)
    """crl's interventions ``names`` (e.g. ``"nap"``, ``"redo"``, ``"shrink-perturb"``, ``"l2-init"``,
    ``"reset"``) as one Avalanche ``SupervisedPlugin``; ``options`` are their crl options (e.g.
    ``redo_tau=0.1``). ``nap`` needs a model whose ``projectable_weights()`` lists its norm-fed weights
    (:func:`crl_model` with ``norm="nap"``). ``plugin.logged`` holds what the interventions logged.

    With ``nap``, the plugin also drives NaP's learning-rate protocol on the strategy's optimizer, by
    default (``nap_schedule=True``, the paper's protocol): at each experience a linear warmup from
    ``nap_init_lr`` (1e-8) to the peak over ``nap_warmup`` updates (1,000, cut to a tenth of the
    experience's updates when it has fewer than ten times that), then cosine decay that reaches
    ``nap_final_lr`` (1e-6) after the experience's last update (its updates:
    ``len(strategy.dataloader) * strategy.train_epochs``); stepped after every update, restarted at the
    next experience. The peak is the lr of the optimizer's first param group as the user set it (read
    when the plugin first sees that optimizer); every param group's lr is set in proportion (a group at
    a tenth of the peak stays at a tenth of the schedule). Optimizer state is not reset; after training
    the lrs stay where the schedule left them. ``nap_schedule=False`` leaves the lr alone (for users who
    bring their own scheduler, e.g. Avalanche's ``LRSchedulerPlugin``)."""
    from crl.config import validate
    from crl.hooks import HookList
    from crl.interventions import build_interventions

    if not names:
        raise UserError("InterventionPlugin: name at least one intervention, e.g. InterventionPlugin('nap')")
    options = dict(options)
    with_schedule = _nap_schedule_flag(options, tuple(names))
    cfg = _intervention_config(tuple(names), options)
    validate(cfg)  # option ranges, e.g. nap_warmup >= 0
    base = _supervised_plugin()

    class _InterventionPlugin(base):
        def __init__(self):
            super().__init__()
            self.hooks = HookList(build_interventions(cfg))
            self.run = _Run(cfg, self.hooks)
            self.hooks.run = self.run
            self.nap_schedule = _NaPSchedule(cfg) if with_schedule else None

        @property
        def logged(self) -> list[tuple[str, float, int]]:
            return self.run.logger.points

        def before_training(self, strategy, *args, **kwargs):
            self.run.bind(strategy)

        def before_training_exp(self, strategy, *args, **kwargs):
            self.run.start_experience(strategy)
            if self.nap_schedule is not None:
                self.nap_schedule.start_experience(strategy)

        def before_backward(self, strategy, *args, **kwargs):
            loss = strategy.loss
            strategy.loss = self.hooks.transform_loss(self.run, loss.reshape(1), None).mean().reshape(loss.shape)

        def after_update(self, strategy, *args, **kwargs):
            self.run.update()
            if self.nap_schedule is not None:
                self.nap_schedule.step()

    _InterventionPlugin.__name__ = _InterventionPlugin.__qualname__ = "InterventionPlugin"
    return _InterventionPlugin()


def PlasticityMetrics(every: int = 100, probe_steps: int = 20, seed: int = 0):  # noqa: N802
    """crl's plasticity metrics as an Avalanche ``PluginMetric`` (for ``EvaluationPlugin(...)``): every
    ``every`` training updates, the values of ``crl.metrics.hooks.PlasticityHook`` on the strategy's model
    as ``plasticity/<tag>`` metric values (x = update count); ``probe_steps`` Adam steps of its
    probe-plasticity test (0 = off). ``result()`` is the latest ``{tag: value}``."""
    from avalanche.evaluation.metric_results import MetricValue
    from crl.hooks import HookList
    from crl.metrics.hooks import PlasticityHook

    base = _plugin_metric()

    class _PlasticityMetrics(base):
        def __init__(self):
            super().__init__()
            self.hook = PlasticityHook(every, probe_steps=probe_steps, seed=seed)
            self.run = _Run(None, HookList([self.hook]))
            self.sent = 0

        def result(self) -> dict[str, float]:
            return {t: v for t, v in self.run.logger.latest.items() if t.startswith("plasticity/")}

        def reset(self) -> None:
            pass

        def before_training(self, strategy, *args, **kwargs):
            self.run.bind(strategy)

        def before_training_exp(self, strategy, *args, **kwargs):
            self.run.start_experience(strategy)

        def after_update(self, strategy, *args, **kwargs):
            self.run.update()
            new = self.run.logger.points[self.sent:]
            self.sent = len(self.run.logger.points)
            return [MetricValue(self, tag, value, step) for tag, value, step in new if tag.startswith("plasticity/")]

        def __str__(self) -> str:
            return "crl_plasticity"

    _PlasticityMetrics.__name__ = _PlasticityMetrics.__qualname__ = "PlasticityMetrics"
    return _PlasticityMetrics()


__all__ = ["from_avalanche", "crl_model", "InterventionPlugin", "PlasticityMetrics"]
