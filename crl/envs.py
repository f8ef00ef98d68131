"""Generic environment factories for user scenarios (no particular game or task here)."""
from __future__ import annotations

from functools import partial

import gymnasium as gym


def make_gym_env(env_id: str, num_envs: int, seed: int, **kwargs):
    """``gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)``: a
    ``SyncVectorEnv`` of ``num_envs`` copies, with gymnasium's default NEXT_STEP autoreset
    (picklable, so a checkpoint holds the envs and a resume continues them exactly).

    ``seed`` is not used here: the env is returned unseeded and the learner seeds it with
    ``env.reset(seed=seed)`` (see :class:`crl.RLTask`). ``kwargs`` as in :func:`gym_env_factory`.
    """
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)


def gym_env_factory(env_id: str, **kwargs):
    """``(num_envs, seed) -> VectorEnv`` for ``crl.RLTask``: :func:`make_gym_env` with ``env_id``
    and ``kwargs`` bound (a ``functools.partial``; nothing is built until it is called).

    Each call builds a new ``gymnasium.vector.SyncVectorEnv`` of ``num_envs`` copies of
    ``env_id`` through ``gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
    **kwargs)``, also for ids that register a vector entry point of their own (e.g. CartPole-v1).
    The keyword arguments go to ``make_vec``: ``wrappers`` (a list of wrapper classes or
    functions applied to each copy) and ``vector_kwargs`` (keywords of the ``SyncVectorEnv``;
    leave its ``autoreset_mode`` at NEXT_STEP) are ``make_vec``'s own; every other keyword is
    passed to ``gymnasium.make`` for each copy, which takes ``max_episode_steps`` and
    ``disable_env_checker`` itself and passes the rest to the environment's constructor, over the
    id's registered keywords (e.g. ``gym_env_factory("CartPole-v1", max_episode_steps=200)``,
    ``gym_env_factory("CartPole-v1", sutton_barto_reward=True)``). A keyword the constructor does
    not take raises ``TypeError`` when the env is built; ``num_envs`` and ``vectorization_mode``
    cannot be given. ``seed`` is not used to build the env: the learner seeds it with
    ``env.reset(seed=seed)`` (see :class:`crl.RLTask`).
    """
    return partial(make_gym_env, env_id, **kwargs)
