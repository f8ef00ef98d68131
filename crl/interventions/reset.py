"""Resets of the last layers (variant: *layer reset*, the "primacy bias" recipe).

Nikishin, Schwarzer, D'Oro, Bacon, Courville, "The Primacy Bias in Deep Reinforcement
Learning", ICML 2022, arXiv 2205.07802; code ``evgenii-nikishin/rl_with_resets`` (JAX, SAC /
DrQ / SPR). The same operation is Dopamine's ``LayerReset`` (``google/dopamine:
dopamine/labs/redo/weight_recyclers.py``). Written for crl from the papers' description,
not from that code.

What it does (``--intervention reset``):

* **When**: at the start of every task after the first (``--reset-every-task``, on by
  default: the continual-learning reading of "periodic" resets) and/or every
  ``--reset-every`` optimizer updates (0 = off; the paper's SAC setting is every 200,000
  updates). The replay buffer is kept, as in the paper.
* **What** (``--reset-layers``): ``output`` (default: the final linear layer), ``last2``
  (output layer + the torso's penultimate block: ``torso.dense`` of conv torsos, the last
  MLP block), or a comma list of module names of the network (``output,torso.dense``).
* **How**: every parameter of the chosen modules is drawn again in place, exactly as at
  construction (each submodule's ``reset_parameters``; BatchNorm running statistics are
  reset with it). A parameter no ``reset_parameters`` covers goes back to its value at the
  start of the run (recorded at ``on_run_start``, kept in checkpoints). Because the
  ``Parameter`` objects are the same, they stay in the optimizer's param groups; their
  optimizer state (Adam moments *and* step counter, NorMuon buffers, ...) starts afresh, as for
  a freshly added parameter: zeroed in place for Adam, AdamW and RMSprop, whose fresh state is
  all zeros (so a compiled optimizer step, ``--compile-optimizer``, is not recompiled at every
  reset), deleted for the others, which re-create it at the next step.
* **Target network** (``--reset-target``, on): if the learner has a ``target`` module with the
  same structure (DQN), the reset modules are copied into it too, so the bootstrap target is
  not computed by the stale head until the next sync (the paper resets online and target
  critics together). Off: the target keeps the old layers until its next copy.
* **Logged**: ``train/reset_count``, the number of resets so far, at the learner step of the reset
  (:func:`crl.hooks.learner_step`), one point per step with the count after every reset of that
  step: a periodic reset's count is written once the learner has moved past its step (or at the
  next task's start, or the run's end; a count still held is kept in checkpoints), so several
  resets at one step (``--num-envs`` > 1 runs several updates per env step; a periodic reset on
  the last update of a task and the reset at the start of the next task) give one point. All are
  real re-initialisations (a later one draws the layers afresh again; their optimizer state is
  already fresh) and all are counted.

This file also holds the re-initialisation helpers used by ReDo and shrink-and-perturb.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from crl.errors import UserError
from crl.hooks import Hook, learner_step
from crl.nn.reparam import fresh_weight, is_reparameterized
from crl.options import option
from crl.registry import INTERVENTIONS


# --------------------------------------------------------------------------- helpers


@torch.no_grad()
def reinitialize_(module: nn.Module, fallback: Mapping[str, torch.Tensor] | None = None) -> None:
    """Re-draw every parameter of ``module`` in place as at construction.

    Each submodule's ``reset_parameters()`` is called (this also resets BatchNorm running
    statistics); a reparameterized weight (``--reparam``) gets a fresh draw of the layer's own
    initialiser, stored as ``right_inverse`` of it after its parametrization was reset.
    Parameters that no ``reset_parameters`` rewrites (detected by pre-filling them with NaN)
    are copied from ``fallback`` (names relative to ``module``), typically their values at the
    start of the run.
    """
    params = dict(module.named_parameters())
    for p in params.values():
        p.fill_(float("nan"))
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    for m in module.modules():  # --reparam: a fresh weight from the layer's initialiser, stored through right_inverse
        if is_reparameterized(m):
            m.weight = fresh_weight(m)
    for name, p in params.items():
        nan = torch.isnan(p)
        if nan.any():
            if fallback is None or name not in fallback:
                raise RuntimeError(f"cannot re-initialise parameter '{name}': its module has no reset_parameters "
                                   "and no initial value was recorded")
            p.copy_(torch.where(nan, fallback[name].to(p.device, p.dtype), p))


def fresh_parameters(module: nn.Module, fallback: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A fresh random initialisation of ``module``'s parameters (the module is not touched)."""
    clone = copy.deepcopy(module)
    reinitialize_(clone, fallback)
    return {n: p.detach() for n, p in clone.named_parameters()}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of all parameters, by name (theta_0 for L2-init, S&P 'fixed', fallbacks)."""
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def sub_mapping(values: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``values`` under module ``prefix``, with names relative to it."""
    if not prefix:
        return dict(values)
    return {n[len(prefix) + 1:]: v for n, v in values.items() if n.startswith(prefix + ".")}


# Optimizers whose state, when first created, is all zeros (step counter included): zeroing it
# in place gives the same next steps as deleting it, and keeps the state's tensors, which a
# compiled step guards on (deleting them recompiled it at every reset; after 8, torch runs it eagerly).
ZERO_FRESH_STATE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)


def forget_optimizer_state(optimizer: torch.optim.Optimizer, params) -> None:
    """Restart the optimizer state of ``params`` (moments and step counters) as if never created."""
    in_place = type(optimizer) in ZERO_FRESH_STATE
    for p in params:
        state = optimizer.state.get(p)
        if in_place and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            for value in state.values():
                value.zero_()
        else:
            optimizer.state.pop(p, None)


def resolve_reset_layers(network: nn.Module, spec: str) -> list[str]:
    """Module names for ``--reset-layers`` ('output', 'last2' or a comma list of module names)."""
    spec = spec.strip()
    modules = dict(network.named_modules())
    if spec == "output":
        return ["output"]
    if spec == "last2":
        torso = getattr(network, "torso", None)
        if torso is not None and hasattr(torso, "dense"):
            return ["torso.dense", "output"]
        if torso is not None and isinstance(getattr(torso, "blocks", None), nn.Sequential) and len(torso.blocks):
            return [f"torso.blocks.{len(torso.blocks) - 1}", "output"]
        raise UserError("--reset-layers: 'last2' needs a torso with a 'dense' or 'blocks' part; name the modules "
                        "instead (e.g. 'output,torso.dense')")
    names = [s.strip() for s in spec.split(",") if s.strip()]
    accepted = ["output", "last2"] + [n for n in modules if n and any(True for _ in modules[n].parameters())]
    bad = [n for n in names if n not in modules or not any(True for _ in modules[n].parameters())]
    if not names or bad:
        raise UserError(f"--reset-layers: unknown module '{', '.join(bad) or spec}'; accepted: "
                        f"{', '.join(accepted)}")
    return names


# --------------------------------------------------------------------------- the hook


class LayerReset(Hook):
    name = "reset"

    def __init__(self, layers: str = "output", every_task: bool = True, every: int = 0, reset_target: bool = True):
        self.layers_spec = layers
        self.every_task = every_task
        self.every = every
        self.reset_target = reset_target
        self.init_values: dict[str, torch.Tensor] = {}
        self.modules: list[str] = []
        self.resets = 0
        self._updates = 0
        self._pending_step: int | None = None  # the step of a count not logged yet (more resets may come at it)

    def on_run_start(self, run) -> None:
        net = run.learner.network
        self.modules = resolve_reset_layers(net, self.layers_spec)
        if not self.init_values:
            self.init_values = snapshot(net)

    def reset(self, learner) -> None:
        """Re-initialise the chosen modules in place and restart their optimizer state."""
        net = learner.network
        for name in self.modules:
            module = net.get_submodule(name)
            reinitialize_(module, sub_mapping(self.init_values, name))
            forget_optimizer_state(learner.optimizer, module.parameters())
            target = getattr(learner, "target", None)
            if self.reset_target and isinstance(target, nn.Module):
                try:
                    target.get_submodule(name).load_state_dict(module.state_dict())
                except (AttributeError, RuntimeError):
                    pass  # a target of another structure: left to the learner's own sync
        self.resets += 1

    def on_task_start(self, run, task_index, task) -> None:
        if self._pending_step != learner_step(run):  # a count of an earlier step (no update since)
            self._flush(run)
        if self.every_task and task_index > 0:
            self.reset(run.learner)
            self._pending_step = None  # this point holds the count after a periodic reset at the same step too
            _log(run, "train/reset_count", self.resets)

    def after_optimizer_step(self, run) -> None:
        if self._pending_step != learner_step(run):  # written once the learner is past its step: one point per step
            self._flush(run)
        self._updates += 1
        if self.every and self._updates % self.every == 0:
            self.reset(run.learner)
            self._pending_step = learner_step(run)

    def on_run_end(self, run) -> None:
        self._flush(run)

    def _flush(self, run) -> None:
        """Log the count held for the step of the last periodic reset, if any."""
        if self._pending_step is not None:
            logger = getattr(run, "logger", None)
            if logger is not None:
                logger.scalar("train/reset_count", self.resets, self._pending_step)
            self._pending_step = None

    def state_dict(self):
        return {"init_values": {k: v.cpu() for k, v in self.init_values.items()}, "resets": self.resets,
                "updates": self._updates, "pending_step": self._pending_step}

    def load_state_dict(self, state):
        if state:
            self.init_values = dict(state["init_values"])
            self.resets, self._updates = state["resets"], state["updates"]
            self._pending_step = state.get("pending_step")  # absent in older checkpoints: logged at once then


def _log(run, tag: str, value: float) -> None:
    """``tag`` at the learner's step (:func:`crl.hooks.learner_step`), the step the event happened at."""
    logger = getattr(run, "logger", None)
    if logger is not None:
        logger.scalar(tag, value, learner_step(run))


@dataclass
class ResetOptions:
    """Which layers are reset, and when (Nikishin et al. 2022)."""

    reset_layers: str = option("output", "output, last2 (output + penultimate block) or comma-separated module names")
    reset_every_task: bool = option(True, "re-initialise at the start of every task after the first")
    reset_every: int = option(0, "also re-initialise every this many optimizer updates (0 = off)", check="non_negative")
    reset_target: bool = option(True, "copy the re-initialised layers into the learner's target network")


@INTERVENTIONS.register("reset", "Primacy-bias resets (Nikishin et al. 2022): re-init --reset-layers at each new task "
                                 "and/or every --reset-every updates, with fresh optimizer state", options=ResetOptions)
def reset(cfg) -> LayerReset:
    if cfg.reset_every < 0:
        raise UserError(f"--reset-every: must be >= 0 (0 = off), got {cfg.reset_every}")
    if not cfg.reset_layers.strip():
        raise UserError("--reset-layers: empty; accepted: output, last2, or comma-separated module names")
    return LayerReset(cfg.reset_layers, cfg.reset_every_task, cfg.reset_every, cfg.reset_target)
