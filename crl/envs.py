"""Generic environment factories for user scenarios (no particular game or task here)."""
from __future__ import annotations

from functools import partial

import gymnasium as gym


def make_gym_env(env_id: str, num_envs: int, seed: int, **kwargs):
    """A SyncVectorEnv with gymnasium's default NEXT_STEP autoreset (picklable, so resumable exactly).

    ``seed`` is applied by the learner's ``reset(seed=...)``; ``kwargs`` go to ``gym.make``.
    """
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)


def gym_env_factory(env_id: str, **kwargs):
    """``(num_envs, seed) -> VectorEnv`` for ``crl.RLTask``."""
    return partial(make_gym_env, env_id, **kwargs)
