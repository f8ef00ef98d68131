"""Runner hooks that log plasticity and forgetting metrics, and the TensorBoard views.

:func:`default_hooks` is what every run gets (``crl.api.extra_hooks``):

:class:`PlasticityHook` (on when ``--metrics-every`` > 0)
    **When.** Steps are the learner's own (:func:`crl.hooks.learner_step`,
    ``learner.metric_step``: env steps in RL, updates in the classifier). The metrics of the
    network's state are logged at the first optimizer step at or after each multiple of
    ``metrics_every``, in every task from the first on, and at the end of every task (the run's
    last step included), never twice at one step; the two metrics of one optimizer step
    (``grad_norm``, ``update_ratio``) at the update right after each of those optimizer steps.
    A learner that has not updated yet (DQN before ``--learning-starts``) has nothing logged
    at the multiples before its first update. A resumed run logs the same points as an
    uninterrupted one: the next metric step and whether the update after a metric step is
    still to be measured are part of the checkpoint.

    **What.** On the learner's fixed probe batch of the current task
    (``learner.probe_batch(task)``: 256 inputs of that task's own data, drawn once per task),
    network in eval mode inside :func:`crl.nn.norms.state.preserved` (every norm buffer and
    counter is bit-identical afterwards):

    ========================================  ==================================================
    tag                                       meaning (functions of :mod:`crl.metrics.plasticity`)
    ========================================  ==================================================
    ``plasticity/<L>/dormant_redo_tau<t>``     ReDo dormant fraction of hidden layer ``L``, t in
                                              {0, 0.025, 0.1} (Sokar et al. 2023)
    ``plasticity/dormant_redo_tau<t>``         total dormant / total units over hidden layers
                                              (output layer excluded; Dopamine's weighting)
    ``plasticity/<L>/dormant_dohare``          share of units active (``!= 0``) on fewer than 1%
    ``plasticity/dormant_dohare``              of the probe inputs (Dohare et al. 2024), ReLU
                                              layers only; network: unit-weighted over them
    ``plasticity/<L>/active_fraction``         FAU of layer ``L`` (ReLU: share of non-zero outputs;
                                              tanh/sigmoid: non-saturated); layers with another
                                              activation are skipped
    ``plasticity/active_fraction``             unit-weighted mean of the per-layer FAU
    ``plasticity/srank_0.01``                  srank, delta 0.01 (Kumar et al. 2021), of the
                                              penultimate features (input of the output layer)
    ``plasticity/effective_rank``              effective rank (Roy & Vetterli 2007), same features
    ``plasticity/stable_rank``                 classical stable rank ``||F||_F^2/||F||_2^2``
    ``plasticity/feature_norm``                ``mean_x ||phi(x)||_2`` of the penultimate features
    ``plasticity/feature_var_per_unit``        ``mean_j Var_x phi_j(x)`` (population variance)
    ``plasticity/predictive_entropy``          mean softmax entropy (nats) of the outputs, for
                                              categorical heads and classifiers only
    ``plasticity/<P>/weight_norm``             ``||W_P||_F`` of parameter layer ``P`` (grows with
                                              width)
    ``plasticity/<P>/weight_mean_abs``         ``mean |w|`` (Dohare et al. 2024)
    ``plasticity/<P>/weight_rms``              ``sqrt(mean w^2)`` (Plasticine's weight magnitude)
    ``plasticity/<P>/drift_init``              ``||W_P - W_P(init)||_F``; ``drift_init_rms``: the
                                              same as an RMS over elements (Plasticine)
    ``plasticity/<P>/drift_task``              ``||W_P - W_P(start of current task)||_F``;
                                              ``drift_task_rms``: the RMS form
    ``plasticity/<P>/grad_norm``               ``||grad W_P||_F`` before clipping
    ``plasticity/<P>/update_ratio``            ``||Delta W_P||_F / ||W_P||_F`` over one optimizer step
    ``plasticity/<P>/nap_effective_lr``        NaP's effective learning rate (Lyle et al. 2024) of
                                              a scale-invariant weight
                                              (``network.projectable_weights()``): ``lr/||W||^2``
                                              with SGD, ``lr/||W||`` with Adam-like optimizers
                                              (:func:`optimizer_form`), ``lr`` the group's now
    ``plasticity/<P>/below_eps``               share of ``P``'s weights whose RMSprop/Adam step
                                              denominator is below the optimizer's ``eps`` (the
                                              step is then SGD-like, ``lr * g / eps``); only with
                                              such an optimizer, once it has state
    ``plasticity/{weight_norm,...,update_      the per-layer metrics over all trainable parameters
    ratio,below_eps}``                         of the network (for ``grad_norm``: what
                                              ``clip_grad_norm_`` returns)
    ``plasticity/probe_loss_reduction``        probe-task plasticity (Lyle et al. 2023):
    ``plasticity/probe_loss_after``            :func:`~crl.metrics.plasticity.plasticity_probe` on a
                                              copy, ``--probe-steps`` (20) Adam steps at
                                              ``probe_lr`` on all parameters, targets
                                              ``f(X) + N(0, 1)``; every ``--probe-every``-th (1)
                                              state-metric step with a probe batch (the first
                                              included)
    ``plasticity/probe_loss_reduction_init``   the same probe (inputs, noise, steps) on a copy at
    ``plasticity/probe_loss_after_init``       the run's initial parameters: the reference Lyle
                                              et al. 2023 measure plasticity loss against
    ``plasticity/probe_plasticity_loss``       ``probe_loss_after - probe_loss_after_init`` (> 0:
                                              the network fits the probe worse than at init)
    ``perf/metrics_seconds``                   wall seconds spent in this hook so far
    ========================================  ==================================================

    Hidden layers ``L`` are ``network.hidden_activations()`` (names of their blocks, e.g.
    ``torso.blocks.0``); parameter layers ``P`` are the modules owning parameters (e.g.
    ``torso.blocks.0.layer``, ``torso.blocks.0.norm``, ``output``), measured on their ``weight``
    tensor (all their own parameters if they have no ``weight``).

    Cost: on other steps the hook compares one counter. At a metric step it computes the state
    metrics, then *arms* itself (snapshots the parameters and registers post-accumulate-grad
    hooks on them, so the norms of the gradients before any clipping are read during the next
    backward pass) and, after the next optimizer step, logs ``update_ratio`` (parameters now
    minus the snapshot, including whatever hooks before this one did, e.g. NaP's projection) and
    ``grad_norm`` at that step. The probe costs twice its ``--probe-steps`` (the network and
    its initial-parameter copy). The hook uses no global RNG (the probe forks it), so training
    is bit-identical with metrics on or off.

:class:`ForgettingHook`
    At each task end and at run end, from the eval matrix rows filled so far: ``forgetting/``
    ``avg_final``, ``avg_seen``, ``avg_forgetting`` (max - last), ``max_minus_last``,
    ``first_minus_last``, ``bwt``, ``fwt``, ``num_tasks`` (:mod:`crl.metrics.forgetting`).
    Rows and columns are stream positions (a task repeated in a later cycle is a new column
    holding that task's scores), so the matrix is square with cycles too. ``fwt`` is
    Avalanche's form ``R[i-1, i] - R[init, i]``: when the stream has more than one task the
    hook evaluates every task once before training (``run.evaluate()`` at step 0, which also
    logs ``eval/<task>/score`` there); for the classifier in class-IL that baseline is scored
    over all classes and ``R[i-1, i]`` with task ``i``'s classes in the argmax, mammoth's FWT.
    A metric without a value (forgetting, ``bwt``, ``fwt`` after one task; ``fwt`` without a
    baseline) is not logged, nor is a non-finite one.

    RL scores on a common scale (:func:`crl.metrics.forgetting.normalize_returns`), the same
    metrics again beside the raw ones: ``forgetting/hns/<metric>`` on human-normalised scores
    when every task is an Atari game of :data:`crl.metrics.human_normalized.REFERENCE_SCORES`
    (``task.info["game"]``); ``forgetting/cora/<metric>`` for the CORA presets
    (``cora-atari``, ``mini-cora-atari``), each task's scores divided by ``max |score|`` over
    every evaluation of that task in this run so far (CORA's scale, taken over all runs of an
    agent in CORA's code; :func:`crl.metrics.forgetting.cora_scale`).

:class:`TensorBoardViews`
    A custom-scalars layout (one category for the network, one per layer, one for forgetting
    and eval), the eval matrix as an image (``eval_matrix``) at each task end, and the HParams
    entry (every config field, final ``eval/``, ``forgetting/``, ``train/episode_return`` and
    network-level ``plasticity/`` values) at run end.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import time
import warnings
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from crl.errors import UserError
from crl.hooks import Hook, learner_step
from crl.metrics import forgetting as F
from crl.metrics import plasticity as P
from crl.nn.norms import state as norm_state
from crl.options import declare_options, option

TAUS = (0.0, 0.025, 0.1)
SRANK_DELTA = 0.01
DOHARE_THRESHOLD = 0.01  # dormant_dohare: active on fewer than 1% of the probe inputs (Dohare et al. 2024)
STATE_PARAM_METRICS = ("weight_norm", "weight_mean_abs", "weight_rms", "drift_init", "drift_init_rms", "drift_task",
                       "drift_task_rms")
STEP_METRICS = ("grad_norm", "update_ratio")  # of one optimizer step: logged at the update after a metric step
PARAM_METRICS = STATE_PARAM_METRICS + STEP_METRICS
SCALE_INVARIANT_METRICS = ("nap_effective_lr",)  # per scale-invariant (projectable) weight only
OPTIMIZER_METRICS = ("below_eps",)  # of the optimizer's state: RMSprop and Adam-family optimizers only
UNIT_METRICS = tuple(f"dormant_redo_tau{t:g}" for t in TAUS) + ("dormant_dohare", "active_fraction")
PROBE_METRICS = ("probe_loss_reduction", "probe_loss_after", "probe_loss_reduction_init", "probe_loss_after_init",
                 "probe_plasticity_loss")
NETWORK_METRICS = (
    UNIT_METRICS
    + (f"srank_{SRANK_DELTA:g}", "effective_rank", "stable_rank", "feature_norm", "feature_var_per_unit")
    + PARAM_METRICS
    + OPTIMIZER_METRICS
    + ("predictive_entropy",)
    + PROBE_METRICS
)
FORGETTING_METRICS = ("avg_final", "avg_seen", "avg_forgetting", "max_minus_last", "first_minus_last", "bwt", "fwt",
                      "num_tasks")
CORA_SCENARIOS = ("cora-atari", "mini-cora-atari")  # forgetting/cora/* (ForgettingHook)
_FAU_KIND = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}


def _fau_kind(module: nn.Module) -> str | None:
    """FAU definition of an activation module: by type, or its ``fau_kind`` (crl's CReLU: "relu")."""
    return _FAU_KIND.get(type(module)) or getattr(module, "fau_kind", None)


# ----------------------------------------------------------------------------- network introspection


def hidden_layers(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` whose outputs are post-activation hidden features (output layer excluded)."""
    if hasattr(network, "hidden_activations"):
        return list(network.hidden_activations())
    return []


def parameter_layers(network: nn.Module) -> dict[str, list[str]]:
    """Layer name -> names (in ``network.named_parameters()``) of the tensors measured for it."""
    layers: dict[str, list[str]] = {}
    for mod_name, module in network.named_modules():
        own = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        chosen = ["weight"] if "weight" in own else own
        layers[mod_name or "network"] = [f"{mod_name}.{n}" if mod_name else n for n in chosen]
    return layers


# optimizers whose step does not scale with the gradient: NaP's effective learning rate takes its Adam form
_ADAPTIVE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adamax,
             torch.optim.NAdam, torch.optim.RAdam)
_ADAPTIVE_NAMES = ("AdamP", "NorMuon", "Conda")  # crl's own (crl/optim.py, crl/optim_conda.py)


def optimizer_form(optimizer) -> str | None:
    """``"sgd"`` or ``"adaptive"``: which form of :func:`crl.metrics.plasticity.nap_effective_lr` fits
    ``optimizer`` (an optimizer class may say so itself with an ``effective_lr_form`` attribute);
    None for an optimizer of unknown kind (no ``nap_effective_lr`` is logged then)."""
    if optimizer is None:
        return None
    form = getattr(optimizer, "effective_lr_form", None)
    if form in P.OPTIMIZER_FORMS:
        return form
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    if isinstance(optimizer, _ADAPTIVE) or type(optimizer).__name__ in _ADAPTIVE_NAMES:
        return "adaptive"
    return None


def _snapshot(network: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in network.named_parameters()}


# ----------------------------------------------------------------------------- plasticity


class PlasticityHook(Hook):
    """Plasticity metrics every ``every`` learner steps, at each task end and at the run's last step
    (module docstring)."""

    name = "plasticity"

    def __init__(self, every: int, taus=TAUS, srank_delta: float = SRANK_DELTA, probe_every: int = 1,
                 probe_steps: int = 20, probe_lr: float = 1e-3, seed: int = 0):
        if every <= 0:
            raise UserError(f"--metrics-every: must be > 0 for the plasticity hook, got {every}")
        self.every, self.taus, self.srank_delta = int(every), tuple(taus), srank_delta
        self.probe_every, self.probe_steps, self.probe_lr, self.seed = probe_every, probe_steps, probe_lr, seed
        self.next_at = self.every
        self.count = 0  # state-metric steps done
        self.forward_count = 0  # state-metric steps that had a probe batch (the probe runs on every probe_every-th)
        self.seconds = 0.0
        self.logged_at: int | None = None  # learner step of the last state metrics (never twice at one step)
        self.init_params: dict[str, torch.Tensor] | None = None
        self.task_params: dict[str, torch.Tensor] | None = None
        self._armed = False
        self._before: dict[str, torch.Tensor] = {}
        self._grad_sq: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._warned: set[str] = set()

    # ---------------------------------------------------------------- events
    def on_run_start(self, run) -> None:
        net = run.learner.network
        if self.init_params is None:
            self.init_params = _snapshot(net)
        else:  # restored from a checkpoint: follow the network's device
            self.init_params = self._to_device(self.init_params, net)
            if self.task_params is not None:
                self.task_params = self._to_device(self.task_params, net)
            if self._armed:  # checkpointed between a metric step and the next update: its step metrics follow
                self._arm(net)

    def on_task_start(self, run, task_index: int, task) -> None:
        self.task_params = _snapshot(run.learner.network)

    def after_optimizer_step(self, run) -> None:
        step = learner_step(run)
        if not self._armed and step < self.next_at:
            return  # off the metric steps: one comparison
        t0 = time.perf_counter()
        if self._armed:  # the update after a metric step: its gradient norms and relative update
            self._log_step_metrics(run, step)
        if step >= self.next_at:
            self._log_state_metrics(run, step, t0)
            self._arm(run.learner.network)
        self.seconds += time.perf_counter() - t0

    def on_task_end(self, run, task_index: int, task) -> None:
        t0 = time.perf_counter()
        self._log_state_metrics(run, learner_step(run), t0)
        self.seconds += time.perf_counter() - t0

    def on_run_end(self, run) -> None:
        self._disarm()
        t0 = time.perf_counter()
        self._log_state_metrics(run, learner_step(run), t0)  # nothing new after the last task end
        self.seconds += time.perf_counter() - t0

    # ---------------------------------------------------------------- arm / step metrics
    def _arm(self, net: nn.Module) -> None:
        self._disarm()
        self._before = _snapshot(net)
        self._grad_sq = {}
        for name, p in net.named_parameters():
            if p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(partial(self._record_grad, name)))
        self._armed = True

    def _record_grad(self, name: str, param: torch.Tensor) -> None:
        # After accumulation into .grad and before the learner clips it; overwritten by a later
        # backward of the same step, so the value is the gradient the optimizer step used.
        if param.grad is not None:
            self._grad_sq[name] = param.grad.detach().float().pow(2).sum()

    def _disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._armed = False

    def _log_step_metrics(self, run, step: int) -> None:
        self._disarm()
        values: dict[str, float] = {}
        self._guard("parameters", values, self._update_metrics, run.learner.network)
        self._before, self._grad_sq = {}, {}
        self._log(run, values, step)

    @torch.no_grad()
    def _update_metrics(self, net: nn.Module) -> dict[str, float]:
        """``grad_norm`` (before clipping) and ``update_ratio`` of the optimizer step just taken."""
        params = dict(net.named_parameters())
        out: dict[str, float] = {}

        def group(names: list[str], prefix: str) -> None:
            if all(n in self._grad_sq for n in names):
                out[prefix + "grad_norm"] = math.sqrt(sum(float(self._grad_sq[n]) for n in names))
            if all(n in self._before and self._before[n].shape == params[n].shape for n in names):
                before = [self._before[n] for n in names]
                out[prefix + "update_ratio"] = P.update_ratio([params[n] - b for n, b in zip(names, before)], before)

        for layer, names in parameter_layers(net).items():
            group(names, f"{layer}/")
        group([n for n, p in params.items() if p.requires_grad], "")
        return out

    # ---------------------------------------------------------------- state metrics
    def _log_state_metrics(self, run, step: int, t0: float) -> None:
        """Every metric of the network as it is at ``step`` (once per step)."""
        self.next_at = max(self.next_at, (step // self.every + 1) * self.every)  # a task end covers its multiple
        if self.logged_at == step or getattr(run.learner, "network", None) is None:
            return
        net = run.learner.network
        values: dict[str, float] = {}
        self._guard("parameters", values, self._parameter_metrics, run, net)
        probe = self._probe_batch(run)
        if probe is not None:
            self._guard("features", values, self._forward_metrics, run, net, probe)
            if self.probe_steps > 0 and self.forward_count % self.probe_every == 0:
                self._guard("probe", values, self._probe_metrics, net, probe)
            self.forward_count += 1
        self._log(run, values, step)
        self.count += 1
        self.logged_at = step
        # the time of this event so far included; the event adds it to self.seconds when it ends
        run.logger.scalar("perf/metrics_seconds", self.seconds + time.perf_counter() - t0, step)

    @staticmethod
    def _log(run, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            if math.isfinite(value):
                run.logger.scalar(f"plasticity/{tag}", value, step)

    def _guard(self, what: str, values: dict, fn, *args) -> None:
        """Metrics never stop a run: a diverged network (NaN) is warned about once and skipped."""
        try:
            values.update(fn(*args))
        except UserError as err:
            if what not in self._warned:
                self._warned.add(what)
                warnings.warn(f"plasticity metrics ({what}) skipped: {err}", stacklevel=2)

    @staticmethod
    def _probe_batch(run):
        getter = getattr(run.learner, "probe_batch", None)
        return None if getter is None else getter(run.task)

    # ---------------------------------------------------------------- parameter metrics
    @torch.no_grad()
    def _parameter_metrics(self, run, net: nn.Module) -> dict[str, float]:
        params = dict(net.named_parameters())
        out: dict[str, float] = {}

        def group(names: list[str], prefix: str) -> None:
            cur = [params[n] for n in names]
            out[prefix + "weight_norm"] = P.weight_norm(cur)
            out[prefix + "weight_mean_abs"] = P.mean_abs_weight(cur)
            out[prefix + "weight_rms"] = P.rms_weight(cur)
            for key, ref in (("drift_init", self.init_params), ("drift_task", self.task_params)):
                if ref is not None and all(n in ref and ref[n].shape == params[n].shape for n in names):
                    out[prefix + key] = P.drift(cur, [ref[n] for n in names])
                    out[prefix + key + "_rms"] = P.rms_drift(cur, [ref[n] for n in names])

        for layer, names in parameter_layers(net).items():
            group(names, f"{layer}/")
        group([n for n, p in params.items() if p.requires_grad], "")
        out.update(self._nap_effective_lrs(run, net))
        out.update(self._below_eps(run, net))
        return out

    @staticmethod
    def _below_eps(run, net: nn.Module) -> dict[str, float]:
        """``<P>/below_eps`` and the network's ``below_eps``: the share of weights whose adaptive
        optimizer step is SGD-like (:func:`crl.metrics.plasticity.below_eps_fraction`); nothing for
        an optimizer without RMSprop/Adam state (SGD, or before the first update)."""
        optimizer = getattr(run.learner, "optimizer", None)
        if optimizer is None:
            return {}
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        dens: dict[str, tuple[torch.Tensor, float]] = {}
        for name, p in net.named_parameters():
            state, group = optimizer.state.get(p), group_of.get(id(p))
            den = None if not state or group is None else P.adaptive_denominator(state, group)
            if den is not None:
                dens[name] = (den, float(group["eps"]))

        def share(names: list[str]) -> float:
            return P.below_eps_fraction([dens[n][0] for n in names], [dens[n][1] for n in names])

        out = {f"{layer}/below_eps": share(names) for layer, names in parameter_layers(net).items()
               if all(n in dens for n in names)}
        if dens:
            out["below_eps"] = share(list(dens))
        return out

    @staticmethod
    def _nap_effective_lrs(run, net: nn.Module) -> dict[str, float]:
        """``<P>/nap_effective_lr`` of each scale-invariant weight (``network.projectable_weights()``)."""
        getter = getattr(net, "projectable_weights", None)
        optimizer = getattr(run.learner, "optimizer", None)
        form = optimizer_form(optimizer)
        if getter is None or form is None:
            return {}
        lrs = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
        out = {}
        for name, weight in getter():
            if id(weight) in lrs and weight.requires_grad:
                layer = name[: -len(".weight")] if name.endswith(".weight") else name
                out[f"{layer}/nap_effective_lr"] = P.nap_effective_lr(weight, lrs[id(weight)], form)
        return out

    # ---------------------------------------------------------------- forward metrics
    @torch.no_grad()
    def _forward_metrics(self, run, net: nn.Module, probe: torch.Tensor) -> dict[str, float]:
        layers = hidden_layers(net)
        acts: dict[str, torch.Tensor] = {}
        captured: dict[str, torch.Tensor] = {}

        def keep(name, module, inputs, output) -> None:  # returns None: the output is left as is
            acts.setdefault(name, output)

        def keep_features(module, inputs, output) -> None:
            captured.setdefault("features", inputs[0])

        handles = [m.register_forward_hook(partial(keep, name)) for name, m in layers]
        output_layer = getattr(net, "output_layer", None)
        if isinstance(output_layer, nn.Module):
            handles.append(output_layer.register_forward_hook(keep_features))
        try:
            with norm_state.preserved(net), norm_state.eval_mode(net):  # no norm state changes, modes restored
                output = net(probe)
                features = captured.get("features")
                if features is None and hasattr(net, "features"):
                    features = net.features(probe)
        finally:
            for h in handles:
                h.remove()

        out: dict[str, float] = {}
        if acts:
            for name, a in acts.items():
                for t in self.taus:
                    out[f"{name}/dormant_redo_tau{t:g}"] = P.dormant_fraction(a, t)
            for t in self.taus:
                out[f"dormant_redo_tau{t:g}"] = P.overall_dormant_fraction(acts, t)
            fau_sum, fau_units = 0.0, 0
            modules = dict(layers)
            for name, a in acts.items():
                kind = _fau_kind(modules[name])
                if kind is None:
                    continue
                fau = P.active_fraction(a, kind)
                out[f"{name}/active_fraction"] = fau
                fau_sum, fau_units = fau_sum + fau * a.shape[1], fau_units + a.shape[1]
            if fau_units:
                out["active_fraction"] = fau_sum / fau_units
            out.update(self._dohare_dormant(acts, modules))
        if features is not None:
            f = features.detach().flatten(1)
            out[f"srank_{self.srank_delta:g}"] = float(P.srank(f, self.srank_delta))
            out["effective_rank"] = P.effective_rank(f)
            out["stable_rank"] = P.stable_rank(f)
            out["feature_norm"] = P.feature_norm(f)
            out["feature_var_per_unit"] = P.per_unit_variance(f)
        if self._categorical(run, net) and isinstance(output, torch.Tensor):
            out["predictive_entropy"] = P.predictive_entropy(output)
        return out

    @staticmethod
    def _dohare_dormant(acts: dict[str, torch.Tensor], modules: dict[str, nn.Module]) -> dict[str, float]:
        """``dormant_dohare`` (active on < 1% of the probe inputs, Dohare et al. 2024) of the layers whose
        activation outputs exact zeros (ReLU), per layer and unit-weighted over them."""
        zero_layers = {name: a for name, a in acts.items() if _fau_kind(modules[name]) == "relu"}
        out = {f"{name}/dormant_dohare": P.dohare_dormant_fraction(a, DOHARE_THRESHOLD)
               for name, a in zero_layers.items()}
        if zero_layers:
            out["dormant_dohare"] = P.dohare_dormant_fraction(zero_layers, DOHARE_THRESHOLD)
        return out

    @staticmethod
    def _categorical(run, net) -> bool:
        head = getattr(net, "head", None)
        if head is not None and hasattr(head, "categorical"):
            return bool(head.categorical)
        if not getattr(run.learner, "classifies", True):  # e.g. the regressor: no class logits
            return False
        return getattr(run.scenario, "kind", "rl") == "supervised"  # classifiers output class logits

    def _probe_metrics(self, net: nn.Module, probe: torch.Tensor) -> dict[str, float]:
        """The probe on the network and, as the reference, on a copy at the run's initial parameters
        (the same inputs, noise and steps: a paired comparison)."""
        seed = self.seed + self.count
        r = P.plasticity_probe(net, probe, steps=self.probe_steps, lr=self.probe_lr, seed=seed)
        out = {"probe_loss_reduction": r["reduction"], "probe_loss_after": r["loss_after"]}
        init = self._initial_copy(net)
        if init is not None:
            r0 = P.plasticity_probe(init, probe, steps=self.probe_steps, lr=self.probe_lr, seed=seed)
            out.update(probe_loss_reduction_init=r0["reduction"], probe_loss_after_init=r0["loss_after"],
                       probe_plasticity_loss=r["loss_after"] - r0["loss_after"])
        return out

    @torch.no_grad()
    def _initial_copy(self, net: nn.Module) -> nn.Module | None:
        """A copy of ``net`` with the parameters it had at the start of the run (buffers as they are now)."""
        params = dict(net.named_parameters())
        if self.init_params is None or any(n not in self.init_params or self.init_params[n].shape != p.shape
                                           for n, p in params.items()):
            return None
        copy_ = copy.deepcopy(net)
        for n, p in copy_.named_parameters():
            p.copy_(self.init_params[n])
        return copy_

    # ---------------------------------------------------------------- resume
    @staticmethod
    def _to_device(params: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
        dev = {n: p.device for n, p in net.named_parameters()}
        return {n: t.to(dev.get(n, t.device)) for n, t in params.items()}

    def state_dict(self) -> dict[str, Any]:
        cpu = lambda d: None if d is None else {k: v.cpu() for k, v in d.items()}  # noqa: E731
        return {"next_at": self.next_at, "count": self.count, "forward_count": self.forward_count,
                "seconds": self.seconds, "logged_at": self.logged_at, "armed": self._armed,
                "init_params": cpu(self.init_params), "task_params": cpu(self.task_params)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.next_at, self.count, self.seconds = state["next_at"], state["count"], state["seconds"]
            self.forward_count = state.get("forward_count", 0)
            self.logged_at = state.get("logged_at")
            self._armed = state.get("armed", False)  # re-armed on the network at on_run_start
            self.init_params, self.task_params = state["init_params"], state["task_params"]


# ----------------------------------------------------------------------------- forgetting


def stream_columns(run) -> list[int]:
    """Scenario-task column of each stream position (cycles unrolled)."""
    names = [t.name for t in run.scenario.tasks]
    return [names.index(t.name) for t in run.stream]


def stream_matrix(eval_matrix: Any, columns: list[int], rows: int) -> np.ndarray:
    """Square ``rows x rows`` matrix over stream positions: ``S[i, j] = E[i, columns[j]]``."""
    e = np.asarray(eval_matrix, dtype=np.float64)[:rows]
    return e[:, columns[:rows]]


class ForgettingHook(Hook):
    """``forgetting/*`` from the eval matrix rows so far, at each task end and at run end
    (and ``forgetting/hns/*``, ``forgetting/cora/*`` on normalised RL scores, module docstring)."""

    name = "forgetting"

    def __init__(self, eval_at_init: bool = True):
        self.eval_at_init = eval_at_init
        self.init_scores: list[float] | None = None
        self.max_abs: list[float] | None = None  # CORA's scale: max |score| per scenario task over all evals
        self._logged: tuple[int, int] | None = None  # (rows, step) logged by this process

    def on_run_start(self, run) -> None:
        if self.eval_at_init and self.init_scores is None and run.global_step == 0 and len(run.stream) > 1:
            self.init_scores = [float(s) for s in run.evaluate()]

    def on_eval(self, run, scores: list[float]) -> None:
        if self.max_abs is None:
            self.max_abs = [0.0] * len(scores)
        self.max_abs = [max(m, abs(float(x))) if math.isfinite(float(x)) else m for m, x in zip(self.max_abs, scores)]

    def on_task_end(self, run, task_index: int, task) -> None:
        self.log(run, task_index + 1)

    def on_run_end(self, run) -> None:
        filled = int((~np.isnan(np.asarray(run.eval_matrix, dtype=np.float64))).any(axis=1).sum())
        if filled and self._logged != (filled, run.global_step):
            self.log(run, filled)

    def scales(self, run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{prefix: (low, high)}`` per scenario task of each normalisation that applies to this run."""
        from crl.metrics.human_normalized import REFERENCE_SCORES

        tasks = run.scenario.tasks
        out = {}
        games = [getattr(t, "info", {}).get("game") for t in tasks]
        if getattr(run.scenario, "kind", "rl") == "rl" and all(g in REFERENCE_SCORES for g in games):
            out["hns/"] = (np.array([REFERENCE_SCORES[g][0] for g in games]),
                           np.array([REFERENCE_SCORES[g][1] for g in games]))
        if getattr(run.scenario, "name", "") in CORA_SCENARIOS and self.max_abs is not None:
            high = F.cora_scale(self.max_abs)
            if not np.isnan(high).any():
                out["cora/"] = (np.zeros(len(tasks)), high)
        return out

    def values(self, run, rows: int, scale: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        cols = stream_columns(run)
        R = stream_matrix(run.eval_matrix, cols, rows)
        baseline = None if self.init_scores is None else [self.init_scores[c] for c in cols[:rows]]
        if scale is not None:  # per-task affine map to a common scale (normalize_returns)
            low, high = scale[0][cols[:rows]], scale[1][cols[:rows]]
            R = F.normalize_returns(R, low, high)
            if baseline is not None:
                baseline = F.normalize_returns(np.asarray(baseline), low, high)
        s = F.summarize(R, baseline=baseline)
        out = {"avg_final": s["avg_final"], "avg_seen": float(F.average_seen(R)[-1]),
               "avg_forgetting": s["avg_forgetting"], "max_minus_last": s["forgetting_max_minus_last"],
               "first_minus_last": s["forgetting_first_minus_last"], "bwt": s["bwt"],
               "num_tasks": float(s["num_tasks"])}
        if baseline is not None:
            out["fwt"] = s["fwt"]
        return {k: v for k, v in out.items() if v is not None}

    def log(self, run, rows: int) -> None:
        for prefix, scale in [("", None), *self.scales(run).items()]:
            for key, value in self.values(run, rows, scale).items():
                if math.isfinite(value) and not (prefix and key == "num_tasks"):
                    run.logger.scalar(f"forgetting/{prefix}{key}", value, run.global_step)
        self._logged = (rows, run.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"init_scores": self.init_scores, "max_abs": self.max_abs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.init_scores = state["init_scores"]
            self.max_abs = state.get("max_abs")  # absent in checkpoints written before it existed


# ----------------------------------------------------------------------------- TensorBoard views


def _rx(tag: str) -> str:
    return re.escape(tag) + "$"


def scalars_layout(network: nn.Module | None) -> dict[str, dict[str, list]]:
    """Custom-scalars layout: network-level plasticity, one category per layer, forgetting, eval.

    Chart entries are regular expressions (TensorBoard matches them from the start of a tag).
    A hidden layer's category also holds its parameter layers (``<L>.layer``, ``<L>.norm``...).
    """
    p = "plasticity/"
    layout: dict[str, dict[str, list]] = {
        "plasticity: network": {
            "dormant units (ReDo, unit-weighted)": ["Multiline", [re.escape(p) + r"dormant_redo_tau[^/]*$"]],
            "active fraction": ["Multiline", [_rx(p + "active_fraction")]],
            "feature rank": ["Multiline", [_rx(f"{p}srank_{SRANK_DELTA:g}"), _rx(p + "effective_rank"),
                                           _rx(p + "stable_rank")]],
            "features": ["Multiline", [_rx(p + "feature_norm"), _rx(p + "feature_var_per_unit")]],
            "dormant units (Dohare et al.)": ["Multiline", [_rx(p + "dormant_dohare")]],
            "weight norm and drift": ["Multiline", [_rx(p + m) for m in ("weight_norm", "drift_init", "drift_task")]],
            "weight magnitude and drift per parameter": ["Multiline", [_rx(p + m) for m in (
                "weight_mean_abs", "weight_rms", "drift_init_rms", "drift_task_rms")]],
            "gradient norm (before clipping)": ["Multiline", [_rx(p + "grad_norm")]],
            "relative update ||dW||/||W||": ["Multiline", [_rx(p + "update_ratio")]],
            "share of weights below the optimizer's eps": ["Multiline", [_rx(p + "below_eps")]],
            "predictive entropy": ["Multiline", [_rx(p + "predictive_entropy")]],
            "probe-task plasticity": ["Multiline", [_rx(p + m) for m in PROBE_METRICS]],
        }
    }
    if network is not None:
        hidden = [name for name, _ in hidden_layers(network)]
        owners: dict[str, list[str]] = {h: [] for h in hidden}
        for layer in parameter_layers(network):
            owner = next((h for h in hidden if layer == h or layer.startswith(h + ".")), None)
            owners.setdefault(owner or layer, [])
        for layer in owners:
            base = re.escape(p + layer) + (r"(\.[^/]+)?/" if layer in hidden else "/")
            charts = {}
            if layer in hidden:
                charts["dormant units (ReDo)"] = ["Multiline", [base + r"dormant_redo_tau[^/]*$"]]
                charts["dormant units (Dohare et al.)"] = ["Multiline", [base + "dormant_dohare$"]]
                charts["active fraction"] = ["Multiline", [base + "active_fraction$"]]
            charts["weight norm"] = ["Multiline", [base + "weight_norm$"]]
            charts["weight magnitude (mean |w|, RMS)"] = ["Multiline", [base + "weight_(mean_abs|rms)$"]]
            charts["drift (init, task start)"] = ["Multiline", [base + "drift_(init|task)$"]]
            charts["RMS drift (init, task start)"] = ["Multiline", [base + "drift_(init|task)_rms$"]]
            charts["gradient norm (before clipping)"] = ["Multiline", [base + "grad_norm$"]]
            charts["relative update ||dW||/||W||"] = ["Multiline", [base + "update_ratio$"]]
            charts["NaP effective learning rate"] = ["Multiline", [base + "nap_effective_lr$"]]
            charts["share of weights below the optimizer's eps"] = ["Multiline", [base + "below_eps$"]]
            layout[f"plasticity: {layer}"] = charts
    f = "forgetting/"
    layout["forgetting"] = {
        "forgetting": ["Multiline", [_rx(f + m) for m in ("max_minus_last", "first_minus_last", "avg_forgetting")]],
        "average score": ["Multiline", [_rx(f + "avg_final"), _rx(f + "avg_seen")]],
        "transfer": ["Multiline", [_rx(f + "bwt"), _rx(f + "fwt")]],
        "tasks trained": ["Multiline", [_rx(f + "num_tasks")]],
    }
    layout["eval"] = {"score per task": ["Multiline", [r"eval/[^/]+/score$"]]}
    return layout


def eval_matrix_figure(matrix: Any, row_labels: list[str], col_labels: list[str]):
    """Heatmap of ``R[i, j]`` (not-yet-evaluated rows blank), annotated when small."""
    from matplotlib.figure import Figure

    R = np.asarray(matrix, dtype=np.float64)
    rows, cols = R.shape
    fig = Figure(figsize=(max(4.0, 1.0 + 0.7 * cols), max(3.0, 1.0 + 0.45 * rows)), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(cols), col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(rows), row_labels, fontsize=8)
    ax.set_xlabel("evaluated task j")
    ax.set_ylabel("after training stream position i")
    ax.set_title("eval matrix R[i, j]", fontsize=9)
    if rows <= 16 and cols <= 16:
        finite = R[np.isfinite(R)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(R[i, j]):
                    ax.text(j, i, f"{R[i, j]:.3g}", ha="center", va="center", fontsize=7,
                            color="black" if R[i, j] > mid else "white")
    fig.tight_layout()
    return fig


def hparam_values(cfg) -> dict[str, Any]:
    """Every config field, as the HParams plugin accepts them (int, float, str, bool)."""
    out = {}
    for key, value in cfg.to_dict().items():
        out[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def final_metric_tags(latest: dict[str, float]) -> dict[str, float]:
    """Latest values of the tags the HParams table shows (finite ones only)."""
    keep = {}
    for tag, value in latest.items():
        network_level = tag.startswith("plasticity/") and tag.count("/") == 1
        if (tag.startswith(("eval/", "forgetting/", "train/episode_return")) or network_level) and math.isfinite(value):
            keep[tag] = value
    return keep


class TensorBoardViews(Hook):
    """Custom-scalars layout at run start, eval-matrix image at task ends, HParams at run end."""

    name = "tensorboard_views"

    def __init__(self):
        self._image_at: int | None = None

    def on_run_start(self, run) -> None:
        run.logger.custom_scalars(scalars_layout(getattr(run.learner, "network", None)))

    def on_task_end(self, run, task_index: int, task) -> None:
        self._image(run)

    def on_run_end(self, run) -> None:
        if self._image_at != run.global_step:
            self._image(run)
        run.logger.hparams(hparam_values(run.config), final_metric_tags(run.logger.latest))
        run.logger.flush()

    def _image(self, run) -> None:
        cycles = getattr(run.scenario, "cycles", 1)
        n = len(run.scenario.tasks)
        rows = [t.name if cycles == 1 else f"{t.name} (cycle {i // n})" for i, t in enumerate(run.stream)]
        fig = eval_matrix_figure(run.eval_matrix, rows, [t.name for t in run.scenario.tasks])
        run.logger.figure("eval_matrix", fig, run.global_step)
        self._image_at = run.global_step


# ----------------------------------------------------------------------------- entry point


@dataclasses.dataclass
class MetricsOptions:
    """Cadence of the plasticity metrics (every run has them)."""

    metrics_every: int = option(10_000, "learner steps (env steps in RL, updates in supervised runs) between "
                                        "plasticity metrics, also logged at each task end (0 = off)",
                                check="non_negative")
    probe_steps: int = option(20, "plasticity probe: Adam steps a copy of the network takes on random regression "
                                  "targets (Lyle et al. 2023) at a metric step (0 = no probe)", check="non_negative")
    probe_every: int = option(1, "plasticity probe on every Nth metric step (the other metrics run on each one)",
                              check="positive")


declare_options(MetricsOptions, "metrics", in_play=lambda cfg: True)


def default_hooks(cfg) -> list[Hook]:
    """Hooks every run gets (``crl.api.extra_hooks``): forgetting, TensorBoard views and, when
    ``cfg.metrics_every > 0``, plasticity metrics at that cadence."""
    hooks: list[Hook] = []
    if cfg.metrics_every > 0:
        hooks.append(PlasticityHook(cfg.metrics_every, probe_every=cfg.probe_every, probe_steps=cfg.probe_steps,
                                    seed=cfg.seed))
    from crl.metrics.human_normalized import HumanNormalizedScores

    hooks += [HumanNormalizedScores(), ForgettingHook(), TensorBoardViews()]
    return hooks
