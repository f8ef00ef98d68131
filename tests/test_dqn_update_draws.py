"""How DQN draws its replay batches: the updates due after one vector-env step (``--num-envs``
envs stepped together, ``--train-freq`` env steps per update) take their batches from one
replay call, since replay does not change between them; still one update per ``--train-freq``
env steps, each on ``--batch-size`` i.i.d. uniform transitions."""
from __future__ import annotations

import copy

import pytest
import torch

from crl.api import prepare
from crl.config import make_config
from crl.runner import Runner

pytest.importorskip("minatar")


def _learner(tmp_path, **overrides):
    cfg = make_config("minatar", scenario="minatar", game="breakout", steps=240, learning_starts=64, batch_size=8,
                      eval_every=10 ** 6, checkpoint_every=10 ** 6, metrics_every=0, progress=False, eval_episodes=1,
                      eval_max_steps=1, compile_optimizer=False, **overrides)
    scenario, learner, hooks = prepare(cfg)
    return cfg, Runner(cfg, scenario, learner, hooks, tmp_path / "run"), learner


@pytest.mark.parametrize("num_envs,train_freq", [(4, 1), (8, 4), (1, 1)])
def test_the_updates_due_at_one_step_share_one_replay_draw(tmp_path, num_envs, train_freq):
    cfg, runner, learner = _learner(tmp_path, num_envs=num_envs, train_freq=train_freq)
    draws, updates_per_draw = [], []
    sample, update = learner.replay.sample, learner.update

    def counting_sample(size, *args):
        draws.append(size)
        updates_per_draw.append(0)
        return sample(size, *args)

    def counting_update(b=None):
        assert b is not None and len(b["actions"]) == cfg.batch_size
        updates_per_draw[-1] += 1
        update(b)

    learning_steps, learn = [0], learner._learn

    def counting_learn(new_steps, env_steps):
        if env_steps >= cfg.learning_starts:
            learning_steps[0] += new_steps
        learn(new_steps, env_steps)

    learner.replay.sample, learner.update, learner._learn = counting_sample, counting_update, counting_learn
    runner.run()
    assert learner.updates == sum(updates_per_draw) > 0
    # one update per --train-freq env steps once learning starts (autoreset steps are not env steps)
    assert learner.updates == learning_steps[0] // train_freq
    assert draws == [n * cfg.batch_size for n in updates_per_draw]  # one draw per step, all its updates' batches
    assert max(updates_per_draw) == max(num_envs // train_freq, 1)


def test_a_shared_draw_is_the_batches_of_one_replay_call(tmp_path):
    cfg, runner, learner = _learner(tmp_path, num_envs=4)
    runner.run()
    state = learner.replay._gen.get_state()
    batches = learner.sample_batches(3)
    learner.replay._gen.set_state(state)
    whole = learner.replay.sample(3 * cfg.batch_size, cfg.n_step, cfg.gamma)
    assert len(batches) == 3
    for i, b in enumerate(batches):
        assert b.keys() - {"next_target"} == whole.keys()
        b.pop("next_target")
        for k, v in b.items():
            assert torch.equal(v, whole[k][i * cfg.batch_size:(i + 1) * cfg.batch_size]), k
    assert learner.sample_batches(0) == []


def test_a_draw_carries_the_target_outputs_of_its_next_states(tmp_path):
    cfg, runner, learner = _learner(tmp_path, num_envs=4, double_dqn=True)
    runner.run()
    batches = learner.sample_batches(3)
    for b in batches:
        with torch.no_grad():
            torch.testing.assert_close(b["next_target"], learner.target(b["next_obs"]), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the target changes between the draw and an update (as a reset with --reset-target)
        learner.target.output.bias.add_(1.0)
        fresh = learner.target(batches[0]["next_obs"])
        used = learner.bootstrap_target(batches[0])
    assert not torch.allclose(fresh, batches[0]["next_target"])
    selector = learner.network.q_values(batches[0]["next_obs"]).argmax(dim=1)  # double DQN: the online net picks
    expected = batches[0]["returns"] + batches[0]["discounts"] * fresh[torch.arange(cfg.batch_size), selector, 0]
    torch.testing.assert_close(used, expected)


@pytest.mark.parametrize("double_dqn", [False, True])
def test_updates_on_a_shared_target_forward_equal_updates_without_it(tmp_path, double_dqn):
    cfg, runner, learner = _learner(tmp_path, num_envs=4, double_dqn=double_dqn)
    runner.run()
    state = {k: v.clone() for k, v in learner.network.state_dict().items()}
    opt_state = copy.deepcopy(learner.optimizer.state_dict())
    batches = learner.sample_batches(4)
    assert all("next_target" in b for b in batches)
    for b in batches:
        learner.update(b)
    shared = {k: v.clone() for k, v in learner.network.state_dict().items()}
    learner.network.load_state_dict(state)
    learner.optimizer.load_state_dict(opt_state)
    for b in batches:
        learner.update({k: v for k, v in b.items() if k != "next_target"})  # the target runs per batch
    for k, v in learner.network.state_dict().items():
        torch.testing.assert_close(v, shared[k], rtol=1e-5, atol=1e-7, msg=k)
    assert any(not torch.equal(v, state[k]) for k, v in shared.items())  # the updates changed the weights
