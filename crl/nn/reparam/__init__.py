"""Weight reparameterizations (``--reparam``): every ``Linear`` and ``Conv2d`` weight of the torso
becomes ``W = f(V)``, with ``V`` the stored tensor the optimizer updates.

Built with ``torch.nn.utils.parametrize``: after :func:`apply_reparam` the layer's ``weight`` is
computed from ``layer.parametrizations.weight.original`` (``V``) at each access, and the
parametrization's own parameters (if it learns any) sit in ``layer.parametrizations.weight.0``.
These are ordinary parameters of the network, so the optimizer, checkpoints (``state_dict``
keys ``...layer.parametrizations.weight.original`` and ``...weight.0.<name>``), weight decay,
L2 Init and shrink & perturb see them with no special case. The output layer, built outside
the torso, keeps a plain weight.

A reparameterization registers ``@REPARAMS.register(name, help, options=...)`` with a factory
``(weight, **options) -> nn.Module`` returning the parametrization of one weight tensor
(``weight``: its value at initialisation). The module must define ``right_inverse``
(``V`` from ``W``): :func:`apply_reparam` uses it so the network's weights at initialisation
are the layers' own initialisation, and interventions use it (:func:`to_stored`) to write a
weight they re-draw. It must map 0 to 0 (ReDo zeroes outgoing weights in ``V``).

What the interventions act on (:func:`stored_weight`):

* ``nap`` projects ``V``, the stored tensor the optimizer steps: ``V <- rho V / ||V||_F`` with
  ``rho = ||V_0||_F``. The layer still feeds a norm, so the network is invariant to a common
  scale of ``W``, but ``f`` is not homogeneous, so rescaling ``V`` is not rescaling ``W``; what
  NaP keeps constant is the norm of the parameter the optimizer updates, which is what sets
  the size of each step relative to it (its effective learning rate in ``V``).
* ``redo`` and ``reset`` draw fresh weights from the layer's own initialiser and store
  ``right_inverse(W_fresh)`` (the parametrization's parameters go back to their initial
  values first, for ``reset``); ``shrink-perturb`` and ``l2-init`` act on ``V`` and the
  parametrization's parameters like on any parameter.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn
from torch.nn.utils import parametrize

from crl.registry import REPARAMS

LAYERS = (nn.Linear, nn.Conv2d)


@REPARAMS.register("none", "plain weights (default)")
def _none(weight: torch.Tensor) -> None:
    return None


def apply_reparam(cfg, module: nn.Module) -> int:
    """Reparameterize the weight of every ``Linear``/``Conv2d`` in ``module`` by ``cfg.reparam`` (its
    options read from ``cfg``); returns how many."""
    entry = REPARAMS.entry(cfg.reparam)
    if cfg.reparam == "none":
        return 0
    values = {f.name: getattr(cfg, f.name) for cls in entry.options for f in dataclasses.fields(cls)}
    count = 0
    for layer in [m for m in module.modules() if isinstance(m, LAYERS)]:
        if parametrize.is_parametrized(layer, "weight"):
            continue
        param = entry.factory(layer.weight.detach(), **values)
        parametrize.register_parametrization(layer, "weight", param)
        count += 1
    return count


def is_reparameterized(layer: nn.Module) -> bool:
    return parametrize.is_parametrized(layer, "weight")


def stored_weight(layer: nn.Module) -> nn.Parameter:
    """The tensor the optimizer updates for ``layer.weight``: ``V`` when reparameterized, else the weight."""
    if is_reparameterized(layer):
        return layer.parametrizations.weight.original
    return layer.weight


@torch.no_grad()
def to_stored(layer: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """The stored values that give effective weight ``weight`` (``right_inverse``; identity if plain)."""
    if not is_reparameterized(layer):
        return weight
    value = weight
    for p in reversed(list(layer.parametrizations.weight)):
        value = p.right_inverse(value)
    return value


@torch.no_grad()
def fresh_weight(layer: nn.Module) -> torch.Tensor:
    """A fresh effective weight from the layer's own initialiser (``reset_parameters`` of a plain copy)."""
    plain = copy.deepcopy(layer)
    if is_reparameterized(layer):
        # Made plain on the copy's instance only: parametrize.remove_parametrizations would delete the
        # property from the parametrized class, which the copy shares with ``layer``.
        shape, like = layer.weight.shape, stored_weight(layer)
        plain.__class__ = type(layer).__bases__[0]
        del plain._modules["parametrizations"]
        plain.weight = nn.Parameter(like.new_empty(shape))
    plain.reset_parameters()
    return plain.weight.detach()


# Reparameterizations defined in their own files register themselves on import.
from crl.nn.reparam import compander  # noqa: E402,F401
