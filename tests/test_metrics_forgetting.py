"""crl.metrics.forgetting against values computed by hand on constructed eval matrices."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crl.errors import UserError
from crl.metrics import forgetting as M

NAN = float("nan")

# R[i, j] = score on task j after training task i.
# R[1, 0] > R[0, 0] makes the max and first forms differ on task 0; R[0, 1] = 0.99 (before
# task 1 was trained) is higher than R[1, 1] and must not enter the max for task 1.
R3 = [
    [0.90, 0.99, 0.20],
    [0.95, 0.80, 0.30],
    [0.70, 0.50, 0.95],
]


def test_average_final():
    assert M.average_final(R3) == pytest.approx((0.70 + 0.50 + 0.95) / 3)


def test_average_seen():
    np.testing.assert_allclose(M.average_seen(R3), [0.90, (0.95 + 0.80) / 2, (0.70 + 0.50 + 0.95) / 3])


def test_forgetting_max_minus_last():
    # task 0: max(0.90, 0.95) - 0.70 = 0.25; task 1: max(0.80) - 0.50 = 0.30
    np.testing.assert_allclose(M.task_forgetting(R3, "max"), [0.25, 0.30])
    assert M.average_forgetting(R3) == pytest.approx(0.275)
    assert M.average_forgetting(R3, variant="max") == pytest.approx(0.275)


def test_forgetting_first_minus_last():
    # task 0: 0.90 - 0.70 = 0.20; task 1: 0.80 - 0.50 = 0.30
    np.testing.assert_allclose(M.task_forgetting(R3, "first"), [0.20, 0.30])
    assert M.average_forgetting(R3, variant="first") == pytest.approx(0.25)


def test_max_forgetting_is_negative_when_final_beats_all_earlier():
    # final row is not part of the max (unlike mammoth, which would clamp to 0)
    assert M.average_forgetting([[0.5, 0.0], [0.7, 0.9]], "max") == pytest.approx(-0.2)


def test_backward_transfer():
    # ((0.70 - 0.90) + (0.50 - 0.80)) / 2
    assert M.backward_transfer(R3) == pytest.approx(-0.25)
    assert M.backward_transfer(R3) == pytest.approx(-M.average_forgetting(R3, "first"))


def test_forward_transfer():
    # zero baseline: (R[0, 1] + R[1, 2]) / 2
    assert M.forward_transfer(R3) == pytest.approx((0.99 + 0.30) / 2)
    # per-task baseline (b_0 unused): ((0.99 - 0.10) + (0.30 - 0.20)) / 2
    assert M.forward_transfer(R3, baseline=[123.0, 0.10, 0.20]) == pytest.approx(0.495)
    assert M.forward_transfer(R3, baseline=0.1) == pytest.approx((0.89 + 0.20) / 2)
    with pytest.raises(UserError, match="baseline"):
        M.forward_transfer(R3, baseline=[0.1, 0.2])


def test_summarize():
    s = M.summarize(R3, baseline=[0.0, 0.10, 0.20])
    assert {"avg_final", "avg_forgetting", "bwt", "fwt"} <= set(s)
    assert s["avg_final"] == pytest.approx(2.15 / 3)
    assert s["avg_forgetting"] == pytest.approx(0.275)
    assert s["bwt"] == pytest.approx(-0.25)
    assert s["fwt"] == pytest.approx(0.495)
    assert s["forgetting_max_minus_last"] == pytest.approx(0.275)
    assert s["forgetting_first_minus_last"] == pytest.approx(0.25)
    assert s["num_tasks"] == 3
    assert M.summarize(R3, variant="first")["avg_forgetting"] == pytest.approx(0.25)
    assert all(isinstance(v, (int, float)) for v in s.values())


def test_input_types():
    for r in (np.array(R3), torch.tensor(R3), R3):
        assert M.average_forgetting(r) == pytest.approx(0.275)


def test_single_task_has_no_forgetting_or_transfer_value():
    # the averages run over an empty set: no value (None), not 0 ("no forgetting") nor NaN ("not evaluated")
    s = M.summarize([[0.8]])
    assert s == {
        "avg_final": pytest.approx(0.8),
        "avg_forgetting": None,
        "bwt": None,
        "fwt": None,
        "forgetting_max_minus_last": None,
        "forgetting_first_minus_last": None,
        "num_tasks": 1,
    }
    assert M.forward_transfer([[0.8]], baseline=0.1) is None
    assert M.task_forgetting([[0.8]]).shape == (0,)


def test_nan_marks_not_evaluated():
    # only seen tasks evaluated (upper triangle NaN): forgetting and BWT are unaffected,
    # FWT needs unseen tasks and is NaN
    seen = [[0.90, NAN, NAN], [0.95, 0.80, NAN], [0.70, 0.50, 0.95]]
    assert M.average_forgetting(seen) == pytest.approx(0.275)
    assert M.backward_transfer(seen) == pytest.approx(-0.25)
    assert math.isnan(M.forward_transfer(seen))
    # a missing intermediate eval is skipped by the max: task 0 -> 0.90 - 0.70
    gap = [[0.90, 0.99, 0.20], [NAN, 0.80, 0.30], [0.70, 0.50, 0.95]]
    np.testing.assert_allclose(M.task_forgetting(gap, "max"), [0.20, 0.30])
    # a task whose final score is missing drops out of the average
    nofinal = [[0.90, 0.99, 0.20], [0.95, 0.80, 0.30], [NAN, 0.50, 0.95]]
    assert M.average_forgetting(nofinal) == pytest.approx(0.30)
    assert M.average_final(nofinal) == pytest.approx((0.50 + 0.95) / 2)


@pytest.mark.parametrize(
    "bad",
    [
        [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],  # not square
        [0.1, 0.2],  # 1-D
        [[0.1, 0.2], [0.3]],  # ragged
        np.zeros((0, 0)),  # empty
        [["a", "b"], ["c", "d"]],  # not numeric
    ],
)
def test_bad_shapes_raise_user_error(bad):
    with pytest.raises(UserError, match="metrics: "):
        M.summarize(bad)


def test_inf_and_bad_variant_raise_user_error():
    with pytest.raises(UserError, match="NaN/inf"):
        M.average_final([[0.1, math.inf], [0.2, 0.3]])
    with pytest.raises(UserError, match="max, first"):
        M.average_forgetting(R3, variant="last")


def test_normalize_returns():
    r = [[10.0, 0.0], [20.0, 5.0], [NAN, -5.0]]
    out = M.normalize_returns(r, low=[0.0, -5.0], high=[20.0, 5.0])
    np.testing.assert_allclose(out, [[0.5, 0.5], [1.0, 1.0], [NAN, 0.0]])
    np.testing.assert_allclose(M.normalize_returns([[2.0, 4.0]], 0.0, 4.0), [[0.5, 1.0]])
    with pytest.raises(UserError, match="high != low"):
        M.normalize_returns(r, low=0.0, high=[20.0, 0.0])
    with pytest.raises(UserError, match="one value per task"):
        M.normalize_returns(r, low=[0.0, 0.0, 0.0], high=1.0)


# ----------------------------------------------------------------------------- CORA

STEPS = np.arange(0, 35, 5)  # evals at 0, 5, ..., 30 (on the task boundaries too)
V0 = [0.0, 0.5, 1.0, 0.8, 0.6, 0.7, 0.4]
V1 = [0.1, 0.1, 0.2, 0.6, 0.9, 0.4, 0.3]
V2 = [0.2, 0.3, 0.25, 0.35, 0.5, 0.45, 0.9]


def test_cora_isolated_forgetting_one_cycle():
    # 3 tasks x 10 steps; F[0, i, j] = R_i(step 10 j) - R_i(step 10 (j + 1))
    F = M.cora_isolated_forgetting([(STEPS, V0), (STEPS, V1), (STEPS, V2)], steps_per_task=10)
    expected = np.full((1, 3, 3), NAN)
    expected[0, 0, 1] = 1.0 - 0.6  # task 1 trained during (10, 20]
    expected[0, 0, 2] = 0.6 - 0.4
    expected[0, 1, 2] = 0.9 - 0.3
    np.testing.assert_allclose(F, expected)


def test_cora_isolated_forgetting_two_cycles():
    steps = np.arange(0, 45, 5)
    v0 = [0.0, 0.5, 1.0, 0.8, 0.6, 0.7, 0.9, 0.85, 0.5]
    v1 = [0.1, 0.1, 0.2, 0.6, 0.9, 0.4, 0.3, 0.8, 0.95]
    F = M.cora_isolated_forgetting([(steps, v0), (steps, v1)], steps_per_task=10, num_cycles=2)
    expected = np.full((2, 2, 2), NAN)
    expected[0, 0, 1] = 1.0 - 0.6  # cycle 0: only later tasks
    expected[1, 0, 0] = 0.6 - 0.9  # cycle 1, task 0 retrained in (20, 30]: relearning, negative
    expected[1, 0, 1] = 0.9 - 0.5
    expected[1, 1, 0] = 0.9 - 0.3
    expected[1, 1, 1] = 0.3 - 0.95
    np.testing.assert_allclose(F, expected)


def test_cora_off_boundary_unsorted_and_nan_values():
    steps = [27, 2, 7, 12, 17, 22]
    vals = [0.1, 0.0, 0.4, 0.9, 0.6, NAN]  # step 22 not evaluated
    # before task 1 (step <= 10): step 7 -> 0.4; last in (10, 20]: step 17 -> 0.6
    # before task 2 (step <= 20): step 17 -> 0.6; last in (20, 30]: step 27 -> 0.1
    F = M.cora_isolated_forgetting([(steps, vals), ([5, 20], [0.3, 0.7]), ([0], [0.0])], steps_per_task=10)
    assert F[0, 0, 1] == pytest.approx(0.4 - 0.6)
    assert F[0, 0, 2] == pytest.approx(0.6 - 0.1)
    # task 1: the eval at step 20 closes task 1's window, so it is "before task 2", not in
    # task 2's window (20, 30], which has no eval: NaN
    assert math.isnan(F[0, 1, 2])


def test_cora_boundary_eval_is_before_the_next_task():
    F = M.cora_isolated_forgetting([([0], [0.0]), ([5, 20, 25], [0.3, 0.7, 0.2])], steps_per_task=10, num_cycles=2)
    # cycle 1, task 0 trained in (20, 30]: before = eval at step 20 (0.7), not step 5 (0.3)
    assert F[1, 1, 0] == pytest.approx(0.7 - 0.2)


def test_cora_zero_shot_transfer():
    Z = M.cora_zero_shot_transfer([(STEPS, V0), (STEPS, V1), (STEPS, V2)], steps_per_task=10)
    expected = np.full((3, 3), NAN)
    expected[1, 0] = 0.2 - 0.1  # j = 0: last eval in (0, 10] minus the first eval
    expected[2, 0] = 0.25 - 0.2
    expected[2, 1] = 0.5 - 0.25  # isolated: minus the last eval before task 1
    np.testing.assert_allclose(Z, expected)


def test_cora_bad_inputs():
    with pytest.raises(UserError, match="steps_per_task"):
        M.cora_isolated_forgetting([(STEPS, V0)], steps_per_task=0)
    with pytest.raises(UserError, match="equal length"):
        M.cora_isolated_forgetting([(STEPS, V0[:-1])], steps_per_task=10)
    with pytest.raises(UserError, match="pair"):
        M.cora_zero_shot_transfer([STEPS], steps_per_task=10)
    with pytest.raises(UserError, match="num_cycles"):
        M.cora_isolated_forgetting([(STEPS, V0)], steps_per_task=10, num_cycles=0)
