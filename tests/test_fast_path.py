"""Speed never changes the algorithm: the DQN fast path and the plain path make the same update.

The fast path is the config's "speed" section (agents/fast.py): fused Adam, channels-last
convolutions, one fused online forward over obs and next_obs, (on CUDA) a captured CUDA
graph. On the same batch from the same parameters, the per-sample losses, the gradients and
the parameters after the optimizer step must agree to float tolerance. The env overlap
(send/recv) changes which transitions an update can sample (not the update): it must keep
the update and target-copy schedule, and with updates off collect exactly the same data.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from agents.fast import set_mode
from crl import api
from crl.config import make_config
from crl.hooks import HookList
from crl.runner import Runner
from scenarios.atari import atari

PLAIN = dict(fused_optimizer=False, channels_last=False, fused_forward=False, overlap_env=False,
             compile=False, cuda_graphs=False, amp_bf16=False)
FAST = dict(fused_optimizer=True, channels_last=True, fused_forward=True)
B = 16


def _agent(agent: str, device: str = "cpu", **speed):
    from crl.registry import AGENTS

    cfg = make_config("atari", game="pong", agent=agent, num_envs=2, buffer_size=1_000, batch_size=B,
                      metrics_every=0, **{**PLAIN, **speed})
    learner = AGENTS.get(agent)(cfg, atari(cfg), torch.device(device))
    learner.run = SimpleNamespace(hooks=HookList([]), global_step=0, logger=None)
    return learner


def _batch(num_actions: int, device: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (B, 5, 84, 84), generator=g, dtype=torch.uint8)
    return {k: v.to(device) for k, v in {
        "obs": frames[:, :4].contiguous(), "next_obs": frames[:, 1:].contiguous(),
        "actions": torch.randint(0, num_actions, (B,), generator=g),
        "returns": torch.randint(-1, 2, (B,), generator=g).float(),
        "discounts": 0.99 * (torch.rand(B, generator=g) > 0.1).float(),
        "indices": torch.arange(B), "task_ids": torch.zeros(B, dtype=torch.int64)}.items()}


def _same_update(plain, fast, batch) -> None:
    fast.network.load_state_dict(plain.network.state_dict())
    fast.target.load_state_dict(plain.network.state_dict())
    plain.target.load_state_dict(plain.network.state_dict())
    for learner in (plain, fast):  # both sample this very batch (the fast one converts its layout)
        learner.replay.sample = lambda *a, **k: {k2: v.clone() for k2, v in batch.items()}
    loss_p, out_p = plain.per_sample_loss(plain.sample_batch(B))
    loss_f, out_f = fast.per_sample_loss(fast.sample_batch(B))
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_f, out_p, rtol=1e-5, atol=1e-6)
    plain.update()
    fast.update()
    torch.testing.assert_close(fast._loss_sum, plain._loss_sum, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(plain.network.named_parameters(), fast.network.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=lambda m: f"grad of {name}: {m}")
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name} after the step: {m}")


@pytest.mark.parametrize("agent", ["dqn", "dqn-hlgauss", "dqn-c51"])
def test_fast_update_equals_plain_update(agent):
    torch.manual_seed(0)
    plain = _agent(agent)
    fast = _agent(agent, **FAST)
    assert fast.fused_forward and fast.channels_last
    assert fast.optimizer.param_groups[0]["fused"] and not plain.optimizer.param_groups[0].get("fused")
    conv = fast.network.torso.encoder[0].layer.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    batch = _batch(plain.num_actions)
    for _ in range(2):  # the second update runs with non-zero Adam moments
        _same_update(plain, fast, batch)


def test_fast_update_equals_plain_update_single_dqn_and_layernorm():
    plain = _agent("dqn-hlgauss", double_dqn=False, norm="layernorm")
    fast = _agent("dqn-hlgauss", double_dqn=False, norm="layernorm", **FAST)
    _same_update(plain, fast, _batch(plain.num_actions))


def test_fused_forward_refuses_batch_statistics():
    from crl.errors import UserError

    with pytest.raises(UserError, match="--fused-forward"):
        _agent("dqn", norm="batchnorm", fused_forward=True)
    _agent("dqn", norm="batchnorm", fused_optimizer=True, channels_last=True)  # the rest of the fast path is fine


def test_bf16_autocast_keeps_the_loss_float32():
    learner = _agent("dqn-hlgauss", amp_bf16=True)
    batch = _batch(learner.num_actions)
    from agents import fast

    with fast.autocast(learner.device, True):
        loss, out = learner.per_sample_loss(batch)
    assert loss.dtype == torch.float32 and out.dtype == torch.bfloat16
    reference = _agent("dqn-hlgauss")
    reference.network.load_state_dict(learner.network.state_dict())
    reference.target.load_state_dict(learner.target.state_dict())
    torch.testing.assert_close(loss, reference.per_sample_loss(batch)[0], rtol=0.05, atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("agent", ["dqn", "dqn-hlgauss"])
def test_cuda_graph_update_equals_eager_update(agent):
    plain = _agent(agent, "cuda")
    fast = _agent(agent, "cuda", cuda_graphs=True, fused_optimizer=True, channels_last=True)
    batch = _batch(plain.num_actions, "cuda")
    for _ in range(3):  # capture, then replays
        _same_update(plain, fast, batch)
    assert fast.graphed_loss.graph is not None


def _collect(tmp_path, name: str, steps: int, **overrides):
    cfg = make_config("atari", game="pong", agent="dqn", num_envs=4, buffer_size=2_000, batch_size=8,
                      target_update=64, run_dir=str(tmp_path), name=name, progress=False, metrics_every=0,
                      **{**PLAIN, **overrides})
    scenario, learner, hooks = api.prepare(cfg)
    runner = Runner(cfg, scenario, learner, hooks, api.run_directory(cfg, scenario))
    learner.train(scenario.tasks[0], steps)
    runner.logger.close()
    learner.env.close()
    return learner


def test_overlap_keeps_the_schedule_and_the_data(tmp_path):
    # updates off: overlapped and plain stepping collect bit-identical replay contents
    a = _collect(tmp_path, "a", 120, learning_starts=10_000)
    b = _collect(tmp_path, "b", 120, learning_starts=10_000, overlap_env=True)
    assert len(a.replay) == len(b.replay) > 0
    for name in ("_actions", "_rewards", "_flags"):
        assert torch.equal(getattr(a.replay, name), getattr(b.replay, name)), name
    valid = a.replay.valid_indices(1)
    assert torch.equal(valid, b.replay.valid_indices(1))
    x, y = a.replay.get(valid), b.replay.get(valid)  # frames: only written slots are defined
    assert all(torch.equal(x[k], y[k]) for k in x)
    # updates on: the same number of updates and target copies at the same env steps
    c = _collect(tmp_path, "c", 160, learning_starts=48)
    d = _collect(tmp_path, "d", 160, learning_starts=48, overlap_env=True)
    assert (c.updates, c.next_target_sync, c.env_steps) == (d.updates, d.next_target_sync, d.env_steps)
    assert c.updates == (160 - 48) // 4 + 1


def test_host_side_sampling_is_uniform_over_valid_transitions():
    # sampling draws and checks candidates on the host; the device only gathers
    from agents.replay import ReplayBuffer

    buf = ReplayBuffer(3 * 40, 3, (4, 2, 2), 4, torch.uint8, "cpu", seed=1)
    rng = np.random.default_rng(0)
    prev = np.zeros(3, bool)
    obs = rng.integers(0, 255, (3, 4, 2, 2))
    for _ in range(60):
        nxt = rng.integers(0, 255, (3, 4, 2, 2))
        term = rng.random(3) < 0.1
        buf.add(obs, rng.integers(0, 4, 3), rng.random(3), nxt, term, np.zeros(3, bool), ~prev)
        prev, obs = term, nxt
    valid = set(buf.valid_indices(1).tolist())
    counts = np.bincount(buf.sample(20_000)["indices"].numpy(), minlength=buf.capacity)
    assert set(np.flatnonzero(counts).tolist()) == valid
    expected = 20_000 / len(valid)
    assert np.all(np.abs(counts[sorted(valid)] - expected) < 5 * np.sqrt(expected))
    assert copy.deepcopy(buf)._gen.device.type == "cpu"


def twin_rmsprop_nets():
    """Two equal small MLPs, each with its own centered RMSprop (the MinAtar preset's optimizer)."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    return nets, [torch.optim.RMSprop(n.parameters(), lr=1e-2, alpha=0.95, eps=0.01, centered=True) for n in nets]


def test_compiled_optimizer_step_equals_eager_and_follows_the_schedule():
    """--compile-optimizer: the same centered-RMSprop steps as eager (to float rounding), with the
    lr a tensor the schedule changes in place (warmup here), compiled once, never recompiled; ReDo's
    in-place zeroing of optimizer-state rows (a recycle, the ReDo arm of sequential MinAtar runs
    with the compiled step) reaches the compiled step as it reaches the eager one."""
    import torch._dynamo

    from agents.fast import compile_optimizer_step
    from crl.interventions.redo import _zero_state
    from crl.optim import LRSchedule

    nets, opts = twin_rmsprop_nets()
    schedules = [LRSchedule(o, "linear", 1e-2, total_steps=20, warmup_steps=10) for o in opts]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # counts of earlier tests in this process
    compile_optimizer_step(opts[0])
    x = torch.randn(5, 32, 6)
    for step in range(5):
        for net, opt, schedule in zip(nets, opts, schedules):
            opt.zero_grad()
            net(x[step]).pow(2).mean().backward()
            opt.step()
            schedule.step()
            if step == 2:  # recycle units 1 and 3 of the first layer, as ReDo does
                _zero_state(opt, net[0].weight, 0, torch.tensor([1, 3]))
                with torch.no_grad():
                    net[0].weight[[1, 3]] = 0.1
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert 0 < schedules[1].lr < 1e-2  # mid-warmup: the lr changed at every step
    assert float(opts[0].param_groups[0]["lr"]) == pytest.approx(schedules[1].lr, rel=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_layer_reset_under_the_compiled_optimizer_step_is_not_recompiled():
    """--intervention reset with --compile-optimizer: the reset layers' optimizer state restarts in
    place, so the compiled step is compiled once for any number of resets (deleting the state
    recompiled it at each reset, and after 8 torch ran it eagerly) and takes the same steps as an
    eager twin whose reset state was deleted."""
    import torch._dynamo

    from agents.fast import compile_optimizer_step
    from crl.interventions.reset import forget_optimizer_state

    nets, opts = twin_rmsprop_nets()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # counts of earlier tests in this process
    compile_optimizer_step(opts[0])
    x = torch.randn(12, 32, 6)
    for step in range(12):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            net(x[step]).pow(2).mean().backward()
            opt.step()
        if step % 3 == 2:  # a reset of the output layer every 3 steps
            forget_optimizer_state(opts[0], nets[0][2].parameters())
            for p in nets[1][2].parameters():
                del opts[1].state[p]
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_set_mode_switches_when_any_submodule_is_in_the_other_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2), nn.ReLU()))
    set_mode(net, training=True)  # lists the modules
    assert all(m.training for m in net.modules())
    net[1][0].eval()  # e.g. user code, between two calls
    set_mode(net, training=True)
    assert all(m.training for m in net.modules())
    set_mode(net, training=False)
    assert not any(m.training for m in net.modules())


def test_set_mode_calls_a_train_override():
    class Counting(nn.Linear):
        calls = []

        def train(self, mode: bool = True):
            Counting.calls.append(mode)
            return super().train(mode)

    plain = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    set_mode(plain, training=False)  # no override: the flags are set directly
    assert not any(m.training for m in plain.modules())
    net = nn.Sequential(Counting(2, 2), nn.ReLU())
    set_mode(net, training=False)
    set_mode(net, training=False)  # already in eval mode: no call
    set_mode(net, training=True)
    assert Counting.calls == [False, True] and all(m.training for m in net.modules())
