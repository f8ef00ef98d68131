"""What every crl learner's update ends with, written once.

A learner (see DESIGN.md) exposes ``cfg``, ``network``, ``optimizer``, ``schedule``,
``updates`` and ``run``; after ``loss.backward()`` it calls :func:`optimizer_step`.
"""
from __future__ import annotations

import torch
from torch import nn

from crl.reliability import check_finite


def optimizer_step(learner, loss: torch.Tensor, step: int) -> None:
    """NaN/inf guard (before clipping, which would smear one NaN over every gradient), gradient-norm
    clip, optimizer and LR-schedule step, then the ``after_optimizer_step`` hooks (NaP, ReDo, ...)."""
    check_finite(learner.run, loss, learner.network, step=step)
    if learner.cfg.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(learner.network.parameters(), learner.cfg.max_grad_norm)
    learner.optimizer.step()
    learner.schedule.step()
    learner.updates += 1
    if learner.run is not None:
        learner.run.hooks.after_optimizer_step(learner.run)
