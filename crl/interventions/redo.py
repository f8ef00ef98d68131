"""ReDo: Recycling Dormant neurons (variant: threshold ReDo, every unit with score <= tau).

Sokar, Agarwal, Castro, Evci, "The Dormant Neuron Phenomenon in Deep Reinforcement
Learning", ICML 2023, arXiv 2302.12902; code ``google/dopamine: dopamine/labs/redo/``
(``weight_recyclers.py``, JAX). Written for crl from the paper and the behaviour of that code.

Every ``--redo-every`` optimizer updates (default 1,000, the paper's DQN recycling period as
we read it; the Dopamine class default is 200,000):

1. **Score** on a fresh batch of ``--redo-batch-size`` (256) inputs drawn at every recycle,
   ``run.learner.scoring_batch(size)``: for DQN a uniform sample of replay transitions
   collected in the *current task* (task ids are stored with each transition), as
   Dopamine's ReDo agents draw a new replay batch at each recycle (``RecycledDQNAgent.
   get_intermediates``, ``batch_size_statistics=256``; with task ids known we
   keep to the current task's data; Dopamine has one task); for the classifier a uniform
   sample of the current task's training inputs. The recycle is skipped while there is none
   (a learner without ``scoring_batch`` falls back to its ``probe_batch(task)``). For every hidden layer,
   ``s_i = E|h_i| / ((1/H) sum_k E|h_k|)`` of the post-activation output (conv: per channel,
   mean over batch and positions), scored by :func:`crl.metrics.plasticity.dormant_units_mask`;
   unit ``i`` is dormant iff ``s_i <= tau`` (``--redo-tau``, default 0.1, the paper's
   threshold for its DQN recycling experiments as we read them; Dopamine's class default is
   0.0). The forward pass runs in the network's current mode (training mode during
   training: the activations the updates see), without gradient, inside
   :func:`crl.nn.norms.state.preserved`: every norm state (buffers such as running statistics,
   and Python counters such as PowerNorm's and UN's ``_t`` or AdaB2N's batch counter and eta)
   is bit-identical after it. Dopamine's networks have no norms, so its scoring pass has no
   such state to leave alone.
2. **Incoming weights** of each dormant unit (its row of the Block's ``Linear`` or its output
   channel of the Block's ``Conv2d``) are drawn fresh from the layer's own initialiser
   (``--redo-init layer``: ``reset_parameters`` of a copy of the layer, PyTorch's default
   init, the one the network was built with) or from ``xavier_uniform`` (``--redo-init
   xavier``, what the Dopamine code uses); the unit's bias is set to 0 (as Dopamine). When the
   Block has a norm, that unit's entries of every norm parameter and buffer of exactly one
   value per unit (gain gamma, offset beta, BatchNorm running mean/var, EvoNorm's v, ...) go
   back to their values at the start of the run; norms whose parameters are not per unit
   (LayerNorm over C,H,W elementwise) are left alone.
3. **Outgoing weights** are zeroed: the consumer layer's input columns of that unit (dense ->
   dense and last hidden -> output: one column; conv -> conv: one input channel; conv ->
   linear: all ``H*W`` flattened positions of that channel, channel-major as ``nn.Flatten``).
   This runs after all incoming re-inits, so a weight from a recycled unit into another
   recycled unit is 0 too: recycling leaves the network's outputs unchanged on any input
   for which the recycled units' new activations do not reach the output (they never do).
4. **Optimizer state** of the touched rows/columns is zeroed (every state tensor of the
   parameter's shape: Adam ``exp_avg`` and ``exp_avg_sq``, SGD momentum, NorMuon's momentum;
   per-row state such as NorMuon's second moment: the recycled rows only). Step counters are
   kept, as in the Dopamine code.

**Activations** (``--activation``): the score is taken on the activation's output as above
(mean |h|, so leaky ReLU, GELU and CRReLU units are dormant when their output is near zero on
average). With CReLU a pre-activation unit feeds two outputs, ``relu(x_i)`` and ``relu(-x_i)``;
the unit recycled is the pre-activation one, scored by the sum of its two halves' mean
|output| (``E|x_i|``), and its outgoing weights are the consumer's columns of both halves.
**Weight reparameterization** (``--reparam``): fresh rows are written into the stored tensor
``V`` through the parametrization's ``right_inverse`` and zeros stay zeros
(:mod:`crl.nn.reparam`); the optimizer state zeroed is ``V``'s.

The **output layer is never recycled** (only its input columns of recycled last-hidden units
are zeroed). Which layer consumes which (derived from the module order, :func:`recycle_map`):

* ``mlp``: block i -> block i+1's layer; last block -> output layer.
* ``nature``: conv i -> conv i+1; last conv -> the dense block's ``Linear`` (flattened);
  dense block -> output layer.
* ``impala``: only the **first conv of each residual block** (``conv1``, consumer: that
  block's ``conv2``) and the dense block (consumer: output layer). The stage convs and
  ``conv2`` write into the residual stream, whose "units" are shared by the skip path and
  have no single consumer, so they are not recycled (Dopamine's ResNet setting likewise
  recycles only selected convs and the dense layer).
* ``--moe softmoe``: the dense block is a SoftMoE: its experts and the last conv of the
  encoder (consumed by the MoE) are not recycled.

``train/redo_recycled_fraction`` logs the fraction of recyclable units reset at each recycle.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crl.errors import UserError
from crl.hooks import Hook
from crl.interventions.reset import _log
from crl.metrics.plasticity import dormant_units_mask
from crl.nn.blocks import Block
from crl.nn.norms import state as norm_state
from crl.nn.reparam import fresh_weight, stored_weight, to_stored
from crl.options import option
from crl.registry import INTERVENTIONS

INITS = ("layer", "xavier")


@dataclass
class Recyclable:
    """A hidden Block whose units can be recycled, and the layer that reads its output."""

    name: str
    block: Block
    consumer: nn.Module  # nn.Linear or nn.Conv2d
    positions: int  # consumer input columns per unit (H*W for conv -> linear, else 1)
    width: int = 1  # features the activation returns per unit (2 for CReLU: relu(x_i) and relu(-x_i))

    @property
    def units(self) -> int:
        layer = self.block.layer
        return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _dense_block(torso: nn.Module) -> Block | None:
    """The Block inside ``torso.dense`` when it is ``Flatten -> Block`` (not a SoftMoE)."""
    dense = getattr(torso, "dense", None)
    if isinstance(dense, Block):
        return dense
    if isinstance(dense, nn.Sequential):
        blocks = [m for m in dense if isinstance(m, Block)]
        if len(blocks) == 1 and all(isinstance(m, (Block, nn.Flatten)) for m in dense):
            return blocks[0]
    return None


def _has_act(block: Block) -> bool:
    return not isinstance(block.act, nn.Identity) or block.fused_activation


def recycle_map(network: nn.Module) -> list[Recyclable]:
    """Each recyclable hidden Block of a crl network with its consumer layer (see module doc)."""
    torso = getattr(network, "torso", None)
    if torso is None:
        raise UserError("--intervention redo: the network has no 'torso'; ReDo knows the mlp, nature and impala torsos")
    output = network.output_layer
    pairs: list[tuple[Block, nn.Module]] = []

    def chain(blocks: list[Block], last_consumer: nn.Module | None) -> None:
        for a, b in zip(blocks, blocks[1:]):
            pairs.append((a, b.layer))
        if blocks and last_consumer is not None:
            pairs.append((blocks[-1], last_consumer))

    dense = _dense_block(torso)
    blocks = getattr(torso, "blocks", None)
    if isinstance(blocks, nn.Sequential) and all(isinstance(m, Block) for m in blocks):
        chain(list(blocks), output)  # MLP torso
    encoder = getattr(torso, "encoder", None)
    if isinstance(encoder, nn.Sequential) and len(encoder) and all(isinstance(m, Block) for m in encoder):
        chain(list(encoder), dense.layer if dense is not None else None)  # plain conv stack (nature)
    for m in torso.modules():  # residual blocks (impala): conv1 -> conv2
        conv1, conv2 = getattr(m, "conv1", None), getattr(m, "conv2", None)
        if isinstance(conv1, Block) and isinstance(conv2, Block):
            pairs.append((conv1, conv2.layer))
    if dense is not None:
        pairs.append((dense, output))

    names = {id(m): n for n, m in network.named_modules()}
    out = []
    for block, consumer in pairs:
        if not _has_act(block) or not isinstance(block.layer, (nn.Linear, nn.Conv2d)):
            continue
        rec = Recyclable(names[id(block)], block, consumer, 1, int(getattr(block.act, "width", 1)))
        units = rec.units * rec.width  # features the consumer reads
        if isinstance(block.layer, nn.Conv2d) and isinstance(consumer, nn.Linear):
            if consumer.in_features % units:
                raise RuntimeError(f"redo: {rec.name} has {units} channels but its consumer takes "
                                   f"{consumer.in_features} inputs")
            rec.positions = consumer.in_features // units
        else:
            fan_in = consumer.in_features if isinstance(consumer, nn.Linear) else consumer.in_channels
            if fan_in != units:
                raise RuntimeError(f"redo: {rec.name} has {units} units but its consumer takes {fan_in}")
        out.append(rec)
    if not out:
        raise UserError("--intervention redo: found no recyclable hidden layer; ReDo supports --torso mlp, nature "
                        "and impala")
    return out


def _per_unit(acts: torch.Tensor, width: int) -> torch.Tensor:
    """Activations of a widening activation folded to one value per pre-activation unit: the sum of
    the |outputs| of unit ``i`` (features ``h * units + i``); for CReLU ``|relu(x)| + |relu(-x)| = |x|``."""
    if width == 1:
        return acts
    return acts.abs().reshape(acts.shape[0], width, -1, *acts.shape[2:]).sum(dim=1)


def _zero_state(optimizer: torch.optim.Optimizer, p: nn.Parameter, dim: int, idx: torch.Tensor) -> None:
    """Zero the optimizer state entries of ``p`` along ``dim`` at ``idx``."""
    for value in optimizer.state.get(p, {}).values():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        if value.shape == p.shape:
            value.index_fill_(dim, idx.to(value.device), 0)
        elif dim == 0 and value.dim() >= 1 and value.shape[0] == p.shape[0]:
            value.index_fill_(0, idx.to(value.device), 0)  # per-row state (NorMuon's second moment)


class ReDo(Hook):
    name = "redo"

    def __init__(self, tau: float = 0.1, every: int = 1000, init: str = "layer", batch_size: int = 256):
        if init not in INITS:
            raise UserError(f"--redo-init: unknown init '{init}'; accepted: {', '.join(INITS)}")
        self.tau, self.every, self.init, self.batch_size = float(tau), int(every), init, int(batch_size)
        self.layers: list[Recyclable] = []
        self.norm_init: dict[str, torch.Tensor] = {}
        self.recycled_total = 0
        self.last_inputs: torch.Tensor | None = None
        self._updates = 0

    # ------------------------------------------------------------------ setup
    def attach(self, network: nn.Module) -> None:
        self.layers = recycle_map(network)
        if not self.norm_init:
            for rec in self.layers:
                for n, t in list(rec.block.norm.named_parameters()) + list(rec.block.norm.named_buffers()):
                    if t.numel() == rec.units:
                        self.norm_init[f"{rec.name}.norm.{n}"] = t.detach().clone()

    def on_run_start(self, run) -> None:
        self.attach(run.learner.network)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def dormant_masks(self, network: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Dormant mask (units,) of every recyclable layer on ``inputs``; every norm state is restored."""
        acts: dict[int, torch.Tensor] = {}
        handles = []
        for i, rec in enumerate(self.layers):
            def grab(_m, _inp, out, i=i):
                acts[i] = out
            handles.append(rec.block.activation_module().register_forward_hook(grab))
        try:
            with norm_state.preserved(network):
                network(inputs)
        finally:
            for h in handles:
                h.remove()
        return [dormant_units_mask(_per_unit(acts[i].float(), rec.width), self.tau)
                for i, rec in enumerate(self.layers)]

    # ------------------------------------------------------------------ recycling
    def _fresh_rows(self, layer: nn.Module) -> torch.Tensor:
        if self.init == "xavier":
            return nn.init.xavier_uniform_(torch.empty_like(layer.weight))
        return fresh_weight(layer)

    @torch.no_grad()
    def recycle(self, network: nn.Module, optimizer: torch.optim.Optimizer | None, inputs: torch.Tensor) -> dict[str, int]:
        """Score on ``inputs`` and recycle every dormant unit; returns dormant counts per layer."""
        masks = self.dormant_masks(network, inputs)
        counts = {}
        for rec, mask in zip(self.layers, masks):
            idx = mask.nonzero().flatten()
            counts[rec.name] = int(idx.numel())
            if idx.numel() == 0:
                continue
            layer = rec.block.layer
            weight = stored_weight(layer)  # V under --reparam: the fresh rows go in through right_inverse
            idx = idx.to(weight.device)
            # incoming: fresh rows / output channels, bias 0
            weight.index_copy_(0, idx, to_stored(layer, self._fresh_rows(layer)).index_select(0, idx))
            if optimizer is not None:
                _zero_state(optimizer, weight, 0, idx)
            if layer.bias is not None:
                layer.bias.index_fill_(0, idx, 0.0)
                if optimizer is not None:
                    _zero_state(optimizer, layer.bias, 0, idx)
            # the unit's norm entries back to their initial values
            for n, t in list(rec.block.norm.named_parameters()) + list(rec.block.norm.named_buffers()):
                init = self.norm_init.get(f"{rec.name}.norm.{n}")
                if init is None or t.numel() != rec.units:
                    continue
                flat = t.view(-1)
                flat.index_copy_(0, idx, init.to(t.device, t.dtype).view(-1).index_select(0, idx))
                if optimizer is not None and isinstance(t, nn.Parameter):
                    for value in optimizer.state.get(t, {}).values():
                        if isinstance(value, torch.Tensor) and value.numel() == t.numel():
                            value.view(-1).index_fill_(0, idx, 0)
        # outgoing, after every incoming re-init (a recycled unit feeding a recycled unit keeps a 0 weight):
        # the consumer's input columns (all flattened positions of a channel)
        for rec, mask in zip(self.layers, masks):
            weight = stored_weight(rec.consumer)  # a reparameterization maps 0 to 0
            idx = mask.nonzero().flatten().to(weight.device)
            if idx.numel() == 0:
                continue
            # the features of unit i: channel/feature h * units + i for each of the activation's `width` outputs
            feats = (torch.arange(rec.width, device=idx.device)[:, None] * rec.units + idx[None, :]).flatten()
            cols = (feats[:, None] * rec.positions + torch.arange(rec.positions, device=idx.device)).flatten()
            weight.index_fill_(1, cols, 0.0)
            if optimizer is not None:
                _zero_state(optimizer, weight, 1, cols)
        return counts

    def after_optimizer_step(self, run) -> None:
        self._updates += 1
        if self._updates % self.every:
            return
        learner = run.learner
        if hasattr(learner, "scoring_batch"):
            inputs = learner.scoring_batch(self.batch_size)
        else:
            inputs = learner.probe_batch(run.task)
        self.last_inputs = inputs  # what the last recycle scored (tests, debugging)
        if inputs is None:
            return
        counts = self.recycle(learner.network, learner.optimizer, inputs)
        recycled = sum(counts.values())
        self.recycled_total += recycled
        _log(run, "train/redo_recycled_fraction", recycled / sum(rec.units for rec in self.layers))

    def state_dict(self):
        return {"norm_init": {k: v.cpu() for k, v in self.norm_init.items()}, "updates": self._updates,
                "recycled_total": self.recycled_total}

    def load_state_dict(self, state):
        if state:
            self.norm_init = dict(state["norm_init"])
            self._updates, self.recycled_total = state["updates"], state["recycled_total"]


@dataclass
class RedoOptions:
    """ReDo's threshold, cadence and re-initialisation (Sokar et al. 2023)."""

    redo_tau: float = option(0.1, "a unit is dormant when its normalised mean |activation| is <= this",
                                  check="non_negative")
    redo_every: int = option(1000, "optimizer updates between recycles", check="positive")
    redo_batch_size: int = option(256, "states scored at each recycle, drawn fresh from the current task's data "
                                       "(Dopamine: batch_size_statistics=256)", check="positive")
    redo_init: str = option("layer", "incoming-weight init of recycled units: layer (the layer's own "
                                     "reset_parameters) or xavier (xavier_uniform, as Dopamine)",
                                     choices=("layer", "xavier"))


@INTERVENTIONS.register("redo", "ReDo (Sokar et al. 2023): every --redo-every updates re-init units with dormant "
                                "score <= --redo-tau (incoming fresh, outgoing 0, Adam moments 0)", options=RedoOptions)
def redo(cfg) -> ReDo:
    if cfg.redo_every <= 0:
        raise UserError(f"--redo-every: must be > 0, got {cfg.redo_every}")
    if not cfg.redo_tau >= 0:
        raise UserError(f"--redo-tau: must be >= 0, got {cfg.redo_tau}")
    return ReDo(cfg.redo_tau, cfg.redo_every, cfg.redo_init, cfg.redo_batch_size)
