"""What every crl learner's update ends with, written once.

A learner (see docs/design.md) exposes ``cfg``, ``network``, ``optimizer``, ``schedule``,
``updates`` and ``run``; after ``loss.backward()`` it calls :func:`optimizer_step`.
"""
from __future__ import annotations

import torch

from crl.reliability import check_finite, clip_grads, grad_norms


def optimizer_step(learner, loss: torch.Tensor, step: int) -> None:
    """Gradient norms (once, for the guard and the clip), NaN/inf guard (before the clip, which would
    smear one NaN over every gradient), clip, optimizer and LR-schedule step, then the
    ``after_optimizer_step`` hooks (NaP, ReDo, ...)."""
    grads, total = grad_norms(learner.network)
    check_finite(learner.run, loss, learner.network, step=step, total_grad_norm=total,
                 copy_every=learner.cfg.guard_copy_every)
    clip_grads(grads, total, learner.cfg.max_grad_norm)
    learner.optimizer.step()
    learner.schedule.step()
    learner.updates += 1
    if learner.run is not None:
        learner.run.hooks.after_optimizer_step(learner.run)
