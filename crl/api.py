"""``crl.run``: everything between a resolved config and a finished run directory.

Every check a user can fail (names, ranges, scenario, spaces) happens before the run
directory is created, so bad input never leaves or overwrites anything.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from crl.config import Config, adapt_to_budget, load_config, make_config, validate
from crl.errors import UserError
from crl.hooks import Hook, HookList
from crl.registry import AGENTS, INTERVENTIONS, NORMS, OPTIMIZERS, SCENARIOS, TORSOS, load_builtins
from crl.runner import Runner, resolve_device, seed_everything
from crl.scenario import Scenario, build_scenario


def check_names(cfg: Config) -> None:
    for registry, value in ((AGENTS, cfg.agent), (TORSOS, cfg.torso), (NORMS, cfg.norm),
                            (OPTIMIZERS, cfg.optimizer)):
        registry.entry(value)
    for name in cfg.interventions():
        INTERVENTIONS.entry(name)


def load_scenario_file(spec: str) -> str:
    """Import a user's scenario file (``path.py`` or ``path.py:name``); return the scenario name to run."""
    path_str, _, name = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        raise UserError(f"crl run: scenario file '{path}' does not exist")
    before = set(SCENARIOS.names())
    module_name = f"crl_user_scenario_{abs(hash(str(path.resolve())))}"
    if module_name not in sys.modules:
        spec_obj = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[module_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except UserError:
            raise
        except Exception as err:  # the user's file: report its error in one line, not our traceback
            del sys.modules[module_name]
            line = getattr(err, "lineno", None)
            where = f" (line {line})" if line else ""
            raise UserError(f"crl run: {path}{where}: {type(err).__name__}: {err}") from None
    added = sorted(set(SCENARIOS.names()) - before) or [n for n in SCENARIOS.names()
                                                          if getattr(SCENARIOS.get(n), "__module__", "") == module_name]
    if name:
        SCENARIOS.entry(name)
        return name
    if len(added) != 1:
        raise UserError(f"crl run: {path} must register exactly one scenario with @crl.register_scenario "
                        f"(found {len(added)}: {', '.join(added) or 'none'}); or pick one with {path}:NAME")
    return added[0]


def resolve_scenario(cfg: Config, scenario: Scenario | None = None) -> Scenario:
    if scenario is not None:
        scenario.validate()
        return scenario
    name = load_scenario_file(cfg.scenario) if cfg.scenario.endswith(".py") or ".py:" in cfg.scenario else cfg.scenario
    return build_scenario(name, cfg)


def run_directory(cfg: Config, scenario: Scenario) -> Path:
    interventions = "+".join(n for n in cfg.interventions() if n != "nap") or "none"
    leaf = cfg.name or f"seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(cfg.run_dir) / scenario.name / f"{cfg.agent}-{cfg.norm}-{interventions}" / leaf
    if (path / "config.yaml").exists():
        raise UserError(f"run directory {path} already holds a run; continue it with --resume {path} "
                        "or choose another --name")
    return path


def extra_hooks(cfg: Config) -> list[Hook]:
    """Hooks every run gets besides the interventions (metrics, when their package is present)."""
    try:
        from crl.metrics.hooks import default_hooks
    except ImportError:
        return []
    return default_hooks(cfg)


def prepare(cfg: Config, scenario: Scenario | None = None):
    """Validate, build scenario, learner and hooks; returns what ``Runner`` needs. Writes nothing."""
    load_builtins()
    validate(cfg)
    check_names(cfg)
    scenario = resolve_scenario(cfg, scenario)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    entry = AGENTS.entry(cfg.agent)
    if entry.meta.get("kind", "rl") != scenario.kind:
        raise UserError(f"--agent: '{cfg.agent}' learns {entry.meta.get('kind')} tasks but scenario "
                        f"'{scenario.name}' has {scenario.kind} tasks")
    from crl.interventions import build_interventions

    hooks = HookList(build_interventions(cfg) + extra_hooks(cfg))
    learner = entry.factory(cfg, scenario, device)
    return scenario, learner, hooks


def run(cfg: Config | None = None, scenario: Scenario | None = None, preset: str = "gym", notes: Sequence[str] = (),
        **overrides: Any) -> dict:
    """Run one experiment and return its summary.

    ``crl.run(scenario=my_scenario, agent="dqn-hlgauss", steps=20_000)`` from a script, or with
    a full :class:`crl.Config`. ``resume=<run dir>`` continues a stopped run. ``notes`` are
    printed to stderr once every check has passed (so a refused run prints only its error).
    """
    if cfg is None:
        cfg = make_config(preset, **overrides)
    if cfg.resume:
        return resume(cfg.resume)
    scenario, learner, hooks = prepare(cfg, scenario)
    run_dir = run_directory(cfg, scenario)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return Runner(cfg, scenario, learner, hooks, run_dir).run()


def resume(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume: {run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    from crl.checkpoint import list_checkpoints

    if not list_checkpoints(run_dir):
        raise UserError(f"--resume: no checkpoint in {run_dir}")
    scenario, learner, hooks = prepare(cfg)
    return Runner(cfg, scenario, learner, hooks, run_dir, resume=True).run()


__all__ = ["run", "resume", "prepare", "adapt_to_budget"]
