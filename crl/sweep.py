"""``crl sweep``: one base command, a grid of values, every combination an ordinary run.

    crl sweep --grid norm=none,layernorm,nap --grid seed=0,1,2 -- gym --env-id CartPole-v1 --steps 20000

Everything after ``--`` is a ``crl atari|gym|run ...`` command line (without ``--name`` and
``--resume``, which the sweep sets). ``--grid FIELD=V1,V2,...`` (repeatable) and
``--grid-file grid.yaml`` (``FIELD: [V1, V2]``; needed for values that hold commas, e.g.
``mlp_hidden: ["64,64", "256,256"]``) name config fields; each combination runs as
``crl <base> --FIELD VALUE ... --name <FIELD=VALUE,...>``, so its run directory is
``<run-dir>/<scenario>/<agent>-<norm>-<intervention>/<FIELD=VALUE,...>`` and a re-run of
the same sweep finds it:

* ``summary.json`` present and not ``stopped_early``: finished, skipped;
* stopped on a NaN/inf (``summary.json`` has ``diverged``): skipped, reported (the same seed
  diverges again; delete the directory to retry);
* a checkpoint present (killed, or stopped by SIGINT/SIGTERM): resumed with ``--resume``,
  which continues bit-for-bit;
* only ``config.yaml`` (killed before its first checkpoint): its files are removed and it
  starts again.

A directory that holds a run with a different config (e.g. the same grid with another
``--steps``) is an error before anything runs: use another ``--run-dir``.

Backends: ``ray`` (default) runs the trials as Ray Tune trials (``pip install -e .[ray]``),
each trial a ``python -m crl.cli`` subprocess with ``--cpus-per-run``/``--gpus-per-run``
(fractions allowed) reserved for it; local Ray by default, an existing cluster with
``--address`` (then the run directory must be on a file system every node sees and crl
installed on every node). ``local`` runs the trials one after another in this process.
At the end it prints one row per trial and, when :mod:`crl.compare` is available, the
``crl compare`` table of the finished trials (files in ``--compare-out``).

Exit code: 0 every trial finished; 1 some trial failed or diverged; 2 bad input (nothing ran);
128+N interrupted by signal N (re-run the same command to resume).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import yaml

from crl.config import Config, RunOptions, adapt_to_budget, coerce, validate
from crl.errors import UserError
from crl.flags import RUN_COMMANDS as BASE_COMMANDS

RESERVED = ("name", "resume", "run_dir", "scenario")  # set by the sweep or the base command, not gridded
IGNORED_IN_CONFIG_CHECK = ("name", "run_dir", "resume", "progress")
INSTALL_RAY = ("crl sweep --backend ray needs Ray Tune, an optional extra: pip install -e '.[ray]' "
               "(or pip install 'ray[tune]'); or run the grid one trial after another with --backend local")


# ----------------------------------------------------------------------------- the grid


def _field(key: str, source: str) -> dataclasses.Field:
    name = key.strip().lstrip("-").replace("-", "_")
    from crl.options import option_fields
    from crl.registry import load_builtins

    load_builtins()
    by_name = option_fields()
    if name not in by_name:
        import difflib

        close = difflib.get_close_matches(name, list(by_name), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"{source}: '{key}' is not a config field{hint}")
    if name in RESERVED:
        raise UserError(f"{source}: '{name}' cannot be swept (the sweep sets --name/--resume; give --run-dir "
                        "in the base command; run one sweep per scenario)")
    return by_name[name]


def _add_values(grid: dict[str, list], f: dataclasses.Field, raw: Sequence[Any], source: str) -> None:
    if not raw:
        raise UserError(f"{source}: no values for '{f.name}'")
    values = []
    for value in raw:
        if isinstance(value, str) and not value.strip():
            raise UserError(f"{source}: empty value for '{f.name}'")
        v = coerce(f, value, source=f"{source} {f.name}")
        if v in values:
            raise UserError(f"{source}: value {value!r} of '{f.name}' given twice")
        values.append(v)
    grid[f.name] = values


def parse_grid(items: Sequence[str] | None, grid_file: str | None) -> dict[str, list]:
    """``{field: [values]}`` in order (the file's keys first); each value coerced to the field's type."""
    grid: dict[str, list] = {}
    if grid_file:
        try:
            data = yaml.safe_load(Path(grid_file).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise UserError(f"--grid-file: cannot read {grid_file}: {str(err).splitlines()[0]}") from None
        if not isinstance(data, dict) or not data:
            raise UserError(f"--grid-file: {grid_file} must be a mapping of field: [value, ...]")
        for key, raw in data.items():
            f = _field(str(key), f"--grid-file {grid_file}")
            _add_values(grid, f, raw if isinstance(raw, list) else [raw], f"--grid-file {grid_file}:")
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--grid: expected FIELD=V1,V2,..., got '{item}'")
        f = _field(key, "--grid")
        if f.name in grid:
            raise UserError(f"--grid: '{f.name}' is given twice (in --grid or --grid-file)")
        _add_values(grid, f, raw.split(","), "--grid")
    if not grid:
        raise UserError("crl sweep: give at least one --grid FIELD=V1,V2 or a --grid-file")
    return grid


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def trial_name(values: dict[str, Any]) -> str:
    """``norm=nap,seed=0``: deterministic, safe as one path component (odd characters -> ``_`` + a hash)."""
    parts = []
    for key, value in values.items():
        text = _fmt(value)
        slug = re.sub(r"[^A-Za-z0-9._+-]", "_", text)[:40]
        if slug != text:
            slug += "~" + hashlib.sha1(text.encode()).hexdigest()[:6]
        parts.append(f"{key}={slug}")
    name = ",".join(parts)
    if len(name) > 180:
        name = name[:160] + "~" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name


def _flag(key: str, value: Any) -> list[str]:
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + key.replace("_", "-")]
    return [f"{flag}={_fmt(value)}"]


# ----------------------------------------------------------------------------- trials


@dataclass
class Trial:
    name: str
    values: dict[str, Any]
    argv: list[str]  # crl argv of a fresh run (resume adds --resume DIR)
    config: Config
    run_dir: Path | None = None
    status: str = "new"  # new, resume, restart, done, diverged; in the end: finished, skipped, diverged, failed,
    #                      stopped (resumable) or pending (the sweep stopped before it)
    message: str = ""
    ran: bool = False

    @property
    def command(self) -> list[str]:
        return [*self.argv, "--resume", str(self.run_dir)] if self.status == "resume" else self.argv


def _strip_run_dir(base: list[str]) -> list[str]:
    out, skip = [], False
    for tok in base:
        if skip:
            skip = False
            continue
        if tok == "--run-dir":
            skip = True
            continue
        if tok.startswith("--run-dir="):
            continue
        out.append(tok)
    return out


def _base_command(base: Sequence[str]) -> tuple[list[str], argparse.Namespace]:
    from crl.flags import parse_args

    base = list(base)
    if base and base[0] == "--":
        base = base[1:]
    if not base:
        raise UserError("crl sweep: give the base command after --, e.g. crl sweep --grid seed=0,1 -- gym --steps 20000")
    if base[0] not in BASE_COMMANDS:
        raise UserError(f"crl sweep: the base command must be one of {', '.join(BASE_COMMANDS)}, got '{base[0]}' "
                        "(e.g. crl sweep --grid seed=0,1 -- gym --steps 20000)")
    try:
        ns = parse_args(base)
    except UserError as err:
        raise UserError(f"crl sweep: base command: {err}") from None
    for reserved in ("name", "resume"):
        if getattr(ns, reserved, None) is not None:
            raise UserError(f"crl sweep: base command: --{reserved} is set by the sweep for each trial; remove it")
    run_root = Path(ns.run_dir if ns.run_dir is not None else RunOptions.run_dir).expanduser().resolve()
    return [*_strip_run_dir(base), f"--run-dir={run_root}"], ns


def plan(base: Sequence[str], grid: dict[str, list]) -> list[Trial]:
    """Every combination as a checked :class:`Trial` with its status on disk; raises UserError before anything runs."""
    from crl import api
    from crl.flags import config_from_args, parse_args
    from crl.registry import load_builtins

    load_builtins()
    base_argv, ns = _base_command(base)
    for key in grid:
        if getattr(ns, key, None) is not None:
            raise UserError(f"crl sweep: --grid {key}: also set in the base command (--{key.replace('_', '-')}); "
                            "give it in one place")
    trials = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        name = trial_name(values)
        argv = [*base_argv, *(tok for k, v in values.items() for tok in _flag(k, v)), "--name", name]
        try:
            cfg, explicit = config_from_args(parse_args(argv))
            adapt_to_budget(cfg, explicit)
            validate(cfg)
            api.check_names(cfg)
        except UserError as err:
            raise UserError(f"crl sweep: trial {name}: {err}") from None
        trials.append(Trial(name, values, argv, cfg))
    names = [t.name for t in trials]
    if len(set(names)) != len(names):  # only through the 40-character cut of two long values
        raise UserError("crl sweep: two trials get the same run name; shorten the grid values")
    try:  # the scenario of one trial, so a bad base command fails here rather than in every trial
        api.resolve_scenario(trials[0].config)
    except UserError as err:
        raise UserError(f"crl sweep: {err}") from None
    for t in trials:
        _locate(t)
    return trials


def _candidate_dirs(cfg: Config) -> list[Path]:
    """Run directories named like this trial: ``<run_dir>/*/<agent>-<norm>-<interventions>/<name>``
    (:func:`crl.api.run_directory` with ``*`` for the scenario, which is not built here)."""
    from crl import api

    pattern = api.run_directory(cfg, SimpleNamespace(name="*")).relative_to(cfg.run_dir)
    return sorted(p.parent for p in Path(cfg.run_dir).glob(str(pattern / "config.yaml")))


def _locate(trial: Trial) -> None:
    """Find the trial's run directory (if any) and decide: new, resume, restart, done or diverged."""
    cfg = trial.config
    mine = []
    for d in _candidate_dirs(cfg):
        try:
            saved = yaml.safe_load((d / "config.yaml").read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            saved = None
        expected = cfg.to_dict()
        # Fields missing there (written by an older crl) take their defaults on resume: not a difference.
        diff = ([k for k in expected if k not in IGNORED_IN_CONFIG_CHECK and k in saved and saved[k] != expected[k]]
                if isinstance(saved, dict) else ["config.yaml unreadable"])
        if diff:
            shown = ", ".join(f"{k}: {saved.get(k)!r} there, {expected[k]!r} here" for k in diff[:3]
                              if isinstance(saved, dict))
            raise UserError(f"crl sweep: run directory {d} holds a run with another config ({shown or diff[0]}); "
                            "use another --run-dir (or delete it)")
        mine.append(d)
    if not mine:
        trial.status = "new"
        return
    if len(mine) > 1:
        raise UserError(f"crl sweep: trial {trial.name} matches several run directories: "
                        f"{', '.join(map(str, mine))}")
    trial.run_dir = mine[0]
    trial.status, trial.message = status_on_disk(trial.run_dir)


def _read_summary(run_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short by a kill while written
    return data if isinstance(data, dict) else None


def status_on_disk(run_dir: Path) -> tuple[str, str]:
    from crl.checkpoint import list_checkpoints

    summary = _read_summary(run_dir)
    if summary is not None and summary.get("diverged"):
        return "diverged", str(summary["diverged"])
    if summary is not None and not summary.get("stopped_early"):
        return "done", ""
    if list_checkpoints(run_dir):
        return "resume", ""
    return "restart", ""


def _clear_for_restart(run_dir: Path) -> None:
    """A run killed before its first checkpoint: remove what it wrote so it can start again."""
    for p in list(run_dir.glob("events.out.tfevents.*")) + [run_dir / "config.yaml", run_dir / "summary.json"]:
        p.unlink(missing_ok=True)
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir():
        shutil.rmtree(ckpt)


def _prepare_to_run(trial: Trial) -> None:
    if trial.status == "restart":
        _clear_for_restart(trial.run_dir)
        trial.status = "new"


# ----------------------------------------------------------------------------- backends


def run_local(trials: list[Trial]) -> int | None:
    """One trial after another in this process; returns an exit code when a signal stopped the sweep."""
    from crl.run_command import main

    todo = [t for t in trials if t.status in ("new", "resume", "restart")]
    for i, t in enumerate(todo, 1):
        verb = "resuming" if t.status == "resume" else "running"
        print(f"[{i}/{len(todo)}] {verb} {t.name}", flush=True)
        _prepare_to_run(t)
        t.ran = True
        try:
            code = main(t.command)
        except Exception:  # a bug in a trial: show it, go on with the others
            traceback.print_exc()
            t.status, t.message = "failed", "crashed (traceback above)"
            continue
        if code >= 128:
            t.status, t.message = "stopped", f"stopped by signal {code - 128}"
            return code
        if code == 2:
            t.status, t.message = "failed", "bad input (error above)"
        elif code != 0:
            t.status, t.message = "failed", f"exit code {code}"
    return None


def _libc_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None).prctl  # resolved here, not in the forked child (no imports after fork)
    except (OSError, AttributeError):
        return None


def _die_with_parent() -> None:  # pragma: no cover  (runs in the child between fork and exec)
    """Linux: SIGTERM this trial when its Ray worker dies (PR_SET_PDEATHSIG = 1, prctl(2)), so it
    still writes its final checkpoint instead of running on as an orphan."""
    _PRCTL(1, int(signal.SIGTERM))


_PRCTL = _libc_prctl()


def _ray_trial(config: dict) -> None:
    """The Ray Tune function trainable: one trial as ``python -m crl.cli ...``; reports its exit code."""
    from ray import tune

    spec = config["trial"]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, int(spec["cpus"]))))
    cwd = spec["cwd"] if os.path.isdir(spec["cwd"]) else None
    proc = subprocess.Popen([sys.executable, "-m", "crl.cli", *spec["argv"]], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                            preexec_fn=_die_with_parent if _PRCTL is not None else None)
    try:
        out, _ = proc.communicate()
    except BaseException:  # the trial is being stopped: let crl write its final checkpoint
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    tune.report({"exit_code": proc.returncode, "output": out[-4000:]})


def _trial_dirname(trial) -> str:
    return trial.config["trial"]["name"]


@contextlib.contextmanager
def _signal_handlers_kept():
    """Ray Tune's ``fit`` installs its own SIGINT and SIGUSR1 handlers and leaves them after it returns
    (they restore the previous one only when a signal comes): a later Ctrl-C in the same process would
    print Tune's message and be swallowed. Put back the handlers there were before."""
    names = [n for n in ("SIGINT", "SIGUSR1") if hasattr(signal, n)]
    main = threading.current_thread() is threading.main_thread()  # signal.signal works there only
    before = {n: signal.getsignal(getattr(signal, n)) for n in names} if main else {}
    try:
        yield
    finally:
        for n, handler in before.items():
            if handler is not None:  # None: set outside Python; cannot be put back
                signal.signal(getattr(signal, n), handler)


def run_ray(trials: list[Trial], args: argparse.Namespace) -> int | None:
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserError(INSTALL_RAY) from None
    todo = [t for t in trials if t.status in ("new", "resume", "restart")]
    if not todo:
        return None
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no Tune event files beside crl's
    started = False
    if not ray.is_initialized():
        try:
            if args.address:
                ray.init(address=args.address, log_to_driver=False)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"at {args.address}" if args.address else "locally"
            raise UserError(f"crl sweep: cannot start Ray {where}: {str(err).splitlines()[0]}") from None
        started = True
    storage = tempfile.mkdtemp(prefix="crl-sweep-tune-")
    try:
        total = ray.cluster_resources()
        for key, need, flag in (("CPU", args.cpus_per_run, "--cpus-per-run"), ("GPU", args.gpus_per_run, "--gpus-per-run")):
            if need > total.get(key, 0.0):
                raise UserError(f"crl sweep: {flag} {need:g} is more than the Ray cluster has "
                                f"({total.get(key, 0.0):g} {key})")
        if total.get("GPU", 0.0) > 0 and args.gpus_per_run == 0:
            print("note: --gpus-per-run is 0, so Ray reserves no GPU for the trials, but it does not hide the GPUs "
                  "either: with --device auto every trial uses cuda:0. Give --gpus-per-run (e.g. 0.25) or "
                  "--device cpu in the base command", file=sys.stderr)
        for t in todo:
            _prepare_to_run(t)
        specs = [{"name": t.name, "argv": t.command, "cwd": os.getcwd(), "cpus": args.cpus_per_run} for t in todo]
        resources = {"cpu": args.cpus_per_run, "gpu": args.gpus_per_run}
        tuner = tune.Tuner(
            tune.with_resources(_ray_trial, resources),
            param_space={"trial": tune.grid_search(specs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=args.max_concurrent, reuse_actors=True,
                                        trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname),
            run_config=tune.RunConfig(name="crl-sweep", storage_path=storage, verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        with _signal_handlers_kept():
            results = tuner.fit()
        by_name = {t.name: t for t in todo}
        for result in results:
            t = by_name.get((result.config or {}).get("trial", {}).get("name"))
            if t is None:
                continue
            t.ran = True
            metrics = result.metrics or {}
            code = metrics.get("exit_code")
            if result.error is not None or code is None:
                t.status, t.message = "failed", f"Ray trial error: {(str(result.error).strip().splitlines() or ['?'])[-1]}"
            elif code >= 128 or code < 0:
                t.status, t.message = "stopped", f"stopped (exit code {code})"
            elif code != 0:
                lines = [ln for ln in str(metrics.get("output", "")).splitlines() if ln.strip()]
                errors = [ln for ln in lines if ln.startswith("error:")]
                t.status, t.message = "failed", (errors or lines or [f"exit code {code}"])[-1]
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started:
            ray.shutdown()
    return None


# ----------------------------------------------------------------------------- report


def _final_status(trial: Trial) -> None:
    """Re-read the trial's state from disk after running (the source of truth)."""
    if not trial.ran and trial.status in ("new", "resume", "restart"):  # the sweep stopped before it
        trial.status = "pending"
        return
    if trial.run_dir is None:
        found = _candidate_dirs(trial.config)
        trial.run_dir = found[0] if found else None
    if trial.run_dir is None:
        if trial.status not in ("failed", "stopped"):
            trial.status, trial.message = "failed", trial.message or "no run directory was written"
        return
    status, message = status_on_disk(trial.run_dir)
    if status in ("done", "diverged"):
        trial.status, trial.message = ("finished" if trial.ran else "skipped") if status == "done" else status, \
            message
    elif trial.status not in ("failed", "stopped"):
        trial.status = "stopped" if status == "resume" else "failed"


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if not math.isfinite(x) else f"{x:.2f}"
    return "" if x is None else str(x)


def trial_table(trials: list[Trial]) -> str:
    tasks: list[str] = []
    summaries = {}
    for t in trials:
        s = _read_summary(t.run_dir) if t.run_dir else None
        summaries[t.name] = s or {}
        for task in (s or {}).get("final_scores", {}) or {}:
            if task not in tasks:
                tasks.append(task)
    keys = list(trials[0].values) if trials else []
    head = ["trial", *keys, "status", "step", *[f"final eval {task}" for task in tasks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        s = summaries[t.name]
        finals = s.get("final_scores") or {}
        row = [t.name, *[_fmt(t.values[k]) for k in keys], t.status, _cell(s.get("global_step")),
               *[_cell(finals.get(task)) for task in tasks]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def comparison(trials: list[Trial], out: Path, tags: Sequence[str] | None = None) -> str | None:
    """The ``crl compare`` table of the finished trials, when crl/compare.py is there."""
    try:
        from crl import compare as crl_compare
    except ImportError:
        return None
    done = [str(t.run_dir) for t in trials if t.status in ("finished", "skipped")]
    if not done:
        return None
    try:
        result = crl_compare.compare(done, tags=tags, out=out)
    except UserError as err:
        print(f"note: crl compare could not tabulate the sweep: {err}", file=sys.stderr)
        return None
    return Path(result["table"]).read_text().rstrip() + f"\n\n(plots and CSV tables: {out})"


def sweep_id(base_argv: Sequence[str], grid: dict[str, list]) -> str:
    spec = json.dumps([list(base_argv), {k: [_fmt(v) for v in vs] for k, vs in grid.items()}])
    return hashlib.sha1(spec.encode()).hexdigest()[:8]


def main_from_args(args: argparse.Namespace) -> int:
    if args.backend == "local" and args.address:
        raise UserError("crl sweep: --address needs --backend ray")
    if args.backend == "ray":
        try:
            import ray  # noqa: F401
            from ray import tune  # noqa: F401
        except ImportError:
            raise UserError(INSTALL_RAY) from None
    grid = parse_grid(args.grid, args.grid_file)
    trials = plan(args.base, grid)
    run_root = Path(trials[0].config.run_dir)
    counts = {s: sum(t.status == s for t in trials) for s in ("new", "resume", "restart", "done", "diverged")}
    print(f"crl sweep: {len(trials)} trials in {run_root}: {counts['new'] + counts['restart']} to run, "
          f"{counts['resume']} to resume, {counts['done']} finished (skipped), {counts['diverged']} diverged "
          "(skipped)", flush=True)
    if args.backend == "local":
        if args.max_concurrent is not None:
            print("note: --max-concurrent applies to --backend ray; local runs one trial at a time", file=sys.stderr)
        interrupted = run_local(trials)
    else:
        interrupted = run_ray(trials, args)
    for t in trials:
        _final_status(t)
    print()
    print(trial_table(trials))
    for t in trials:
        if t.status in ("failed", "stopped", "diverged") and t.message:
            print(f"  {t.name}: {t.status}: {t.message}")
    out = Path(args.compare_out) if args.compare_out else run_root / f"sweep-{sweep_id(args.base, grid)}"
    table = None if args.no_compare else comparison(trials, out, args.compare_tags)
    if table:
        print()
        print(table)
    if interrupted:
        print("crl sweep: interrupted; run the same command again to resume", file=sys.stderr)
        return interrupted
    if any(t.status in ("stopped", "pending") for t in trials):
        print("crl sweep: some trials did not finish; run the same command again to resume them", file=sys.stderr)
    return 0 if all(t.status in ("finished", "skipped") for t in trials) else 1


# ----------------------------------------------------------------------------- CLI


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(minimum_exclusive: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not math.isfinite(value) or value < 0 or (minimum_exclusive and value == 0):
            raise argparse.ArgumentTypeError(f"must be a finite number {'> 0' if minimum_exclusive else '>= 0'}, "
                                             f"got '{text}'")
        return value

    return parse


SWEEP_HELP = """\
Run every combination of a grid of config values as an ordinary crl run.

  crl sweep [OPTIONS] -- COMMAND [FLAGS...]

COMMAND [FLAGS...] is any `crl atari|gym|run ...` command line except --name and --resume
(the sweep names each run after its grid values, e.g. norm=nap,seed=0, so a re-run finds it).
Examples:

  crl sweep --grid norm=none,layernorm,nap --grid seed=0,1,2 -- gym --env-id CartPole-v1 --steps 20000
  crl sweep --grid-file grid.yaml --backend local -- run split-digits --epochs 5
  crl sweep --grid seed=0,1,2,3 --gpus-per-run 0.25 --cpus-per-run 2 -- atari --game pong --norm nap
  crl sweep --address auto --grid lr=1e-4,3e-4 -- atari --run-dir /shared/runs

grid.yaml maps fields to value lists (use it for values holding commas):
  norm: [none, layernorm]
  mlp_hidden: ["64,64", "256,256"]

Re-running the same sweep skips finished trials and resumes interrupted ones from their
checkpoints. At the end a table of final evaluation scores per trial is printed, then the
`crl compare` table (IQM/mean with 95% bootstrap CIs over seeds) of the finished trials.
Exit code: 0 all finished, 1 a trial failed or diverged, 2 bad input, 128+N interrupted.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="run a grid of runs (Ray Tune, or one after another), then compare them",
                       description=SWEEP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", action="append", metavar="FIELD=V1,V2,...",
                   help="a config field and its values (repeatable; FIELD as in config.yaml or the flag name)")
    p.add_argument("--grid-file", metavar="FILE.yaml", help="YAML mapping FIELD: [V1, V2, ...] (with --grid: both)")
    p.add_argument("--backend", choices=("ray", "local"), default="ray",
                   help="ray: Ray Tune trials, in parallel (default; pip install -e '.[ray]'); "
                        "local: one after another in this process")
    p.add_argument("--max-concurrent", type=_positive_int, default=None, metavar="N",
                   help="at most N trials at once (ray; default: as many as the resources allow)")
    p.add_argument("--cpus-per-run", type=_fraction(True), default=1.0, metavar="F",
                   help="CPUs reserved per trial, fractions allowed (ray; default: 1)")
    p.add_argument("--gpus-per-run", type=_fraction(False), default=0.0, metavar="F",
                   help="GPUs reserved per trial, e.g. 0.25 puts 4 trials on a GPU (ray; default: 0; Ray then "
                        "hides no GPU, so add --device cpu to the base command for CPU-only trials)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="connect to this Ray cluster (e.g. auto or ray://host:10001) instead of starting local Ray")
    p.add_argument("--compare-out", default=None, metavar="DIR",
                   help="folder of the crl compare plots and tables (default: <run-dir>/sweep-<id>)")
    p.add_argument("--compare-tags", nargs="+", default=None, metavar="TAG",
                   help="tags or patterns of the comparison (default: those of crl compare)")
    p.add_argument("--no-compare", action="store_true", help="print only the per-trial table")
    p.add_argument("base", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the crl command line each trial runs (atari, gym or run and its flags)")
    p.set_defaults(command="sweep")
    return p


__all__ = ["parse_grid", "trial_name", "plan", "run_local", "run_ray", "main_from_args", "add_parser", "Trial"]
