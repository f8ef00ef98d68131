"""Avalanche both ways, with real Avalanche objects built from small tensors in the test.

* ``crl.from_avalanche`` on ``nc_benchmark`` (class- and task-incremental) gives the same tasks and the
  same eval matrix (crl's runner, crl's classifier) as the equivalent crl split scenario;
* a real Avalanche ``Naive`` strategy with ``crl.avalanche.InterventionPlugin("nap")`` keeps every
  projected weight at its initial norm (and without the plugin it does not);
* ``crl.avalanche.PlasticityMetrics`` in an ``EvaluationPlugin`` with Avalanche's ``TensorboardLogger``:
  the event file read back holds crl's plasticity tags;
* ``crl run avalanche:SplitMNIST`` on MNIST files in the real format in ``--data-dir`` (no download).
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

warnings.filterwarnings("ignore", message="no QP solver")  # qpsolvers, imported by avalanche
pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")
pytest.importorskip("avalanche")
from avalanche.benchmarks import nc_benchmark  # noqa: E402

import crl  # noqa: E402
import crl.avalanche as cav  # noqa: E402
from _tiny_datasets import write_mnist  # noqa: E402
from crl.cli import main  # noqa: E402
from scenarios.datasets import ArrayDataset, Dataset  # noqa: E402
from scenarios.split import class_order, split_tasks  # noqa: E402

SEED = 3


def _tensors(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (N, 1, 8, 8) and labels 0..9, ``per_class`` of each class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(10).repeat_interleave(per_class)
    x = torch.randn(len(y), 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1) * 0.3  # learnable, not trivial
    return x, y


def _bench(x, y, xt, yt, task_labels: bool):
    return nc_benchmark(TensorDataset(x, y), TensorDataset(xt, yt), n_experiences=5, task_labels=task_labels,
                        fixed_class_order=class_order(10, SEED, True), shuffle=False)


def _avalanche_order(bench, y: torch.Tensor) -> torch.Tensor:
    """An order of the samples in which each experience's classes come as Avalanche lists that experience's
    samples (grouped by class, in the iteration order of its class set; each class in the original order)."""
    first = []
    for exp in bench.train_stream:
        emitted = [int(exp.dataset.eval()[i][1]) for i in range(len(exp.dataset))]
        first += [c for i, c in enumerate(emitted) if c not in emitted[:i]]
    return torch.cat([torch.nonzero(y == c).flatten() for c in first])


def _both(task_labels: bool):
    """crl's split and ``from_avalanche(nc_benchmark(...))`` over the same data. Avalanche keeps an
    experience's samples grouped by class and crl's split keeps the dataset's order; the data are put in
    Avalanche's grouping first, so both give every task the same samples in the same order."""
    (x, y), (xt, yt) = _tensors(12, 0), _tensors(4, 1)
    probe = _bench(x, y, xt, yt, task_labels)
    o, ot = _avalanche_order(probe, y), _avalanche_order(probe, yt)
    x, y, xt, yt = x[o], y[o], xt[ot], yt[ot]
    ds = Dataset("toy", ArrayDataset(x, y), ArrayDataset(xt, yt), 10, [str(c) for c in range(10)])
    ours = crl.Scenario("toy", split_tasks(ds, 5, SEED, shuffle=True))
    return ours, crl.from_avalanche(_bench(x, y, xt, yt, task_labels), name="toy-avalanche")


def _eval_matrix(scenario, tmp_path, name, *extra) -> np.ndarray:
    summary = crl.run(scenario=scenario, preset="supervised", seed=SEED, epochs=2.0, batch_size=8, mlp_hidden="32",
                      metrics_every=0, progress=False, run_dir=str(tmp_path), name=name, **dict(extra))
    return np.array(summary["eval_matrix"])


@pytest.mark.parametrize("task_labels, il_mode", [(False, "class"), (True, "task")])
def test_from_avalanche_equals_the_crl_split(tmp_path, task_labels, il_mode):
    ours, theirs = _both(task_labels)
    assert len(theirs.tasks) == 5
    for a, b in zip(ours.tasks, theirs.tasks):
        assert list(a.classes) == b.classes  # the same task split
        assert b.task_label == (a.task_label if task_labels else 0)
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
        assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    if not task_labels:  # crl's split labels its tasks 0..4; a class-incremental Avalanche benchmark has 0 only
        for t in ours.tasks:
            t.task_label = 0
    R_ours = _eval_matrix(ours, tmp_path, "ours", ("il_mode", il_mode))
    R_theirs = _eval_matrix(theirs, tmp_path, "theirs", ("il_mode", il_mode))
    assert R_ours.shape == (5, 5) and np.isfinite(R_ours).all()
    assert np.array_equal(R_ours, R_theirs)
    if il_mode == "class":  # class-incremental with naive training forgets: the first task ends low
        assert R_ours[0, 0] > R_ours[4, 0]


def _naive(model, plugins, evaluator=None):
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), train_mb_size=8,
                 train_epochs=2, eval_mb_size=16, device="cpu", plugins=plugins,
                 evaluator=evaluator or EvaluationPlugin(loggers=[]))


def _train_norms(with_plugin: bool):
    torch.manual_seed(0)
    model = cav.crl_model((1, 8, 8), 10, norm="nap", mlp_hidden="32,32")
    named = model.projectable_weights()
    assert len(named) == 2  # both hidden layers feed a LayerNorm
    before = {n: p.detach().norm().item() for n, p in named}
    start = {n: p.detach().clone() for n, p in named}
    plugin = cav.InterventionPlugin("nap") if with_plugin else None
    strategy = _naive(model, [plugin] if plugin else [])
    (x, y), (xt, yt) = _tensors(12, 0), _tensors(4, 1)
    bench = nc_benchmark(TensorDataset(x, y), TensorDataset(xt, yt), n_experiences=5, task_labels=False, seed=SEED)
    for exp in bench.train_stream:
        strategy.train(exp)
    after = {n: p.detach().norm().item() for n, p in named}
    moved = min((p.detach() - start[n]).norm().item() for n, p in named)
    return before, after, moved, plugin


def test_nap_plugin_keeps_projected_weights_at_initial_norm():
    before, after, moved, plugin = _train_norms(True)
    assert moved > 1e-3  # the weights did train
    for n in before:
        assert after[n] == pytest.approx(before[n], rel=1e-5), n
    assert plugin.run.learner.updates == 5 * 2 * 3  # 5 experiences x 2 epochs x ceil(24 / 8) updates
    # the same training without the plugin: the norms drift, so the check above can fail
    before, after, _, _ = _train_norms(False)
    assert any(abs(after[n] - before[n]) > 1e-3 * before[n] for n in before)


def test_other_interventions_act_through_the_plugin():
    """ReDo (on the strategy's mini-batches), shrink-and-perturb, L2-init (a loss term) and resets run
    from Avalanche's events on the strategy's own model."""
    torch.manual_seed(0)
    model = cav.crl_model((1, 8, 8), 10, mlp_hidden="32,32")
    plugin = cav.InterventionPlugin("redo", "shrink-perturb", "l2-init", "reset", redo_every=4, reset_every=10)
    strategy = _naive(model, [plugin])
    (x, y), (xt, yt) = _tensors(12, 0), _tensors(4, 1)
    bench = nc_benchmark(TensorDataset(x, y), TensorDataset(xt, yt), n_experiences=2, task_labels=False, seed=SEED)
    for exp in bench.train_stream:
        strategy.train(exp)
    tags = {t for t, _, _ in plugin.logged}
    assert plugin.run.learner.updates == 2 * 2 * 8
    assert {"train/reset_count", "train/redo_recycled_fraction"} <= tags, tags
    resets = [v for t, v, _ in plugin.logged if t == "train/reset_count"]
    assert resets[-1] >= 3  # every 10 of the 32 updates, and at the second experience's start


def test_unknown_or_unsupported_intervention_is_one_error():
    with pytest.raises(crl.UserError, match="unknown intervention 'nop'.*nap"):
        cav.InterventionPlugin("nop")
    with pytest.raises(crl.UserError, match="'meta-rescale' .* crl's learners only"):
        cav.InterventionPlugin("meta-rescale")


def test_plasticity_metrics_reach_avalanches_tensorboard_logger(tmp_path):
    from avalanche.logging import TensorboardLogger
    from avalanche.training.plugins import EvaluationPlugin
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    model = cav.crl_model((1, 8, 8), 10, mlp_hidden="32,32")
    metric = cav.PlasticityMetrics(every=5, probe_steps=3)
    logger = TensorboardLogger(tb_log_dir=str(tmp_path / "tb"))
    strategy = _naive(model, [], EvaluationPlugin(metric, loggers=[logger]))
    (x, y), (xt, yt) = _tensors(12, 0), _tensors(4, 1)
    bench = nc_benchmark(TensorDataset(x, y), TensorDataset(xt, yt), n_experiences=2, task_labels=False, seed=SEED)
    for exp in bench.train_stream:
        strategy.train(exp)
    logger.writer.flush()
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    for tag in ("plasticity/dormant_redo_tau0", "plasticity/srank_0.01", "plasticity/weight_norm",
                "plasticity/drift_init", "plasticity/probe_loss_after", "plasticity/torso.blocks.0/active_fraction"):
        assert tag in tags, (tag, tags)
    # the network's state every 5 updates (gradient norms at the update after); 2 experiences x 2 epochs x
    # ceil(60 / 8) = 32 updates
    assert [e.step for e in ea.Scalars("plasticity/weight_norm")] == [5, 10, 15, 20, 25, 30]
    assert [e.step for e in ea.Scalars("plasticity/grad_norm")] == [6, 11, 16, 21, 26, 31]
    assert 0.0 <= metric.result()["plasticity/dormant_redo_tau0"] <= 1.0


def test_classic_names_exist_in_avalanche():
    import avalanche.benchmarks.classic as classic
    from scenarios.avalanche import CLASSIC

    assert all(hasattr(classic, n) for n in CLASSIC)


def test_crl_run_avalanche_split_mnist_from_data_dir(tmp_path, capsys):
    files = write_mnist(tmp_path / "data", per_class=4, test_per_class=2)
    argv = ["run", "avalanche:SplitMNIST", "--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "runs"),
            "--name", "r", "--no-progress", "--metrics-every", "0", "--epochs", "1", "--batch-size", "8",
            "--mlp-hidden", "16", "--seed", "1"]
    assert main(argv) == 0
    (path,) = (tmp_path / "runs").glob("avalanche-SplitMNIST/*/r/summary.json")
    R = np.array(json.loads(path.read_text())["eval_matrix"])
    assert R.shape == (5, 5) and np.isfinite(R).all()
    assert len(files["train_y"]) == 40

    # bad name: one line with the close names; bad argument: one line with Avalanche's reason
    assert main(["run", "avalanche:SplitMNST", "--run-dir", str(tmp_path / "runs2")]) == 2
    line = capsys.readouterr().err.strip().splitlines()
    assert len(line) == 1 and "avalanche:SplitMNIST" in line[0] and "did you mean" in line[0], line
    assert main([*argv[:-2], "--seed", "2", "--n-tasks", "11", "--name", "bad"]) == 2
    line = capsys.readouterr().err.strip().splitlines()
    assert len(line) == 1 and "SplitMNIST(n_experiences=11" in line[0], line
    assert not (tmp_path / "runs2").exists() and not list((tmp_path / "runs").glob("*/*/bad"))
