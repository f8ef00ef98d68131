"""Any gymnasium env with discrete actions and vector observations (``crl gym --env-id``)."""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

from crl.envs import gym_env_factory
from crl.errors import UserError
from crl.options import option
from crl.scenario import RLTask, Scenario, register_scenario


def check_gym_env(env_id: str) -> None:
    if env_id not in gym.registry:
        import difflib

        close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.5)
        raise UserError(f"--env-id: unknown gymnasium env '{env_id}'; closest: {', '.join(close) or 'none'} "
                        f"(e.g. CartPole-v1, Acrobot-v1, MountainCar-v0, LunarLander-v3)")
    spec_env = gym.make(env_id)
    try:
        if not isinstance(spec_env.action_space, gym.spaces.Discrete):
            raise UserError(f"--env-id: '{env_id}' has {type(spec_env.action_space).__name__} actions; "
                            "DQN needs Discrete actions")
    finally:
        spec_env.close()


@dataclass
class GymOptions:
    """The env of `crl gym`."""

    env_id: str = option("CartPole-v1", "gymnasium id for `crl gym` (discrete actions, vector observations)")


@register_scenario("gym", "one gymnasium env (--env-id) with discrete actions", options=GymOptions)
def gym_scenario(cfg) -> Scenario:
    check_gym_env(cfg.env_id)
    return Scenario("gym", [RLTask(cfg.env_id, gym_env_factory(cfg.env_id), info={"env_id": cfg.env_id})])
