"""Classification losses (--loss): Z-loss and AnyLoss against their equations on hand-computed
inputs, their composition with the classifier's strategies, and the refused combinations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from agents.classifier import ClassifierLearner
from crl.cli import main
from crl.config import make_config
from crl.errors import UserError
from crl.losses.anyloss import AnyLoss, approximate, metric_value
from crl.losses.ce import CrossEntropy
from crl.losses.zloss import ZLoss
from crl.registry import LOSSES, SCENARIOS, load_builtins

load_builtins()


def _learner(**kw):
    cfg = make_config("supervised", scenario="split-digits", mlp_hidden="32", **kw)
    torch.manual_seed(cfg.seed)
    scenario = SCENARIOS.get(cfg.scenario)(cfg)
    return ClassifierLearner(cfg, scenario, torch.device("cpu")), scenario


# ----------------------------------------------------------------------------- Z-loss

def test_zloss_forward_and_gradient_match_the_equations():
    o = torch.tensor([[1.0, 2.0, 3.0, 6.0]], dtype=torch.float64, requires_grad=True)
    # by hand: mu = 3, deviations (-2, -1, 0, 3), var = 14 / 4 = 3.5, z_c = 3 / sqrt(3.5)
    z = [d / math.sqrt(3.5) for d in (-2.0, -1.0, 0.0, 3.0)]
    a, b = 0.5, 2.0
    expected = math.log1p(math.exp(a * (b - z[3]))) / a
    loss = ZLoss(a, b)(o, torch.tensor([3]))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    loss.sum().backward()
    # dL/dz_c = -sigmoid(a (b - z_c)); dz_c/do_k = (1[k = c] - 1/D - z_c z_k / D) / sigma
    s = 1.0 / (1.0 + math.exp(-a * (b - z[3])))
    grad = [-s * ((k == 3) - 0.25 - z[3] * z[k] / 4) / math.sqrt(3.5) for k in range(4)]
    assert o.grad[0].tolist() == pytest.approx(grad, rel=1e-7, abs=1e-12)
    assert abs(sum(grad)) < 1e-12  # shift invariance: the gradient has no component along (1, ..., 1)


def test_zloss_is_shift_and_scale_invariant_and_masks_classes():
    torch.manual_seed(0)
    o, y = torch.randn(5, 7, dtype=torch.float64), torch.randint(7, (5,))
    loss = ZLoss(2.0, 1.0)
    assert torch.allclose(loss(o, y), loss(3.7 * o - 11.0, y))
    assert not torch.allclose(loss(o, y), loss(-o, y))  # a negative scale reverses the ranking
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[:, 5:] = False
    y = y % 5
    assert torch.allclose(loss(o, y, mask), loss(o[:, :5], y))  # statistics over the visible classes only


# ----------------------------------------------------------------------------- AnyLoss

def test_anyloss_metrics_equal_the_textbook_ones_on_hard_predictions():
    # y = 1 1 1 0 0, predictions 1 0 1 1 0: TP 2, FN 1, FP 1, TN 1
    y = torch.tensor([[1.0], [1.0], [1.0], [0.0], [0.0]], dtype=torch.float64)
    yhat = torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)
    s = 1e-5
    assert metric_value("accuracy", y, yhat).item() == pytest.approx(3 / 5)
    assert metric_value("f1", y, yhat).item() == pytest.approx(2 * 2 / (3 + 3 + s))
    assert metric_value("fbeta", y, yhat, beta=2.0).item() == pytest.approx(5 * 2 / (4 * 3 + 3 + s))
    assert metric_value("balanced-accuracy", y, yhat).item() == pytest.approx((2 * 2 + 3 * 1) / (2 * 3 * 2 + s))
    assert metric_value("balanced-accuracy", y, yhat).item() == pytest.approx((2 / 3 + 1 / 2) / 2, rel=1e-5)
    assert metric_value("gmean", y, yhat).item() == pytest.approx((2 / 3) * (1 / 2), rel=1e-5)


def test_anyloss_binary_term_is_the_official_any_fbeta():
    """Two classes with logits (0, o): softmax gives p_1 = sigmoid(o), the binary network output of the
    official code. Its ``Any_Fbeta`` (anyloss_extension, AnyLoss_Code.ipynb, b = 1, s = 1e-5):
    yhat = 1 / (1 + exp(-L (p - 0.5))); 1 - 2 sum(y yhat) / (sum(y) + sum(yhat) + s)."""
    o = [0.3, -1.2, 2.0, 0.1]
    y = [1, 0, 1, 0]
    L = 73.0
    p = [1 / (1 + math.exp(-v)) for v in o]
    yhat = [1 / (1 + math.exp(-L * (q - 0.5))) for q in p]
    official = 1 - 2 * sum(a * b for a, b in zip(y, yhat)) / (sum(y) + sum(yhat) + 1e-5)
    logits = torch.tensor([[0.0, v] for v in o], dtype=torch.float64)
    value = metric_value("f1", torch.tensor(y, dtype=torch.float64)[:, None],
                         approximate(torch.softmax(logits, 1)[:, 1:], L))
    assert 1 - value.item() == pytest.approx(official, rel=1e-9)


def test_anyloss_forward_and_gradient_match_the_chain_rule():
    """F1 one-vs-rest macro with L = 4 on 3 samples, 2 classes (both present), by hand."""
    logits = torch.tensor([[0.5, -0.5], [0.2, 0.4], [-1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 1])
    L, s = 4.0, 1e-5
    loss = AnyLoss("f1", scale=L)(logits, y)
    with torch.no_grad():
        p = torch.softmax(logits, 1).tolist()
    A = [[1 / (1 + math.exp(-L * (p[i][c] - 0.5))) for c in range(2)] for i in range(3)]
    Y = [[1.0 if y[i] == c else 0.0 for c in range(2)] for i in range(3)]
    f1, dF_dA = [], [[0.0, 0.0] for _ in range(3)]
    for c in range(2):
        tp = sum(Y[i][c] * A[i][c] for i in range(3))
        den = sum(Y[i][c] for i in range(3)) + sum(A[i][c] for i in range(3)) + s
        f1.append(2 * tp / den)
        for i in range(3):
            dF_dA[i][c] = (2 * Y[i][c] * den - 2 * tp) / den ** 2
    assert loss.item() == pytest.approx(1 - (f1[0] + f1[1]) / 2, rel=1e-12)
    loss.backward()
    for i in range(3):
        dL_dp = [-0.5 * dF_dA[i][c] * L * A[i][c] * (1 - A[i][c]) for c in range(2)]
        # softmax Jacobian: dp_c/do_k = p_c (1[c = k] - p_k)
        grad = [sum(dL_dp[c] * p[i][c] * ((c == k) - p[i][k]) for c in range(2)) for k in range(2)]
        assert logits.grad[i].tolist() == pytest.approx(grad, rel=1e-9)


def test_anyloss_macro_skips_classes_without_samples_and_is_one_value_per_group():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 5), torch.tensor([0, 0, 1, 1, 1, 0])
    loss = AnyLoss("balanced-accuracy")
    assert loss.per_sample is False and loss(logits, y).dim() == 0
    two = torch.zeros(6, 5, dtype=torch.bool)
    two[:, :2] = True  # with a mask, softmax over classes 0 and 1 only
    assert torch.allclose(loss(logits, y, two), loss(logits[:, :2], y))


def test_ce_is_torch_cross_entropy_with_masked_logits():
    torch.manual_seed(0)
    o, y = torch.randn(4, 6), torch.tensor([0, 2, 1, 2])
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, :3] = True
    assert torch.equal(CrossEntropy()(o, y), F.cross_entropy(o, y, reduction="none"))
    assert torch.allclose(CrossEntropy()(o, y, mask), F.cross_entropy(o[:, :3], y, reduction="none"))


# ----------------------------------------------------------------------------- in the classifier

@pytest.mark.parametrize("loss", ["zloss", "anyloss"])
@pytest.mark.parametrize("strategy", ["naive", "replay", "der++"])
def test_losses_train_with_each_strategy(loss, strategy):
    L, sc = _learner(loss=loss, strategy=strategy, n_tasks=5, replay_size=50, batch_size=16)
    before = [p.detach().clone() for p in L.network.parameters()]
    for task in sc.tasks[:2]:
        assert L.train(task, 4) == 4
    assert all(torch.isfinite(p).all() for p in L.network.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, L.network.parameters()))


def test_der_pp_with_anyloss_is_anyloss_plus_weighted_terms():
    L, _ = _learner(loss="anyloss", strategy="der++", der_alpha=0.3, der_beta=0.7)
    torch.manual_seed(1)
    logits, Y, stored = torch.randn(7, 10), torch.tensor([0, 1, 0, 2, 3, 4, 5]), torch.randn(2, 10)
    batch = {"y": Y, "task_ids": torch.zeros(7, dtype=torch.long), "num_incoming": 3, "mem_sizes": [2, 2],
             "mem_logits": stored}
    per = L._loss_terms(logits, batch)
    any_ = AnyLoss("f1", 73.0)
    expected = any_(logits[:3], Y[:3]) + 0.3 * F.mse_loss(logits[3:5], stored) + 0.7 * any_(logits[5:], Y[5:])
    assert per.shape == (7,) and per.mean().item() == pytest.approx(expected.item(), rel=1e-5)


def test_er_ace_with_anyloss_masks_the_incoming_softmax():
    L, _ = _learner(loss="anyloss", strategy="er-ace")
    L.stream_index = 1
    L.ace_seen[:] = True  # every class seen: only the classes present in the incoming batch stay visible
    logits = torch.zeros(4, 10)
    logits[:2, 9] = 50.0
    Y = torch.tensor([0, 1, 2, 3])
    batch = {"y": Y, "task_ids": torch.zeros(4, dtype=torch.long), "num_incoming": 2, "mem_sizes": [2]}
    per = L._loss_terms(logits, batch)
    any_ = AnyLoss("f1", 73.0)
    expected = any_(logits[:2, :2], Y[:2]) + any_(logits[2:], Y[2:])
    assert per.mean().item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("kw, needles", [
    (dict(loss="zloss", strategy="er-ace"), ["--loss zloss", "at least 3", "er-ace"]),
    (dict(loss="zloss", il_mode="task"), ["--loss zloss", "--il-mode task"]),
    (dict(loss="anyloss", intervention="meta-rescale"), ["--loss anyloss", "meta-rescale"]),
    (dict(loss="focal"), ["--loss", "unknown loss 'focal'", "accepted:"]),
])
def test_undefined_combinations_are_refused(kw, needles):
    with pytest.raises(UserError) as err:
        _learner(**kw)
    for needle in needles:
        assert needle in str(err.value)


def test_bad_loss_combination_is_one_line_exit_2(capsys, tmp_path):
    code = main(["run", "split-digits", "--loss", "zloss", "--strategy", "er-ace", "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--loss zloss" in err[0]
    assert not any(tmp_path.iterdir())


def test_loss_options_need_their_loss(capsys, tmp_path):
    code = main(["run", "split-digits", "--zloss-a", "2", "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--loss zloss" in err[0]


def test_losses_are_in_the_registry_with_one_help_line():
    assert LOSSES.names()[:3] == ["ce", "zloss", "anyloss"]
    assert all("\n" not in LOSSES.entry(n).help for n in LOSSES.names())
