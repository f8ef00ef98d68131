"""The state a norm keeps between forwards, and how to leave it untouched.

Stateful norms (BatchNorm, PowerNorm, Unified Norm, AdaB2N, EvoNorm-B0) keep running
statistics in buffers and, for speed, counters in plain Python attributes (PowerNorm's and
UN's ``_t``, AdaB2N's ``num_batches_tracked``, ``last_eta`` and its last adaptation loss).
A training-mode forward advances both. A learner's update must advance them exactly once
(its one training forward); every other forward (a scoring pass of ReDo, a metric probe, the
extra forwards of meta-rescale) runs inside :func:`preserved` and leaves them bit-identical.

What is saved: every buffer of every module (copied back in place through ``.data``, so a
pending backward of the update's own forward still finds the versions it saved), and every
plain attribute of every module that holds a number, a bool, ``None`` or a tensor (the
Python counters, AdaB2N's ``_aux`` / ``last_task_probs`` / ``_task_ids``, the ``training``
flag). Parameters are not saved: no forward changes them.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

_PLAIN = (bool, int, float, type(None), torch.Tensor)
_TORCH_INTERNAL = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"})


def snapshot(network: nn.Module) -> list[tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor]]]:
    """Per module: its plain attributes (numbers, bools, None, tensor references) and a copy of its buffers."""
    out = []
    for m in network.modules():
        attrs = {k: v for k, v in m.__dict__.items() if k not in _TORCH_INTERNAL and isinstance(v, _PLAIN)}
        bufs = {k: b.detach().clone() for k, b in m._buffers.items() if b is not None}
        out.append((m, attrs, bufs))
    return out


@torch.no_grad()
def restore(saved: list[tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor]]]) -> None:
    """Put back what :func:`snapshot` saved (buffers in place, attributes by assignment)."""
    for m, attrs, bufs in saved:
        for k, v in attrs.items():
            m.__dict__[k] = v
        for k, b in bufs.items():
            live = m._buffers.get(k)
            if live is not None and live.shape == b.shape:
                live.data.copy_(b)  # .data: no version bump, a pending backward is not invalidated
            else:
                m._buffers[k] = b


@contextlib.contextmanager
def preserved(*networks: nn.Module) -> Iterator[None]:
    """Within this block forwards may run in any mode; on exit every norm state of ``networks``
    (buffers, Python counters, mode flags) is as it was on entry."""
    saved = [snapshot(n) for n in networks]
    try:
        yield
    finally:
        for s in saved:
            restore(s)


@contextlib.contextmanager
def eval_mode(network: nn.Module) -> Iterator[None]:
    """Run the block with every module of ``network`` in eval mode, then restore each module's mode."""
    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def state_fingerprint(network: nn.Module) -> dict[str, Any]:
    """Every buffer and plain attribute of every module, by ``module.attr`` (tests compare two of these)."""
    out: dict[str, Any] = {}
    names = {id(m): n for n, m in network.named_modules()}
    for m, attrs, bufs in snapshot(network):
        prefix = names[id(m)] or "network"
        for k, v in attrs.items():
            out[f"{prefix}.{k}"] = v.detach().clone() if isinstance(v, torch.Tensor) else v
        for k, b in bufs.items():
            out[f"{prefix}.{k}"] = b
    return out


def transforms_loss(run) -> bool:
    """True when a hook of ``run`` overrides ``transform_loss`` (it may run forwards of its own)."""
    hooks = getattr(getattr(run, "hooks", None), "hooks", None)
    if not hooks:
        return False
    from crl.hooks import Hook

    return any(type(h).transform_loss is not Hook.transform_loss for h in hooks)
