"""THE runner: device, seeding, task loop, evaluation schedule, checkpoints and hooks.

It owns the loop of docs/design.md: for each task of the scenario's stream it calls
``learner.train(task, chunk)`` chunk by chunk, evaluates every task of the scenario every
``eval_every`` steps and at each task end, filling the eval matrix
``R[i, j]`` = score on task j after training on stream position i, and checkpoints
everything needed to resume bit-for-bit (learner, hooks, counters, RNG states).
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crl.checkpoint import PROTOCOL, load_latest_checkpoint, save_checkpoint
from crl.config import Config
from crl.hooks import HookList
from crl.logging import RunLogger
from crl.reliability import NumericalError, check_parameters, parameters_finite, stop_on_signals
from crl.scenario import Scenario


def resolve_device(name: str) -> torch.device:
    from crl.errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: cuda requested but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Runner:
    """Drives one run of ``learner`` over ``scenario``; see the module docstring."""

    def __init__(self, cfg: Config, scenario: Scenario, learner, hooks: HookList, run_dir: Path,
                 resume: bool | dict[str, Any] = False):
        """``resume``: True restores the newest checkpoint of ``run_dir``; a dict is that checkpoint's
        state, already loaded (``crl.api.resume`` reads it first to decide what to do)."""
        self.config, self.scenario, self.learner, self.hooks = cfg, scenario, learner, hooks
        self.run_dir = Path(run_dir)
        self.stream = scenario.stream()
        self.task_names = [t.name for t in scenario.tasks]
        self.task_index = 0
        self.step_in_task = 0
        self.global_step = 0
        self.eval_matrix = np.full((len(self.stream), len(scenario.tasks)), np.nan)
        self.eval_count = 0
        self.resumed = False
        self.stop_requested = False  # a hook (or a signal handler) may ask the run to end early
        self.stop_signal: str | None = None  # 'SIGINT'/'SIGTERM' when a signal asked (crl/reliability.py)
        hooks.run = self
        learner.run = self
        if resume:
            self._restore(resume if isinstance(resume, dict) else load_latest_checkpoint(self.run_dir))
        self.logger = RunLogger(self.run_dir, cfg, total_steps=self.total_steps, start_step=self.global_step)

    # ---------------------------------------------------------------- budget helpers
    def budget(self, task) -> int:
        return task.steps or self.config.steps

    @property
    def total_steps(self) -> int:
        return sum(self.budget(t) for t in self.stream)

    @property
    def task(self):
        return self.stream[self.task_index]

    # ---------------------------------------------------------------- main loop
    def run(self) -> dict[str, Any]:
        """The loop below, with SIGINT/SIGTERM -> final checkpoint, and a non-finite loss, gradient or
        parameter -> a checkpoint of the last good state and :class:`NumericalError` (crl/reliability.py)."""
        with stop_on_signals(self):
            try:
                return self._run()
            except NumericalError as err:
                self._stop_diverged(err)
                raise

    def _run(self) -> dict[str, Any]:
        cfg = self.config
        self.hooks.on_run_start(self)
        next_eval = (self.global_step // cfg.eval_every + 1) * cfg.eval_every
        next_ckpt = (self.global_step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        while self.task_index < len(self.stream):
            task, budget = self.task, self.budget(self.task)
            if self.step_in_task == 0:
                self.hooks.on_task_start(self, self.task_index, task)
            while self.step_in_task < budget:
                chunk = min(next_eval, next_ckpt, self.global_step + budget - self.step_in_task) - self.global_step
                done = self.learner.train(task, chunk)
                self.step_in_task += done
                self.global_step += done
                self.logger.progress(self.global_step)
                if self.global_step >= next_eval and self.step_in_task < budget:
                    self.evaluate()
                    next_eval = (self.global_step // cfg.eval_every + 1) * cfg.eval_every
                if self.global_step >= next_ckpt and self.step_in_task < budget:
                    self.checkpoint()
                    next_ckpt = (self.global_step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                if self.stop_requested:
                    return self._finish(checkpoint=True)
            self.eval_matrix[self.task_index] = self.evaluate()
            self.hooks.on_task_end(self, self.task_index, task)
            self.task_index += 1
            self.step_in_task = 0
            next_eval = (self.global_step // cfg.eval_every + 1) * cfg.eval_every
            self.checkpoint()
            # past this checkpoint: else a boundary on a multiple of --checkpoint-every checkpoints again after
            # the next task's on_task_start (resets, schedule restarts), which a resume would then run twice
            next_ckpt = (self.global_step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        return self._finish(checkpoint=False)

    def _finish(self, checkpoint: bool) -> dict[str, Any]:
        if checkpoint:
            self.checkpoint()
        stopped_early = self.task_index < len(self.stream)
        if not stopped_early:  # a stopped run goes on after --resume: its end-of-run scalars would be extra points
            self.hooks.on_run_end(self)
        summary = self.summary()
        summary["stopped_early"] = stopped_early
        if self.stop_signal and summary["stopped_early"]:  # a signal during the very last evaluation: finished
            summary["stop_signal"] = self.stop_signal
        self.logger.write_summary(summary)
        self.logger.close()
        return summary

    def _stop_diverged(self, err: NumericalError) -> None:
        """Save the state in memory as ``checkpoints/last_good_step_<N>.pt`` (the guard checks before
        the optimizer step and restores the last good parameters, so it holds no NaN), then
        summary.json with ``diverged`` and flushed logs. The regular ``step_*.pt`` checkpoints are
        left as they are: ``--resume`` restarts from the newest of them."""
        network = getattr(self.learner, "network", None)
        try:
            if network is None or parameters_finite(network):
                step = err.step if err.step is not None else self.global_step
                err.checkpoint = str(save_checkpoint(self.run_dir, step, self._state(), prefix="last_good_step"))
            else:
                err.note = "no finite state in memory; the newest checkpoint in checkpoints/ is the last good one"
        finally:
            summary = self.summary()
            summary["stopped_early"] = True
            summary["diverged"] = str(err)
            self.logger.write_summary(summary)
            self.logger.close()

    def evaluate(self) -> list[float]:
        """Score every task of the scenario now; logs eval/<task>/score."""
        t0 = time.perf_counter()
        scores = []
        for j, task in enumerate(self.scenario.tasks):
            score = float(self.learner.evaluate(task, eval_index=self.eval_count * len(self.scenario.tasks) + j))
            self.logger.scalar(f"eval/{task.name}/score", score, self.global_step)
            scores.append(score)
        self.eval_count += 1
        self.logger.scalar("perf/eval_seconds", time.perf_counter() - t0, self.global_step)
        self.hooks.on_eval(self, scores)
        self.logger.flush()
        return scores

    def summary(self) -> dict[str, Any]:
        final = self.eval_matrix[-1]
        summary = {"global_step": self.global_step, "final_scores": dict(zip(self.task_names, final.tolist())),
                   "eval_matrix": self.eval_matrix.tolist(), "run_dir": str(self.run_dir)}
        summary.update({k: v for k, v in self.logger.latest.items()
                        if k.startswith(("forgetting/", "eval/", "train/episode_return"))})
        return summary

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL,
            "runner": {"task_index": self.task_index, "step_in_task": self.step_in_task,
                       "global_step": self.global_step, "eval_matrix": self.eval_matrix,
                       "eval_count": self.eval_count},
            "learner": self.learner.state_dict(),
            "hooks": self.hooks.state_dict(),
            "rng": _rng_state(),
        }

    def checkpoint(self) -> Path:
        if getattr(self.learner, "network", None) is not None:  # never save NaN weights as a resume point
            check_parameters(self, self.learner.network)
        path = save_checkpoint(self.run_dir, self.global_step, self._state())
        self.logger.flush()
        return path

    def _restore(self, state: dict[str, Any]) -> None:
        r = state["runner"]
        self.task_index, self.step_in_task = r["task_index"], r["step_in_task"]
        self.global_step, self.eval_count = r["global_step"], r["eval_count"]
        self.eval_matrix = r["eval_matrix"]
        self.learner.load_state_dict(state["learner"])
        self.hooks.load_state_dict(state["hooks"])
        _set_rng_state(state["rng"])
        self.resumed = True
        if self.task_index == len(self.stream) == 1 and self.budget(self.stream[0]) > self.global_step:
            # A finished single-task run given a larger --steps (crl.api.resume): back into its task,
            # which has had all the steps so far; on_task_start is not called again.
            self.task_index, self.step_in_task = 0, self.global_step
