"""``crl.run``: everything between a resolved config and a finished run directory.

Every check a user can fail (names, ranges, scenario, spaces) happens before the run
directory is created, so bad input never leaves or overwrites anything. An exception raised by
the code of a user's scenario file is reported as one line naming the file and line
(:func:`crl.scenario.user_code_errors`); when that code runs during training (an env wrapper's
``step``), the run directory exists by then and keeps what the run wrote.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from crl.checkpoint import load_latest_checkpoint, protocol_problem
from crl.config import Config, adapt_to_budget, flag, load_config, make_config, validate
from crl.errors import UserError
from crl.hooks import Hook, HookList
from crl.options import building
from crl.registry import (ACTIVATIONS, AGENTS, INTERVENTIONS, NORMS, OPTIMIZERS, REPARAMS, SCENARIOS, TORSOS,
                          load_builtins)
from crl.runner import Runner, resolve_device, seed_everything
from crl.scenario import (USER_MODULE_PREFIX, Scenario, build_scenario, user_code_errors, user_error_line,
                          user_frame, user_module_name)


def check_names(cfg: Config) -> None:
    for registry, value in ((AGENTS, cfg.agent), (TORSOS, cfg.torso), (NORMS, cfg.norm),
                            (OPTIMIZERS, cfg.optimizer), (ACTIVATIONS, cfg.activation), (REPARAMS, cfg.reparam)):
        registry.entry(value)
    for name in cfg.interventions():
        INTERVENTIONS.entry(name)
    from crl.nn.activations import check_activation

    check_activation(cfg)


def load_scenario_file(spec: str) -> str:
    """Import a user's scenario file (``path.py`` or ``path.py:name``); return the scenario name to run."""
    path_str, _, name = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        raise UserError(f"crl run: scenario file '{path}' does not exist")
    before = set(SCENARIOS.names())
    module_name = user_module_name(path)
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
            frame = (str(path), err.lineno) if isinstance(err, SyntaxError) else user_frame(err)
            raise UserError("crl run: " + user_error_line(err, frame or (str(path), None))) from None
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

    with building(cfg):  # parts built deep inside (norms) read their options from cfg (crl/options.py)
        hooks = HookList(build_interventions(cfg) + extra_hooks(cfg))
        learner = entry.factory(cfg, scenario, device)
    return scenario, learner, hooks


def run(cfg: Config | None = None, scenario: Scenario | None = None, preset: str = "gym", notes: Sequence[str] = (),
        **overrides: Any) -> dict:
    """Run one experiment and return its summary.

    ``crl.run(scenario=my_scenario, agent="dqn-hlgauss", steps=20_000)`` from a script, or with
    a full :class:`crl.Config`. ``resume=<run dir>`` continues a stopped run. ``notes`` are
    printed to stderr once every check has passed (so a refused run prints only its error).
    Built from ``overrides``, the config is fitted to its budget as on the command line
    (:func:`crl.config.adapt_to_budget`: short-run schedules, NaP's learning-rate schedule);
    a :class:`crl.Config` given whole is run as it is.
    """
    if cfg is None:
        cfg = make_config(preset, **overrides)
        if not cfg.resume:
            notes = [*notes, *adapt_to_budget(cfg, set(overrides))]
    if cfg.resume:
        return resume(cfg.resume, {k: v for k, v in overrides.items() if k != "resume"})
    with user_code_errors():  # an exception in a user's scenario file: one line naming its file and line
        scenario, learner, hooks = prepare(cfg, scenario)
        run_dir = run_directory(cfg, scenario)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return Runner(cfg, scenario, learner, hooks, run_dir).run()


# Options that --resume may change; any other option given with --resume must equal the run's own,
# except where the run is (--resume names it; a run directory may have been moved since).
CHANGEABLE_ON_RESUME = ("steps", "log_every", "progress")
LOCATION = ("run_dir", "name")


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> dict:
    """Continue the run in ``run_dir`` from its newest checkpoint; return its summary.

    ``overrides``: option values given besides ``--resume`` (the CLI passes the flags given on
    its command line, e.g. ``{"steps": 40_000}``). A value equal to the run's own is accepted
    (``crl sweep`` repeats a trial's whole command line). Only :data:`CHANGEABLE_ON_RESUME` may
    differ: ``progress``; ``log_every`` (the train/* and progress cadence from now on); and
    ``steps`` for a single-task run only (``steps`` is per task: other tasks of a multi-task run
    trained with the old value), not below the steps it has done, and not when its task sets its
    own ``steps``. ``run_dir`` and ``name`` are not compared (``run_dir`` says where the run is,
    and it may have been moved). Any other difference is a :class:`UserError` naming the flag;
    nothing is written then. ``config.yaml`` records the new values.

    A finished run (its checkpoint is past its last task and ``summary.json`` says it finished)
    without a larger ``steps``: one line on stderr says so, no file is touched, and the stored
    summary is returned with ``already_finished: True``. With a larger ``steps`` it trains on
    from its finished state up to the new budget: the schedules (epsilon decay, learning start,
    the learning-rate horizon) stay those of the original run, the new final evaluation replaces
    the eval-matrix row, and every earlier point of the event file stays (the old final
    evaluation included). Otherwise "resuming <run_dir> from step N" goes to stderr first.

    A checkpoint of another :data:`crl.checkpoint.PROTOCOL` (a crl that counts steps or trains
    differently) is refused with a UserError; one without a protocol mark (written before it
    existed) resumes after a warning line saying what may differ.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume: {run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    changes = _resume_changes(cfg, overrides or {})
    state = load_latest_checkpoint(run_dir)
    r = state["runner"]
    stream_len, new_steps = len(r["eval_matrix"]), changes.get("steps")
    if new_steps is not None and stream_len > 1:
        raise UserError(f"--steps: cannot change when resuming {run_dir}: it trains {stream_len} tasks and --steps "
                        f"is per task (the run has {cfg.steps})")
    summary = _finished_summary(run_dir) if r["task_index"] >= stream_len else None
    if summary is not None and not (new_steps is not None and new_steps > r["global_step"]):
        more = "; give a larger --steps to continue it" if stream_len == 1 else ""
        print(f"run {run_dir} is finished at step {r['global_step']}{more}", file=sys.stderr)
        return {**summary, "already_finished": True}
    if new_steps is not None and new_steps < r["global_step"]:  # one task: its steps are the run's
        raise UserError(f"--steps: {run_dir} has already trained {r['global_step']} steps; give at least that many")
    problem = protocol_problem(state)
    if problem is not None:
        text, certain = problem
        if certain:
            raise UserError(f"--resume: cannot resume {run_dir}: {text}")
        print(f"warning: resuming {run_dir}: {text}", file=sys.stderr)
    for name, value in changes.items():
        setattr(cfg, name, value)
    with user_code_errors():
        scenario, learner, hooks = prepare(cfg)
        _check_task_budget(scenario, new_steps)
        print(f"resuming {run_dir} from step {r['global_step']}", file=sys.stderr)
        return _resumed_runner(cfg, scenario, learner, hooks, run_dir, state).run()


def _resume_changes(cfg: Config, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that differ from the run's config; a UserError for one that may not change."""
    changes = {}
    for name, value in overrides.items():
        old = getattr(cfg, name)
        if value == old or name in LOCATION:
            continue
        if name not in CHANGEABLE_ON_RESUME:
            allowed = ", ".join(flag(n) for n in CHANGEABLE_ON_RESUME)
            raise UserError(f"{flag(name)}: cannot change when resuming a run (it has {old!r}, given {value!r}); "
                            f"only {allowed} can")
        changes[name] = value
    return changes


def _finished_summary(run_dir: Path) -> dict | None:
    """The run's summary.json if it says the run finished (not stopped early, not diverged)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):  # absent: killed after the final checkpoint, before the summary
        return None
    finished = isinstance(summary, dict) and not summary.get("stopped_early") and not summary.get("diverged")
    return summary if finished else None


def _check_task_budget(scenario: Scenario, new_steps: int | None) -> None:
    task = scenario.stream()[0]
    if new_steps is not None and task.steps is not None:
        raise UserError(f"--steps: task '{task.name}' of scenario '{scenario.name}' sets its own budget "
                        f"({task.steps} steps); --steps does not change it")


def _resumed_runner(cfg: Config, scenario: Scenario, learner, hooks: HookList, run_dir: Path, state: dict) -> Runner:
    try:
        return Runner(cfg, scenario, learner, hooks, run_dir, resume=state)
    except ModuleNotFoundError as err:  # the checkpoint's env refers to a scenario file imported from elsewhere
        if not (err.name or "").startswith(USER_MODULE_PREFIX):
            raise
        raise UserError(f"--resume: the checkpoint holds code of a scenario file imported from another path than "
                        f"{cfg.scenario} (module {err.name}); resume with the file where the run started") from None


__all__ = ["run", "resume", "prepare", "adapt_to_budget"]
