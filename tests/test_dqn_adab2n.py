"""The DQN learner's AdaB2N hook-up: per-transition task ids stored in replay reach the norm.

Issue 3: AdaB2N's per-sample task ids come from the learner; for RL, "the task id stored
with each transition". ``agents/replay.py`` keeps a uint8 task column (``add(..., task=i)``,
``sample()['task_ids']``); ``DQNAgent.per_sample_loss`` sets them on the AdaB2N layers for
its training forwards and clears them after; ``update`` adds ``--adab2n-lambda`` times the
adaptation loss.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.replay import ReplayBuffer
from crl.api import prepare
from crl.config import make_config
from crl.hooks import HookList
from crl.nn.norms.adab2n import adab2n_layers


def _fill(buf: ReplayBuffer, tasks: list[int], obs_dim: int = 4) -> None:
    rng = np.random.default_rng(0)
    for t in tasks:
        o = rng.normal(size=(1, obs_dim)).astype(np.float32)
        buf.add(o, np.array([0]), np.array([1.0]), o, np.array([False]), np.array([False]), np.array([True]), task=t)


def test_replay_stores_task_ids_and_round_trips():
    buf = ReplayBuffer(64, 1, (4,), 1, torch.float32)
    _fill(buf, [0] * 10 + [3] * 10)
    b = buf.sample(256)
    assert b["task_ids"].dtype == torch.int64 and set(b["task_ids"].tolist()) == {0, 3}
    # the id follows the transition: slot p holds the transition added p-th (one lane, no episode start after 0)
    got = buf.get(b["indices"])
    assert torch.equal(got["task_ids"], b["task_ids"])
    other = ReplayBuffer(64, 1, (4,), 1, torch.float32)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.get(b["indices"])["task_ids"], b["task_ids"])
    with pytest.raises(ValueError, match="task must be in"):
        _fill(buf, [256])


def test_replay_task_column_keeps_atari_bytes_within_1_1_frames():
    buf = ReplayBuffer(1_000, 1, (4, 84, 84), 4, torch.uint8)
    assert buf.bytes_per_transition() <= 1.1 * 84 * 84


def test_dqn_update_feeds_adab2n_task_ids_and_adaptation_loss():
    torch.manual_seed(0)
    cfg = make_config("gym", scenario="gym", norm="adab2n", mlp_hidden="16", num_envs=1, device="cpu", progress=False,
                      batch_size=32, adab2n_lambda=1.0)
    _, learner, _ = prepare(cfg)
    learner.run = SimpleNamespace(hooks=HookList([]), global_step=0, logger=None)
    _fill(learner.replay, [0] * 40 + [1] * 40)
    learner.env_task_index = 1
    layers = adab2n_layers(learner.network)
    assert layers
    learner.update()
    for m in layers:
        # the weighted (task-balanced) statistics were used: two tasks in the batch, a prior gradient
        assert m.last_task_probs is not None and m.last_task_probs.numel() == 2
        assert m.task_weight.grad is not None and bool((m.task_weight.grad[:2] != 0).any())
        assert m._task_ids is None  # cleared after the update's forwards
    for m in adab2n_layers(learner.target):
        assert m._task_ids is None
    assert learner.adab2n_aux is not None and learner.adab2n_aux.requires_grad
    # a training-mode forward of another batch size (e.g. a metric probe) still works: no stale ids
    learner.network.train()
    learner.network(torch.zeros(5, 4))
