"""crl: a reinforcement and continual learning testbed for plasticity and forgetting research.

Public API for user scenarios and scripts::

    import crl
    crl.Scenario, crl.RLTask, crl.SupervisedTask, crl.register_scenario, crl.gym_env_factory
    crl.run(scenario=..., agent="dqn-hlgauss", steps=20_000)   # or crl.run(crl.Config(...))
"""
from crl.config import Config, make_config
from crl.envs import gym_env_factory
from crl.errors import UserError
from crl.hooks import Hook
from crl.scenario import RLTask, Scenario, SupervisedTask, register_scenario


def run(cfg=None, scenario=None, preset: str = "gym", **overrides):
    """Run one experiment; see :func:`crl.api.run`."""
    from crl.api import run as _run

    return _run(cfg, scenario, preset, **overrides)


__all__ = ["Config", "make_config", "gym_env_factory", "UserError", "Hook", "RLTask", "Scenario", "SupervisedTask",
           "register_scenario", "run"]
__version__ = "0.1.0"
