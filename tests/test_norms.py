"""Norms against their defining equations, recomputed here with plain tensor ops.

Every reference below is written independently of the module code (its own loops and
reductions); the stateful norms (EvoNorm-B0, PowerNorm, UN, AdaB2N) are simulated step by step
and compared at each step: output, running statistics, and the (custom) gradients.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from crl.errors import UserError
from crl.nn.norms import apply_alpha_bn, includes_activation, make_norm, remove_alpha_bn
from crl.nn.norms import adab2n as adab2n_mod
from crl.nn.norms.adab2n import AdaB2N, effective_momentum_limit
from crl.nn.norms.evonorm import EvoNormB0, EvoNormS0
from crl.nn.norms.powernorm import PowerNorm
from crl.nn.norms.rms_group import RMSNorm, resolve_groups
from crl.nn.norms.unified import UnifiedNorm
from crl.registry import NORMS



ATOL = 1e-5
RTOL = 1e-4


def close(a, b, atol=ATOL, rtol=RTOL):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=gen(seed)) * scale + shift


def randomize_params(m: nn.Module, seed=123):
    g = gen(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in ("weight", "v"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def token_dims(x):
    return [0] + list(range(2, x.dim()))


def cshape(x):
    return [1, x.shape[1]] + [1] * (x.dim() - 2)


# ====================================================================== registry / make_norm
NEW = ["rmsnorm", "groupnorm", "evonorm-b0", "evonorm-s0", "powernorm", "unified", "adab2n"]


def test_registered_names_and_meta():
    for name in NEW:
        assert name in NORMS
    meta = {n: NORMS.entry(n).meta for n in NEW}
    assert meta["rmsnorm"]["dims"] == (1, 2)
    assert meta["groupnorm"]["dims"] == (2,)
    assert meta["evonorm-b0"]["dims"] == (2,) and includes_activation("evonorm-b0")
    assert meta["evonorm-s0"]["dims"] == (2,) and includes_activation("evonorm-s0")
    for n in ("powernorm", "unified", "adab2n", "rmsnorm", "groupnorm"):
        assert not includes_activation(n)
    for n in ("powernorm", "unified", "adab2n"):
        assert meta[n]["dims"] == (1, 2)


@pytest.mark.parametrize("name", sorted(NORMS.names()))
def test_make_norm_refuses_undefined_dims(name):
    allowed = NORMS.entry(name).meta.get("dims", (1, 2))
    for d in (1, 2):
        if d not in allowed:
            with pytest.raises(UserError, match="--norm"):
                make_norm(name, 16, d)
        else:
            assert isinstance(make_norm(name, 16, d), nn.Module)


def _input(dims, c=8, seed=0):
    return randn(6, c, seed=seed) if dims == 1 else randn(3, c, 4, 5, seed=seed)


@pytest.mark.parametrize("name,dims", [(n, d) for n in sorted(NORMS.names())
                                       for d in NORMS.entry(n).meta.get("dims", (1, 2))])
def test_every_norm_builds_and_is_differentiable(name, dims):
    m = make_norm(name, 8, dims)
    randomize_params(m)
    m.train()
    x = _input(dims, seed=1).requires_grad_(True)
    if isinstance(m, AdaB2N):  # weighted path, so the task prior gets a gradient too
        m.begin_task(1)
        m.set_task_ids(torch.tensor([0, 1, 1] if dims == 2 else [0, 0, 1, 1, 1, 0]))
    y = m(x)
    assert y.shape == x.shape
    loss = (y * randn(*y.shape, seed=2)).sum()
    if isinstance(m, AdaB2N):
        loss = loss + m.aux_loss()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    m.eval()
    with torch.no_grad():
        assert torch.isfinite(m(_input(dims, seed=3))).all()


def test_group_resolution():
    assert resolve_groups(64, 32) == 32
    assert resolve_groups(48, 32) == 24
    assert resolve_groups(20, 32) == 20
    assert resolve_groups(30, 7) == 6
    assert make_norm("groupnorm", 48, 2).num_groups == 24
    assert make_norm("groupnorm", 48, 2, groups=7).num_groups == 6
    assert make_norm("evonorm-s0", 48, 2).groups == 24
    with pytest.raises(UserError):
        resolve_groups(16, 0)


# ====================================================================== RMSNorm / GroupNorm
@pytest.mark.parametrize("dims", [1, 2])
def test_rmsnorm_equation(dims):
    m = make_norm("rmsnorm", 8, dims)
    assert isinstance(m, RMSNorm)
    randomize_params(m)
    x = _input(dims, seed=4) * 3 + 1
    ref = torch.empty_like(x)
    for i in range(x.shape[0]):
        rms = math.sqrt(float((x[i] ** 2).sum()) / x[i].numel() + 1e-5)
        for c in range(x.shape[1]):
            ref[i, c] = x[i, c] / rms * m.weight[c] + m.bias[c]
    for mode in (True, False):
        m.train(mode)
        close(m(x).detach(), ref)


def test_groupnorm_equation():
    m = make_norm("groupnorm", 12, 2, groups=4)
    randomize_params(m)
    x = randn(2, 12, 3, 3, seed=5) * 2 + 0.5
    ref = torch.empty_like(x)
    for i in range(2):
        for g in range(4):
            blk = x[i, 3 * g:3 * g + 3]
            mu, var = blk.mean(), ((blk - blk.mean()) ** 2).mean()
            for c in range(3 * g, 3 * g + 3):
                ref[i, c] = (x[i, c] - mu) / torch.sqrt(var + 1e-5) * m.weight[c] + m.bias[c]
    for mode in (True, False):
        m.train(mode)
        close(m(x).detach(), ref)


# ====================================================================== EvoNorm
def _evo_b0_ref(x, v, gamma, beta, var_b, eps=1e-5):
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            xi = x[i, c]
            inst = ((xi - xi.mean()) ** 2).mean()
            left = torch.sqrt(var_b[c] + eps)
            right = v[c] * xi + torch.sqrt(inst + eps)
            out[i, c] = xi / torch.maximum(left, right) * gamma[c] + beta[c]
    return out


def test_evonorm_b0_train_eval_and_running_var():
    m = make_norm("evonorm-b0", 4, 2)
    assert isinstance(m, EvoNormB0)
    randomize_params(m)
    with torch.no_grad():
        m.v.copy_(torch.tensor([1.0, -0.5, 0.2, 2.0]))
    rv = torch.ones(4)
    m.train()
    for step in range(4):
        x = randn(5, 4, 3, 3, seed=10 + step, scale=1 + step, shift=0.3 * step)
        var_b = torch.stack([((x[:, c] - x[:, c].mean()) ** 2).mean() for c in range(4)])
        close(m(x).detach(), _evo_b0_ref(x, m.v, m.weight, m.bias, var_b).detach())
        rv = rv - 0.1 * (rv - var_b)
        close(m.running_var, rv)
    assert not torch.allclose(rv, torch.ones(4))
    m.eval()
    x = randn(2, 4, 3, 3, seed=20, scale=2.0)
    close(m(x).detach(), _evo_b0_ref(x, m.v, m.weight, m.bias, rv).detach())
    close(m.running_var, rv)  # eval does not update


def test_evonorm_s0_equation():
    m = make_norm("evonorm-s0", 6, 2, groups=4)  # 4 does not divide 6 -> 3 groups of 2
    assert isinstance(m, EvoNormS0) and m.groups == 3
    randomize_params(m)
    x = randn(3, 6, 4, 4, seed=21, scale=2.0, shift=0.5)
    ref = torch.empty_like(x)
    for i in range(3):
        for g in range(3):
            blk = x[i, 2 * g:2 * g + 2]
            std = torch.sqrt(((blk - blk.mean()) ** 2).mean() + 1e-5)
            for c in (2 * g, 2 * g + 1):
                ref[i, c] = x[i, c] * torch.sigmoid(m.v[c] * x[i, c]) / std * m.weight[c] + m.bias[c]
    for mode in (True, False):
        m.train(mode)
        close(m(x).detach(), ref.detach())


def test_evonorm_affine_only():
    m = EvoNormB0(4, nonlinearity=False)
    randomize_params(m)
    x = randn(2, 4, 3, 3, seed=22)
    close(m(x).detach(), (x * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)).detach())


# ====================================================================== PowerNorm
class PNRef:
    """Independent simulation of the official PowerNorm (forward, running update, backward)."""

    def __init__(self, c, groups, warmup, eps=1e-5, afwd=0.9, abkw=0.9):
        self.phi, self.G, self.t = torch.ones(c), torch.zeros(c), 0
        self.groups, self.warmup, self.eps, self.afwd, self.abkw = groups, warmup, eps, afwd, abkw

    def scale(self, x):
        b, c = x.shape[:2]
        xg = x.reshape(b, self.groups, c // self.groups, *x.shape[2:])
        return (xg / torch.sqrt((xg * xg).mean(2, keepdim=True) + 1e-5)).reshape(x.shape)

    def step(self, x, dy, gamma, beta):
        self.t += 1
        t = self.t
        d, sh = token_dims(x), cshape(x)
        xs = x.detach().clone().requires_grad_(True)
        s = self.scale(xs)
        sd = s.detach()
        psi_b = (sd * sd).mean(d)
        phi_prev = self.phi.clone()
        used = psi_b if t <= self.warmup else phi_prev
        z = sd / torch.sqrt(used + self.eps).view(sh)
        y = gamma.view(sh) * z + beta.view(sh)
        phi = phi_prev
        if t < self.warmup:
            phi = phi * (t - 1) / t + psi_b / t
        self.phi = self.afwd * phi + (1 - self.afwd) * psi_b
        g = dy * gamma.view(sh)
        xt = g - (1 - self.abkw) * self.G.view(sh) * z
        self.G = self.G + (xt * z).mean(d)
        g_s = xt / torch.sqrt(psi_b + self.eps).view(sh)
        (gx,) = torch.autograd.grad(s, xs, g_s)  # chain through group scaling only
        info = dict(batch_out=gamma.view(sh) * sd / torch.sqrt(psi_b + self.eps).view(sh) + beta.view(sh),
                    running_out=gamma.view(sh) * sd / torch.sqrt(phi_prev + self.eps).view(sh) + beta.view(sh))
        return y, gx, (dy * z).sum(d), dy.sum(d), info


@pytest.mark.parametrize("dims,groups", [(1, 1), (1, 2), (2, 1), (2, 4)])
def test_powernorm_forward_backward_running_and_warmup(dims, groups):
    c, warmup = 8, 3
    m = make_norm("powernorm", c, dims, warmup_iters=warmup, groups=groups)
    assert isinstance(m, PowerNorm) and m.groups == groups
    randomize_params(m)
    ref = PNRef(c, groups, warmup)
    gamma, beta = m.weight.detach().clone(), m.bias.detach().clone()
    m.train()
    for step in range(7):
        shape = (6, c) if dims == 1 else (3, c, 3, 2)
        x = randn(*shape, seed=30 + step, scale=0.5 + step % 3, shift=0.2)
        dy = randn(*shape, seed=60 + step)
        y_ref, gx_ref, gw_ref, gb_ref, info = ref.step(x, dy, gamma, beta)
        xx = x.clone().requires_grad_(True)
        m.zero_grad()
        y = m(xx)
        (y * dy).sum().backward()
        t = step + 1
        assert int(m.iters) == t
        close(y.detach(), y_ref)
        # warmup switching: batch statistics while t <= warmup, running statistics afterwards
        if t <= warmup:
            close(y.detach(), info["batch_out"])
        else:
            close(y.detach(), info["running_out"])
            assert not torch.allclose(y.detach(), info["batch_out"], atol=1e-3)
        close(m.running_phi, ref.phi)
        close(m.ema_gz, ref.G)
        close(xx.grad, gx_ref)
        close(m.weight.grad, gw_ref)
        close(m.bias.grad, gb_ref)
    assert ref.G.abs().sum() > 0
    m.eval()
    x = randn(4, c, seed=99) if dims == 1 else randn(2, c, 3, 3, seed=99)
    sh = cshape(x)
    close(m(x).detach(), gamma.view(sh) * ref.scale(x) / torch.sqrt(ref.phi + 1e-5).view(sh) + beta.view(sh))
    assert int(m.iters) == 7  # eval does not count


def test_powernorm_backward_is_not_autograd_of_forward():
    m = PowerNorm(4, warmup_iters=5)
    m.train()
    x = randn(6, 4, seed=1).requires_grad_(True)
    dy = randn(6, 4, seed=2)
    (m(x) * dy).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    s = PNRef(4, 1, 5).scale(x2)
    exact = s / torch.sqrt((s * s).mean(0) + 1e-5)
    (gx_exact,) = torch.autograd.grad((exact * dy).sum(), x2)
    assert not torch.allclose(x.grad, gx_exact, atol=1e-4)


def test_powernorm_restart_warmup():
    m = PowerNorm(4, warmup_iters=2)
    for s in range(4):
        m(randn(5, 4, seed=s))
    assert int(m.iters) == 4
    m.restart_warmup()
    x = randn(5, 4, seed=9)
    y = m(x)
    s = PNRef(4, 1, 2).scale(x)
    close(y.detach(), s / torch.sqrt((s * s).mean(0) + 1e-5))  # batch stats again
    close(m.running_phi, (s * s).mean(0))  # t=1: cumulative average restarts from this batch


# ====================================================================== Unified Normalization
class UNRef:
    """Independent simulation of the official UN (window, outlier filter, r, compensation)."""

    def __init__(self, c, wf, wb, warmup, r_warmup, outlier, eps=1e-5, mom=0.9):
        self.rv, self.G, self.t, self.skips = torch.ones(c), torch.zeros(c), 0, 0
        self.bx2, self.bgz = torch.zeros(wf, c), torch.zeros(wb, c)
        self.wf, self.wb, self.warmup, self.r_warmup, self.outlier = wf, wb, warmup, r_warmup, outlier
        self.eps, self.mom = eps, mom

    @staticmethod
    def gmean(buf):
        return torch.exp(torch.log(buf).mean(0))

    def step(self, x, dy, gamma, beta):
        self.t += 1
        t, d, sh = self.t, token_dims(x), cshape(x)
        skip = self.wf <= 1
        x2 = (x * x).mean(d)
        flat = torch.sqrt(self.bx2).flatten()
        spread = ((flat - flat.mean()) ** 2).sum() / (flat.numel() - 1)
        self.bx2[t % self.wf] = x2
        if t >= self.warmup and self.outlier:
            am, gm = self.bx2.mean(0), self.gmean(self.bx2)
            if ((am - gm) > spread * self.wf).any():
                self.bx2[t % self.wf] = self.rv
                skip = True
                self.skips += 1
        windowed = not (t <= self.wf or t < self.warmup or skip)
        var = self.gmean(self.bx2) if windowed else x2
        if t <= max(self.r_warmup, self.warmup) or skip:
            r = torch.ones_like(var)
        else:
            r = torch.clamp(torch.sqrt(var + self.eps) / torch.sqrt(self.rv + self.eps), 0.2, 5.0)
        z = x / torch.sqrt(var + self.eps).view(sh)
        y = gamma.view(sh) * z + beta.view(sh)
        self.rv = self.mom * self.rv + (1 - self.mom) * var
        g = dy * gamma.view(sh) * r.view(sh)
        gz = (g * z).mean(d)
        self.bgz[t % self.wb] = self.G if skip else gz
        mgz = self.bgz.mean(0) if not (t <= self.wb or t < self.warmup or skip) else gz
        self.G = self.mom * self.G + (1 - self.mom) * mgz
        cc = mgz if skip else self.G
        gx = (g - cc.view(sh) * z) / torch.sqrt(var + self.eps).view(sh)
        info = dict(windowed=windowed, r=r, batch_out=gamma.view(sh) * x / torch.sqrt(x2 + self.eps).view(sh)
                    + beta.view(sh))
        return y, gx, (dy * r.view(sh) * z).sum(d), dy.sum(d), info


def _run_un(dims, window, warmup, r_warmup, outlier, steps, scales):
    c = 6
    m = UnifiedNorm(c, window_size=window, warmup_iters=warmup, outlier_filtration=outlier, r_warmup=r_warmup)
    randomize_params(m)
    wf, wb = (window, window) if isinstance(window, int) else window
    ref = UNRef(c, wf, wb, warmup, r_warmup, outlier)
    gamma, beta = m.weight.detach().clone(), m.bias.detach().clone()
    m.train()
    seen = []
    for step in range(steps):
        shape = (8, c) if dims == 1 else (2, c, 3, 3)
        x = randn(*shape, seed=200 + step, scale=scales(step), shift=0.1)
        dy = randn(*shape, seed=300 + step)
        y_ref, gx_ref, gw_ref, gb_ref, info = ref.step(x, dy, gamma, beta)
        xx = x.clone().requires_grad_(True)
        m.zero_grad()
        y = m(xx)
        (y * dy).sum().backward()
        close(y.detach(), y_ref)
        if ref.t < warmup:  # warmup: the batch's own second moment
            close(y.detach(), info["batch_out"])
        close(m.running_var, ref.rv)
        close(m.buffer_x2, ref.bx2)
        close(m.buffer_gz, ref.bgz)
        close(m.ema_gz, ref.G)
        close(xx.grad, gx_ref)
        close(m.weight.grad, gw_ref)
        close(m.bias.grad, gb_ref)
        seen.append(dict(info, y=y.detach()))
    assert int(m.skip_counter) == ref.skips
    m.eval()
    x = randn(4, c, seed=999) if dims == 1 else randn(2, c, 2, 2, seed=999)
    sh = cshape(x)
    close(m(x).detach(), gamma.view(sh) * x / torch.sqrt(ref.rv + 1e-5).view(sh) + beta.view(sh))
    return m, ref, seen


@pytest.mark.parametrize("dims", [1, 2])
def test_unified_forward_backward_window_and_warmup(dims):
    m, ref, seen = _run_un(dims, window=(3, 2), warmup=4, r_warmup=6, outlier=False, steps=10,
                           scales=lambda s: 0.5 + (s % 4) * 0.5)
    # warmup switching: batch statistic before warmup, windowed geometric mean after
    assert [i["windowed"] for i in seen] == [False] * 3 + [True] * 7
    for i in seen[3:]:
        assert not torch.allclose(i["y"], i["batch_out"], atol=1e-3)
    assert any(not torch.allclose(i["r"], torch.ones_like(i["r"])) for i in seen[6:])  # r active after r_warmup
    assert ref.G.abs().sum() > 0


def test_unified_outlier_filtration_skips():
    m, ref, seen = _run_un(1, window=3, warmup=3, r_warmup=3, outlier=True, steps=9,
                           scales=lambda s: 20.0 if s == 6 else 1.0)
    assert ref.skips >= 1 and int(m.skip_counter) == ref.skips


def test_unified_factory_and_restart():
    m = make_norm("unified", 5, 1)
    assert isinstance(m, UnifiedNorm) and m.warmup_iters == 4000 and m.window_size == (4, 4) and m.momentum == 0.9
    m(randn(3, 5))
    m.restart_warmup()
    assert int(m.iters) == 0


# ====================================================================== AdaB2N
def _adab2n_ref_stats(x, ids, w, cur, renorm):
    k = max(cur, int(ids.max())) + 1
    n = [int((ids == j).sum()) for j in range(k)]
    conc = [(math.exp(float(w[j])) + n[j]) if (n[j] > 0 or not renorm) else 0.0 for j in range(k)]
    tot = sum(conc)
    a = torch.tensor([conc[int(i)] / tot / n[int(i)] for i in ids])
    xm = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
    mu = torch.zeros(x.shape[1])
    for i in range(x.shape[0]):
        mu += a[i] * xm[i]
    var = torch.zeros(x.shape[1])
    for i in range(x.shape[0]):
        dev = (x[i] - mu.view(-1, *([1] * (x.dim() - 2)))) ** 2
        var += a[i] * (dev.mean(dim=tuple(range(1, dev.dim()))) if dev.dim() > 1 else dev)
    return mu, var, a


def _bn_out(x, mu, var, gamma, beta, eps=1e-5):
    sh = cshape(x)
    return (x - mu.view(sh)) / torch.sqrt(var.view(sh) + eps) * gamma.view(sh) + beta.view(sh)


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("renorm", [True, False])
def test_adab2n_weighted_statistics_running_and_aux(dims, renorm):
    c = 5
    m = make_norm("adab2n", c, dims, num_tasks=6, kappa=0.4, renormalize=renorm)
    randomize_params(m)
    with torch.no_grad():
        m.task_weight.copy_(torch.tensor([0.5, -1.0, 0.2, 0.0, 0.0, 0.0]))
    m.begin_task(2)
    rm, rv = torch.zeros(c), torch.ones(c)
    eta_prev = None
    m.train()
    for step in range(4):
        ids = torch.tensor([2, 2, 2, 0, 0, 2, 0, 2]) if step % 2 == 0 else torch.tensor([2, 1, 2, 0, 2, 1, 2, 2])
        x = randn(8, c, seed=400 + step, scale=2.0, shift=step) if dims == 1 else \
            randn(8, c, 2, 3, seed=400 + step, scale=2.0, shift=step)
        m.set_task_ids(ids)
        y = m(x)
        mu, var, a = _adab2n_ref_stats(x, ids, m.task_weight.detach(), 2, renorm)
        if renorm:
            close(a.sum(), torch.tensor(1.0))
        elif step % 2 == 0:  # task 1 absent: official weights do not sum to one
            assert float(a.sum()) < 0.999
        close(y.detach(), _bn_out(x, mu, var, m.weight, m.bias).detach())
        eta = 0.1 ** 0.4 if eta_prev is None else eta_prev / (eta_prev + 0.9 ** 0.4)
        eta_prev = eta
        assert m.eta == pytest.approx(eta, rel=1e-9)
        rm = rm + eta * (mu - rm)
        rv = (1 - eta) * rv + eta * var
        close(m.running_mean, rm)
        close(m.running_var, rv)
        aux = ((mu - rm) ** 2).mean() + ((var - rv) ** 2).mean()
        close(m.aux_loss().detach(), aux)
        m.zero_grad()
        (y.sum() * 0.01 + m.aux_loss()).backward()
        assert m.task_weight.grad is not None and m.task_weight.grad[[0, 2]].abs().sum() > 0
        assert m.task_weight.grad[3:].abs().sum() == 0
    m.eval()
    x = randn(3, c, seed=7) if dims == 1 else randn(3, c, 2, 2, seed=7)
    close(m(x).detach(), _bn_out(x, rm, rv, m.weight, m.bias).detach())


def test_adab2n_plain_path_first_task_and_kappa_limits():
    m = AdaB2N(4, kappa=0.0)
    x = randn(6, 4, 2, 2, seed=1, scale=3.0)
    m.set_task_ids(torch.zeros(6, dtype=torch.long))  # task 0 only: plain batch moments
    y = m(x)
    mu = x.mean(dim=(0, 2, 3))
    var = ((x - mu.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
    close(y.detach(), _bn_out(x, mu, var, m.weight, m.bias).detach())
    close(m.running_mean, mu)  # kappa = 0: eta_1 = 1 / 1
    m.clear_task_ids()
    x2 = randn(6, 4, 2, 2, seed=2)
    m(x2)
    assert m.eta == pytest.approx(0.5)  # cumulative mean
    close(m.running_mean, (mu + x2.mean(dim=(0, 2, 3))) / 2)
    m1 = AdaB2N(4, kappa=1.0, momentum=0.2)
    for s in range(3):
        m1(randn(5, 4, seed=s))
        assert m1.eta == pytest.approx(0.2)


@pytest.mark.parametrize("kappa", [0.1, 0.4, 0.7, 1.0])
def test_adab2n_effective_momentum_converges(kappa):
    m = AdaB2N(3, kappa=kappa, momentum=0.1)
    target = effective_momentum_limit(0.1, kappa)
    assert target == pytest.approx({0.1: 0.0105, 0.4: 0.0413, 0.7: 0.0711, 1.0: 0.1}[kappa], abs=5e-5)
    # the first steps through the forward pass (the running mean moves by eta each step) ...
    rm = torch.zeros(3)
    for s in range(20):
        x = randn(4, 3, seed=s)
        m(x)
        rm = rm + m.eta * (x.mean(0) - rm)
        close(m.running_mean, rm)
    # ... and the recursion onwards until it settles
    for _ in range(3000):
        m.get_eta()
    assert m.eta == pytest.approx(target, rel=1e-6)


def test_adab2n_api_helpers_and_errors():
    net = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False), make_norm("adab2n", 4, 2, num_tasks=3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16, 6, bias=False), make_norm("adab2n", 6, 1, num_tasks=3))
    adab2n_mod.begin_task(net, 1)
    assert all(int(m.cur_task) == 1 for m in adab2n_mod.adab2n_layers(net))
    adab2n_mod.end_task(net)
    assert all(int(m.cur_task) == 2 for m in adab2n_mod.adab2n_layers(net))
    ids = torch.tensor([0, 2, 2, 1])
    adab2n_mod.set_task_ids(net, ids)
    out = net(randn(4, 2, 2, 2, seed=3))
    total = adab2n_mod.aux_loss(net)
    close(total, net[1].aux_loss() + net[5].aux_loss())
    (out.sum() + total).backward()
    copy.deepcopy(net)  # target networks: the stored loss graph must not block deepcopy
    with pytest.raises(ValueError, match="set_task_ids"):
        net(randn(5, 2, 2, 2, seed=4))
    with pytest.raises(UserError, match="num_tasks"):
        adab2n_mod.set_task_ids(net, torch.tensor([0, 3]))
    with pytest.raises(UserError, match="kappa"):
        make_norm("adab2n", 4, 2, kappa=1.5)


# ====================================================================== alpha-BN
def _trained_bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16, 5, bias=False), nn.BatchNorm1d(5))
    randomize_params(net[1])
    randomize_params(net[5])
    net.train()
    for s in range(5):
        net(randn(8, 3, 4, 4, seed=s, scale=2.0, shift=1.0))
    return net


@pytest.mark.parametrize("unbiased", [False, True])
def test_alpha_bn_eval_mixes_statistics(unbiased):
    net = _trained_bn_net()
    keys = list(net.state_dict())
    params = [id(p) for p in net.parameters()]
    x = randn(6, 3, 4, 4, seed=50)
    net.train()
    y_train_before = net[1](net[0](x)).detach()
    names = apply_alpha_bn(net, 0.3, unbiased=unbiased)
    assert names == ["1", "5"]
    assert list(net.state_dict()) == keys and [id(p) for p in net.parameters()] == params
    rm_before = net[1].running_mean.clone()
    net.eval()
    h = net[0](x).detach()
    for bn, inp in ((net[1], h), (net[5], net[4](net[3](net[2](net[1](h)))).detach())):
        d = token_dims(inp)
        n = inp.numel() // inp.shape[1]
        mu_b = inp.mean(d)
        var_b = ((inp - mu_b.view(cshape(inp))) ** 2).sum(d) / (n - 1 if unbiased else n)
        mu = 0.3 * mu_b + 0.7 * bn.running_mean
        var = 0.3 * var_b + 0.7 * bn.running_var
        close(bn(inp).detach(), _bn_out(inp, mu, var, bn.weight, bn.bias).detach())
    close(net[1].running_mean, rm_before)  # eval does not update
    net.train()  # training mode unchanged (and still updates the running stats)
    close(net[1](net[0](x)).detach(), y_train_before)
    # alpha = 0 is plain eval BN, alpha = 1 is the batch's own (biased) statistics
    net.eval()
    apply_alpha_bn(net, 0.0)
    ref = nn.functional.batch_norm(h, net[1].running_mean, net[1].running_var, net[1].weight, net[1].bias, False,
                                   0.0, 1e-5)
    close(net[1](h).detach(), ref.detach())
    apply_alpha_bn(net, 1.0)
    ref = nn.functional.batch_norm(h, None, None, net[1].weight, net[1].bias, True, 0.0, 1e-5)
    close(net[1](h).detach(), ref.detach())
    assert remove_alpha_bn(net) == 2
    assert type(net[1]) is nn.BatchNorm2d and type(net[5]) is nn.BatchNorm1d
    close(net[1](h).detach(), nn.functional.batch_norm(h, net[1].running_mean, net[1].running_var, net[1].weight,
                                                        net[1].bias, False, 0.0, 1e-5).detach())


def test_alpha_bn_refusals():
    with pytest.raises(UserError, match="no BatchNorm layer"):
        apply_alpha_bn(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), 0.1)
    with pytest.raises(UserError, match=r"alpha .* must be in \[0, 1\]"):
        apply_alpha_bn(_trained_bn_net(), 1.5)


# ====================================================================== state_dict round trip
ROUND_TRIP_KW = {"powernorm": dict(warmup_iters=2), "unified": dict(warmup_iters=2, window_size=2),
                 "adab2n": dict(num_tasks=4, kappa=0.4), "groupnorm": dict(groups=4), "evonorm-s0": dict(groups=4)}


@pytest.mark.parametrize("name,dims", [(n, d) for n in sorted(NORMS.names())
                                       for d in NORMS.entry(n).meta.get("dims", (1, 2))])
def test_state_dict_round_trip(name, dims):
    kw = ROUND_TRIP_KW.get(name, {})
    m = make_norm(name, 8, dims, **kw)
    randomize_params(m)
    ids = torch.tensor([0, 1, 1]) if dims == 2 else torch.tensor([0, 1, 1, 0, 1, 1])
    m.train()
    for s in range(5):
        if isinstance(m, AdaB2N):
            m.set_task_ids(ids)
        x = _input(dims, seed=500 + s).requires_grad_(True)
        (m(x) * _input(dims, seed=600 + s)).sum().backward()
    fresh = make_norm(name, 8, dims, **kw)
    fresh.load_state_dict(m.state_dict())
    x = _input(dims, seed=700)
    m.eval(), fresh.eval()
    close(fresh(x).detach(), m(x).detach(), atol=0, rtol=0)
    m.train(), fresh.train()
    outs, grads = [], []
    for mod in (m, fresh):
        if isinstance(mod, AdaB2N):
            mod.set_task_ids(ids)
        xx = x.clone().requires_grad_(True)
        y = mod(xx)
        (y * _input(dims, seed=800)).sum().backward()
        outs.append(y.detach())
        grads.append(xx.grad)
    close(outs[0], outs[1], atol=0, rtol=0)
    close(grads[0], grads[1], atol=0, rtol=0)
    for (k, a), (_, b) in zip(m.state_dict().items(), fresh.state_dict().items()):
        close(a, b, atol=0, rtol=0)
