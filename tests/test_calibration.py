"""Calibration: ECE against a hand computation, the h-calibration objective by hand, recalibration
keeping the accuracy, and eval/<task>/ece in classifier runs."""
from __future__ import annotations

import pytest
import torch

import crl
from crl.config import make_config
from crl.errors import UserError
from crl.metrics.calibration import (HCalibrator, TemperatureScaler, binned_ece, expected_calibration_error,
                                     h_calibration_loss, recalibrate)


def test_ece_matches_the_hand_computation():
    # top-label confidences 0.9 (right), 0.9 (wrong), 0.5 (right), 0.45 (wrong); 15 bins of width 1/15:
    # bin (13/15, 14/15]: |1/2 - 0.9| * 2/4 = 0.2; bin (7/15, 8/15]: |1 - 0.5| / 4 = 0.125;
    # bin (6/15, 7/15]: |0 - 0.45| / 4 = 0.1125  ->  ECE = 0.4375
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.5, 0.3, 0.2], [0.3, 0.25, 0.45]],
                         dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4375, abs=1e-12)
    assert binned_ece(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(0.5)  # 1.0: last bin
    assert binned_ece(torch.tensor([0.7]), torch.tensor([1.0]), n_bins=10) == pytest.approx(0.3)
    with pytest.raises(UserError, match="NaN"):
        expected_calibration_error(torch.full((2, 2), float("nan")), torch.tensor([0, 1]))


def test_h_calibration_objective_matches_the_hand_computation():
    # events (q, y): 0.8/1, 0.2/0, 0.4/1, 0.6/0; sorted q - y: 0.2, -0.6, 0.6, -0.2; window 2 (3 values,
    # zero-padded, / 3): |-0.4|/3, |0.2|/3, |-0.2|/3, |0.4|/3; 4 events in 4 clusters: mean 0.1 (/ (1 + 1e-5))
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6]], dtype=torch.float64)
    loss = h_calibration_loss(probs, torch.tensor([0, 0]), window=2, leave_one_class_out=False, loss_weight=1.0)
    assert loss.item() == pytest.approx(0.1 / (1 + 1e-5), rel=1e-9)
    # leave-one-class-out: without class 0's samples nothing is left, so only "without class 1" counts
    assert h_calibration_loss(probs, torch.tensor([0, 0]), window=2, loss_weight=1.0).item() == pytest.approx(loss.item())
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert h_calibration_loss(perfect, torch.tensor([0, 1]), window=2).item() == 0.0


def _overconfident(n, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(C, (n,), generator=g)
    logits = torch.randn(n, C, generator=g)
    logits[torch.arange(n), y] += 1.0
    return 4.0 * logits, y  # right 55-60% of the time, confidence near 1


def test_recalibration_keeps_the_argmax_and_lowers_the_ece():
    logits, y = _overconfident(400)
    for method, kw in (("temperature", {}), ("h-calibration", dict(iterations=15))):
        out = recalibrate(logits[:200], y[:200], logits[200:], y[200:], method, **kw)
        assert out["acc_after"] == out["acc_before"]
        assert out["ece_after"] < 0.5 * out["ece_before"], (method, out)
    T = TemperatureScaler().fit(logits[:200], y[:200]).temperature
    assert T > 2.0  # overconfident logits are softened
    h = HCalibrator(iterations=3).fit(logits[:200], y[:200])
    assert torch.equal(h(logits).argmax(1), logits.argmax(1))


def test_classifier_logs_ece_at_every_evaluation(tmp_path):
    cfg = make_config("supervised", scenario="split-digits", run_dir=str(tmp_path), progress=False,
                      metrics_every=0, n_tasks=2, epochs=0.2, mlp_hidden="16")
    summary = crl.run(cfg)
    flat = dict(summary)
    for part in summary.values():
        if isinstance(part, dict):
            flat.update(part)
    eces = {k: v for k, v in flat.items() if k.endswith("/ece")}
    assert len(eces) == 2 and all(0.0 <= v <= 1.0 for v in eces.values()), summary
