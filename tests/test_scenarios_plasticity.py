"""Plasticity benchmarks over any dataset: random labels, label shuffles, pixel permutations, warm start."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _tiny_datasets import write_cifar10, write_mnist
from crl.cli import main
from crl.config import make_config
from crl.registry import SCENARIOS


def _build(name, **kw):
    sc = SCENARIOS.get(name)(make_config("supervised", **kw))
    sc.validate()
    return sc


def test_random_labels_redraws_labels_on_shared_inputs():
    sc = _build("random-labels", n_tasks=3, relabel_every=7)
    a, b = sc.tasks[0], sc.tasks[1]
    assert a.train.x is b.train.x and a.train is a.test  # trainability: scored on the training set
    assert a.steps == b.steps == 7
    assert (a.train.y != b.train.y).float().mean() > 0.8
    assert set(a.train.y.tolist()) == set(range(10))


def test_label_shuffle_changes_a_fraction_eps_per_task():
    sc = _build("label-shuffle", n_tasks=3, label_shuffle_eps=0.3)
    from scenarios.datasets import load_digits

    true = load_digits().train.y
    assert torch.equal(sc.tasks[0].train.y, true)
    changed = (sc.tasks[1].train.y != sc.tasks[0].train.y).float().mean().item()
    assert 0.3 * 0.8 < changed <= 0.3  # a re-drawn label may land on its old value (p = 1/10)


def test_pixel_permute_first_task_is_the_original():
    sc = _build("pixel-permute", n_tasks=3)
    x0, _ = sc.tasks[0].train[0]
    x1, _ = sc.tasks[1].train[0]
    assert torch.equal(torch.sort(x0.flatten()).values, torch.sort(x1.flatten()).values)
    assert not torch.equal(x0, x1)
    from scenarios.datasets import load_digits

    assert torch.equal(x0, load_digits().train[0][0])


def test_warm_start_is_part_then_all():
    sc = _build("warm-start", warm_start_fraction=0.25)
    part, full = sc.tasks
    assert len(part.train) == round(0.25 * len(full.train)) and part.test is full.test
    with pytest.raises(Exception, match="--warm-start-fraction"):
        _build("warm-start", warm_start_fraction=1.5)


@pytest.mark.parametrize("name, dataset, writer, n", [
    ("random-labels", "digits", None, 3),
    ("label-shuffle", "mnist", write_mnist, 3),
    ("pixel-permute", "cifar10", write_cifar10, 2),
    ("warm-start", "digits", None, 2),
])
def test_plasticity_scenarios_train(tmp_path, name, dataset, writer, n):
    if writer is not None:
        writer(tmp_path / "data")
    argv = ["run", name, "--dataset", dataset, "--data-dir", str(tmp_path / "data"), "--n-tasks", str(n),
            "--run-dir", str(tmp_path / "runs"), "--name", "r", "--no-progress", "--metrics-every", "0",
            "--epochs", "0.5", "--batch-size", "16", "--mlp-hidden", "16", "--norm", "nap"]
    assert main(argv) == 0
    (path,) = (tmp_path / "runs").glob("*/*/r/summary.json")
    R = np.array(json.loads(path.read_text())["eval_matrix"])
    assert R.shape == (n, n) and np.isfinite(R).all()
