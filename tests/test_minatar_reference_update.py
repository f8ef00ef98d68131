"""crl's DQN with the ``minatar`` preset makes the reference's update (MinAtar's ``examples/dqn.py``,
as re-written from its facts in ``scripts/bench_minatar.py``): from the same weights, on the same
batches of real MinAtar transitions, five consecutive updates (centered RMSprop's running averages
included) give the same Q-values, losses and weights to float tolerance. The batch goes through
crl's own replay (uint8 frames, its n-step assembly), so the observation scaling, the terminal
mask and the bootstrap are checked along with the loss and the optimizer."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("minatar")

from conftest import load_script  # noqa: E402
from crl.config import make_config  # noqa: E402
from crl.hooks import HookList  # noqa: E402
from crl.registry import AGENTS, load_builtins  # noqa: E402
from scenarios.minatar import make_minatar_env, minatar_scenario  # noqa: E402


def _reference_module():
    return load_script("bench_minatar")


def _crl_learner(game: str):
    load_builtins()
    cfg = make_config("minatar", scenario="minatar", game=game, metrics_every=0, compile_optimizer=False,
                      buffer_size=2_000)
    learner = AGENTS.get(cfg.agent)(cfg, minatar_scenario(cfg), torch.device("cpu"))
    learner.run = SimpleNamespace(hooks=HookList([]), global_step=0, logger=None)
    return learner


def _fill_replay(learner, game: str, steps: int) -> None:
    """Random play in the real game, stored as crl's DQN stores it (``(obs, a, r, next, terminated)``)."""
    env = make_minatar_env(game, 1, seed=5)
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(0)
    prev_done = np.zeros(1, bool)
    for _ in range(steps):
        actions = rng.integers(6, size=1)
        nxt, reward, terminated, truncated, _ = env.step(actions)
        learner.replay.add(obs, actions, reward, nxt, terminated, truncated, ~prev_done, task=0)
        prev_done, obs = terminated | truncated, nxt


def _layers(crl_net, ref_net):
    """Pairs (crl layer, reference layer): the conv, the dense layer, the output."""
    return [(crl_net.torso.encoder[0].layer, ref_net.conv), (crl_net.torso.dense[1].layer, ref_net.fc),
            (crl_net.output, ref_net.out)]


@torch.no_grad()
def _copy(pairs, to_reference: bool) -> None:
    for mine, theirs in pairs:
        src, dst = (mine, theirs) if to_reference else (theirs, mine)
        dst.weight.copy_(src.weight.reshape(dst.weight.shape))
        dst.bias.copy_(src.bias)


@pytest.mark.parametrize("game", ["breakout", "space_invaders"])
def test_preset_update_equals_the_reference_update(game):
    ref = _reference_module()
    torch.manual_seed(0)
    learner = _crl_learner(game)
    _fill_replay(learner, game, 600)
    net, cfg = learner.network, learner.cfg
    channels = net.torso.encoder[0].layer.in_channels
    policy, target = ref.ReferenceNet(channels, 6), ref.ReferenceNet(channels, 6)
    _copy(_layers(net, policy), to_reference=True)  # the reference starts from crl's initial weights
    _copy(_layers(learner.target, target), to_reference=False)  # a target unlike the online net (as after
    # learning), so that a double-DQN selector or a wrong bootstrap network would show
    opt = ref.reference_optimizer(policy)

    sample, terminals = learner.replay.sample, 0
    for k in range(5):
        batch = sample(cfg.batch_size, cfg.n_step, cfg.gamma)  # what crl's update samples, with the run's options
        learner.replay.sample = lambda *a, **kw: {key: v.clone() for key, v in batch.items()}
        s, s2 = batch["obs"].float() / 255.0, batch["next_obs"].float() / 255.0  # the reference's 0/1 floats
        a, r = batch["actions"].view(-1, 1), batch["returns"].view(-1, 1)
        term = (batch["discounts"] == 0).float().view(-1, 1)
        terminals += int(term.sum())
        assert set(s.unique().tolist()) <= {0.0, 1.0} and torch.all(batch["discounts"][term.view(-1) == 0] == 0.99)
        torch.testing.assert_close(net.q_values(batch["obs"]), policy(s), rtol=1e-5, atol=1e-6)
        learner.update()
        loss = ref.reference_update(policy, target, opt, s, s2, a, r, term)
        torch.testing.assert_close(learner._loss_sum / learner._loss_count, loss.detach(), rtol=1e-5, atol=1e-7)
        for mine, theirs in _layers(net, policy):
            for name in ("weight", "bias"):
                p, q = getattr(mine, name), getattr(theirs, name)
                msg = lambda m, what="": f"update {k + 1}, {type(theirs).__name__} {name}{what}: {m}"  # noqa: E731
                torch.testing.assert_close(p.grad.reshape(q.shape), q.grad, rtol=1e-4, atol=1e-9, msg=msg)
                mine_state, their_state = learner.optimizer.state[p], opt.state[q]
                assert set(mine_state) == set(their_state)  # centered RMSprop keeps grad_avg too
                for key in ("square_avg", "grad_avg"):
                    torch.testing.assert_close(mine_state[key].reshape(q.shape), their_state[key], rtol=1e-4,
                                               atol=1e-12, msg=lambda m: msg(m, f" {key}"))
                torch.testing.assert_close(p.reshape(q.shape), q, rtol=1e-5, atol=1e-7, msg=msg)
        learner._loss_sum.zero_()
        learner._loss_count = 0
    assert learner.updates == 5 and terminals > 0  # the batches held episode ends: the terminal mask was checked
