"""Value heads: transforms and losses checked against hand-computed values and invariants."""
from __future__ import annotations

import math

import pytest
import torch

from crl.config import make_config
from crl.errors import UserError
from crl.nn.heads import (
    C51Head,
    C51Support,
    HLGauss,
    HLGaussHead,
    ScalarHead,
    TwoHot,
    TwoHotHead,
    ValueHead,
)
from crl.registry import HEADS

INF = float("inf")


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _logits_of(probs: torch.Tensor) -> torch.Tensor:
    return probs.clamp(min=1e-30).log()


# ----------------------------------------------------------------------------- HL-Gauss


def test_hlgauss_support_and_buffers():
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    assert t.edges.shape == (52,) and t.centres.shape == (51,)
    assert t.edges.dtype == torch.float32 and t.centres.dtype == torch.float32
    buffers = dict(t.named_buffers())
    assert set(buffers) == {"edges", "centres"}
    assert t.edges[0].item() == -10.0 and t.edges[-1].item() == 10.0
    width = 20.0 / 51
    assert t.bin_width == pytest.approx(width)
    assert torch.allclose(t.edges[1:] - t.edges[:-1], torch.full((51,), width), atol=1e-6)
    assert torch.allclose(t.centres, t.edges[:-1] + width / 2, atol=1e-6)
    # reference table (value_heads_and_torsos.md 1.4): width 0.3922, sigma 0.2941, top centre 9.804
    assert t.bin_width == pytest.approx(0.3922, abs=1e-4)
    assert t.sigma == pytest.approx(0.2941, abs=1e-4)
    assert t.centres[-1].item() == pytest.approx(9.804, abs=1e-3)


def test_hlgauss_tiny_support_matches_hand_computed_erf():
    # 4 bins on [0, 4]: width 1, ratio 0.5 -> sigma 0.5; y = 1.3.
    t = HLGauss(0.0, 4.0, 4, sigma_ratio=0.5)
    assert t.sigma == 0.5
    y = 1.3
    z = _phi((4 - y) / 0.5) - _phi((0 - y) / 0.5)
    expected = [(_phi((k + 1 - y) / 0.5) - _phi((k - y) / 0.5)) / z for k in range(4)]
    # the same numbers written out, so a wrong helper cannot hide a wrong transform
    assert expected == pytest.approx([0.270854, 0.648011, 0.080796, 0.000338], abs=1e-6)
    got = t.to_probs(torch.tensor([y]))
    assert got.shape == (1, 4) and got.dtype == torch.float32
    assert got[0].tolist() == pytest.approx(expected, abs=1e-6)
    # decode = sum p_i c_i with centres 0.5, 1.5, 2.5, 3.5 (not the edges)
    decoded = sum(p * c for p, c in zip(expected, [0.5, 1.5, 2.5, 3.5]))
    assert t.to_value(_logits_of(got)).item() == pytest.approx(decoded, abs=1e-5)


def test_hlgauss_reference_table_numbers():
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    p = t.to_probs(t.centres[25:26])  # target exactly on the middle centre (0.0)
    assert p[0, 25].item() == pytest.approx(0.495, abs=1e-3)
    assert p[0, 24].item() == pytest.approx(0.230, abs=1e-3)
    assert p[0, 26].item() == pytest.approx(0.230, abs=1e-3)
    assert 5 <= int((p > 1e-3).sum()) <= 6
    v = t.to_value(_logits_of(t.to_probs(torch.tensor([9.9, 10.0, 1.0, 3.3]))))
    assert v.tolist() == pytest.approx([9.698, 9.729, 1.0, 3.3], abs=1e-3)


def test_hlgauss_probs_sum_to_one_and_nonnegative():
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    y = torch.cat([torch.linspace(-15, 15, 301), torch.tensor([-10.0, 10.0, 0.0])])
    p = t.to_probs(y)
    assert p.shape == (304, 51)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(304), atol=1e-5)


def test_hlgauss_decode_roundtrip_inside_support():
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    y = torch.linspace(-8.0, 8.0, 161)
    assert torch.allclose(t.to_value(_logits_of(t.to_probs(y))), y, atol=1e-4)


def test_hlgauss_decode_is_biased_inward_near_edges():
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    v = t.to_value(_logits_of(t.to_probs(torch.tensor([9.9, -9.9]))))
    assert v[0].item() < 9.9 and v[1].item() > -9.9
    assert v[0].item() == pytest.approx(-v[1].item(), abs=1e-4)  # symmetric support


@pytest.mark.parametrize("far", [100.0, 1e3, 1e30, INF])
def test_hlgauss_far_targets_are_clamped_without_nan(far):
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    p = t.to_probs(torch.tensor([far, -far]))
    assert torch.isfinite(p).all() and p.dtype == torch.float32
    edge = t.to_probs(torch.tensor([10.0, -10.0]))
    assert torch.equal(p, edge)  # identical to the clamped target
    assert torch.allclose(p.sum(-1), torch.ones(2), atol=1e-5)


def test_hlgauss_unclamped_formula_would_fail_but_transform_does_not():
    # Without clamping, y = 12 has (numerically) no mass inside [-10, 10] in float32:
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    z = torch.erf((t.edges[-1] - 12.0) / (math.sqrt(2) * t.sigma)) - torch.erf(
        (t.edges[0] - 12.0) / (math.sqrt(2) * t.sigma))
    assert z.item() == 0.0  # the NaN trap the clamp avoids
    assert torch.isfinite(t.to_probs(torch.tensor([12.0]))).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_hlgauss_computes_in_float32(dtype):
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    y = torch.tensor([0.5, -3.0], dtype=dtype)
    assert t.to_probs(y).dtype == torch.float32
    assert t.to_value(torch.zeros(2, 51, dtype=dtype)).dtype == torch.float32


def test_hlgauss_keeps_leading_dims():
    t = HLGauss(-10.0, 10.0, 51, 0.75)
    assert t.to_probs(torch.zeros(3, 5)).shape == (3, 5, 51)
    assert t.to_value(torch.zeros(3, 5, 51)).shape == (3, 5)


def test_uniform_logits_decode_to_mean_of_centres():
    t = HLGauss(-2.0, 6.0, 4, 0.75)  # width 2, centres -1, 1, 3, 5
    assert t.centres.tolist() == [-1.0, 1.0, 3.0, 5.0]
    assert t.to_value(torch.zeros(4)).item() == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("kwargs", [
    dict(v_min=-1.0, v_max=1.0, num_bins=1),
    dict(v_min=1.0, v_max=1.0, num_bins=5),
    dict(v_min=2.0, v_max=1.0, num_bins=5),
    dict(v_min=-INF, v_max=1.0, num_bins=5),
    dict(v_min=-1.0, v_max=1.0, num_bins=5, sigma_ratio=0.0),
    dict(v_min=-1.0, v_max=1.0, num_bins=5, sigma_ratio=-1.0),
    dict(v_min=-1.0, v_max=1.0, num_bins=2.5),
])
def test_hlgauss_rejects_bad_arguments(kwargs):
    with pytest.raises(UserError):
        HLGauss(**kwargs)


# ----------------------------------------------------------------------------- two-hot


def test_twohot_hand_computed():
    t = TwoHot(0.0, 4.0, 4)  # centres 0.5, 1.5, 2.5, 3.5
    assert t.centres.tolist() == [0.5, 1.5, 2.5, 3.5]
    p = t.to_probs(torch.tensor([1.9, 2.5, 0.5, 3.5, 10.0, -10.0, 0.0, 3.75]))
    expected = torch.tensor([
        [0.0, 0.6, 0.4, 0.0],  # (2.5 - 1.9) / 1 on c1, the rest on c2
        [0.0, 0.0, 1.0, 0.0],  # on a centre
        [1.0, 0.0, 0.0, 0.0],  # first centre
        [0.0, 0.0, 0.0, 1.0],  # last centre
        [0.0, 0.0, 0.0, 1.0],  # clipped to c_3
        [1.0, 0.0, 0.0, 0.0],  # clipped to c_0
        [1.0, 0.0, 0.0, 0.0],  # v_min lies below c_0: clipped
        [0.0, 0.0, 0.0, 1.0],  # above c_3: clipped
    ])
    assert torch.allclose(p, expected, atol=1e-6)


def test_twohot_decode_exact_inside_outer_centres():
    t = TwoHot(-10.0, 10.0, 51)
    y = torch.cat([torch.linspace(t.c_first, t.c_last, 257), t.centres])
    p = t.to_probs(y)
    assert torch.allclose(p.sum(-1), torch.ones(len(y)), atol=1e-6)
    assert int((p > 0).sum(-1).max()) <= 2
    assert torch.allclose(p @ t.centres, y, atol=1e-5)
    assert torch.allclose(t.to_value(_logits_of(p)), y, atol=1e-5)


def test_twohot_far_targets_no_nan():
    t = TwoHot(-10.0, 10.0, 51)
    p = t.to_probs(torch.tensor([INF, -INF, 1e6]))
    assert torch.isfinite(p).all()
    assert p[0, -1].item() == 1.0 and p[1, 0].item() == 1.0 and p[2, -1].item() == 1.0


# ----------------------------------------------------------------------------- C51


def test_c51_atoms():
    s = C51Support(-10.0, 10.0, 51)
    assert s.atoms.shape == (51,)
    assert s.delta_z == pytest.approx(0.4)
    assert torch.allclose(s.atoms, -10.0 + 0.4 * torch.arange(51.0), atol=1e-6)
    assert s.atoms[0].item() == -10.0 and s.atoms[-1].item() == 10.0


def test_c51_projection_three_atoms_by_hand():
    s = C51Support(-1.0, 1.0, 3)  # atoms -1, 0, 1; dz = 1
    p = torch.tensor([[0.2, 0.5, 0.3]] * 4)
    r = torch.tensor([0.5, 1.5, -3.0, 0.25])
    d = torch.tensor([0.5, 1.0, 0.9, 0.0])
    got = s.project(p, r, d)
    expected = torch.tensor([
        # Tz = 0.5 + 0.5 z = [0, 0.5, 1]: 0.2 -> atom 0; 0.5 split 0.25/0.25 over atoms 0/1; 0.3 -> atom 1
        [0.0, 0.45, 0.55],
        # Tz = 1.5 + z = [0.5, 1.5, 2.5] -> clamp [0.5, 1, 1]: 0.1/0.1, then 0.5 + 0.3 on atom 1
        [0.0, 0.1, 0.9],
        # Tz = -3 + 0.9 z = [-3.9, -3, -2.1] -> all clamp to -1
        [1.0, 0.0, 0.0],
        # terminal: Tz = 0.25 for every atom: 0.75 on atom 0 (z=0), 0.25 on atom 1 (z=1)
        [0.0, 0.75, 0.25],
    ])
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(4), atol=1e-6)


def test_c51_projection_preserves_mean_when_nothing_is_clamped():
    s = C51Support(-10.0, 10.0, 51)
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(16, 51, generator=g), -1)
    r = torch.rand(16, generator=g) - 0.5
    d = torch.full((16,), 0.9)
    out = s.project(p, r, d)
    assert (out >= 0).all()
    assert torch.allclose(out.sum(-1), torch.ones(16), atol=1e-5)
    # |r + 0.9 z| <= 9.5 < 10: linear interpolation keeps the mean exactly
    assert torch.allclose(out @ s.atoms, r + d * (p @ s.atoms), atol=1e-4)


def test_c51_head_target_loss_and_q():
    head = C51Head(3, -1.0, 1.0)
    p = torch.tensor([[0.2, 0.5, 0.3]])
    next_out = p.log().requires_grad_(True)
    target = head.bootstrap_target(next_out, torch.tensor([0.5]), torch.tensor([0.5]))
    assert not target.requires_grad
    assert torch.allclose(target, torch.tensor([[0.0, 0.45, 0.55]]), atol=1e-6)
    # Q = sum p z = -0.2 + 0.3
    assert head.q_values(p.log().view(1, 1, 3)).item() == pytest.approx(0.1, abs=1e-6)
    out = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    logz = math.log(1 + math.e + math.e ** 2)
    expected = -(0.45 * (1.0 - logz) + 0.55 * (2.0 - logz))
    loss = head.loss(out, target)
    assert loss.shape == (1,) and loss.item() == pytest.approx(expected, abs=1e-5)
    loss.sum().backward()
    # d CE / d logits = softmax - target
    assert torch.allclose(out.grad, torch.softmax(out.detach(), -1) - target, atol=1e-6)


# ----------------------------------------------------------------------------- scalar heads


def test_scalar_losses_by_hand():
    q = torch.tensor([[0.0], [0.0], [1.5], [3.0], [-4.0]])
    y = torch.tensor([0.5, -2.0, 1.0, 3.0, 0.0])
    huber = ScalarHead("huber").loss(q, y)
    assert huber.tolist() == pytest.approx([0.125, 1.5, 0.125, 0.0, 3.5], abs=1e-6)
    mse = ScalarHead("mse").loss(q, y)
    assert mse.tolist() == pytest.approx([0.25, 4.0, 0.25, 0.0, 16.0], abs=1e-6)  # Dopamine's mse_loss: no 1/2


def test_scalar_bootstrap_and_q_values():
    head = ScalarHead("huber")
    next_out = torch.tensor([[2.0], [-1.0]], requires_grad=True)
    y = head.bootstrap_target(next_out, torch.tensor([1.0, 0.5]), torch.tensor([0.9, 0.0]))
    assert y.tolist() == pytest.approx([2.8, 0.5], abs=1e-6)
    assert not y.requires_grad and y.shape == (2,)
    out = torch.arange(6.0).view(2, 3, 1)
    assert torch.equal(head.q_values(out), torch.arange(6.0).view(2, 3))


def test_scalar_loss_is_float32_for_half_inputs():
    head = ScalarHead("mse")
    loss = head.loss(torch.ones(3, 1, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.bfloat16))
    assert loss.dtype == torch.float32 and loss.tolist() == [1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- categorical heads


def test_hlgauss_head_bootstrap_is_scalar_and_loss_is_cross_entropy():
    head = HLGaussHead(51, -10.0, 10.0, 0.75)
    t = head.transform
    next_out = _logits_of(t.to_probs(torch.tensor([3.0, -2.0]))).requires_grad_(True)
    y = head.bootstrap_target(next_out, torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0]))
    assert y.shape == (2,) and not y.requires_grad
    assert y.tolist() == pytest.approx([2.5, 0.0], abs=1e-4)
    out = torch.randn(2, 51)
    expected = -(t.to_probs(y) * torch.log_softmax(out, -1)).sum(-1)
    assert torch.allclose(head.loss(out, y), expected, atol=1e-6)


def test_categorical_loss_is_minimised_by_the_target_distribution():
    head = HLGaussHead(51, -10.0, 10.0, 0.75)
    y = torch.tensor([1.234, -7.5])
    p = head.transform.to_probs(y)
    out = _logits_of(p).requires_grad_(True)
    loss = head.loss(out, y)
    entropy = -(p * p.clamp(min=1e-30).log()).sum(-1)
    assert torch.allclose(loss, entropy, atol=1e-5)  # CE(p, p) = H(p)
    loss.sum().backward()
    assert out.grad.abs().max().item() < 1e-5  # gradient softmax - p vanishes
    assert (head.loss(torch.zeros(2, 51), y) > loss.detach()).all()


@pytest.mark.parametrize("make", [lambda: HLGaussHead(51, -10.0, 10.0, 0.75), lambda: TwoHotHead(51, -10.0, 10.0)])
@pytest.mark.parametrize("far", [1e3, -1e3, INF, -INF])
def test_categorical_loss_gradient_finite_for_far_targets(make, far):
    head = make()
    out = (torch.randn(3, 51) * 30).requires_grad_(True)
    loss = head.loss(out, torch.full((3,), far))
    assert torch.isfinite(loss).all() and loss.dtype == torch.float32
    loss.sum().backward()
    assert torch.isfinite(out.grad).all()


def test_twohot_head_loss_by_hand():
    head = TwoHotHead(4, 0.0, 4.0)
    out = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    logz = math.log(sum(math.exp(k) for k in range(4)))
    # y = 1.9 -> 0.6 on bin 1, 0.4 on bin 2
    expected = -(0.6 * (1.0 - logz) + 0.4 * (2.0 - logz))
    assert head.loss(out, torch.tensor([1.9])).item() == pytest.approx(expected, abs=1e-5)


def test_heads_loss_float32_with_bfloat16_logits():
    for head in (HLGaussHead(11, -1.0, 1.0), TwoHotHead(11, -1.0, 1.0), C51Head(11, -1.0, 1.0)):
        out = torch.zeros(2, 11, dtype=torch.bfloat16)
        tgt = torch.zeros(2) if not isinstance(head, C51Head) else torch.full((2, 11), 1 / 11)
        loss = head.loss(out, tgt)
        assert loss.dtype == torch.float32
        assert head.q_values(out.view(2, 1, 11)).dtype == torch.float32


def test_q_values_shapes_and_decode():
    head = HLGaussHead(51, -10.0, 10.0)
    vals = torch.tensor([[1.0, -2.0, 3.0], [0.0, 4.0, -5.0]])
    out = _logits_of(head.transform.to_probs(vals))  # (2, 3, 51) -- B, A, K
    q = head.q_values(out)
    assert q.shape == (2, 3)
    assert torch.allclose(q, vals, atol=1e-4)
    assert head(out).shape == (2, 3)  # forward == q_values
    assert head.q_values(out.unsqueeze(0)).shape == (1, 2, 3)


def test_shape_mismatch_raises():
    head = HLGaussHead(51, -10.0, 10.0)
    with pytest.raises(ValueError):
        head.q_values(torch.zeros(2, 3, 50))
    with pytest.raises(ValueError):
        head.loss(torch.zeros(2, 51), torch.zeros(3))
    with pytest.raises(ValueError):
        C51Head(5, -1.0, 1.0).loss(torch.zeros(2, 5), torch.zeros(2))


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name,k,cls", [
    ("scalar-huber", 1, ScalarHead),
    ("scalar-mse", 1, ScalarHead),
    ("hlgauss", 51, HLGaussHead),
    ("twohot", 51, TwoHotHead),
    ("c51", 51, C51Head),
])
def test_registry_builds_heads(name, k, cls):
    head = HEADS.get(name)(make_config(num_bins=51, v_min=-10.0, v_max=10.0, sigma_ratio=0.75))
    assert isinstance(head, cls) and isinstance(head, ValueHead)
    assert head.num_outputs == k
    assert HEADS.entry(name).meta["categorical"] == (k > 1)


def test_registry_factories_pass_arguments_through():
    h = HEADS.get("hlgauss")(make_config(num_bins=21, v_min=-5.0, v_max=5.0, sigma_ratio=2.0))
    assert h.transform.num_bins == 21 and h.transform.sigma == pytest.approx(2.0 * 10 / 21)
    assert HEADS.get("scalar-mse")(make_config()).kind == "mse"
    assert HEADS.get("scalar-huber")(make_config()).kind == "huber"
    c = HEADS.get("c51")(make_config(num_bins=21, v_min=-5.0, v_max=5.0))
    assert c.support.atoms[0].item() == -5.0 and c.support.num_atoms == 21


def test_registry_unknown_and_bad_values_raise_user_error():
    with pytest.raises(UserError, match="--head"):
        HEADS.get("hl-gaus")
    with pytest.raises(UserError):
        HEADS.get("c51")(make_config(num_bins=1))
    with pytest.raises(UserError):
        HEADS.get("twohot")(make_config(v_min=10.0, v_max=-10.0))
