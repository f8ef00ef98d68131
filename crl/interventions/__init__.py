"""Interventions: each a set of runner hooks (``crl.hooks.Hook``), combinable with
``--intervention a,b``. Adding one: a file here with a Hook subclass and one
``@INTERVENTIONS.register(name, help)`` factory ``(cfg) -> Hook``, imported below.
"""
from __future__ import annotations

from crl.hooks import Hook
from crl.registry import INTERVENTIONS
from crl.interventions import nap  # noqa: F401,E402  (registration)


def build_interventions(cfg) -> list[Hook]:
    return [INTERVENTIONS.get(name)(cfg) for name in cfg.interventions()]


# ReDo, shrink & perturb, L2-init, resets, BN-only, meta loss-rescaling (registration)
from crl.interventions import redo, shrink_perturb, l2_init, reset, bn_only, meta_rescale  # noqa: F401,E402
