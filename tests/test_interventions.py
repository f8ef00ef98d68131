"""ReDo, shrink & perturb, L2-init, resets and BN-only against what each method means.

Each intervention is driven through its hook events on small crl networks with a fake
``run`` (learner = network + optimizer + probe batch); one test runs them all through the
real runner on CartPole.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from crl.config import make_config
from crl.errors import UserError
from crl.interventions import build_interventions
from crl.interventions.bn_only import BNOnly
from crl.interventions.l2_init import L2Init
from crl.interventions.redo import ReDo, recycle_map
from crl.interventions.reset import LayerReset, forget_optimizer_state, resolve_reset_layers
from crl.interventions.shrink_perturb import ShrinkPerturb
from crl.nn.network import QNetwork
from crl.nn.torsos.impala import impala
from crl.nn.torsos.mlp import MLPTorso
from crl.nn.torsos.nature import nature
from crl.registry import HEADS, INTERVENTIONS, load_builtins

load_builtins()


def _head():
    return HEADS.get("scalar-mse")(make_config())


def mlp_net(norm="none", sizes=(32, 32), d=6, actions=3, seed=0):
    torch.manual_seed(seed)
    return QNetwork(MLPTorso(d, list(sizes), norm), actions, _head())


def conv_net(kind="nature", norm="none", seed=0, shape=(2, 44, 44)):
    torch.manual_seed(seed)
    cfg = make_config("atari", norm=norm, impala_width=1)
    torso = (nature if kind == "nature" else impala)(shape, cfg)
    return QNetwork(torso, 3, _head())


def fake_run(net, opt=None, probe=None, target=None):
    learner = SimpleNamespace(network=net, optimizer=opt, probe_batch=lambda task: probe)
    if target is not None:
        learner.target = target
    return SimpleNamespace(learner=learner, task=None, logger=None, global_step=0)


def train_steps(net, opt, x, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(len(x), net.num_actions, generator=gen)
    for _ in range(n):
        opt.zero_grad()
        (net(x)[..., 0] - y).square().mean().backward()
        opt.step()


# ----------------------------------------------------------------------------- ReDo


def test_recycle_map_follows_module_order():
    m = {r.name: r for r in recycle_map(mlp_net())}
    assert list(m) == ["torso.blocks.0", "torso.blocks.1"]
    net = mlp_net()
    assert m["torso.blocks.0"].consumer.weight.shape == net.torso.blocks[1].layer.weight.shape
    assert recycle_map(net)[-1].consumer is net.output

    net = conv_net("nature")
    m = {r.name: r for r in recycle_map(net)}
    assert list(m) == ["torso.encoder.0", "torso.encoder.1", "torso.encoder.2", "torso.dense.1"]
    assert m["torso.encoder.0"].consumer is net.torso.encoder[1].layer
    assert m["torso.encoder.2"].consumer is net.torso.dense[1].layer
    assert m["torso.encoder.2"].positions == 2 * 2  # 44 -> 10 -> 4 -> 2
    assert m["torso.dense.1"].consumer is net.output

    net = conv_net("impala")
    m = {r.name: r for r in recycle_map(net)}
    res = [n for n in m if n != "torso.dense.1"]
    assert len(res) == 6 and all(n.endswith("conv1") for n in res)  # 3 stages x 2 residual blocks
    assert all(m[n].consumer is net.get_submodule(n[:-1] + "2").layer for n in res)
    assert m["torso.dense.1"].consumer is net.output


def _adam_state(opt, p, key="exp_avg"):
    return opt.state[p][key]


def test_redo_recycles_dormant_units_mlp_with_layernorm():
    net = mlp_net(norm="layernorm")
    x = torch.randn(64, 6)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    hook = ReDo(tau=0.1, every=1)
    hook.on_run_start(fake_run(net, opt, x))  # records the norms' initial values
    train_steps(net, opt, x)
    b0, b1 = net.torso.blocks
    dead0, dead1 = [1, 4, 7], [0, 5]
    with torch.no_grad():  # kill units through their norm: gain 0, offset -5 -> ReLU output 0
        b0.norm.weight[dead0] = 0.0
        b0.norm.bias[dead0] = -5.0
        b1.norm.weight[dead1] = 0.0
        b1.norm.bias[dead1] = -5.0
    train_steps(net, opt, x, n=2)  # the optimizer's moments are populated everywhere
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    masks = hook.dormant_masks(net, x)
    assert set(masks[0].nonzero().flatten().tolist()) >= set(dead0)
    assert set(masks[1].nonzero().flatten().tolist()) >= set(dead1)

    counts = hook.recycle(net, opt, x)
    assert counts["torso.blocks.0"] == int(masks[0].sum()) and counts["torso.blocks.1"] == int(masks[1].sum())
    # right after recycling, no unit is dormant any more
    for m in hook.dormant_masks(net, x):
        assert not m.any()
    for mask, block, consumer in ((masks[0], b0, b1.layer), (masks[1], b1, net.output)):
        idx = mask.nonzero().flatten()
        keep = (~mask).nonzero().flatten()
        name = "torso.blocks.0" if block is b0 else "torso.blocks.1"
        # incoming rows are new, the others untouched; norm gain/offset back to their init (1, 0)
        assert not torch.allclose(block.layer.weight[idx], before[f"{name}.layer.weight"][idx])
        cols = slice(None) if block is b0 else (~masks[0]).nonzero().flatten()  # inputs from recycled units: 0
        assert torch.equal(block.layer.weight[keep][:, cols], before[f"{name}.layer.weight"][keep][:, cols])
        assert torch.equal(block.norm.weight[idx], torch.ones(len(idx)))
        assert torch.equal(block.norm.bias[idx], torch.zeros(len(idx)))
        # outgoing columns zeroed
        assert torch.count_nonzero(consumer.weight[:, idx]) == 0
        # Adam moments of the recycled rows / columns are zero, the others not
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.count_nonzero(_adam_state(opt, block.layer.weight, key)[idx]) == 0
            assert torch.count_nonzero(_adam_state(opt, block.layer.weight, key)[keep]) > 0
            assert torch.count_nonzero(_adam_state(opt, consumer.weight, key)[:, idx]) == 0
            assert torch.count_nonzero(_adam_state(opt, block.norm.weight, key)[idx]) == 0
    # the output layer is never re-initialised: rows and bias as before, only recycled inputs zeroed
    keep_cols = (~masks[1]).nonzero().flatten()
    assert torch.equal(net.output.weight[:, keep_cols], before["output.weight"][:, keep_cols])
    assert torch.equal(net.output.bias, before["output.bias"])


def test_redo_conv_to_linear_zeroes_all_positions_of_a_channel():
    net = conv_net("nature")
    x = torch.rand(16, 2, 44, 44)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    hook = ReDo(tau=0.1, every=1)
    hook.on_run_start(fake_run(net, opt, x))
    last = net.torso.encoder[2].layer
    with torch.no_grad():
        last.bias[[3, 10]] = -1e3  # two dead channels
    train_steps(net, opt, x, n=1)
    dense = net.torso.dense[1].layer
    before_dense = dense.weight.detach().clone()
    kept_rows = ~hook.dormant_masks(net, x)[3]  # dense units that will not be recycled themselves
    counts = hook.recycle(net, opt, x)
    assert counts["torso.encoder.2"] >= 2
    # the dead channels are alive again (a random Nature CNN has other low-activity units at tau 0.1)
    assert not hook.dormant_masks(net, x)[2][[3, 10]].any()
    assert last.bias[3] == 0 and last.bias[10] == 0
    for c in (3, 10):
        assert torch.count_nonzero(dense.weight[:, c * 4:(c + 1) * 4]) == 0
        assert torch.count_nonzero(opt.state[dense.weight]["exp_avg_sq"][:, c * 4:(c + 1) * 4]) == 0
    assert torch.equal(dense.weight[kept_rows, 4:12], before_dense[kept_rows, 4:12])  # channels 1, 2 untouched


def test_redo_hook_schedule_and_errors():
    net = mlp_net()
    x = torch.randn(32, 6)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    run = fake_run(net, opt, x)
    hook = ReDo(tau=0.1, every=3)
    hook.on_run_start(run)
    with torch.no_grad():
        net.torso.blocks[0].layer.bias[:4] = -1e3
    for _ in range(2):
        hook.after_optimizer_step(run)
    assert net.torso.blocks[0].layer.bias[0] == -1e3  # not yet
    hook.after_optimizer_step(run)
    assert net.torso.blocks[0].layer.bias[0] == 0 and hook.recycled_total >= 4
    with pytest.raises(UserError, match="--redo-every"):
        INTERVENTIONS.get("redo")(make_config("gym", redo_every=0))


# ----------------------------------------------------------------------------- shrink & perturb


def test_shrink_perturb_fixed_is_exact():
    net = mlp_net(norm="layernorm")
    theta0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    hook = ShrinkPerturb("fixed", shrink=0.8, perturb=0.3, every=2, at_task_start=False)
    run = fake_run(net)
    hook.on_run_start(run)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    hook.after_optimizer_step(run)
    assert all(torch.equal(p, theta[n]) for n, p in net.named_parameters())  # every 2: not yet
    hook.after_optimizer_step(run)
    for n, p in net.named_parameters():
        torch.testing.assert_close(p, 0.8 * theta[n] + 0.3 * theta0[n], rtol=0, atol=1e-6)


def test_shrink_perturb_fresh_mixes_in_a_new_initialisation():
    net = mlp_net(sizes=(256, 256))
    run = fake_run(net)
    hook = ShrinkPerturb("fresh", shrink=0.5, perturb=0.5)
    hook.on_run_start(run)
    theta0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # move away from init
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    hook.on_task_start(run, 0, None)
    assert all(torch.equal(p, theta[n]) for n, p in net.named_parameters())  # first task: nothing
    hook.on_task_start(run, 1, None)
    w = net.torso.blocks[1].layer.weight
    fresh = (w.detach() - 0.5 * theta["torso.blocks.1.layer.weight"]) / 0.5
    bound = 1 / math.sqrt(256)  # PyTorch's Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert fresh.abs().max() <= bound + 1e-5
    assert abs(fresh.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert not torch.allclose(fresh, theta0["torso.blocks.1.layer.weight"], atol=1e-3)  # a *new* draw
    # a frozen parameter is left alone
    net.output.bias.requires_grad_(False)
    before = net.output.bias.detach().clone()
    hook.on_task_start(run, 2, None)
    assert torch.equal(net.output.bias, before)


# ----------------------------------------------------------------------------- L2 init


def test_l2_init_adds_exactly_twice_lambda_times_displacement():
    net = mlp_net(norm="layernorm")
    x, y = torch.randn(16, 6), torch.randn(16)
    lam = 0.05
    hook = L2Init(lam)
    hook.on_run_start(fake_run(net))
    theta0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))

    def grads(transform):
        net.zero_grad()
        per_sample = (net(x)[:, 0, 0] - y).square()
        if transform:
            per_sample = hook.transform_loss(None, per_sample, (x, y))
        per_sample.mean().backward()
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    plain, reg = grads(False), grads(True)
    for n, p in net.named_parameters():
        torch.testing.assert_close(reg[n], plain[n] + 2 * lam * (p.detach() - theta0[n]), rtol=1e-5, atol=1e-6)
    penalty = lam * sum((p.detach() - theta0[n]).square().sum() for n, p in net.named_parameters())
    torch.testing.assert_close(hook.penalty().detach(), penalty)


# ----------------------------------------------------------------------------- resets


def test_reset_output_layer_reinitialises_and_restarts_optimizer_state():
    net = mlp_net()
    target = mlp_net(seed=1)
    x = torch.randn(32, 6)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    run = fake_run(net, opt, target=target)
    hook = LayerReset("output", every_task=True)
    hook.on_run_start(run)
    train_steps(net, opt, x, n=5)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    out_params = list(net.output.parameters())
    hook.on_task_start(run, 0, None)
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())  # first task: no reset
    hook.on_task_start(run, 1, None)
    assert not torch.allclose(net.output.weight, before["output.weight"])
    assert torch.equal(net.torso.blocks[0].layer.weight, before["torso.blocks.0.layer.weight"])
    bound = 1 / math.sqrt(32)
    assert net.output.weight.abs().max() <= bound  # a fresh PyTorch default init
    assert all(opt.state[p] and not any(v.any() for v in opt.state[p].values()) for p in out_params)  # zeroed
    assert torch.equal(target.output.weight, net.output.weight)  # copied into the target
    # the same Parameter objects are still optimised, with fresh state
    group_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in group_ids for p in out_params)
    reset_w = net.output.weight.detach().clone()
    train_steps(net, opt, x, n=2)
    assert not torch.allclose(net.output.weight, reset_w)
    assert int(opt.state[net.output.weight]["step"]) == 2
    assert int(opt.state[net.torso.blocks[0].layer.weight]["step"]) == 7


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    lambda ps: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.95, eps=0.01, centered=True, momentum=0.9),
    lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, dampening=0.5),  # fresh buffer = grad: deleted
], ids=["adam-amsgrad", "adamw", "rmsprop-centered-momentum", "sgd-dampening"])
def test_reset_optimizer_state_continues_as_a_freshly_created_state(make_opt):
    """Zeroing in place (Adam, AdamW, RMSprop) and deleting (others) restart the state alike:
    the steps after a reset equal those of an optimizer whose state for the layer was deleted."""
    nets = [mlp_net(), mlp_net()]
    opts = [make_opt(n.parameters()) for n in nets]
    x = torch.randn(32, 6)
    for net, opt in zip(nets, opts):
        train_steps(net, opt, x, n=4)
    forget_optimizer_state(opts[0], nets[0].output.parameters())
    for p in nets[1].output.parameters():
        del opts[1].state[p]
    for net, opt in zip(nets, opts):
        train_steps(net, opt, x, n=3)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)


def test_reset_layer_names_and_periodic():
    assert resolve_reset_layers(mlp_net(), "last2") == ["torso.blocks.1", "output"]
    assert resolve_reset_layers(conv_net("nature"), "last2") == ["torso.dense", "output"]
    assert resolve_reset_layers(mlp_net(), "output, torso.blocks.0") == ["output", "torso.blocks.0"]
    with pytest.raises(UserError, match="--reset-layers: unknown module 'torso.nope'; accepted: output, last2"):
        resolve_reset_layers(mlp_net(), "torso.nope")
    net = mlp_net(norm="batchnorm")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    run = fake_run(net, opt)
    hook = LayerReset("last2", every_task=False, every=2)
    hook.on_run_start(run)
    train_steps(net, opt, torch.randn(16, 6), n=3)
    with torch.no_grad():
        net.torso.blocks[1].norm.weight.fill_(3.0)
    hook.on_task_start(run, 1, None)
    assert torch.all(net.torso.blocks[1].norm.weight == 3.0)  # per-task resets off
    hook.after_optimizer_step(run)
    hook.after_optimizer_step(run)
    assert torch.all(net.torso.blocks[1].norm.weight == 1.0)  # BatchNorm back to its init
    assert torch.all(net.torso.blocks[1].norm.running_var == 1.0)


# ----------------------------------------------------------------------------- BN-only


@pytest.mark.parametrize("train_output", [False, True])
def test_bn_only_trains_only_norm_parameters(train_output):
    net = mlp_net(norm="batchnorm")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    hook = BNOnly(train_output=train_output)
    hook.on_run_start(fake_run(net, opt))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    train_steps(net, opt, torch.randn(32, 6), n=3)
    for n, p in net.named_parameters():
        changed = not torch.equal(p, before[n])
        expected = ".norm." in n or (train_output and n.startswith("output."))
        assert changed == expected, n


def test_bn_only_needs_a_norm_with_parameters():
    with pytest.raises(UserError, match="--intervention bn-only: .*affine parameters"):
        BNOnly().on_run_start(fake_run(mlp_net(norm="none")))
    with pytest.raises(UserError, match="--intervention bn-only"):
        INTERVENTIONS.get("bn-only")(make_config("gym", norm="none"))


# ----------------------------------------------------------------------------- through the runner


def test_all_interventions_through_the_runner(tmp_path):
    import crl
    from crl.scenario import RLTask, Scenario

    env_id = "CartPole-v1"
    scenario = Scenario("two", [RLTask("cp", crl.gym_env_factory(env_id), steps=150)], cycles=2)
    summary = crl.run(scenario=scenario, preset="gym", agent="dqn", mlp_hidden="16,16", norm="layernorm",
                      intervention="redo,shrink-perturb,l2-init,reset,meta-rescale", redo_every=20, sp_every=50,
                      reset_every=70, learning_starts=50, batch_size=16, eval_episodes=1, eval_max_steps=20,
                      eval_every=1000, checkpoint_every=1000, metrics_every=0, run_dir=str(tmp_path), name="r",
                      progress=False, device="cpu", seed=0)
    assert summary["global_step"] == 300
    hooks = build_interventions(make_config("gym", intervention="redo,bn-only", norm="layernorm"))
    assert [h.name for h in hooks] == ["redo", "bn-only"]
