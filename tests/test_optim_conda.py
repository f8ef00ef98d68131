"""Conda (--optimizer conda): one step against a hand computation, the AdamW side, the basis schedule."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from crl.optim import build_optimizer
from crl.optim_conda import Conda


def _step(W, G, **kw):
    p = torch.nn.Parameter(W.clone())
    opt = Conda([{"params": [p], "conda": True}], **kw)
    p.grad = G.clone()
    opt.step()
    return p.detach(), opt


def test_first_step_on_a_tall_matrix_matches_the_hand_computation():
    """G = [[2, 1], [1, 2], [0, 0]]: G^T G = [[5, 4], [4, 5]], so V = [[1, 1], [1, -1]] / sqrt(2) and
    G V = U S = [[3, 1], [3, -1], [0, 0]] / sqrt(2). At step 1, M = (1 - b1) G has the same basis,
    M~ = (1 - b1) U S, v = (1 - b2) (U S)^2, so M~ / sqrt(v) = (1 - b1) / sqrt(1 - b2) sign(U S) and with
    the bias corrections the step is  lr * scale * sign(U S) V^T = lr * scale * [[sqrt 2, 0], [0, sqrt 2], [0, 0]]
    (plain Adam's first step would be lr * sign(G) = lr * [[1, 1], [1, 1], [0, 0]])."""
    G = torch.tensor([[2.0, 1.0], [1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    W = torch.tensor([[0.5, -0.5], [1.0, 0.0], [0.25, 2.0]], dtype=torch.float64)
    lr, scale = 0.1, 0.25
    new, opt = _step(W, G, lr=lr, scale=scale, betas=(0.9, 0.99), eps=1e-12)
    r2 = math.sqrt(2.0)
    expected = W - lr * scale * torch.tensor([[r2, 0.0], [0.0, r2], [0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(new, expected, rtol=0, atol=1e-6)  # the SVD runs in float32
    basis = opt.state[opt.param_groups[0]["params"][0]]["basis"]
    assert torch.allclose(basis.abs(), torch.full((2, 2), 1 / r2, dtype=torch.float64))  # V^T up to signs


def test_wide_matrix_uses_the_left_basis_and_decay_follows_the_step():
    G = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0]], dtype=torch.float64)  # the transpose: P = U
    W = torch.ones(2, 3, dtype=torch.float64)
    lr, scale, wd = 0.1, 0.5, 0.2
    new, _ = _step(W, G, lr=lr, scale=scale, weight_decay=wd, eps=1e-12)
    r2 = math.sqrt(2.0)
    stepped = W - lr * scale * torch.tensor([[r2, 0.0, 0.0], [0.0, r2, 0.0]], dtype=torch.float64)
    assert torch.allclose(new, stepped * (1 - lr * wd), rtol=0, atol=1e-6)  # the SVD runs in float32  # decay multiplies the updated weight


def test_the_rest_runs_the_references_adamw():
    """Two steps of the non-Conda group by the formula: m, v EMAs; p -= lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v)+eps)."""
    b = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = Conda([{"params": [b], "conda": False}], lr=0.01, betas=(0.9, 0.99), eps=1e-3)
    grads = [torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([-0.2, 3.0], dtype=torch.float64)]
    p, m, v = b.detach().clone(), torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        b.grad = g
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        p = p - 0.01 * math.sqrt(1 - 0.99 ** t) / (1 - 0.9 ** t) * m / (v.sqrt() + 1e-3)
    assert torch.allclose(b.detach(), p, rtol=0, atol=1e-12)


def test_basis_is_refreshed_every_update_gap_steps_only():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = Conda([p], lr=1e-3, update_gap=3)
    bases = []
    for _ in range(7):
        p.grad = torch.randn(4, 3)
        opt.step()
        bases.append(opt.state[p]["basis"].clone())
    same = [torch.equal(bases[i], bases[i - 1]) for i in range(1, 7)]
    assert same == [True, True, False, True, True, False]  # SVDs at steps 0, 3, 6


def test_build_optimizer_puts_hidden_matrices_on_conda_and_the_output_layer_on_adamw():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Conv1d(8, 8, 1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 2))
    opt = build_optimizer("conda", net.named_parameters(), lr=1e-3, muon_exclude={"4"})
    conda = {id(p) for g in opt.param_groups if g["conda"] for p in g["params"]}
    assert conda == {id(net[0].weight), id(net[2].weight)}
    x = torch.randn(5, 4, 1)
    net2 = torch.nn.Sequential(torch.nn.Flatten(), net[0])
    opt.zero_grad()
    net2(x).pow(2).sum().backward()
    opt.step()  # parameters without a gradient are skipped
    assert "basis" in opt.state[net[0].weight] and len(opt.state[net[4].weight]) == 0


def test_resume_continues_exactly():
    torch.manual_seed(0)
    grads = [torch.randn(5, 3) for _ in range(6)]
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(a.detach().clone())
    oa = Conda([a], lr=1e-2, update_gap=4)
    for g in grads[:3]:
        a.grad = g.clone()
        oa.step()
    ob = Conda([b], lr=1e-2, update_gap=4)
    b.data.copy_(a.data)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # as from a checkpoint file (no shared buffers)
    for g in grads[3:]:
        a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    assert torch.equal(a, b)


def test_bad_values_are_refused():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    for kw in (dict(update_gap=0), dict(scale=0.0), dict(betas=(1.0, 0.9))):
        with pytest.raises(ValueError):
            Conda([p], **kw)
