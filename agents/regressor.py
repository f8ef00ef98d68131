"""A learner for supervised regression streams (``--agent regressor``): the classifier's loop
(``agents/classifier.py``: budgets, replay, hooks, checkpoints) with a mean-squared-error loss.

Built for Dohare et al.'s slowly-changing regression (``scenarios/slowly_changing_regression.py``;
Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood, Sutton, "Loss of plasticity in deep continual
learning", Nature 2024; ``shibhansh/loss-of-plasticity`` ``lop/algos/bp.py``: ``F.mse_loss`` of
the network's output and the target, one SGD step per example). Targets are float tensors of
shape ``(N,)`` (one output) or ``(N, d)``; the network's ``output`` layer has ``d`` units.

``train/loss`` is the mean squared error of each incoming batch *before* the update on it
(Dohare et al.'s online error), averaged over the ``--log-every`` updates before the step it is
logged at. ``evaluate`` returns the **negative** mean squared error on the task's test set, so
that the eval matrix keeps "higher is better" for every forgetting metric, and logs the error
itself as ``eval/<task>/mse``. Strategies: ``naive`` and ``replay`` (the others are defined on
class logits).
"""
from __future__ import annotations

import torch

from crl.errors import UserError
from crl.registry import AGENTS
from agents.classifier import ClassifierLearner, ClassifierOptions, _Data

REGRESSION_STRATEGIES = ("naive", "replay")


class RegressionLearner(ClassifierLearner):
    """:class:`~agents.classifier.ClassifierLearner` with float targets and a squared-error loss."""

    classifies = False  # no accuracies, no train/online_accuracy

    @staticmethod
    def _check_config(cfg) -> None:
        if cfg.strategy not in REGRESSION_STRATEGIES:
            raise UserError(f"--strategy: the regressor takes {', '.join(REGRESSION_STRATEGIES)}; got "
                            f"'{cfg.strategy}'")
        ClassifierLearner._check_config(cfg)

    def _data(self, ds, what: str) -> _Data:
        if not all(hasattr(ds, a) for a in ("x", "y")):
            raise UserError(f"{what}: the regressor needs a dataset with tensors x and y (scenarios.datasets."
                            f"ArrayDataset or crl's regression tasks)")
        x, y = torch.as_tensor(ds.x), torch.as_tensor(ds.y)
        if not y.is_floating_point() or y.dim() not in (1, 2) or len(y) != len(x):
            raise UserError(f"{what}: regression targets must be a float tensor (N,) or (N, d) beside N inputs, "
                            f"got {y.dtype} {tuple(y.shape)}")
        key = id(ds.x)
        if key not in self._device_cache:
            self._device_cache[key] = (x, x.float().to(self.device))
        return _Data(self._device_cache[key][1], y.float().to(self.device), getattr(ds, "transform", None),
                     getattr(ds, "augment", None))

    def _check_classes(self) -> int:
        """The number of outputs: the targets' width (1 for ``(N,)`` targets), equal in every task."""
        widths = {t.name: (1 if d.y.dim() == 1 else d.y.shape[1]) for t, d in zip(self.tasks, self.train_data)}
        widths.update({t.name + " (test)": (1 if d.y.dim() == 1 else d.y.shape[1])
                       for t, d in zip(self.tasks, self.test_data)})
        if len(set(widths.values())) > 1:
            raise UserError(f"scenario '{self.scenario.name}': tasks have targets of different widths {widths}")
        for t in self.tasks:
            if any(int(c) < 0 for c in t.classes):
                raise UserError(f"task '{t.name}': class ids must be >= 0, got {list(t.classes)}")
        return max(next(iter(widths.values())), 1 + max(int(c) for t in self.tasks for c in t.classes))

    def _loss_terms(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Squared error per sample (mean over the outputs): the mean over the joint batch is ``F.mse_loss``."""
        y = batch["y"]
        pred = logits[:, : (1 if y.dim() == 1 else y.shape[1])]
        return (pred - y.view(len(y), -1)).pow(2).mean(1)

    @torch.no_grad()
    def mse(self, task, data: _Data | None = None) -> float:
        """Mean squared error on ``task``'s test set (or ``data``), network in eval mode."""
        j = self.task_pos[task.name]
        data = self.test_data[j] if data is None else data
        was_training = self.network.training
        self.network.eval()
        total = torch.zeros((), device=self.device)
        for s in range(0, len(data), self.cfg.eval_batch_size):
            sl = slice(s, s + self.cfg.eval_batch_size)
            y = data.y[sl]
            pred = self.network(data.inputs(sl)).float()[:, : (1 if y.dim() == 1 else y.shape[1])]
            total += (pred - y.view(len(y), -1)).pow(2).mean(1).sum()
        self.network.train(was_training)
        return total.item() / max(1, len(data))

    def accuracies(self, task, data: _Data | None = None) -> tuple[float, float]:
        raise UserError("the regressor has no accuracies; use mse()")

    def evaluate(self, task, eval_index: int = 0) -> float:
        err = self.mse(task)
        if self.run is not None:
            self.run.logger.scalar(f"eval/{task.name}/mse", err, self.run.global_step)
        return -err


AGENTS.register("regressor", "supervised regression on task streams (MSE; --strategy naive|replay); the "
                             "slowly-changing-regression learner", options=ClassifierOptions, kind="supervised")(
    lambda cfg, scenario, device: RegressionLearner(cfg, scenario, device))
