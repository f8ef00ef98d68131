"""SoftMoE: routing equations against an explicit loop, expert independence, invariants."""
from __future__ import annotations

import math

import pytest
import torch

from crl.errors import UserError
from crl.nn.softmoe import SoftMoE

D, M, N, H = 6, 10, 3, 16  # token dim, tokens, experts, expert hidden width


def _moe(seed: int = 0, **kw) -> SoftMoE:
    torch.manual_seed(seed)
    args = dict(dim=D, num_experts=N, num_tokens=M, expert_hidden=H)
    args.update(kw)
    return SoftMoE(**args)


def _tokens(b: int = 4, m: int = M, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, m, D, generator=torch.Generator().manual_seed(seed))


def _reference_forward(moe: SoftMoE, x: torch.Tensor) -> torch.Tensor:
    """Sample by sample, slot by slot, with exp/sum instead of torch.softmax (Puigcerver et al. Alg. 1)."""
    n, p = moe.num_experts, moe.slots_per_expert
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        xb = x[b]  # (m, d)
        xr, phi = xb, moe.phi
        if moe.normalize:
            xr = xb / torch.sqrt((xb ** 2).sum(-1, keepdim=True) + 1e-6)
            phi = moe.scale * phi / torch.sqrt((phi ** 2).sum(0, keepdim=True) + 1e-6)
        logits = torch.zeros(xb.shape[0], n, p)
        for i in range(n):
            for j in range(p):
                logits[:, i, j] = xr @ phi[:, i, j]
        e = torch.exp(logits - logits.max())
        dispatch = e / e.sum(0, keepdim=True)  # over tokens
        combine = e / e.sum((1, 2), keepdim=True)  # over all n * p slots
        slot_out = torch.zeros(n, p, x.shape[-1])
        for i in range(n):
            w = moe.expert_parameters(i)
            for j in range(p):
                s_in = (dispatch[:, i, j, None] * xb).sum(0)
                hidden = torch.clamp(s_in @ w["w1"] + w["b1"], min=0.0)
                slot_out[i, j] = hidden @ w["w2"] + w["b2"]
        for t in range(xb.shape[0]):
            out[b, t] = (combine[t, :, :, None] * slot_out).sum((0, 1))
    return out


def test_shapes_and_slot_count():
    moe = _moe()
    assert moe.slots_per_expert == math.ceil(M / N) == 4
    assert moe.num_slots == 12
    assert moe.phi.shape == (D, N, 4)
    assert moe.w1.shape == (N, D, H) and moe.b1.shape == (N, H)
    assert moe.w2.shape == (N, H, D) and moe.b2.shape == (N, D)
    x = _tokens()
    assert moe(x).shape == x.shape
    assert moe.slot_outputs(x).shape == (4, N, 4, D)
    assert moe(_tokens(m=3)).shape == (4, 3, D)  # any token count once built


@pytest.mark.parametrize("tokens,experts,slots", [(121, 8, 16), (49, 8, 7), (1, 8, 1), (16, 4, 4), (17, 4, 5)])
def test_default_slots_are_ceil_tokens_over_experts(tokens, experts, slots):
    assert SoftMoE(4, experts, num_tokens=tokens, expert_hidden=4).slots_per_expert == slots


def test_explicit_slots_override_num_tokens():
    assert SoftMoE(4, 2, slots_per_expert=3, num_tokens=100, expert_hidden=4).num_slots == 6


@pytest.mark.parametrize("kw", [
    dict(dim=4),  # neither slots_per_expert nor num_tokens
    dict(dim=4, num_tokens=0),
    dict(dim=4, slots_per_expert=0),
    dict(dim=0, num_tokens=4),
    dict(dim=4, num_tokens=4, num_experts=0),
    dict(dim=4, num_tokens=4, expert_hidden=-1),
    dict(dim=4, num_tokens=2.5),
])
def test_bad_arguments_raise_user_error(kw):
    with pytest.raises(UserError):
        SoftMoE(**kw)


def test_bad_input_shape_raises():
    with pytest.raises(ValueError):
        _moe()(torch.randn(M, D))
    with pytest.raises(ValueError):
        _moe()(torch.randn(2, M, D + 1))


@pytest.mark.parametrize("normalize", [False, True])
def test_forward_matches_explicit_loop(normalize):
    moe = _moe(normalize=normalize)
    with torch.no_grad():
        moe.b1.normal_()  # nonzero biases so they are checked too
        moe.b2.normal_()
        moe.phi.mul_(5.0)  # sharper routing than at init
        if normalize:
            moe.scale.fill_(3.0)
    x = _tokens()
    with torch.no_grad():
        assert torch.allclose(moe(x), _reference_forward(moe, x), atol=1e-5)


def test_dispatch_sums_over_tokens_and_combine_over_slots():
    moe = _moe()
    with torch.no_grad():
        moe.phi.mul_(10.0)
    dispatch, combine = moe.routing(_tokens())
    assert dispatch.shape == combine.shape == (4, M, N, 4)
    assert torch.allclose(dispatch.sum(1), torch.ones(4, N, 4), atol=1e-5)
    assert torch.allclose(combine.sum((2, 3)), torch.ones(4, M), atol=1e-5)
    # they are different normalisations of the same logits, not the same tensor
    assert not torch.allclose(dispatch.sum((2, 3)), torch.ones(4, M), atol=1e-3)


def test_changing_one_expert_changes_only_its_slots():
    moe = _moe()
    x = _tokens()
    k = 1
    with torch.no_grad():
        before = moe.slot_outputs(x)
        out_before = moe(x)
        _, combine = moe.routing(x)
        moe.w1[k].add_(0.5 * torch.randn(D, H))
        moe.b2[k].add_(1.0)
        after = moe.slot_outputs(x)
        out_after = moe(x)
    others = [i for i in range(N) if i != k]
    assert torch.equal(before[:, others], after[:, others])
    assert (after[:, k] - before[:, k]).abs().amin(dim=-1).gt(0).all()  # every slot of expert k moved
    # the output moves by exactly expert k's combine-weighted change: sum_p C[m, k, p] dY[k, p]
    delta = torch.einsum("bmp,bpd->bmd", combine[:, :, k], after[:, k] - before[:, k])
    assert torch.allclose(out_after - out_before, delta, atol=1e-5)


def test_gradients_reach_every_expert():
    moe = _moe()
    x = _tokens()
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    (moe(x) * target).sum().backward()
    for i in range(N):
        for name in ("w1", "b1", "w2", "b2"):
            g = getattr(moe, name).grad[i]
            assert g.abs().sum() > 0, f"expert {i} {name} got no gradient"
    assert moe.phi.grad.abs().sum() > 0


def test_experts_have_independent_weights():
    moe = _moe()
    for i in range(N):
        for j in range(i + 1, N):
            assert not torch.equal(moe.w1[i], moe.w1[j])
            assert not torch.equal(moe.w2[i], moe.w2[j])
    # expert_parameters returns views of the batched tensors, not copies
    p = moe.expert_parameters(2)
    assert p["w1"].data_ptr() == moe.w1[2].data_ptr()
    with pytest.raises(IndexError):
        moe.expert_parameters(N)


def test_init_statistics():
    torch.manual_seed(0)
    d, n, p, h = 64, 8, 16, 256
    moe = SoftMoE(d, n, slots_per_expert=p, expert_hidden=h)
    # jax lecun_normal on a (d, n, p) array: variance 1 / (d * n), truncated at 2 std (pre-correction)
    std = 1 / math.sqrt(d * n)
    assert moe.phi.std().item() == pytest.approx(std, rel=0.05)
    assert moe.phi.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-7
    bound = math.sqrt(6 / (d + h))  # xavier uniform per expert
    for w in (moe.w1, moe.w2):
        assert w.abs().max().item() <= bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert torch.count_nonzero(moe.b1) == 0 and torch.count_nonzero(moe.b2) == 0
    assert moe.scale is None and "scale" not in dict(moe.named_parameters())


def test_normalized_routing_is_scale_invariant_and_scale_learns():
    x = _tokens()
    moe = _moe(normalize=True)
    assert moe.scale.item() == 1.0
    d1, c1 = moe.routing(x)
    d2, c2 = moe.routing(7.0 * x)
    assert torch.allclose(d1, d2, atol=1e-5) and torch.allclose(c1, c2, atol=1e-5)
    plain = _moe(normalize=False)
    assert not torch.allclose(plain.routing(x)[0], plain.routing(7.0 * x)[0], atol=1e-3)
    moe(x).square().sum().backward()
    assert moe.scale.grad is not None and moe.scale.grad.abs().item() > 0


def test_token_permutation_equivariance_and_per_sample_routing():
    moe = _moe()
    x = _tokens()
    perm = torch.randperm(M, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = moe(x)
        assert torch.allclose(moe(x[:, perm]), out[:, perm], atol=1e-5)
        # routing is per sample: one sample alone gives the same output as inside the batch
        assert torch.allclose(moe(x[2:3]), out[2:3], atol=1e-6)


def test_hidden_activations_visible_to_hooks():
    moe = _moe()
    seen = []
    moe.act.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    moe(_tokens())
    assert seen == [torch.Size([4, N, 4, H])]
