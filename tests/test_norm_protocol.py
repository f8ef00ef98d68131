"""Issue 12, item 1-2: stateful norms advance exactly once per optimizer update, and no scoring or
metric forward changes any norm state.

Protocol facts checked on the real learners (DQN on CartPole / Atari, the classifier on
split-digits): per update, each stateful norm of the online network sees exactly one
training-mode forward and its counter moves by one; the target network is never run in
training mode; the bootstrap value of a next state does not depend on its batch companions;
ReDo scores a fresh batch of the current task's transitions at each recycle; ReDo's scoring
forward and the plasticity metrics' forward leave every buffer and Python counter bit-identical.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crl.api import prepare
from crl.config import make_config
from crl.hooks import HookList
from crl.interventions.redo import ReDo
from crl.metrics.hooks import PlasticityHook
from crl.nn.norms.state import state_fingerprint

STATEFUL = ("batchnorm", "powernorm", "unified", "adab2n", "evonorm-b0")


def _norm_modules(net, norm):
    from crl.nn.norms.adab2n import AdaB2N
    from crl.nn.norms.evonorm import EvoNormB0
    from crl.nn.norms.powernorm import PowerNorm
    from crl.nn.norms.unified import UnifiedNorm

    kind = {"batchnorm": torch.nn.modules.batchnorm._BatchNorm, "powernorm": PowerNorm, "unified": UnifiedNorm,
            "adab2n": AdaB2N, "evonorm-b0": EvoNormB0}[norm]
    mods = [m for m in net.modules() if isinstance(m, kind)]
    assert mods, f"no {norm} layer in the network"
    return mods


def _counter(m):
    """The norm's own count of training forwards (None for EvoNorm-B0, which keeps none)."""
    for attr in ("_t", "num_batches_tracked"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    return None


def _fill(replay, obs_shape, tasks, dtype, offset_per_task=0.0):
    """Store one-step episodes-in-progress; observation values tell the task apart."""
    rng = np.random.default_rng(0)
    for t in tasks:
        if dtype == torch.uint8:
            o = rng.integers(0, 100, size=(1, *obs_shape), dtype=np.uint8) + np.uint8(100 * t)
            n = rng.integers(0, 100, size=(1, *obs_shape), dtype=np.uint8) + np.uint8(100 * t)
        else:
            o = (rng.normal(size=(1, *obs_shape)) + offset_per_task * t).astype(np.float32)
            n = (rng.normal(size=(1, *obs_shape)) + offset_per_task * t).astype(np.float32)
        replay.add(o, np.array([rng.integers(2)]), np.array([1.0]), n, np.array([False]), np.array([False]),
                   np.array([True]), task=t)


def _dqn(norm, double=True, hooks=(), **kw):
    if norm == "evonorm-b0":  # conv only: the Nature torso on real Atari frames
        cfg = make_config("atari", scenario="atari", game="pong", norm=norm, num_envs=1, buffer_size=2_000,
                          batch_size=8, device="cpu", progress=False, double_dqn=double, metrics_every=0, **kw)
    else:
        cfg = make_config("gym", scenario="gym", env_id="CartPole-v1", norm=norm, mlp_hidden="16,16", num_envs=1,
                          batch_size=32, device="cpu", progress=False, double_dqn=double, metrics_every=0, **kw)
    scenario, learner, _ = prepare(cfg)
    learner.run = SimpleNamespace(hooks=HookList(list(hooks)), global_step=0, logger=None, learner=learner,
                                  task=scenario.tasks[0], task_index=0)
    learner.env_task_index = 0
    tasks = [0] * 60
    _fill(learner.replay, learner.obs_shape, tasks, learner.replay.obs_dtype)
    return learner


def _count_training_forwards(nets):
    calls = {}
    handles = []
    for net in nets:
        for m in net.modules():
            def pre(mod, _inp, key=id(m)):
                if mod.training:
                    calls[key] = calls.get(key, 0) + 1
            handles.append(m.register_forward_pre_hook(pre))
    return calls, handles


@pytest.mark.parametrize("double", [True, False], ids=["double", "single"])
@pytest.mark.parametrize("norm", STATEFUL)
def test_dqn_update_advances_each_norm_once(norm, double):
    torch.manual_seed(0)
    learner = _dqn(norm, double)
    online, target = _norm_modules(learner.network, norm), _norm_modules(learner.target, norm)
    calls, handles = _count_training_forwards([learner.network, learner.target])
    inputs = {}
    if norm == "evonorm-b0":
        for m in online:
            handles.append(m.register_forward_pre_hook(
                lambda mod, inp, key=id(m): inputs.__setitem__(key, inp[0].detach().clone()) if mod.training else None))
    updates = 4
    for k in range(updates):
        before = [(_counter(m), m.running_var.clone() if norm == "evonorm-b0" else None) for m in online]
        learner.update()
        for m, (count, rv) in zip(online, before):
            if count is not None:
                assert _counter(m) == count + 1, f"{norm}: counter moved by {_counter(m) - count} in one update"
            if norm == "evonorm-b0":  # one EMA step with the batch variance of the update's own forward
                x = inputs[id(m)]
                expected = rv - (1 - m.decay) * (rv - x.var(dim=(0, 2, 3), unbiased=False))
                assert torch.allclose(m.running_var, expected, atol=1e-6)
    for h in handles:
        h.remove()
    for m in online:
        assert calls.get(id(m), 0) == updates, f"{norm}: {calls.get(id(m), 0)} training forwards in {updates} updates"
    for m in target:
        assert id(m) not in calls, "the target network ran in training mode"
    assert not learner.target.training
    if norm in ("powernorm", "unified"):
        assert all(int(m.iters) == updates for m in online)
    if norm == "unified":  # the backward's gradient window is written at every slot (t % 4), not every other
        assert all(bool((m.buffer_gz.abs().sum(dim=1) > 0).all()) for m in online)


@pytest.mark.parametrize("norm", ["batchnorm", "powernorm", "adab2n"])
def test_target_sync_copies_running_statistics_and_target_stays_in_eval(norm):
    torch.manual_seed(0)
    learner = _dqn(norm, target_update=4, learning_starts=0)
    for _ in range(3):
        learner.update()
    learner._learn(0, learner.next_target_sync)  # the copy due at the next sync point
    for a, b in zip(learner.network.buffers(), learner.target.buffers()):
        assert torch.equal(a, b)
    for m, t in zip(_norm_modules(learner.network, norm), _norm_modules(learner.target, norm)):
        assert _counter(m) == _counter(t)
    assert not learner.target.training


@pytest.mark.parametrize("norm", STATEFUL)
def test_bootstrap_of_a_next_state_does_not_depend_on_its_batch(norm):
    torch.manual_seed(0)
    learner = _dqn(norm)
    learner.update()  # running statistics away from their initial values
    learner.network.train()
    a = learner.sample_batch(learner.cfg.batch_size)
    b = learner.sample_batch(learner.cfg.batch_size)
    b = {k: (torch.cat([a[k][:1], v[1:]]) if isinstance(v, torch.Tensor) and v.shape[:1] == a[k].shape[:1] else v)
         for k, v in b.items()}
    ta, tb = learner.bootstrap_target(a), learner.bootstrap_target(b)
    assert torch.equal(ta[0], tb[0])
    assert not torch.equal(ta[1:], tb[1:])  # different companions, different targets: the check has teeth


@pytest.mark.parametrize("norm", STATEFUL)
def test_classifier_update_advances_each_norm_once(norm):
    from crl.registry import SCENARIOS
    from agents.classifier import ClassifierLearner
    from crl.options import building

    torso = "small_cnn" if norm == "evonorm-b0" else "mlp"
    cfg = make_config("supervised", scenario="split-digits", torso=torso, mlp_hidden="32", norm=norm, n_tasks=5,
                      batch_size=16, strategy="replay", replay_size=50, device="cpu")
    torch.manual_seed(0)
    scenario = SCENARIOS.get(cfg.scenario)(cfg)
    with building(cfg):
        learner = ClassifierLearner(cfg, scenario, torch.device("cpu"))
    online = _norm_modules(learner.network, norm)
    calls, handles = _count_training_forwards([learner.network])
    for task in scenario.tasks[:2]:  # the second task replays memory: one forward of the joint batch
        before = [_counter(m) for m in online]
        learner.train(task, 3)
        for m, count in zip(online, before):
            if count is not None:
                assert _counter(m) == count + 3
    for h in handles:
        h.remove()
    assert all(calls.get(id(m), 0) == 6 for m in online)


def _same(a: dict, b: dict) -> list[str]:
    diff = []
    for k in a:
        x, y = a[k], b.get(k)
        if isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.shape == y.shape and torch.equal(x, y)):
                diff.append(k)
        elif x != y:
            diff.append(k)
    return diff + sorted(set(b) - set(a))


@pytest.mark.parametrize("norm", STATEFUL)
def test_redo_scoring_and_metric_forwards_leave_every_norm_state_identical(norm):
    torch.manual_seed(0)
    redo = ReDo(tau=0.1, every=1)
    learner = _dqn(norm)
    redo.attach(learner.network)
    for _ in range(2):
        learner.update()
    net = learner.network
    net.train()  # as after an update, when the hooks run
    before = state_fingerprint(net)
    x = learner.scoring_batch(64)
    redo.dormant_masks(net, x)
    assert _same(before, state_fingerprint(net)) == []
    hook = PlasticityHook(every=1, probe_steps=2)
    run = SimpleNamespace(learner=learner, scenario=SimpleNamespace(kind="rl"))
    hook._forward_metrics(run, net, x)
    hook._probe_metrics(net, x)
    assert _same(before, state_fingerprint(net)) == []
    counts = redo.recycle(net, learner.optimizer, x)  # the recycle itself changes weights, not statistics counters
    assert all(v >= 0 for v in counts.values())
    for m in _norm_modules(net, norm):
        k = _counter(m)
        if k is not None:
            assert k == 2


def test_redo_scores_a_fresh_batch_of_the_current_tasks_transitions():
    torch.manual_seed(0)
    redo = ReDo(tau=0.1, every=1, batch_size=256)
    learner = _dqn("none", hooks=[redo])
    redo.attach(learner.network)
    # task 0's transitions have observations near 0, task 1's near 50
    learner.replay.end_episodes()  # as at a task switch: no transition joins two tasks
    _fill(learner.replay, learner.obs_shape, [1] * 60, torch.float32, offset_per_task=50.0)
    learner.env_task_index = 1
    scored = []
    for _ in range(3):
        learner.update()
        scored.append(redo.last_inputs.clone())
    for x in scored:
        assert x.shape == (256, *learner.obs_shape)
        assert bool((x.mean(dim=1) > 25).all()), "ReDo scored a transition of another task"
    assert not torch.equal(scored[0], scored[1]) and not torch.equal(scored[1], scored[2])


def test_metric_probe_comes_from_the_tasks_own_transitions():
    learner = _dqn("none")
    learner.replay.end_episodes()
    _fill(learner.replay, learner.obs_shape, [1] * 300, torch.float32, offset_per_task=50.0)
    learner.env_task_index = 1
    learner.run.task = SimpleNamespace(name="second")
    probe = learner.probe_batch(learner.run.task)
    assert probe is not None and bool((probe.mean(dim=1) > 25).all())
    assert learner.probe_batch(learner.run.task) is probe  # fixed for the task


@pytest.mark.parametrize("agent", ["dqn", "dqn-mse", "dqn-twohot", "dqn-c51"])
def test_every_head_advances_batchnorm_once_per_update(agent):
    torch.manual_seed(0)
    learner = _dqn("batchnorm", agent=agent)
    online = _norm_modules(learner.network, "batchnorm")
    for _ in range(3):
        learner.update()
    assert all(int(m.num_batches_tracked) == 3 for m in online)
    assert all(int(m.num_batches_tracked) == 0 for m in _norm_modules(learner.target, "batchnorm"))
