"""A network's modules, parameters and floating-point buffers, listed once and reused.

Code that runs at every update (the train/eval switch of ``agents/fast.py``, the NaN guard of
``crl/reliability.py``) needs these lists; ``Module.modules()`` / ``parameters()`` /
``buffers()`` walk the module tree each time, ~10-15 us for the MinAtar network and 2-3x
that inside a training step, whose whole update takes ~2.5 ms there. The lists are cached
per network and dropped whenever any module, parameter or buffer is registered anywhere
(PyTorch's global registration hooks: assigning a submodule, a ``Parameter`` or a buffer,
``add_module``, ``register_parameter``, ``register_buffer``), so a network changed after it
was built is walked again. In-place updates (optimizer steps, ``reset_parameters``,
``load_state_dict``) keep the same tensors and need no new walk.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.nn.modules import module as _module

_generation = 0  # bumped at every registration; a cached walk from another generation is stale


def _registered(*_args) -> None:
    global _generation
    _generation += 1


for _register in (_module.register_module_module_registration_hook,
                  _module.register_module_parameter_registration_hook,
                  _module.register_module_buffer_registration_hook):
    _register(_registered)


class _Walk:
    __slots__ = ("generation", "modules", "parameters", "float_buffers")

    def __init__(self, net: nn.Module):
        self.generation = _generation
        self.modules = tuple(net.modules())
        self.parameters = tuple(net.parameters())
        self.float_buffers = tuple(b for b in net.buffers() if b.is_floating_point())


_WALKS: "weakref.WeakKeyDictionary[nn.Module, _Walk]" = weakref.WeakKeyDictionary()


def _walk(net: nn.Module) -> _Walk:
    walk = _WALKS.get(net)
    if walk is None or walk.generation != _generation:
        walk = _WALKS[net] = _Walk(net)
    return walk


def modules(net: nn.Module) -> tuple[nn.Module, ...]:
    """``tuple(net.modules())``."""
    return _walk(net).modules


def parameters(net: nn.Module) -> tuple[nn.Parameter, ...]:
    """``tuple(net.parameters())`` (shared parameters once, as there)."""
    return _walk(net).parameters


def float_buffers(net: nn.Module) -> tuple[torch.Tensor, ...]:
    """The floating-point buffers of ``net`` (e.g. BatchNorm running statistics), in ``buffers()`` order."""
    return _walk(net).float_buffers
