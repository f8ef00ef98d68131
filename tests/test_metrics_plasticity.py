"""crl.metrics.plasticity against values computed by hand on constructed inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from crl.errors import UserError
from crl.metrics import plasticity as P
from crl.optim import AdamP
from crl.optim_conda import Conda


# ----------------------------------------------------------------------------- fixtures


def rank3_features(n: int = 20, d: int = 8, sv=(5.0, 3.0, 1.0)) -> torch.Tensor:
    """F = U diag(sv) V^T with orthonormal U (n x 3), V (d x 3): singular values exactly sv."""
    g = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(n, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, 3, generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(sv, dtype=torch.float64)) @ v.T


def layer_with_dead_units() -> torch.Tensor:
    """16 samples x 10 units: units 0-5 have |h| = 1 with alternating sign, unit 6 has
    |h| = 1e-3, units 7-9 are always 0. Mean activity = (6 + 0.001) / 10."""
    a = torch.zeros(16, 10)
    signs = torch.tensor([1.0, -1.0]).repeat(8)
    a[:, :6] = signs[:, None]
    a[:, 6] = 1e-3 * signs
    return a


# ----------------------------------------------------------------------------- dormant units


def test_dormant_fraction_tau0_counts_exactly_zero_units():
    acts = layer_with_dead_units()
    assert P.dormant_fraction(acts, 0.0) == pytest.approx(0.3)
    mask = P.dormant_units_mask(acts, 0.0)
    assert mask.tolist() == [False] * 7 + [True] * 3


def test_dormant_fraction_tiny_unit_counts_at_tau_01_only():
    acts = layer_with_dead_units()
    # tiny unit's score: 1e-3 / 0.6001 = 0.00167 <= 0.1; active units score 1 / 0.6001 = 1.67
    assert P.dormant_fraction(acts, 0.1) == pytest.approx(0.4)
    assert P.dormant_units_mask(acts, 0.1).tolist() == [False] * 6 + [True] * 4
    # above every score: everything dormant
    assert P.dormant_fraction(acts, 2.0) == pytest.approx(1.0)


def test_dormant_uses_absolute_activity_and_le_threshold():
    # unit 0 alternates +-0.5 (mean 0 but E|h| = 0.5), unit 1 is 1.5: mean activity 1,
    # scores exactly 0.5 and 1.5 (representable), so tau = 0.5 hits the boundary.
    a = torch.tensor([[0.5, 1.5], [-0.5, 1.5], [0.5, -1.5], [-0.5, 1.5]])
    assert P.dormant_units_mask(a, 0.5).tolist() == [True, False]  # s <= tau
    assert P.dormant_units_mask(a, 0.4999).tolist() == [False, False]
    assert P.dormant_fraction(a, 0.0) == 0.0


def test_dormant_conv_unit_is_channel():
    # (N=4, C=5, H=3, W=3): channel 1 all zero, channel 3 non-zero at a single element,
    # the others all ones. Activities per channel: 1, 0, 1, 1/36, 1.
    a = torch.ones(4, 5, 3, 3)
    a[:, 1] = 0.0
    a[:, 3] = 0.0
    a[2, 3, 1, 2] = 1.0
    mean = (3 + 1 / 36) / 5
    score3 = (1 / 36) / mean  # = 5/109, about 0.046
    assert score3 < 0.1
    assert P.dormant_units_mask(a, 0.0).tolist() == [False, True, False, False, False]
    assert P.dormant_fraction(a, 0.0) == pytest.approx(1 / 5)
    assert P.dormant_fraction(a, 0.1) == pytest.approx(2 / 5)
    assert P.dormant_fraction(a, score3 * 0.999) == pytest.approx(1 / 5)


def test_all_zero_layer_is_all_dormant():
    assert P.dormant_fraction(torch.zeros(8, 6), 0.0) == 1.0
    assert P.dormant_units_mask(torch.zeros(2, 3, 4, 4), 0.025).all()


def test_overall_dormant_fraction_is_unit_weighted():
    a = layer_with_dead_units()  # 3 of 10 dormant at tau 0
    b = torch.zeros(16, 2)  # 2 of 2 dormant
    expected = 5 / 12  # not the unweighted mean (0.3 + 1.0) / 2 = 0.65
    assert P.overall_dormant_fraction([a, b], 0.0) == pytest.approx(expected)
    assert P.overall_dormant_fraction({"fc1": a, "fc2": b}, 0.0) == pytest.approx(expected)
    # each layer is scored against its own mean: a conv layer mixed in
    c = torch.ones(4, 5, 3, 3)
    c[:, 1] = 0.0
    assert P.overall_dormant_fraction([a, c], 0.0) == pytest.approx(4 / 15)


def test_dormant_bad_arguments():
    acts = layer_with_dead_units()
    for tau in (-0.1, float("nan"), "0.1", None):
        with pytest.raises(UserError, match="tau"):
            P.dormant_fraction(acts, tau)
    with pytest.raises(UserError, match="shape"):
        P.dormant_fraction(torch.ones(5), 0.0)
    with pytest.raises(UserError, match="empty"):
        P.dormant_fraction(torch.ones(0, 5), 0.0)
    with pytest.raises(UserError, match="at least one layer"):
        P.overall_dormant_fraction([], 0.0)


# ----------------------------------------------------------------------------- active units


def test_active_fraction_relu_counts_nonzero_elements():
    a = torch.ones(4, 5)
    a[0, :3] = 0.0
    a[1, 4] = 0.0
    a[3, :3] = 0.0
    a[2, 0] = -0.2  # negative (e.g. leaky) is non-zero: active by the reference's definition
    assert P.active_fraction(a) == pytest.approx(1 - 7 / 20)
    assert P.active_fraction(torch.zeros(3, 4)) == 0.0


def test_active_fraction_saturating_activations():
    t = torch.tensor([[0.995, -0.999, 0.5, 0.99]])  # 0.99 is not > 0.99: active
    assert P.active_fraction(t, "tanh") == pytest.approx(0.5)
    s = torch.tensor([[0.005, 0.995, 0.5, 0.01]])  # 0.01 is not < 0.01: active
    assert P.active_fraction(s, "sigmoid") == pytest.approx(0.5)
    with pytest.raises(UserError, match="relu, tanh, sigmoid"):
        P.active_fraction(t, "gelu")


# ----------------------------------------------------------------------------- rank measures


def test_srank_of_rank3_matrix():
    f = rank3_features()  # singular values 5, 3, 1, then ~0
    assert P.srank(f) == 3  # cumulative 5/9, 8/9, 1 -> first >= 0.99 at k = 3
    assert P.srank(f, delta=0.12) == 2  # 8/9 = 0.889 >= 0.88
    assert P.srank(f, delta=0.5) == 1  # 5/9 = 0.556 >= 0.5
    assert P.srank(f.float()) == 3  # float32 input is fine


def test_effective_rank_by_hand_and_numpy():
    f = rank3_features()
    p = np.array([5, 3, 1]) / 9
    by_hand = math.exp(-float(np.sum(p * np.log(p))))
    assert P.effective_rank(f) == pytest.approx(by_hand, rel=1e-9)
    s = np.linalg.svd(f.numpy(), compute_uv=False)
    q = s / s.sum()
    q = q[q > 0]
    assert P.effective_rank(f) == pytest.approx(math.exp(-np.sum(q * np.log(q))), rel=1e-9)
    # equal singular values: effective rank = their number
    assert P.effective_rank(rank3_features(sv=(2.0, 2.0, 2.0))) == pytest.approx(3.0, rel=1e-9)


def test_stable_rank_by_hand():
    f = rank3_features()
    assert P.stable_rank(f) == pytest.approx((25 + 9 + 1) / 25, rel=1e-9)
    fn = f.numpy()
    assert P.stable_rank(f) == pytest.approx(np.sum(fn**2) / np.linalg.norm(fn, 2) ** 2, rel=1e-9)


def test_conv_features_are_flattened():
    f = rank3_features(n=20, d=8)
    assert P.srank(f.reshape(20, 2, 2, 2)) == 3
    assert P.stable_rank(f.reshape(20, 2, 4)) == pytest.approx(1.4, rel=1e-9)


def test_rank_measures_all_zero_features_are_zero_not_nan():
    z = torch.zeros(16, 8)
    assert P.srank(z) == 0
    assert P.effective_rank(z) == 0.0
    assert P.stable_rank(z) == 0.0


def test_one_sample():
    f = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert P.srank(f) == 1
    assert P.effective_rank(f) == pytest.approx(1.0)
    assert P.stable_rank(f) == pytest.approx(1.0)
    assert P.feature_norm(f) == pytest.approx(3.0)
    assert P.per_unit_variance(f) == 0.0
    assert P.dormant_fraction(f, 0.0) == pytest.approx(0.25)


def test_srank_bad_delta():
    for delta in (-0.1, 1.0, "x"):
        with pytest.raises(UserError, match="delta"):
            P.srank(rank3_features(), delta=delta)


# ----------------------------------------------------------------------------- features, weights


def test_feature_norm_and_per_unit_variance():
    f = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    assert P.feature_norm(f) == pytest.approx((5 + 0 + 1) / 3)
    g = torch.tensor([[1.0, 7.0], [3.0, 7.0]])
    # unit 0: values 1, 3 -> population variance 1; unit 1: constant -> 0
    assert P.per_unit_variance(g) == pytest.approx(0.5)


def test_weight_norm():
    assert P.weight_norm(torch.tensor([[3.0, 4.0]])) == pytest.approx(5.0)
    assert P.weight_norm([torch.tensor([[3.0, 4.0]]), torch.tensor([12.0])]) == pytest.approx(13.0)
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
        lin.bias.fill_(12.0)
    assert P.weight_norm(lin) == pytest.approx(13.0)
    assert P.weight_norm(lin.weight) == pytest.approx(5.0)


def test_drift():
    cur = [torch.tensor([[4.0, 1.0]]), torch.tensor([6.0])]
    ref = [torch.tensor([[1.0, 1.0]]), torch.tensor([2.0])]
    assert P.drift(cur, ref) == pytest.approx(5.0)  # sqrt(3^2 + 4^2)
    assert P.drift(cur[0], ref[0]) == pytest.approx(3.0)
    assert P.drift({"a": cur[0], "b": cur[1]}, {"b": ref[1], "a": ref[0]}) == pytest.approx(5.0)
    with pytest.raises(UserError, match="shape"):
        P.drift([torch.zeros(2)], [torch.zeros(3)])
    with pytest.raises(UserError, match="has 2 tensors"):
        P.drift(cur, ref[:1])
    with pytest.raises(UserError, match="different keys"):
        P.drift({"a": cur[0]}, {"b": ref[0]})


def test_update_ratio():
    w = torch.tensor([3.0, 4.0])
    assert P.update_ratio(torch.tensor([0.3, 0.4]), w) == pytest.approx(0.1)
    assert P.update_ratio([torch.tensor([0.6]), torch.tensor([0.8])], [torch.tensor([6.0]), torch.tensor([8.0])]) == (
        pytest.approx(0.1)
    )
    assert P.update_ratio(torch.zeros(2), torch.zeros(2)) == 0.0
    assert P.update_ratio(torch.ones(2), torch.zeros(2)) == math.inf


def test_nap_effective_lr_sgd_and_adam_forms():
    w = torch.tensor([[3.0, 4.0]])  # ||W|| = 5
    assert P.nap_effective_lr(w, 0.5, "sgd") == pytest.approx(0.5 / 25)
    assert P.nap_effective_lr(w, 0.5, "adaptive") == pytest.approx(0.5 / 5)
    # scale invariance: doubling W quarters the SGD form, halves the Adam form
    assert P.nap_effective_lr(2 * w, 0.5, "sgd") == pytest.approx(0.5 / 100)
    assert P.nap_effective_lr(2 * w, 0.5, "adaptive") == pytest.approx(0.5 / 10)
    assert P.nap_effective_lr(torch.zeros(2), 0.1) == math.inf
    with pytest.raises(UserError, match="sgd, adaptive"):
        P.nap_effective_lr(w, 0.1, "adam")
    with pytest.raises(UserError, match="lr must be"):
        P.nap_effective_lr(w, -1.0)


@pytest.mark.parametrize("make", [
    lambda w: torch.optim.RMSprop([w], lr=0.1, alpha=0.9, eps=0.01),
    lambda w: torch.optim.RMSprop([w], lr=0.1, alpha=0.9, eps=0.01, centered=True),
    lambda w: torch.optim.Adam([w], lr=0.1, betas=(0.8, 0.9), eps=0.01),
    lambda w: torch.optim.Adam([w], lr=0.1, betas=(0.8, 0.9), eps=0.01, amsgrad=True),
    lambda w: AdamP([w], lr=0.1, betas=(0.8, 0.9), eps=0.01),
    lambda w: Conda([w], lr=0.1, betas=(0.8, 0.9), eps=0.01),
], ids=["rmsprop", "rmsprop-centered", "adam", "adam-amsgrad", "adamp", "conda"])
def test_adaptive_denominator_reproduces_the_step(make):
    """lr * numerator / (denominator + eps) with our denominator is the step the optimizer took."""
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = make(w)
    grads = [torch.tensor([1e-3, -2e-3, 0.5, -3.0], dtype=torch.float64),
             torch.tensor([2e-3, 1e-3, -0.4, 2.0], dtype=torch.float64)]
    for g in grads:
        before = w.detach().clone()
        w.grad = g.clone()
        opt.step()
    group, state = opt.param_groups[0], opt.state[w]
    den = P.adaptive_denominator(state, group)
    if "exp_avg" in state:  # Adam: bias-corrected first moment over the denominator
        t = float(state["step"])
        numerator = state["exp_avg"] / (1 - group["betas"][0] ** t)
        if "conda" in group:  # Conda: both bias corrections in the step size
            numerator = numerator * (1 - group["betas"][1] ** t) ** 0.5
    else:
        numerator = grads[-1]
    assert torch.allclose(before - w.detach(), group["lr"] * numerator / (den + group["eps"]), rtol=1e-12, atol=1e-15)
    assert P.adaptive_denominator({"momentum_buffer": torch.ones(4)}, {"lr": 0.1}) is None  # SGD


def test_below_eps_fraction():
    dens = [torch.tensor([0.005, 0.02, 0.001, 0.5]), torch.tensor([0.05, 0.2])]
    assert P.below_eps_fraction(dens[0], [0.01]) == 0.5
    assert P.below_eps_fraction(dens, [0.01, 0.1]) == pytest.approx(3 / 6)
    assert P.below_eps_fraction(dens, [0.0, 1.0]) == pytest.approx(2 / 6)
    with pytest.raises(UserError, match="one eps >= 0 per tensor"):
        P.below_eps_fraction(dens, [0.01])


def test_nap_effective_lr_is_the_sgd_step_on_the_sphere():
    """For a scale-invariant f(W) = g(W/||W||), one SGD step of lr moves the direction as a step of
    lr/||W||^2 on the unit sphere would (to first order), whatever ||W|| is."""
    torch.manual_seed(0)
    target = torch.randn(6, dtype=torch.float64)

    def f(w):
        return ((w / w.norm()) - target).pow(2).sum()

    u = torch.randn(6, dtype=torch.float64)
    u = u / u.norm()
    lr = 1e-4
    for scale in (1.0, 3.0, 10.0):
        w = (scale * u).requires_grad_(True)
        f(w).backward()
        after = (w - lr * w.grad).detach()
        moved = after / after.norm() - u
        uu = u.clone().requires_grad_(True)
        f(uu).backward()
        tangent = uu.grad - (uu.grad @ u) * u  # the gradient on the sphere
        eta = P.nap_effective_lr(w.detach(), lr, "sgd")
        assert eta == pytest.approx(lr / scale**2)
        assert torch.allclose(moved, -eta * tangent, rtol=1e-3, atol=1e-12)


def test_mean_abs_and_rms_weight():
    w = [torch.tensor([[3.0, -4.0]]), torch.tensor([0.0, -1.0])]
    assert P.mean_abs_weight(w) == pytest.approx((3 + 4 + 0 + 1) / 4)
    assert P.rms_weight(w) == pytest.approx(math.sqrt((9 + 16 + 0 + 1) / 4))
    # width-free: 100 copies of the same layer leave both unchanged, while ||W||_F grows 10-fold
    wide = torch.tensor([3.0, -4.0]).repeat(100)
    assert P.mean_abs_weight(wide) == pytest.approx(3.5) and P.rms_weight(wide) == pytest.approx(math.sqrt(12.5))
    assert P.weight_norm(wide) == pytest.approx(10 * 5.0)


def test_rms_drift():
    cur = [torch.tensor([[4.0, 1.0]]), torch.tensor([6.0])]
    ref = [torch.tensor([[1.0, 1.0]]), torch.tensor([2.0])]
    assert P.rms_drift(cur, ref) == pytest.approx(math.sqrt((9 + 0 + 16) / 3))
    assert P.rms_drift(cur[0], ref[0]) == pytest.approx(math.sqrt(9 / 2))
    with pytest.raises(UserError, match="shape"):
        P.rms_drift([torch.zeros(2)], [torch.zeros(3)])


def test_dohare_dormant_units():
    # 200 inputs x 4 units: unit 0 always active, unit 1 active on 1 input (0.5% < 1%),
    # unit 2 active on 2 inputs (exactly 1%: not dormant), unit 3 never active
    a = torch.zeros(200, 4)
    a[:, 0] = 0.5
    a[7, 1] = 3.0
    a[[3, 9], 2] = 0.1
    assert P.dohare_dormant_mask(a).tolist() == [False, True, False, True]
    assert P.dohare_dormant_fraction(a) == 0.5
    # ReDo with tau 0 on the same layer flags only the all-zero unit (its score compares with the layer mean)
    assert P.dormant_units_mask(a, 0.0).tolist() == [False, False, False, True]
    # conv (N, C, H, W): per channel over batch and positions; channel 1 is non-zero at 1 of 2*10*10 positions
    c = torch.zeros(2, 2, 10, 10)
    c[:, 0] = 1.0
    c[1, 1, 4, 4] = 1.0
    assert P.dohare_dormant_mask(c).tolist() == [False, True]
    # several layers: unit-weighted, total dormant / total units
    assert P.dohare_dormant_fraction({"a": a, "c": c}) == pytest.approx(3 / 6)
    assert P.dohare_dormant_fraction(a, threshold=0.02) == 0.75  # 1% is below 2% too
    with pytest.raises(UserError, match="threshold"):
        P.dohare_dormant_mask(a, 1.5)


# ----------------------------------------------------------------------------- entropy


def test_predictive_entropy():
    for k in (2, 7, 51):
        assert P.predictive_entropy(torch.full((3, k), 2.5)) == pytest.approx(math.log(k))
    # p = (1/4, 3/4) and uniform over 2: mean of the two entropies
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])
    h1 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert P.predictive_entropy(logits) == pytest.approx((h1 + math.log(2)) / 2)
    # (N, actions, bins): entropy over the last axis
    assert P.predictive_entropy(torch.zeros(4, 3, 10)) == pytest.approx(math.log(10))
    # a near one-hot distribution has near-zero entropy
    assert P.predictive_entropy(torch.tensor([[100.0, 0.0, 0.0]])) < 1e-40


# ----------------------------------------------------------------------------- NaN / inf


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_inf_raise_user_error(bad):
    f = rank3_features().float()
    f[2, 3] = bad
    calls = [
        lambda: P.dormant_fraction(f, 0.0),
        lambda: P.dormant_units_mask(f, 0.1),
        lambda: P.overall_dormant_fraction([torch.ones(3, 2), f], 0.0),
        lambda: P.active_fraction(f),
        lambda: P.srank(f),
        lambda: P.effective_rank(f),
        lambda: P.stable_rank(f),
        lambda: P.feature_norm(f),
        lambda: P.per_unit_variance(f),
        lambda: P.weight_norm(f),
        lambda: P.drift(f, torch.zeros_like(f)),
        lambda: P.update_ratio(torch.zeros_like(f), f),
        lambda: P.nap_effective_lr(f, 0.1),
        lambda: P.mean_abs_weight(f),
        lambda: P.rms_weight(f),
        lambda: P.rms_drift(f, torch.zeros_like(f)),
        lambda: P.dohare_dormant_mask(f),
        lambda: P.predictive_entropy(f),
    ]
    for call in calls:
        with pytest.raises(UserError, match=r"^metrics: NaN/inf in "):
            call()


def test_numpy_input_accepted():
    assert P.srank(rank3_features().numpy()) == 3


# ----------------------------------------------------------------------------- probe task


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def test_probe_reduces_loss_with_documented_target():
    net = make_mlp()
    x = torch.randn(32, 8)
    out = P.plasticity_probe(net, x, steps=100, lr=1e-2, seed=3)
    assert set(out) == {"loss_before", "loss_after", "reduction"}
    # loss_before = mean of eps^2, eps ~ N(0, 1) from a CPU generator seeded with `seed`
    eps = torch.randn(32, 4, generator=torch.Generator().manual_seed(3))
    assert out["loss_before"] == pytest.approx(float((eps**2).mean()), rel=1e-5)
    assert out["loss_after"] < 0.5 * out["loss_before"]
    assert out["reduction"] == pytest.approx(out["loss_before"] - out["loss_after"])
    assert P.plasticity_probe(net, x)["reduction"] > 0  # defaults: 100 steps, lr 1e-3


def test_probe_leaves_original_and_rng_untouched():
    net = make_net()
    x = torch.randn(32, 8)
    net(x).pow(2).sum().backward()  # the original has gradients and updated BN stats
    net.eval()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    grads = {k: v.grad.clone() for k, v in net.named_parameters()}
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    rng = torch.get_rng_state()

    out = P.plasticity_probe(net, x, steps=20, lr=1e-2, seed=0)

    assert out["reduction"] > 0
    assert not net.training
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]), k
        assert torch.equal(v.grad, grads[k]), k
    for k, v in net.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert torch.equal(torch.get_rng_state(), rng)


def test_probe_is_deterministic_in_seed():
    net = make_net()  # dropout: the seed also fixes the copy's dropout masks
    x = torch.randn(16, 8)
    a = P.plasticity_probe(net, x, steps=10, seed=1)
    b = P.plasticity_probe(net, x, steps=10, seed=1)
    c = P.plasticity_probe(net, x, steps=10, seed=2)
    assert a == b
    assert a["loss_before"] != c["loss_before"]


def test_probe_zero_steps_and_no_grad_context():
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(6, 3)
    out = P.plasticity_probe(net, x, steps=0)
    assert out["loss_after"] == out["loss_before"] and out["reduction"] == 0.0
    with torch.no_grad():
        assert P.plasticity_probe(net, x, steps=5, lr=1e-2)["reduction"] > 0


def test_probe_bad_arguments():
    net = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with pytest.raises(UserError, match="steps"):
        P.plasticity_probe(net, x, steps=-1)
    with pytest.raises(UserError, match="lr"):
        P.plasticity_probe(net, x, lr=0.0)
    with pytest.raises(UserError, match="NaN/inf in probe inputs"):
        P.plasticity_probe(net, torch.full((4, 3), float("nan")))
    frozen = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(UserError, match="trainable"):
        P.plasticity_probe(frozen, x)

    class TupleNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(UserError, match="float tensor"):
        P.plasticity_probe(TupleNet(), x)
