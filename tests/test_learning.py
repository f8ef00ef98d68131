"""Learning, not just running: DQN + HL-Gauss (the ``gym`` preset) solves CartPole on CPU within
50k env steps: the greedy evaluation (10 episodes every 5k steps, read back from the run's event
file) reaches 475 for 2 of 3 seeds (rl-zoo's tuned DQN ends at 500), and every seed run ends far
above random play (about 22). It need not stay solved: on these settings the final evaluation
swings between about 170 and 500 from seed to seed, and any change to the run's random stream
(the env-step count, for one) reshuffles which seeds end high."""
from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from crl import api
from crl.config import make_config


def _eval_scores(seed: int, tmp_path) -> list[float]:
    cfg = make_config("gym", scenario="gym", env_id="CartPole-v1", agent="dqn-hlgauss", steps=50_000, seed=seed,
                      run_dir=str(tmp_path), progress=False, metrics_every=0, name=f"seed{seed}")
    summary = api.run(cfg)
    assert summary["global_step"] == 50_000
    acc = EventAccumulator(str(summary["run_dir"]), size_guidance={"scalars": 0})
    acc.Reload()
    scores = [e.value for e in acc.Scalars("eval/CartPole-v1/score")]
    assert len(scores) == 10 and scores[-1] == pytest.approx(summary["final_scores"]["CartPole-v1"])
    return scores


@pytest.mark.slow
def test_hlgauss_dqn_solves_cartpole_two_of_three_seeds(tmp_path):
    runs = []
    for seed in (0, 1, 2):
        runs.append(_eval_scores(seed, tmp_path))
        if sum(max(s) >= 475.0 for s in runs) == 2:
            break
    assert sum(max(s) >= 475.0 for s in runs) >= 2, f"evaluations per seed: {runs}"
    assert all(s[-1] >= 100.0 for s in runs), f"evaluations per seed: {runs}"
