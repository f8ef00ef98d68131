"""Split / permuted scenarios: real file formats read by the real loaders, then a few steps of training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _tiny_datasets import write_cifar10, write_cifar100, write_mnist
from crl.cli import main
from scenarios.datasets import load_cifar10, load_cifar100, load_dataset, load_mnist

FAST = ["--no-progress", "--metrics-every", "0", "--epochs", "1", "--batch-size", "8"]


def _run(tmp_path, *argv) -> dict:
    small = [] if "--torso" in argv else ["--mlp-hidden", "16"]  # the MLP's option only where the MLP is used
    assert main(["run", *argv, "--run-dir", str(tmp_path / "runs"), "--name", "r", *FAST, *small]) == 0
    (path,) = (tmp_path / "runs").glob("*/*/r/summary.json")
    return json.loads(path.read_text())


def test_cifar10_pickles_read_exactly(tmp_path):
    files = write_cifar10(tmp_path)
    ds = load_cifar10(tmp_path)
    x = np.concatenate(files["train_x"]).reshape(-1, 3, 32, 32)
    assert torch.equal(ds.train.x, torch.from_numpy(x))
    assert ds.train.y.tolist() == np.concatenate(files["train_y"]).tolist()
    assert torch.equal(ds.test.x, torch.from_numpy(files["test_x"].reshape(-1, 3, 32, 32)))
    assert ds.class_names == files["names"] and ds.num_classes == 10
    # channel-major rows: the first 1024 values are the red plane
    assert torch.equal(ds.train.x[0, 0].flatten(), torch.from_numpy(files["train_x"][0][0][:1024]))
    img, label = ds.train[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and int(label) == int(files["train_y"][0][0])


def test_cifar100_and_mnist_read_exactly(tmp_path):
    c = write_cifar100(tmp_path)
    ds = load_cifar100(tmp_path)
    assert ds.num_classes == 100 and ds.class_names[3] == "class3"
    assert ds.train.y.tolist() == c["train_y"].tolist()
    assert torch.equal(ds.test.x, torch.from_numpy(c["test_x"].reshape(-1, 3, 32, 32)))
    m = write_mnist(tmp_path)
    ds = load_mnist(tmp_path)
    assert torch.equal(ds.train.x[:, 0], torch.from_numpy(m["train_x"])) and ds.train.y.tolist() == m["train_y"].tolist()
    assert torch.equal(ds.test.x[:, 0], torch.from_numpy(m["t10k_x"]))
    sub = load_dataset("mnist", tmp_path, max_train_samples=7)
    assert len(sub.train) == 7 and len(sub.test) == len(ds.test)


@pytest.mark.parametrize("name, writer, n_tasks, extra", [
    ("split-cifar10", write_cifar10, 2, ["--torso", "small_cnn", "--n-tasks", "2"]),
    ("split-cifar100", write_cifar100, 5, ["--n-tasks", "5"]),
    ("split-mnist", write_mnist, 2, ["--n-tasks", "2"]),
    ("permuted-mnist", write_mnist, 3, ["--n-tasks", "3"]),
    ("split-digits", None, 5, ["--strategy", "replay"]),
])
def test_scenario_trains_and_fills_square_eval_matrix(tmp_path, name, writer, n_tasks, extra):
    if writer is not None:
        writer(tmp_path / "data")
    s = _run(tmp_path, name, "--data-dir", str(tmp_path / "data"), *extra)
    R = np.array(s["eval_matrix"])
    assert R.shape == (n_tasks, n_tasks) and np.isfinite(R).all()
    for key in ("forgetting/max_minus_last", "forgetting/first_minus_last", "forgetting/bwt", "forgetting/avg_final"):
        assert key in s, key
    assert s["forgetting/avg_final"] == pytest.approx(R[-1].mean())


def test_resnet18_on_tiny_cifar_with_batchnorm(tmp_path):
    write_cifar10(tmp_path / "data", per_class=1)
    s = _run(tmp_path, "split-cifar10", "--data-dir", str(tmp_path / "data"), "--torso", "resnet18",
             "--resnet-width", "4", "--norm", "batchnorm", "--n-tasks", "2", "--strategy", "der++")
    assert np.array(s["eval_matrix"]).shape == (2, 2)


def test_split_tasks_partition_classes(tmp_path):
    from crl.config import make_config
    from crl.registry import SCENARIOS

    cfg = make_config("supervised", seed=3)
    sc = SCENARIOS.get("split-digits")(cfg)
    classes = [tuple(t.classes) for t in sc.tasks]
    assert sorted(c for cl in classes for c in cl) == list(range(10))
    assert classes != [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]  # shuffled by seed
    for t in sc.tasks:
        assert set(t.train.y.tolist()) == set(t.classes) == set(t.test.y.tolist())
    fixed = SCENARIOS.get("split-digits")(make_config("supervised", shuffle_classes=False))
    assert [tuple(t.classes) for t in fixed.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


@pytest.mark.parametrize("argv, needles", [
    (["split-cifar10"], ["CIFAR-10 not found", "cifar-10-batches-py", "data_batch_1"]),
    (["split-cifar100"], ["CIFAR-100 not found", "cifar-100-python"]),
    (["split-mnist"], ["MNIST not found", "MNIST/raw", "train-images-idx3-ubyte"]),
    (["permuted-mnist"], ["MNIST not found"]),
    (["random-labels", "--dataset", "cifar10"], ["CIFAR-10 not found"]),
    (["split-digits", "--n-tasks", "3"], ["--n-tasks", "cannot be split evenly", "accepted: 1, 2, 5, 10"]),
    (["split-digits", "--torso", "nature"], ["--torso", "small_cnn"]),
    (["split-digits", "--strategy", "replay", "--replay-size", "0"], ["--replay-size"]),
    (["split-digits", "--strategy", "gem"], ["--strategy", "naive, replay, er-ace, der++"]),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, needles):
    code = main(["run", *argv, "--data-dir", str(tmp_path / "nodata"), "--run-dir", str(tmp_path / "runs"),
                 "--no-progress", "--no-download"])  # never the internet in tests (test_datasets_download.py)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], err[0]
    assert not (tmp_path / "runs").exists()


def test_default_task_counts(tmp_path):
    from crl.config import make_config
    from crl.registry import SCENARIOS

    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_mnist(tmp_path)
    cfg = make_config("supervised", data_dir=str(tmp_path))
    for name, n, k in (("split-cifar10", 5, 2), ("split-cifar100", 10, 10), ("split-mnist", 5, 2),
                       ("permuted-mnist", 10, 10)):
        sc = SCENARIOS.get(name)(cfg)
        sc.validate()
        assert len(sc.tasks) == n and all(len(t.classes) == k for t in sc.tasks), name
