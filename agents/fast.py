"""Speed helpers of the DQN learner (config section "speed"); none of them changes the math.

* :func:`use_fused_kernel`: Adam/AdamW through PyTorch's fused implementation (one kernel
  over all parameters instead of a Python loop over them; same update rule, equal to float
  rounding). On the 2-core CPU of docs/results/throughput.md it cut the optimizer step from
  ~17 ms to ~1.4 ms of a ~90-120 ms Nature-CNN update.
* :func:`channels_last`: image batches in channels-last layout, to match conv weights
  converted with ``module.to(memory_format=torch.channels_last)``; oneDNN (CPU) and cuDNN
  (GPU) pick faster convolution kernels for it. Same values, another memory layout.
* :data:`PER_SAMPLE_NORMS`: norms whose output for a sample depends on that sample only, so
  that one forward over ``cat([obs, next_obs])`` equals two forwards (``fused_forward``) and
  a captured forward stays valid (``cuda_graphs``). Batch-statistics norms (BatchNorm,
  EvoNorm-B0, PowerNorm, ...) would see other statistics, or keep Python-side counters.
* :func:`compile_optimizer_step` (``--compile-optimizer``): the optimizer step compiled into one
  fused kernel (the MinAtar preset's default; ``scripts/bench_minatar.py``).
* :func:`set_mode`: train/eval mode switched without walking the module tree.
* :class:`GraphedLoss` (``--cuda-graphs``): the loss, forward and backward of an update
  captured once in a CUDA graph and replayed on each new batch (Nguyen et al., "Accelerating
  PyTorch with CUDA Graphs", PyTorch blog 2021; the "partial-network capture" pattern of the
  ``torch.cuda.graphs`` docs). Gradient clipping, the NaN guard and the optimizer step stay
  eager, so learning-rate schedules and interventions that touch the optimizer work as before.

Throughput numbers and what helped where: ``scripts/bench_throughput.py``.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from crl.logging import quiet_logger
from crl.nn import module_walk
from crl.options import option

PER_SAMPLE_NORMS = frozenset({"none", "layernorm", "nap", "rmsnorm", "groupnorm", "evonorm-s0"})
# BatchNorm's statistics update is an in-place tensor op, so a captured forward replays it exactly
GRAPH_SAFE_NORMS = PER_SAMPLE_NORMS | {"batchnorm"}


@dataclass
class SpeedOptions:
    """Speed; none changes the math; defaults: the fastest measured on CPU."""

    channels_last: bool = option(True, "conv torsos: weights and image batches in channels-last layout (faster convs)")
    overlap_env: bool = option(True, "ale-py vector env: step it (send/recv) while the due updates run, which then "
                                     "sample replay without that env step (1.08x env steps/s on the idle 2-core CPU)")
    fused_forward: bool = option(False, "double DQN: one online forward over obs and next_obs (fewer GPU launches; "
                                        "more backward work on CPU); only with per-sample norms")
    compile: bool = option(False, "torch.compile the online and target networks (minutes of compiling; no gain "
                                  "measured on CPU)")
    compile_optimizer: bool = option(False, "torch.compile the optimizer step: one fused kernel over all parameters "
                                            "(7-10x faster step on CPU; 15-70 s of compiling at the first update; "
                                            "float rounding may differ from eager)")
    cuda_graphs: bool = option(False, "CUDA: capture the update's forward and backward once, replay it on each batch")
    amp_bf16: bool = option(False, "bfloat16 autocast of the network forwards; value-head losses stay float32 "
                                   "(changes numerics; slower on CPU without AMX)")


def use_fused_kernel(optimizer: torch.optim.Optimizer) -> bool:
    """Switch a fresh Adam/AdamW to its fused kernel; returns whether it did.

    ``fused`` is a documented constructor option of both classes, read from each param
    group at every step; setting it on the groups before the first step is what the
    constructor would have done. Other optimizers (SGD, AdamP, NorMuon) are left alone.
    """
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or optimizer.state:
        return False
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if any(g.get("differentiable") for g in optimizer.param_groups) or not all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        return False
    for group in [*optimizer.param_groups, optimizer.defaults]:
        group["foreach"], group["fused"] = False, True
    return True


def tensor_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Each param group's lr as a 0-dim tensor (again after ``optimizer.load_state_dict``, which
    restores the saved groups)."""
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]))


def compile_optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """Replace ``optimizer.step`` by its ``torch.compile``'d version (``--compile-optimizer``).

    Eager optimizers run one kernel per elementwise operation (centered RMSprop: about seven
    passes over every parameter tensor); the compiled step fuses them into one loop ("Compiling
    the optimizer with torch.compile", PyTorch tutorials). Measured on the 2-core CPU with the
    MinAtar network (132k parameters): 0.48 ms against 4.6 ms per step. The learning rate of each
    param group becomes a 0-dim tensor that the LR schedule updates in place, so a schedule
    never triggers a recompile. If compiling fails (e.g. no C++ compiler), the step warns once
    and stays eager.
    """
    tensor_lrs(optimizer)
    eager = optimizer.step
    compiled = torch.compile(eager)
    first = True

    def step(*args, **kwargs):
        nonlocal compiled, first
        if compiled is not None:
            try:
                if first:  # compiling: torch's informational warnings (profiler hooks, no CUDA) are not the user's
                    first = False
                    with quiet_logger("torch"):
                        return compiled(*args, **kwargs)
                return compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any backend failure: fall back, say so once
                warnings.warn(f"--compile-optimizer: compiling the optimizer step failed "
                              f"({str(err).splitlines()[0][:200]}); it runs eagerly", stacklevel=2)
                compiled = None
        return eager(*args, **kwargs)

    optimizer.step = step


def set_mode(net: nn.Module, training: bool) -> None:
    """``net.train(training)``, done cheaply.

    ``Module.train`` walks and sets every submodule: ~25 us for the MinAtar network each time,
    and the mode changes twice per env step (eval to act, train to update) on a path whose
    whole step takes ~3 ms. Here the modules come from a cached list
    (:mod:`crl.nn.module_walk`) and each is checked, so a submodule left in another mode (e.g.
    by user code) is still caught. When no module overrides ``train``, each one's ``training``
    flag is set directly, which is all ``Module.train`` does to it; otherwise ``net.train``
    runs, so an override still sees the switch.
    """
    modules = module_walk.modules(net)
    if all(m.training == training for m in modules):
        return
    if not all(type(m).train is nn.Module.train for m in modules):
        net.train(training)
        return
    for m in modules:
        m.__dict__["training"] = training  # Module.__init__ keeps the flag in the instance dict


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d image batch in channels-last layout (same values); anything else unchanged.

    Stacking the channel planes along a new last axis writes the same memory as
    ``x.contiguous(memory_format=torch.channels_last)``, 2.5x faster for a uint8 Atari batch on
    CPU (0.5 ms vs 1.24 ms for 32 x 4 x 84 x 84, measured).
    """
    if x.dim() != 4 or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return torch.stack(x.unbind(1), dim=-1).permute(0, 3, 1, 2)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast of the network forwards (``amp_bf16``); the value heads compute their
    softmax, log-softmax and losses in float32 themselves (``crl/nn/heads.py``)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


class GraphedLoss:
    """``per_sample_loss(batch).mean().backward()`` captured in one CUDA graph.

    Usage in :meth:`agents.dqn.DQNAgent.update`: ``loss = graphed(batch)`` replaces the
    forward, the mean and ``backward()`` (the gradients land in ``p.grad`` as usual); the
    first call captures. Before capturing, three warm-up passes run on a side stream with
    throwaway gradients, and every buffer of both networks (e.g. BatchNorm statistics) is
    restored afterwards, so capturing changes no state. :meth:`usable` says when the eager
    path must run instead: hooks on the network or its parameters (the plasticity metrics
    arm such hooks for one update), or a hook that transforms the loss (e.g. meta-rescale).
    Parameters replaced by new tensors (not updated in place) trigger a new capture.
    """

    def __init__(self, agent):
        self.agent = agent
        self.graph = None
        self.static: dict[str, torch.Tensor] = {}
        self.loss = None
        self.grads: list[torch.Tensor] = []
        self._ptrs: list[int] = []
        self._refused = False

    @staticmethod
    def unsupported(cfg, device: torch.device) -> str | None:
        """Why ``--cuda-graphs`` cannot apply to this config (None if it can)."""
        if device.type != "cuda":
            return "needs --device cuda"
        if cfg.norm not in GRAPH_SAFE_NORMS:
            return (f"--norm {cfg.norm} keeps per-update state outside tensors; supported norms: "
                    f"{', '.join(sorted(GRAPH_SAFE_NORMS))}")
        return None

    def usable(self) -> bool:
        agent = self.agent
        if self._refused:
            return False
        hooks = agent.run.hooks if agent.run is not None else None
        from crl.hooks import Hook

        if hooks is not None and any(type(h).transform_loss is not Hook.transform_loss for h in hooks.hooks):
            warnings.warn("--cuda-graphs: a hook transforms the loss; updates run eagerly", stacklevel=3)
            self._refused = True
            return False
        for net in (agent.network, agent.target):
            if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in net.modules()):
                return False
        return not any(getattr(p, "_post_accumulate_grad_hooks", None) or p._backward_hooks
                       for p in agent.network.parameters())

    def reset(self) -> None:
        self.graph = None

    def __call__(self, batch: dict) -> torch.Tensor:
        params = list(self.agent.network.parameters())
        if self.graph is None or self._ptrs != [p.data_ptr() for p in params]:
            try:
                self._capture(batch, params)
            except RuntimeError as err:  # e.g. an op that syncs or is not capturable: stay eager from now on
                warnings.warn(f"--cuda-graphs: capture failed ({str(err).splitlines()[0]}); updates run eagerly",
                              stacklevel=3)
                self._refused, self.graph = True, None
                for p in params:
                    p.grad = None
                self.static = batch
                return self._forward_backward()
        for k, v in self.static.items():
            v.copy_(batch[k])
        for p, g in zip(params, self.grads):  # an eager update in between may have set them to None
            p.grad = g
        self.graph.replay()
        return self.loss

    def _capture(self, batch: dict, params: list[nn.Parameter]) -> None:
        agent = self.agent
        nets = (agent.network, agent.target)
        live = [b for n in nets for b in n.buffers()]
        saved = [b.detach().clone() for b in live]
        self.static = {k: v.clone() for k, v in batch.items()}
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    for p in params:
                        p.grad = None
                    self._forward_backward()
            torch.cuda.current_stream().wait_stream(side)
            for p in params:
                p.grad = None
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.loss = self._forward_backward()
        finally:  # warm-up passes must not count: restore e.g. BatchNorm statistics
            with torch.no_grad():
                for b, old in zip(live, saved):
                    b.copy_(old)
        self.graph = graph
        self.grads = [p.grad for p in params]
        self._ptrs = [p.data_ptr() for p in params]

    def _forward_backward(self) -> torch.Tensor:
        agent = self.agent
        with autocast(agent.device, agent.cfg.amp_bf16):
            per_sample, _ = agent.per_sample_loss(self.static)
        loss = per_sample.mean()
        loss.backward()
        return loss.detach()
