"""The plasticity benchmarks of Dohare et al. 2024 (slowly-changing regression, incremental CIFAR-100)
and Ash & Adams' warm-start arms, as their papers and official code define them."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

import crl
from _tiny_datasets import write_cifar100, write_mnist
from crl.cli import main
from crl.config import make_config
from crl.registry import SCENARIOS, load_builtins
from scenarios.split import class_order

load_builtins()


def _scr(**over):
    cfg = make_config("slowly-changing-regression", scenario="slowly-changing-regression", **over)
    return SCENARIOS.get("slowly-changing-regression")(cfg)


def test_slowly_changing_regression_follows_dohare_et_al():
    sc = _scr(scr_tasks=3, scr_examples=500, seed=4)
    assert len(sc.tasks) == 3
    gen = torch.Generator().manual_seed(4)  # the target network is the first thing drawn from the seed
    pm = lambda *shape: torch.randint(0, 2, shape, generator=gen).float() * 2 - 1  # noqa: E731
    w, b, v, c = pm(100, 20), pm(100), pm(100), pm(1)
    for t in sc.tasks:
        x = t.train.x.float()
        assert x.shape == (500, 20) and set(x.unique().tolist()) <= {0.0, 1.0}
        assert (x[:, :15] == x[0, :15]).all() and t.info["flipping_bits"] == x[0, :15].int().tolist()
        assert len({tuple(r) for r in x[:, 15:].int().tolist()}) > 16  # the 5 other bits vary
        # lop/nets/fix_ltu_net.py: S = (m - sum w + b) / 2, tau = beta (m + 1) - S, LTU = [w.x + b > tau]
        for xi, yi in zip(x[:20], t.train.y[:20]):
            S = (20 - w.sum(1) + b) / 2
            f = ((w @ xi + b) > (0.7 * 21 - S)).float()
            assert yi.item() == pytest.approx((v @ f + c).item())
        # test set: every setting of the 5 free bits with the task's flipping bits
        xt = t.test.x.int()
        assert len(xt) == 32 and {tuple(r) for r in xt[:, 15:].tolist()} == set(itertools.product((0, 1), repeat=5))
        assert (xt[:, :15] == x[0, :15].int()).all()
    bits = [t.info["flipping_bits"] for t in _scr(scr_tasks=6, scr_examples=10, scr_flip="one").tasks]
    assert all(sum(a != b for a, b in zip(p, q)) == 1 for p, q in zip(bits, bits[1:]))  # flip_one: one bit


def test_slowly_changing_regression_trains_with_mse(tmp_path):
    import yaml

    s = crl.run(make_config("slowly-changing-regression", scenario="slowly-changing-regression", scr_tasks=2,
                            scr_examples=50, run_dir=str(tmp_path), progress=False, log_every=25, metrics_every=0))
    R = np.array(s["eval_matrix"])
    assert R.shape == (2, 2) and (R <= 0).all()  # scores are -MSE
    assert s["eval/task1/mse"] == pytest.approx(-R[1, 1])
    cfg = yaml.safe_load((Path(s["run_dir"]) / "config.yaml").read_text())
    assert (cfg["agent"], cfg["mlp_hidden"], cfg["optimizer"], cfg["lr"], cfg["batch_size"]) == \
        ("regressor", "5", "sgd", 0.01, 1)  # Dohare et al.'s learner (cfg/sgd/bp/relu.json)


def test_regressor_loss_is_mse_and_refuses_class_strategies(tmp_path):
    from agents.regressor import RegressionLearner

    sc = _scr(scr_tasks=1, scr_examples=20)
    cfg = make_config("slowly-changing-regression", scenario="slowly-changing-regression")
    from crl.options import building

    with building(cfg):
        learner = RegressionLearner(cfg, sc, torch.device("cpu"))
    logits, y = torch.randn(6, 1), torch.randn(6)
    terms = learner._loss_terms(logits, {"y": y})
    assert terms.mean().item() == pytest.approx(torch.nn.functional.mse_loss(logits[:, 0], y).item())
    code = main(["run", "slowly-changing-regression", "--strategy", "er-ace", "--scr-tasks", "1",
                 "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert code == 2 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, needles", [
    (["slowly-changing-regression", "--scr-flipping-bits", "20"], ["--scr-flipping-bits", "--scr-inputs"]),
    (["incremental-cifar100", "--class-increment", "7"], ["--class-increment", "accepted: 1, 2, 4, 5"]),
    (["warm-start", "--arm", "hot"], ["--arm", "warm", "cold"]),
    (["split-digits", "--class-order", "random"], ["--class-order", "seed", "fixed", "adab2n"]),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, needles):
    write_cifar100(tmp_path / "data", per_class=1)
    code = main(["run", *argv, "--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "runs"),
                 "--no-progress", "--no-download"] if argv[0] != "slowly-changing-regression" else
                ["run", *argv, "--run-dir", str(tmp_path / "runs"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]


def test_incremental_cifar100_grows_one_training_set(tmp_path):
    write_cifar100(tmp_path, per_class=2, test_per_class=1)
    cfg = make_config("incremental-cifar100", scenario="incremental-cifar100", data_dir=str(tmp_path), seed=2)
    assert cfg.il_mode == "task" and cfg.torso == "resnet18"  # logits restricted to the classes so far
    sc = SCENARIOS.get("incremental-cifar100")(cfg)
    order = class_order(100, 2, "seed")
    assert len(sc.tasks) == 20
    for k, t in enumerate(sc.tasks):
        assert sorted(t.classes) == sorted(order[:5 * (k + 1)]) and t.info["new_classes"] == order[5 * k:5 * k + 5]
        assert sorted(set(t.train.y.tolist())) == sorted(t.classes) and len(t.train) == 2 * 5 * (k + 1)
        assert sorted(set(t.test.y.tolist())) == sorted(t.classes) and len(t.test) == 5 * (k + 1)
        assert t.train.x.data_ptr() == sc.tasks[0].train.x.data_ptr()  # slices of one copy
        assert t.train.augment is not None and getattr(t.test, "augment", None) is None
    assert len(SCENARIOS.get("incremental-cifar100")(make_config(
        "incremental-cifar100", data_dir=str(tmp_path), n_tasks=3, class_increment=10)).tasks) == 3


def test_warm_start_arms(tmp_path):
    write_mnist(tmp_path, per_class=3)
    base = dict(dataset="mnist", data_dir=str(tmp_path))
    warm = SCENARIOS.get("warm-start")(make_config("supervised", **base))
    cold = SCENARIOS.get("warm-start")(make_config("supervised", arm="cold", **base))
    assert [t.name for t in warm.tasks] == ["part", "all"] and [t.name for t in cold.tasks] == ["all"]
    assert len(warm.tasks[0].train) < len(warm.tasks[1].train) == len(cold.tasks[0].train)
    assert torch.equal(cold.tasks[0].train.x, warm.tasks[1].train.x)


def test_regressor_logs_plasticity_but_no_predictive_entropy(tmp_path):
    """Its outputs are not class logits: no softmax entropy (it would read a meaningless 0)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = crl.run(make_config("slowly-changing-regression", scenario="slowly-changing-regression", scr_tasks=1,
                            scr_examples=40, run_dir=str(tmp_path), progress=False, metrics_every=20))
    events = EventAccumulator(s["run_dir"])
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "plasticity/weight_norm" in tags and "plasticity/predictive_entropy" not in tags
