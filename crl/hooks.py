"""Named events of a run, in the style of Avalanche plugins.

Interventions, metrics and loggers subclass :class:`Hook` and override the events they
need; the runner and the learners call them through a :class:`HookList`. An intervention
never edits an agent: it acts on ``run.learner.network`` / ``run.learner.optimizer`` from
these events.

Events (in order of a run):
    on_run_start(run)
    on_task_start(run, task_index, task)
    transform_loss(run, per_sample_loss, batch) -> per_sample_loss   (before the mean)
    after_optimizer_step(run)                      (after every ``optimizer.step()``)
    on_eval(run, scores)                           (after each evaluation sweep)
    on_task_end(run, task_index, task)
    on_run_end(run)

``run`` is the :class:`crl.runner.Runner`; it exposes ``learner``, ``config``, ``logger``,
``global_step``, ``task_index`` and ``eval_matrix``. A hook that logs from inside training
(``after_optimizer_step``, ``transform_loss``, and a task start or end) logs at
:func:`learner_step`, the step the learner is at; ``run.global_step`` moves once per chunk.
"""
from __future__ import annotations

from typing import Any


def learner_step(run) -> int:
    """The learner's own step counter, ``run.learner.metric_step`` (docs/design.md, the runner
    contract): env steps in RL, updates in the classifier, counted up to and including the update
    in progress; ``run.global_step`` (the sum of what ``train`` returned) for a learner without one."""
    learner = getattr(run, "learner", None)
    step = getattr(learner, "metric_step", None)
    return int(getattr(run, "global_step", 0) if step is None else step)


class Hook:
    """Base class: every event is a no-op. State in ``state_dict`` survives a resume."""

    name = "hook"

    def on_run_start(self, run) -> None: ...

    def on_task_start(self, run, task_index: int, task) -> None: ...

    def transform_loss(self, run, per_sample_loss, batch):
        return per_sample_loss

    def after_optimizer_step(self, run) -> None: ...

    def on_eval(self, run, scores: list[float]) -> None: ...

    def on_task_end(self, run, task_index: int, task) -> None: ...

    def on_run_end(self, run) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class HookList(Hook):
    """Calls each hook in order; ``transform_loss`` is chained through all of them."""

    def __init__(self, hooks: list[Hook] | None = None):
        self.hooks: list[Hook] = list(hooks or [])
        self.run = None  # set by the runner so learners can call events without it

    def append(self, hook: Hook) -> None:
        self.hooks.append(hook)

    def on_run_start(self, run) -> None:
        for h in self.hooks:
            h.on_run_start(run)

    def on_task_start(self, run, task_index, task) -> None:
        for h in self.hooks:
            h.on_task_start(run, task_index, task)

    def transform_loss(self, run, per_sample_loss, batch):
        for h in self.hooks:
            per_sample_loss = h.transform_loss(run, per_sample_loss, batch)
        return per_sample_loss

    def after_optimizer_step(self, run) -> None:
        for h in self.hooks:
            h.after_optimizer_step(run)

    def on_eval(self, run, scores) -> None:
        for h in self.hooks:
            h.on_eval(run, scores)

    def on_task_end(self, run, task_index, task) -> None:
        for h in self.hooks:
            h.on_task_end(run, task_index, task)

    def on_run_end(self, run) -> None:
        for h in self.hooks:
            h.on_run_end(run)

    def state_dict(self) -> dict[str, Any]:
        return {f"{i}:{h.name}": h.state_dict() for i, h in enumerate(self.hooks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, h in enumerate(self.hooks):
            h.load_state_dict(state.get(f"{i}:{h.name}", {}))
