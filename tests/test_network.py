"""Torsos, norm plumbing, SoftMoE inside the network, and NaP projection on real updates."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from crl.config import make_config
from crl.interventions.nap import NaPProjection
from crl.nn.network import build_network
from crl.registry import HEADS

ATARI_OBS = (4, 84, 84)


def _net(torso="nature", norm="none", moe="none", head="hlgauss", obs=ATARI_OBS, actions=6, **kw):
    preset = "atari" if len(obs) == 3 else "gym"
    cfg = make_config(preset, torso=torso, norm=norm, moe=moe, **kw)
    return build_network(cfg, obs, actions, HEADS.get(head)(make_config()))


@pytest.mark.parametrize("torso, flat", [("nature", 3136), ("impala", 3872)])
def test_conv_torso_shapes(torso, flat):
    net = _net(torso)
    x = torch.randint(0, 256, (2, *ATARI_OBS), dtype=torch.uint8)
    assert net(x).shape == (2, 6, 51)
    first_dense = [m for m in net.torso.dense.modules() if isinstance(m, nn.Linear)][0]
    assert first_dense.in_features == flat


def test_impala_width_multiplier_scales_channels():
    wide = _net("impala", impala_width=2)
    assert wide.torso.encoder[0].conv.out_channels == 32
    assert wide(torch.zeros(1, *ATARI_OBS, dtype=torch.uint8)).shape == (1, 6, 51)


def test_norm_comes_before_nonlinearity_and_drops_bias():
    net = _net("nature", norm="layernorm")
    block = net.torso.encoder[0]
    assert list(block.children())[0] is block.layer and block.layer.bias is None
    assert isinstance(block.norm, nn.GroupNorm) and isinstance(block.act, nn.ReLU)
    plain = _net("nature", norm="none").torso.encoder[0]
    assert plain.layer.bias is not None and isinstance(plain.norm, nn.Identity)


@pytest.mark.parametrize("torso, tokens, dim", [("nature", 121, 64), ("impala", 121, 32)])  # nature: SAME under softmoe
def test_softmoe_replaces_penultimate_dense(torso, tokens, dim):
    net = _net(torso, moe="softmoe")
    moe = net.torso.dense.moe
    assert moe.num_experts == 8 and moe.slots_per_expert == -(-tokens // 8)
    assert net.output.in_features == tokens * dim
    assert not any(isinstance(m, nn.Linear) for m in net.torso.dense.modules())
    out = net(torch.randint(0, 256, (3, *ATARI_OBS), dtype=torch.uint8))
    out.sum().backward()
    for name in ("w1", "w2"):
        grad = getattr(moe, name).grad
        assert grad is not None and all(grad[e].abs().sum() > 0 for e in range(8)), name


def test_mlp_torso_and_projectable_weights():
    net = _net("mlp", norm="nap", obs=(4,), actions=2, mlp_hidden="32,16")
    names = [n for n, _ in net.projectable_weights()]
    assert names == ["torso.blocks.0.layer.weight", "torso.blocks.1.layer.weight"]
    assert all(not n.startswith("output") for n in names)
    assert len(net.hidden_activations()) == 2


def _train_steps(net, optimizer, hook, steps, obs_shape):
    torch.manual_seed(0)
    for _ in range(steps):
        x = torch.randint(0, 256, (8, *obs_shape), dtype=torch.uint8) if len(obs_shape) == 3 else torch.randn(8, *obs_shape)
        out = net(x)
        loss = net.head.loss(out[:, 0], torch.randn(8) * 3).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hook.after_optimizer_step(None)


@pytest.mark.parametrize("torso, obs, opt", [("mlp", (4,), "adam"), ("nature", ATARI_OBS, "sgd"),
                                             ("impala", ATARI_OBS, "adam")])
def test_nap_holds_norms_and_leaves_output_alone(torso, obs, opt):
    net = _net(torso, norm="nap", obs=obs, actions=3)
    hook = NaPProjection()
    hook.attach(net)
    init = {n: p.detach().norm().item() for n, p in net.projectable_weights()}
    assert init
    projected = {id(p) for _, p in net.projectable_weights()}
    others_before = {n: p.detach().clone() for n, p in net.named_parameters() if id(p) not in projected}
    lr = 0.5 if opt == "sgd" else 1e-2
    optimizer = (torch.optim.SGD if opt == "sgd" else torch.optim.Adam)(net.parameters(), lr=lr)
    _train_steps(net, optimizer, hook, 5, obs)
    for n, p in net.projectable_weights():
        assert p.detach().norm().item() == pytest.approx(init[n], rel=1e-5, abs=1e-5), n
    # The output layer trains freely: its norm is not held (it is not projected).
    out_w = net.output.weight.detach()
    assert not torch.equal(out_w, others_before["output.weight"])
    assert abs(out_w.norm().item() - others_before["output.weight"].norm().item()) > 1e-6


def test_nap_hook_refuses_networks_without_norms():
    from crl.errors import UserError

    with pytest.raises(UserError, match="--intervention nap"):
        NaPProjection().attach(_net("mlp", norm="none", obs=(4,), actions=2))
