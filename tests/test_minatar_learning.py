"""Learning on MinAtar breakout, not just running: the reference DQN preset leaves random play.

Random play averages about 0.5 per breakout episode. The test runs the ``minatar`` preset
(network, replay, batch 32, one update per step, Huber loss, centered RMSprop, sticky actions)
for 8,000 env steps with its schedules shrunk to that budget (1,000 random steps, epsilon
1.0 -> 0.1 over the next 2,000, target copy every 250 updates) and the learning rate 1e-3
instead of the reference's 2.5e-4: at 2.5e-4 the first 15,000 steps stayed near random play
(0.67 over the last 100 training episodes, docs/results/minatar.md), more than CI time allows.
It asserts that the mean return of the last 100 training episodes (the paper's measure) is at
least 1.0, twice random play, for 2 of 3 seeds (it stops after two passing seeds).
"""
from __future__ import annotations

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from crl import api
from crl.config import make_config

pytest.importorskip("minatar")

STEPS = 8_000


def _last_100_training_returns(seed: int, tmp_path) -> float:
    cfg = make_config("minatar", scenario="minatar", game="breakout", steps=STEPS, seed=seed, learning_starts=1_000,
                      eps_decay_steps=2_000, target_update=250, lr=1e-3, eval_every=STEPS, eval_episodes=5,
                      eval_max_steps=2_000, checkpoint_every=STEPS, metrics_every=0, run_dir=str(tmp_path),
                      name=f"seed{seed}", progress=False)
    summary = api.run(cfg)
    assert summary["global_step"] == STEPS
    acc = EventAccumulator(summary["run_dir"], size_guidance={"scalars": 0})
    acc.Reload()
    returns = [e.value for e in acc.Scalars("train/episode_return")]
    assert len(returns) >= 100
    return float(np.mean(returns[-100:]))


@pytest.mark.slow
def test_reference_dqn_beats_random_play_on_breakout_two_of_three_seeds(tmp_path):
    means = []
    for seed in (0, 1, 2):
        means.append(_last_100_training_returns(seed, tmp_path))
        if sum(m >= 1.0 for m in means) == 2:
            break
    assert sum(m >= 1.0 for m in means) >= 2, f"mean return of the last 100 training episodes per seed: {means}"
