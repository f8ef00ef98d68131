"""The supervised learner: strategies, online/offline budgets, class-/task-IL evaluation,
AdaB2N hook-up, input validation and bit-exact resume."""
from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

import crl
from agents.classifier import ClassifierLearner, ReservoirBuffer, steps_per_pass
from crl.checkpoint import load_latest_checkpoint
from crl.cli import main
from crl.config import make_config
from crl.errors import UserError
from crl.registry import SCENARIOS


def _learner(**kw):
    cfg = make_config("supervised", scenario="split-digits", mlp_hidden="32", **kw)
    torch.manual_seed(cfg.seed)
    scenario = SCENARIOS.get(cfg.scenario)(cfg)
    scenario.validate()
    return ClassifierLearner(cfg, scenario, torch.device("cpu")), scenario


@pytest.mark.parametrize("strategy", ["naive", "replay", "er-ace", "der++"])
def test_strategies_train_two_tasks(strategy):
    L, sc = _learner(strategy=strategy, n_tasks=5, epochs=1, replay_size=50, batch_size=16)
    for task in sc.tasks[:2]:
        assert L.train(task, 5) == 5
    assert all(torch.isfinite(p).all() for p in L.network.parameters())
    if strategy == "naive":
        assert L.buffer.size == 0
    else:
        assert L.buffer.size == 50 and L.buffer.seen == 160
        assert set(L.buffer.data["t"].tolist()) == {0, 1}
        assert ("logits" in L.buffer.data) == (strategy == "der++")
    assert 0.0 <= L.evaluate(sc.tasks[0]) <= 1.0


def test_online_is_one_pass_and_offline_counts_epochs():
    assert [steps_per_pass(n, 10) for n in (1, 9, 10, 11, 12, 20, 21)] == [1, 1, 1, 1, 2, 2, 2]
    L, sc = _learner(online=True, batch_size=10, epochs=3, norm="batchnorm", strategy="er-ace")
    n = len(sc.tasks[0].train)
    assert n % 10 == 1  # 291 samples: 28 batches of 10 and one of 11, never a batch of one (BatchNorm)
    assert sc.tasks[0].steps == n // 10
    L.train(sc.tasks[0], sc.tasks[0].steps)
    assert L.passes == 0 and L.cursor == n  # every sample once
    L2, sc2 = _learner(batch_size=16, epochs=3)
    n2 = len(sc2.tasks[0].train)
    assert sc2.tasks[0].steps == 3 * math.ceil(n2 / 16)
    L2.train(sc2.tasks[0], sc2.tasks[0].steps)
    assert L2.passes == 2 and L2.cursor == n2
    _, sc3 = _learner(batch_size=10, epochs=0, steps=7)
    assert sc3.tasks[0].steps is None  # the runner's --steps


def test_class_il_vs_task_il_scores():
    L, sc = _learner(il_mode="task", epochs=2)
    for t in sc.tasks[:2]:
        L.train(t, t.steps)
    cil, til = L.accuracies(sc.tasks[0])
    assert L.evaluate(sc.tasks[0]) == til
    assert til >= cil  # restricting the argmax to the task's classes can only help
    assert til > 0.8  # two-class task-IL on digits is easy, also after a second task
    L2, sc2 = _learner(epochs=2)
    assert L2.evaluate(sc2.tasks[1]) == L2.accuracies(sc2.tasks[1])[0]


def test_er_ace_masks_incoming_logits_to_present_classes():
    L, _ = _learner(strategy="er-ace")
    L.stream_index = 1
    L.ace_seen[:] = True  # every class seen: only the present ones stay visible (tests/test_cl_protocols.py: the rest)
    logits = torch.zeros(4, 10)
    logits[:2, 9] = 50.0  # an absent class dominates the incoming samples
    Y = torch.tensor([0, 1, 2, 3])
    batch = {"y": Y, "task_ids": torch.zeros(4, dtype=torch.long), "num_incoming": 2, "mem_sizes": [2]}
    per = L._loss_terms(logits, batch)
    expected_in = F.cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1]))  # only classes 0, 1 compete
    expected_mem = F.cross_entropy(logits[2:], Y[2:])
    assert per.mean().item() == pytest.approx((expected_in + expected_mem).item(), rel=1e-5)


def test_der_pp_loss_is_ce_plus_weighted_terms():
    L, _ = _learner(strategy="der++", der_alpha=0.3, der_beta=0.7)
    torch.manual_seed(1)
    logits = torch.randn(7, 10)
    Y = torch.randint(10, (7,))
    stored = torch.randn(2, 10)
    batch = {"y": Y, "task_ids": torch.zeros(7, dtype=torch.long), "num_incoming": 3, "mem_sizes": [2, 2],
             "mem_logits": stored}
    per = L._loss_terms(logits, batch)
    expected = (F.cross_entropy(logits[:3], Y[:3]) + 0.3 * F.mse_loss(logits[3:5], stored)
                + 0.7 * F.cross_entropy(logits[5:], Y[5:]))
    assert per.shape == (7,) and per.mean().item() == pytest.approx(expected.item(), rel=1e-5)


def test_reservoir_keeps_every_sample_with_equal_probability():
    kept = torch.zeros(400)
    for rep in range(60):
        buf = ReservoirBuffer(40, torch.Generator().manual_seed(rep), torch.device("cpu"))
        for s in range(0, 400, 10):
            ids = torch.arange(s, s + 10)
            buf.add(x=ids.float()[:, None], y=ids)
        assert buf.size == 40 and len(set(buf.data["y"].tolist())) == 40
        kept[buf.data["y"]] += 1
    rate = kept / 60
    assert rate[:200].mean() == pytest.approx(0.1, abs=0.02) and rate[200:].mean() == pytest.approx(0.1, abs=0.02)


def test_adab2n_gets_per_sample_task_ids_and_aux_loss():
    L, sc = _learner(norm="adab2n", strategy="replay", replay_size=64, batch_size=8, adab2n_lambda=1.0)
    layers = [m for m in L.network.modules() if hasattr(m, "set_task_ids")]
    assert layers
    seen_ids = []
    original = layers[0].set_task_ids
    layers[0].set_task_ids = lambda ids: (seen_ids.append(ids.clone()), original(ids))[1]
    L.train(sc.tasks[0], 10)
    L.train(sc.tasks[1], 3)
    assert all(getattr(m, "cur_task", 1) == 1 for m in layers)
    last = seen_ids[-1]
    assert last[:8].tolist() == [1] * 8 and set(last[8:].tolist()) == {0} and len(last) == 16
    # the replayed samples' ids are the tasks their classes belong to (class -> task map of the split)
    class_task = {c: j for j, t in enumerate(sc.tasks) for c in t.classes}
    assert all(class_task[int(c)] == int(t) for c, t in zip(L.buffer.data["y"], L.buffer.data["t"]))
    assert float(layers[0].aux_loss().detach()) >= 0.0


def _sup_scenario(tasks):
    return crl.Scenario("custom", tasks)


def _ds(x, y):
    return torch.utils.data.TensorDataset(x, y)


@pytest.mark.parametrize("make, needle", [
    (lambda: _sup_scenario([crl.SupervisedTask("a", _ds(torch.rand(4, 3), torch.tensor([0, 1, 2, 0])),
                                                _ds(torch.rand(2, 3), torch.tensor([0, 1])), [0, 1])]),
     "train labels [2] are not among its classes"),
    (lambda: _sup_scenario([crl.SupervisedTask("a", _ds(torch.rand(4, 3), torch.tensor([0, 1, 0, 1])),
                                                _ds(torch.rand(2, 3), torch.tensor([0, 1])), [0, 1]),
                            crl.SupervisedTask("b", _ds(torch.rand(4, 5), torch.tensor([2, 3, 2, 3])),
                                                _ds(torch.rand(2, 5), torch.tensor([2, 3])), [2, 3])]),
     "different input shapes"),
    (lambda: _sup_scenario([crl.SupervisedTask("a", _ds(torch.rand(0, 3), torch.zeros(0, dtype=torch.long)),
                                                _ds(torch.rand(2, 3), torch.tensor([0, 1])), [0, 1])]),
     "empty training set"),
    (lambda: _sup_scenario([crl.SupervisedTask("a", _ds(torch.rand(4, 3), torch.tensor([0., 1., 0., 1.])),
                                                _ds(torch.rand(2, 3), torch.tensor([0., 1.])), [0, 1])]),
     "integer class ids"),
])
def test_invalid_user_scenarios_are_refused_before_training(tmp_path, make, needle):
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        crl.run(scenario=make(), preset="supervised", run_dir=str(tmp_path), progress=False, metrics_every=0)
    assert not any(tmp_path.iterdir())


def test_resume_is_bit_exact(tmp_path):
    argv = ["run", "split-digits", "--n-tasks", "2", "--strategy", "der++", "--norm", "batchnorm", "--epochs", "2",
            "--replay-size", "40", "--checkpoint-every", "20", "--run-dir", str(tmp_path / "runs"), "--no-progress",
            "--metrics-every", "0", "--mlp-hidden", "32"]
    assert main([*argv, "--name", "a"]) == 0
    (run_a,) = (tmp_path / "runs").glob("*/*/a")
    run_b = run_a.with_name("b")
    shutil.copytree(run_a, run_b)
    ckpts = sorted((run_b / "checkpoints").glob("*.pt"))
    last_step = int(ckpts[-1].stem.split("_")[1])
    resume_step = int(ckpts[-2].stem.split("_")[1])
    assert resume_step % 20 == 0 and resume_step != 45  # a mid-task checkpoint of the second task
    ckpts[-1].unlink()
    ckpts[-1].with_suffix(".sha256").unlink()
    (run_b / "summary.json").unlink()
    assert main(["run", "split-digits", "--resume", str(run_b)]) == 0
    a, b = load_latest_checkpoint(run_a), load_latest_checkpoint(run_b)
    assert a["runner"]["global_step"] == b["runner"]["global_step"] == last_step
    for k, v in a["learner"]["network"].items():
        assert torch.equal(v, b["learner"]["network"][k]), k
    for k, v in a["learner"]["buffer"]["data"].items():
        assert torch.equal(v, b["learner"]["buffer"]["data"][k]), k
    assert (a["runner"]["eval_matrix"] == b["runner"]["eval_matrix"]).all()


def test_probe_batch_is_fixed_and_model_ready():
    L, sc = _learner()
    p = L.probe_batch(sc.tasks[0], size=16)
    assert p.shape == (16, 1, 8, 8) and p.dtype == torch.float32 and p.max() <= 1.0
    L.train(sc.tasks[0], 3)
    assert L.probe_batch(sc.tasks[0], size=16) is p


def test_interventions_act_on_the_classifier(tmp_path):
    # meta-rescale needs per_sample_loss/sample_batch and runs extra forwards through AdaB2N
    argv = ["run", "split-digits", "--n-tasks", "2", "--epochs", "0.3", "--strategy", "der++", "--norm", "adab2n",
            "--intervention", "meta-rescale,redo", "--run-dir", str(tmp_path), "--no-progress", "--metrics-every", "5",
            "--mlp-hidden", "16"]
    assert main(argv) == 0
