"""Tests for crl.optim: update rules checked against steps computed by hand."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from crl.errors import UserError
from crl.optim import LR_SCHEDULES, AdamP, LRSchedule, NorMuon, build_optimizer, newton_schulz5
from crl.registry import OPTIMIZERS

DT = torch.float64


def _param(values) -> nn.Parameter:
    return nn.Parameter(torch.tensor(values, dtype=DT))


def _roundtrip(obj):
    """torch.save / torch.load (default weights_only) of a state dict, as a checkpoint would."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf)


# ------------------------------------------------------------------------------ AdamP


def test_adamp_channel_projection_hand_computed():
    # every row of the gradient is orthogonal to the same row of the weight -> channel view fires
    w0 = np.array([[1.0, 2.0], [3.0, -1.0]])
    g = np.array([[2.0, -1.0], [1.0, 3.0]])
    p = _param(w0.tolist())
    p.grad = torch.tensor(g, dtype=DT)
    lr, wd, ratio = 0.1, 0.5, 0.1
    opt = AdamP([p], lr=lr, weight_decay=wd, wd_ratio=ratio)
    opt.step()
    # first Adam step: lr/(1-b1) * (1-b1) g / (|g| + eps) = lr * sign(g) (up to eps)
    u = np.sign(g)
    # remove the radial part row by row: u - w_hat <w_hat, u>
    row0 = u[0] - (w0[0] / math.sqrt(5)) * (-1.0 / math.sqrt(5))  # = (1.2, -0.6)
    row1 = u[1] - (w0[1] / math.sqrt(10)) * (2.0 / math.sqrt(10))  # = (0.4, 1.2)
    np.testing.assert_allclose(row0, [1.2, -0.6])
    np.testing.assert_allclose(row1, [0.4, 1.2])
    expected = w0 * (1 - lr * wd * ratio) - lr * np.stack([row0, row1])
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=0, atol=1e-7)
    assert opt.state[p]["projected"] == 1
    assert opt.projection_rate() == 1.0


def test_adamp_layer_projection_on_layernorm_layer():
    # Linear(bias=False) -> LayerNorm: f(cW) = f(W), so <grad, W>_F = 0 (layer view fires)
    torch.manual_seed(0)
    lin = nn.Linear(6, 4, bias=False).double()
    x = torch.randn(16, 6, dtype=DT)
    target = torch.randn(16, 4, dtype=DT)
    loss = (nn.functional.layer_norm(lin(x), (4,), eps=0.0) - target).pow(2).mean()
    loss.backward()
    w0, g = lin.weight.detach().clone(), lin.weight.grad.clone()
    assert abs(float((w0 * g).sum())) < 1e-10 * float(w0.norm() * g.norm()) + 1e-12
    lr, wd, ratio = 0.01, 0.2, 0.1
    opt = AdamP(lin.parameters(), lr=lr, weight_decay=wd, wd_ratio=ratio)
    opt.step()
    assert opt.state[lin.weight]["projected"] == 2  # per-row cosines are too large for the channel test
    u = g / (g.abs() + 1e-8)  # first step direction
    w_hat = w0 / (w0.norm() + 1e-8)
    expected = w0 * (1 - lr * wd * ratio) - lr * (u - w_hat * (w_hat * u).sum())
    torch.testing.assert_close(lin.weight.detach(), expected, rtol=0, atol=1e-12)
    # the step itself has no radial component
    step = lin.weight.detach() - w0 * (1 - lr * wd * ratio)
    # (up to the eps in w_hat = w / (||w|| + eps))
    assert abs(float((step * w0).sum())) < 1e-7 * float(step.norm() * w0.norm())


def test_adamp_channel_projection_on_batchnorm_layer():
    # Linear(bias=False) -> BatchNorm (per-channel): each row of W is scale invariant
    torch.manual_seed(1)
    lin = nn.Linear(5, 3, bias=False).double()
    x = torch.randn(32, 5, dtype=DT)
    h = lin(x)
    h = (h - h.mean(0)) / h.std(0)  # batch normalisation without eps: exactly invariant per row
    loss = (h - 1.0).pow(3).mean()
    loss.backward()
    opt = AdamP(lin.parameters(), lr=0.01)
    opt.step()
    assert opt.state[lin.weight]["projected"] == 1


def test_adamp_without_projection_equals_adamw():
    torch.manual_seed(2)
    w = torch.randn(4, 3, dtype=DT)
    b = torch.randn(3, dtype=DT)
    pa, ba = nn.Parameter(w.clone()), nn.Parameter(b.clone())
    pw, bw = nn.Parameter(w.clone()), nn.Parameter(b.clone())
    adamp = AdamP([pa, ba], lr=0.05, weight_decay=0.3)
    adamw = torch.optim.AdamW([pw, bw], lr=0.05, weight_decay=0.3)
    for _ in range(4):
        # gradient nearly parallel to the weight: cosine far above delta / sqrt(dim)
        gw = 2.0 * pa.detach() + 0.1 * torch.randn(4, 3, dtype=DT)
        gb = torch.randn(3, dtype=DT)
        pa.grad, pw.grad = gw.clone(), gw.clone()
        ba.grad, bw.grad = gb.clone(), gb.clone()
        adamp.step()
        adamw.step()
        assert adamp.state[pa]["projected"] == 0
        torch.testing.assert_close(pa.detach(), pw.detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(ba.detach(), bw.detach(), rtol=0, atol=1e-12)
    assert "projected" not in adamp.state[ba]  # 1-D tensors are never tested
    assert adamp.projection_rate() == 0.0


def test_adamp_nesterov_two_steps_hand_computed():
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
    p = _param([1.0, -2.0])
    opt = AdamP([p], lr=lr, betas=(b1, b2), eps=eps, nesterov=True)
    w = np.array([1.0, -2.0])
    m = np.zeros(2)
    v = np.zeros(2)
    for t, g in enumerate([np.array([0.5, 1.0]), np.array([-1.0, 0.25])], start=1):
        p.grad = torch.tensor(g, dtype=DT)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
        w = w - lr / (1 - b1**t) * (b1 * m + (1 - b1) * g) / denom
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=0, atol=1e-12)


def test_adamp_state_dict_roundtrip():
    _check_state_roundtrip(lambda ps: AdamP(ps, lr=0.01, weight_decay=0.1))


# ------------------------------------------------------------------------------ NorMuon

A, B, C = 3.4445, -4.7750, 2.0315


def _ns_by_hand(G: np.ndarray, steps: int = 5) -> np.ndarray:
    X = G.T if G.shape[0] > G.shape[1] else G
    X = X / (np.sqrt((X * X).sum()) + 1e-7)
    for _ in range(steps):
        AA = X @ X.T
        X = A * X + (B * AA + C * AA @ AA) @ X
    return X.T if G.shape[0] > G.shape[1] else X


@pytest.mark.parametrize("shape", [(2, 3), (3, 2), (4, 4)])
def test_newton_schulz_matches_hand_iteration(shape):
    rng = np.random.default_rng(0)
    G = rng.standard_normal(shape)
    out = newton_schulz5(torch.tensor(G, dtype=DT))
    assert out.dtype == DT
    np.testing.assert_allclose(out.numpy(), _ns_by_hand(G), rtol=0, atol=1e-12)
    # float32 input stays float32; bf16 may be asked for
    assert newton_schulz5(torch.tensor(G, dtype=torch.float32)).dtype == torch.float32
    assert newton_schulz5(torch.tensor(G), dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [(8, 16), (16, 8)])
def test_newton_schulz_singular_values_in_band(shape):
    torch.manual_seed(3)
    r = min(shape)
    U, _ = torch.linalg.qr(torch.randn(shape[0], r, dtype=DT))
    V, _ = torch.linalg.qr(torch.randn(shape[1], r, dtype=DT))
    s = torch.linspace(0.1, 3.0, r, dtype=DT)  # condition number 30
    G = U @ torch.diag(s) @ V.T
    O = newton_schulz5(G)
    sv = torch.linalg.svdvals(O)
    assert sv.min() > 0.6 and sv.max() < 1.2, sv  # the quintic's band around 1 (not exactly 1)
    # singular vectors are kept: U^T O V is diagonal
    D = U.T @ O @ V
    off = D - torch.diag(torch.diagonal(D))
    assert off.abs().max() < 1e-10


def _normuon_step_by_hand(W, G, M, v, lr, wd, beta=0.95, beta2=0.95, nesterov=True, eps=1e-10):
    """One NorMuon step with numpy, row by row; returns (W, M, v, O_hat)."""
    M = beta * M + (1 - beta) * G
    U = (1 - beta) * G + beta * M if nesterov else M
    O = _ns_by_hand(U)
    rows, cols = O.shape
    v = np.array([[beta2 * v[i, 0] + (1 - beta2) * np.mean(O[i] ** 2)] for i in range(rows)])
    O_hat = np.stack([O[i] / (math.sqrt(v[i, 0]) + eps) for i in range(rows)])
    O_hat = O_hat * np.linalg.norm(O) / (np.linalg.norm(O_hat) + eps)
    O_hat = O_hat * math.sqrt(max(1.0, rows / cols))
    return W * (1 - lr * wd) - lr * O_hat, M, v, O_hat


@pytest.mark.parametrize("shape", [(3, 4), (4, 3)])
@pytest.mark.parametrize("nesterov", [True, False])
def test_normuon_two_steps_hand_computed(shape, nesterov):
    rng = np.random.default_rng(4)
    W = rng.standard_normal(shape)
    p = _param(W.tolist())
    lr, wd = 0.02, 0.1
    opt = NorMuon([p], lr=lr, weight_decay=wd, nesterov=nesterov)
    M = np.zeros(shape)
    v = np.zeros((shape[0], 1))
    for _ in range(2):
        G = rng.standard_normal(shape)
        p.grad = torch.tensor(G, dtype=DT)
        opt.step()
        W, M, v, O_hat = _normuon_step_by_hand(W, G, M, v, lr, wd, nesterov=nesterov)
        np.testing.assert_allclose(p.detach().numpy(), W, rtol=0, atol=1e-12)
        np.testing.assert_allclose(opt.state[p]["momentum_buffer"].numpy(), M, rtol=0, atol=1e-14)
        np.testing.assert_allclose(opt.state[p]["second_momentum_buffer"].numpy(), v, rtol=1e-12)
        np.testing.assert_allclose(p.grad.numpy(), G)  # the gradient is left alone


def test_normuon_first_step_rows_have_equal_norm():
    # step 1: v_i = (1-beta2) mean(O_i^2), so every row of O_hat has the same norm, and the
    # whole update keeps ||O||_F (times sqrt(rows/cols) for tall matrices)
    torch.manual_seed(5)
    for shape in [(6, 10), (10, 6)]:
        W = torch.randn(shape, dtype=DT) * torch.linspace(0.1, 5.0, shape[0], dtype=DT)[:, None]
        p = nn.Parameter(W.clone())
        G = torch.randn(shape, dtype=DT) * torch.linspace(0.01, 10.0, shape[0], dtype=DT)[:, None]
        p.grad = G.clone()
        opt = NorMuon([p], lr=1.0, nesterov=False, row_eps=0.0)  # no eps: the identity is exact
        opt.step()
        step = W - p.detach()
        row_norms = step.norm(dim=1)
        torch.testing.assert_close(row_norms, row_norms.mean().expand_as(row_norms), rtol=1e-10, atol=0)
        O = newton_schulz5(0.05 * G)  # U = M = (1 - beta) G at step 1
        scale = math.sqrt(max(1.0, shape[0] / shape[1]))
        torch.testing.assert_close(step.norm(), O.norm() * scale, rtol=1e-9, atol=0)


def test_normuon_conv_kernel_is_flattened_per_output_channel():
    torch.manual_seed(6)
    conv = nn.Conv2d(3, 4, 3, bias=True).double()
    W0 = conv.weight.detach().clone()
    G = torch.randn_like(conv.weight)
    conv.weight.grad = G.clone()
    conv.bias.grad = torch.randn_like(conv.bias)
    opt = NorMuon(conv.parameters(), lr=0.1, nesterov=False)
    assert [g["use_muon"] for g in opt.param_groups] == [True, False]
    opt.step()
    assert opt.state[conv.weight]["second_momentum_buffer"].shape == (4, 1)
    Wn, _, v, _ = _normuon_step_by_hand(
        W0.reshape(4, -1).numpy(), G.reshape(4, -1).numpy(), np.zeros((4, 27)), np.zeros((4, 1)), 0.1, 0.0, nesterov=False
    )
    np.testing.assert_allclose(conv.weight.detach().reshape(4, -1).numpy(), Wn, rtol=0, atol=1e-12)


def test_normuon_aux_side_equals_adamw():
    torch.manual_seed(7)
    b = torch.randn(5, dtype=DT)
    pn, pw = nn.Parameter(b.clone()), nn.Parameter(b.clone())
    opt = NorMuon([{"params": [pn], "use_muon": False}], aux_lr=0.01, aux_weight_decay=0.2)
    ref = torch.optim.AdamW([pw], lr=0.01, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.2)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["betas"] == (0.9, 0.95)
    for _ in range(3):
        g = torch.randn(5, dtype=DT)
        pn.grad, pw.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        torch.testing.assert_close(pn.detach(), pw.detach(), rtol=0, atol=1e-12)


def test_normuon_groups_and_skips():
    m = nn.Parameter(torch.randn(3, 3, dtype=DT))
    with pytest.raises(ValueError, match="use_muon"):
        NorMuon([{"params": [m, nn.Parameter(torch.randn(3))]}])
    with pytest.raises(ValueError, match="ndim >= 2"):
        NorMuon([{"params": [nn.Parameter(torch.randn(3))], "use_muon": True}])
    # a parameter without gradient keeps its value and gets no state
    before = m.detach().clone()
    opt = NorMuon([m])
    opt.step()
    assert torch.equal(m.detach(), before) and len(opt.state) == 0


def test_normuon_state_dict_roundtrip():
    _check_state_roundtrip(lambda ps: NorMuon(ps, lr=0.02, weight_decay=0.01, aux_lr=1e-3))


def test_normuon_bf16_weights_keep_float32_second_moment_on_load():
    torch.manual_seed(10)
    p1 = nn.Parameter(torch.randn(4, 6, dtype=torch.bfloat16))
    p2 = nn.Parameter(p1.detach().clone())
    o1, o2 = NorMuon([p1]), NorMuon([p2])
    grads = [torch.randn(4, 6, dtype=torch.bfloat16) for _ in range(3)]
    p1.grad = grads[0].clone()
    o1.step()
    assert o1.state[p1]["second_momentum_buffer"].dtype == torch.float32
    with torch.no_grad():
        p2.copy_(p1)
    o2.load_state_dict(_roundtrip(o1.state_dict()))
    assert o2.state[p2]["second_momentum_buffer"].dtype == torch.float32
    for g in grads[1:]:
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    assert torch.equal(p1, p2)


# ------------------------------------------------------------------------------ shared


def _tiny_model() -> nn.Module:
    torch.manual_seed(8)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, bias=False),
        nn.GroupNorm(1, 2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8, 6, bias=False),
        nn.LayerNorm(6),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).double()


def _batch():
    g = torch.Generator().manual_seed(9)
    return torch.randn(5, 1, 4, 4, generator=g, dtype=DT), torch.randint(0, 3, (5,), generator=g)


def _train(model, opt, steps):
    x, y = _batch()
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return float(loss.detach())


def _check_state_roundtrip(make_opt):
    m1 = _tiny_model()
    o1 = make_opt(list(m1.parameters()))
    _train(m1, o1, 2)
    model_state = _roundtrip(m1.state_dict())
    opt_state = _roundtrip(o1.state_dict())
    m2 = _tiny_model()
    m2.load_state_dict(model_state)
    o2 = make_opt(list(m2.parameters()))
    o2.load_state_dict(opt_state)
    _train(m1, o1, 2)
    _train(m2, o2, 2)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------ factory


def test_registry_names():
    for name in ("adam", "adamw", "sgd", "adamp", "normuon"):
        assert name in OPTIMIZERS
        assert OPTIMIZERS.entry(name).help


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "adamp", "normuon"])
def test_build_optimizer_steps_tiny_model(name):
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(name, model.named_parameters(), lr=1e-2, muon_exclude={"7"})
    loss = _train(model, opt, 3)
    assert math.isfinite(loss)
    for b, p in zip(before, model.parameters()):
        assert not torch.equal(b, p.detach())


def test_build_sgd_is_plain_by_default():
    p = _param([[1.0, 2.0]])
    opt = build_optimizer("sgd", [("w", p)], lr=0.5)
    for g in ([[1.0, -1.0]], [[2.0, 0.0]]):
        p.grad = torch.tensor(g, dtype=DT)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), [[1.0 - 0.5 - 1.0, 2.0 + 0.5]])
    assert build_optimizer("sgd", [("w", p)], lr=0.5, momentum=0.9).param_groups[0]["momentum"] == 0.9


def test_build_normuon_split_and_lrs():
    model = _tiny_model()
    opt = build_optimizer("normuon", model.named_parameters(), lr=0.02, muon_exclude={"7"})
    muon, aux = opt.param_groups
    assert muon["use_muon"] and not aux["use_muon"]
    named = dict(model.named_parameters())
    assert {id(p) for p in muon["params"]} == {id(named["0.weight"]), id(named["4.weight"])}
    assert id(named["7.weight"]) in {id(p) for p in aux["params"]}  # excluded output layer
    assert id(named["5.weight"]) in {id(p) for p in aux["params"]}  # norm gain
    assert muon["lr"] == 0.02 and aux["lr"] == 3e-4 and aux["eps"] == 1e-8
    opt = build_optimizer("normuon", model.named_parameters(), lr=0.02, muon_exclude={"7.weight"}, aux_lr=1e-3)
    assert len(opt.param_groups[0]["params"]) == 2 and opt.param_groups[1]["lr"] == 1e-3


def test_build_optimizer_errors():
    model = _tiny_model()
    with pytest.raises(UserError) as e:
        build_optimizer("adamq", model.named_parameters(), lr=1e-3)
    assert "--optimizer" in str(e.value) and "adamp" in str(e.value) and "normuon" in str(e.value)
    with pytest.raises(UserError, match="--lr"):
        build_optimizer("adam", model.named_parameters(), lr=0.0)
    with pytest.raises(UserError, match="momentum"):
        build_optimizer("adam", model.named_parameters(), lr=1e-3, momentum=0.9)
    with pytest.raises(UserError, match="muon_exclude.*'haed'"):
        build_optimizer("normuon", model.named_parameters(), lr=1e-3, muon_exclude={"haed"})
    with pytest.raises(UserError, match="--optimizer adamp.*betas"):
        build_optimizer("adamp", model.named_parameters(), lr=1e-3, betas=(1.5, 0.9))
    with pytest.raises(UserError, match="no parameters"):
        build_optimizer("adam", [], lr=1e-3)


# ------------------------------------------------------------------------------ LR schedule


def _opt(lr=6.25e-4, aux_lr=None):
    w = nn.Parameter(torch.zeros(2, 2))
    b = nn.Parameter(torch.zeros(2))
    if aux_lr is None:
        return torch.optim.Adam([w, b], lr=lr)
    return NorMuon([w, b], lr=lr, aux_lr=aux_lr)


def _advance(sched, n):
    for _ in range(n):
        sched.step()


def test_nap_cosine_schedule_values_and_restart():
    opt = _opt()
    s = LRSchedule(opt, "cosine", base_lr=6.25e-4, total_steps=50_000, warmup_steps=1000,
                   init_lr=1e-8, final_lr=1e-6, restart_per_task=True, steps_per_task=10_000)
    assert s.horizon == 10_000  # per-task horizon from the start, before any on_task_start
    s.on_task_start()
    assert s.lr == pytest.approx(1e-8) and opt.param_groups[0]["lr"] == pytest.approx(1e-8)  # warmup start
    _advance(s, 500)
    assert s.lr == pytest.approx((1e-8 + 6.25e-4) / 2)  # warmup midpoint
    _advance(s, 500)
    assert s.lr == pytest.approx(6.25e-4)  # warmup end = base
    _advance(s, 4500)
    assert s.lr == pytest.approx((6.25e-4 + 1e-6) / 2)  # cosine midpoint
    _advance(s, 2250)  # 3/4 of the cosine: final + (base-final)(1+cos(3pi/4))/2
    assert s.lr == pytest.approx(1e-6 + (6.25e-4 - 1e-6) * (1 - math.sqrt(0.5)) / 2)
    _advance(s, 2250)
    assert s.lr == pytest.approx(1e-6)  # end of the task's horizon
    _advance(s, 100)
    assert s.lr == pytest.approx(1e-6) and opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    s.on_task_start()  # task change: restart
    assert s.steps == 0 and s.lr == pytest.approx(1e-8) and opt.param_groups[0]["lr"] == pytest.approx(1e-8)
    s.on_task_start(task_steps=3000)  # a task with its own budget
    _advance(s, 2000)
    assert s.horizon == 3000 and s.lr == pytest.approx((6.25e-4 + 1e-6) / 2)


def test_linear_and_constant_schedules():
    s = LRSchedule(_opt(), "linear", base_lr=1.0, total_steps=110, warmup_steps=10, final_lr=0.2)
    assert s.lr == 0.0
    _advance(s, 5)
    assert s.lr == pytest.approx(0.5)
    _advance(s, 5 + 25)
    assert s.lr == pytest.approx(1.0 - 0.8 * 0.25)
    _advance(s, 200)
    assert s.lr == pytest.approx(0.2)
    s.on_task_start()  # restart_per_task False: no-op
    assert s.lr == pytest.approx(0.2)
    c = LRSchedule(_opt(), "constant", base_lr=0.1, total_steps=10, warmup_steps=4, init_lr=0.02)
    assert c.lr == pytest.approx(0.02)
    _advance(c, 2)
    assert c.lr == pytest.approx(0.06)
    _advance(c, 100)
    assert c.lr == pytest.approx(0.1)


def test_schedule_keeps_group_ratios():
    opt = _opt(lr=0.02, aux_lr=3e-4)  # NorMuon: muon at 0.02, AdamW side at 3e-4
    s = LRSchedule(opt, "cosine", base_lr=0.02, total_steps=100)
    _advance(s, 50)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert opt.param_groups[1]["lr"] == pytest.approx(1.5e-4)


def test_schedule_state_dict_roundtrip():
    kw = dict(kind="cosine", base_lr=1e-3, total_steps=1000, warmup_steps=10, init_lr=1e-8,
              final_lr=1e-6, restart_per_task=True, steps_per_task=100)
    o1 = _opt(lr=1e-3, aux_lr=1e-4)
    s1 = LRSchedule(o1, **kw)
    _advance(s1, 37)
    state = _roundtrip(s1.state_dict())
    o2 = _opt(lr=1e-3, aux_lr=1e-4)
    s2 = LRSchedule(o2, **kw)
    s2.load_state_dict(state)
    assert s2.steps == 37 and s2.lr == s1.lr
    assert [g["lr"] for g in o2.param_groups] == [g["lr"] for g in o1.param_groups]
    _advance(s1, 5)
    _advance(s2, 5)
    assert s2.lr == s1.lr


def test_schedule_errors():
    with pytest.raises(UserError) as e:
        LRSchedule(_opt(), "cosin", base_lr=1e-3, total_steps=10)
    msg = str(e.value)
    assert "--lr-schedule" in msg and all(k in msg for k in LR_SCHEDULES)
    with pytest.raises(UserError, match="warmup_steps"):
        LRSchedule(_opt(), "cosine", base_lr=1e-3, total_steps=10, warmup_steps=20)
    with pytest.raises(UserError, match="base_lr"):
        LRSchedule(_opt(), "cosine", base_lr=0.0, total_steps=10)


def test_sgd_momentum_option_reaches_torch_sgd_and_the_incremental_cifar_preset():
    """--sgd-momentum / --sgd-nesterov: torch.optim.SGD's momentum rule; Dohare et al.'s 0.9 in their preset."""
    from crl.config import make_config
    from crl.optim import SGDOptions, build_optimizer
    from crl.options import building

    w = torch.nn.Parameter(torch.tensor([1.0]))
    cfg = make_config("supervised", optimizer="sgd", lr=0.1, sgd_momentum=0.5)
    with building(cfg):
        opt = build_optimizer("sgd", [("w", w)], lr=0.1, eps=1e-8, weight_decay=0.0)
    for _ in range(2):  # grad 1 each step: buffers 1 then 1.5; w = 1 - 0.1 - 0.15
        opt.zero_grad()
        w.sum().backward()
        opt.step()
    assert w.item() == pytest.approx(0.75)
    assert make_config("incremental-cifar100").options(SGDOptions).sgd_momentum == 0.9


@pytest.mark.parametrize("name, options, want", [
    ("rmsprop", dict(rmsprop_alpha=0.9, rmsprop_eps=1e-3, rmsprop_centered=False, rmsprop_momentum=0.5),
     dict(alpha=0.9, eps=1e-3, centered=False, momentum=0.5)),
    ("sgd", dict(sgd_momentum=0.9, sgd_nesterov=True), dict(momentum=0.9, nesterov=True)),
])
def test_optimizer_args_carry_the_optimizers_own_options(name, options, want):
    # a learner built outside crl.api.prepare (no crl.options.building) must still get the run's values
    from crl.config import make_config
    from crl.optim import optimizer_args

    cfg = make_config("gym", optimizer=name, lr=0.01, **options)
    net = torch.nn.Linear(3, 2)
    group = build_optimizer(name, net.named_parameters(), **optimizer_args(cfg)).param_groups[0]
    assert group["lr"] == 0.01 and {k: group[k] for k in want} == want
