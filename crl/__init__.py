"""crl: a reinforcement and continual learning testbed for plasticity and forgetting research.

Public API for user scenarios and scripts::

    import crl
    crl.Scenario, crl.RLTask, crl.SupervisedTask, crl.register_scenario, crl.gym_env_factory
    crl.run(scenario=..., agent="dqn-hlgauss", steps=20_000)   # or crl.run(crl.Config(...))
    crl.option, crl.NORMS, crl.INTERVENTIONS, ...               # your own components and their options

The names are imported on first use, so ``crl --help`` does not load torch or gymnasium.
"""
import importlib

_EXPORTS = {
    "Config": "crl.config", "make_config": "crl.config", "gym_env_factory": "crl.envs", "UserError": "crl.errors",
    "Hook": "crl.hooks", "RLTask": "crl.scenario", "Scenario": "crl.scenario", "SupervisedTask": "crl.scenario",
    "register_scenario": "crl.scenario", "CycleOptions": "crl.scenario", "option": "crl.options",
    "declare_options": "crl.options", "AGENTS": "crl.registry", "TORSOS": "crl.registry", "NORMS": "crl.registry",
    "ACTIVATIONS": "crl.registry", "REPARAMS": "crl.registry", "HEADS": "crl.registry",
    "INTERVENTIONS": "crl.registry", "OPTIMIZERS": "crl.registry",
    "SCENARIOS": "crl.registry", "from_avalanche": "crl.avalanche",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'crl' has no attribute '{name}'")


def run(cfg=None, scenario=None, preset: str = "gym", **overrides):
    """Run one experiment; see :func:`crl.api.run`."""
    from crl.api import run as _run

    return _run(cfg, scenario, preset, **overrides)


__all__ = [*_EXPORTS, "run"]
__version__ = "0.1.0"
