"""``crl compare RUN_DIR...``: TensorBoard event files -> plots and tables across seeds.

Each argument is a run directory (it holds ``config.yaml`` and an event file), a folder
above run directories (every run below it is used, as ``tensorboard --logdir`` would), or a
glob of those. Runs are grouped by their ``config.yaml`` with ``seed``, ``name``, ``run_dir``,
``resume`` and ``progress`` left out, so the runs of a group differ only by seed (and by the
fields named with ``--ignore``, e.g. speed options such as ``channels_last``; the table's notes
say which of those differ inside a group). Groups are
labelled by the config fields that differ between groups (a field's values in quotes where a
string would read like another group's value: ``lr=1`` and ``lr='1'``). Runs of one group that
share a seed (a copied run, one command under two names) stay in its statistics, which count
them as independent: a warning on stderr and a note in the table say so. ``--resamples``
(default 2000) is the number of bootstrap draws of every band and interval, plots and tables alike.

Written to ``--out``:

``<tag>.png`` (``/`` in the tag becomes ``__``)
    One line per group over env steps: the mean over the group's runs and a 95% percentile
    bootstrap band of that mean (resampling runs). Runs logged at different steps are
    linearly interpolated onto the union of their steps (at most 500 points, else an even
    grid), each only inside its own step range. The line is solid where every run of the
    group has a value, dashed where only some do (runs of different lengths), and has no
    band where fewer than two runs do.
``final_values.md`` / ``final_values.csv``
    Per group and tag, over the runs' final values (the value at each run's last logged
    step): with ``>= 5`` runs the interquartile mean (IQM, mean of the middle 50%,
    ``trim_mean(x, 0.25)``) with a 95% stratified-bootstrap CI (Agarwal et al., "Deep RL at
    the Edge of the Statistical Precipice", NeurIPS 2021, arXiv 2108.13264; implemented here,
    in the manner of ``rliable``'s ``StratifiedBootstrap``: runs are resampled with
    replacement within each task, here one task per tag); with 2-4 runs the mean with a 95%
    percentile-bootstrap CI, marked in the table because with so few runs it under-covers;
    with one run the value and no CI (empty CSV cells, ``n/a`` in the table). The
    Markdown table ends with notes: runs of a group that share a seed (its runs column then
    also gives the distinct seeds, as ``n_seeds`` does in the CSV), groups whose runs end at
    different steps, tags left out, event files that restart or are cut off. ``crl compare``
    also prints it.
``runs.csv``
    The final value of every run and tag (group, run directory, seed, tag, step, value).
``aggregate.md`` / ``aggregate.csv`` (``--aggregate PATTERN``)
    Per group, IQM, mean, median and optimality gap over the ``(runs, tasks)`` matrix of final
    values of the tags matching ``PATTERN`` (one tag per task or game), each with a 95%
    stratified-bootstrap CI, as ``rliable`` (:mod:`crl.aggregate`). ``crl compare`` prints it.

Tags (``--tags``) are exact names or shell-style patterns (``eval/*/score``); default:
``eval/*/score``, ``train/episode_return``, ``forgetting/*`` and the network-level
``plasticity/*`` metrics (no per-layer ones) that every run has. A named tag missing from
some runs, or a pattern that matches nothing, is a :class:`~crl.errors.UserError` naming the
runs and close tags. ``forgetting/*`` is left out for a group whose runs all saw a single
task (``forgetting/num_tasks`` at most 1, or, without it, one ``eval/*/score`` tag): there
forgetting, BWT and FWT have no value and the averages repeat ``eval/<task>/score``.

Reading follows TensorBoard: a resumed run's second event file purges the first one's
points from the step it resumed at; a file that restarts at an earlier step without that
purge replaces the earlier points from that step on (noted); for a step logged twice the
later value counts. A tag whose points were all purged counts as missing from that run.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import fnmatch
import glob
import math
import re
import struct
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from crl.errors import UserError
from crl.logging import quiet_logger

GROUP_EXCLUDE = ("seed", "name", "run_dir", "resume", "progress")
DEFAULT_TAGS = ("eval/*/score", "train/episode_return", "forgetting/*", "plasticity/*")
IQM_MIN_RUNS = 5
MAX_POINTS = 500
DEFAULT_RESAMPLES = 2000  # the one default of --resamples, compare() and every function below
RESAMPLE_RANGE = (100, 100_000)  # fewer draws make the 2.5% tails noisy; more only cost memory and time
FEW_RUNS_MARK = "[a]"
FEW_RUNS_NOTE = (f"{FEW_RUNS_MARK} fewer than {IQM_MIN_RUNS} runs: percentile bootstrap of the mean, known to "
                 "under-cover with so few runs (Agarwal et al. 2021); read the interval as optimistic.")
NO_INTERVAL = "n/a (1 run: no interval)"


# ----------------------------------------------------------------------------- statistics


def iqm(x: Any, axis: int | None = None) -> Any:
    """Interquartile mean: mean after cutting 25% at each end (``scipy.stats.trim_mean``)."""
    from scipy.stats import trim_mean

    return trim_mean(np.asarray(x, dtype=np.float64), proportiontocut=0.25, axis=axis)


def stratified_bootstrap_ci(scores: Any, statistic: Callable[..., Any] = np.mean, resamples: int = DEFAULT_RESAMPLES,
                            level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and 95% (``level``) percentile CI of ``statistic`` over a ``(runs, tasks)`` matrix.

    Each bootstrap draw resamples the runs with replacement independently within every task
    (column) and applies ``statistic`` to the flattened resampled matrix: the stratified
    bootstrap of Agarwal et al. (2021). A 1-D input is one task (the plain bootstrap).
    ``statistic(x, axis=...)`` must reduce along ``axis`` (``np.mean`` and :func:`iqm` do).
    One run has no interval: both bounds are NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise UserError(f"compare: scores must be a non-empty (runs, tasks) matrix, got shape {s.shape}")
    n, tasks = s.shape
    point = float(statistic(s.ravel(), axis=0))
    if n == 1:
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n, tasks))
    draws = s[idx, np.arange(tasks)]  # (resamples, n, tasks): column t resampled from column t only
    stats = np.asarray(statistic(draws.reshape(resamples, n * tasks), axis=1), dtype=np.float64)
    alpha = (1.0 - level) / 2
    lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return point, float(lo), float(hi)


def final_summary(values: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """IQM + stratified bootstrap CI with >= 5 runs, else mean + bootstrap CI (95%; NaN bounds for one run)."""
    v = np.asarray(values, dtype=np.float64)
    stat, fn = ("IQM", iqm) if v.size >= IQM_MIN_RUNS else ("mean", np.mean)
    point, lo, hi = stratified_bootstrap_ci(v, fn, resamples, seed=seed)
    return {"statistic": stat, "value": point, "ci_low": lo, "ci_high": hi, "n": int(v.size)}


def bootstrap_band(curves: np.ndarray, resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs and the percentile bootstrap band of the mean, per column (step).

    ``curves`` is ``(runs, steps)``; NaN marks a run without a value at that step and is left
    out of that step's mean and resamples. Where fewer than two runs have a value there is
    no band (NaN bounds).
    """
    c = np.asarray(curves, dtype=np.float64)
    valid = ~np.isnan(c)
    counts = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, np.nansum(c, axis=0) / np.maximum(counts, 1), np.nan)
    lo, hi = np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    n = c.shape[0]
    if n < 2:
        return mean, lo, hi
    rng = np.random.default_rng(seed)
    alpha = (1.0 - level) / 2
    filled, present = np.nan_to_num(c), valid.astype(np.float64)
    chunk = max(1, 4_000_000 // (resamples * n))  # bounded memory for long curves
    for start in range(0, c.shape[1], chunk):
        sl = slice(start, start + chunk)
        idx = rng.integers(0, n, size=(resamples, n))
        sums, cnt = filled[idx, sl].sum(axis=1), present[idx, sl].sum(axis=1)  # (resamples, chunk)
        means = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # steps no resample has a value for stay NaN
            lo[sl], hi[sl] = np.nanpercentile(means, [100 * alpha, 100 * (1 - alpha)], axis=0)
    single = counts < 2  # one value resampled is a zero-width "interval": none
    lo[single], hi[single] = np.nan, np.nan
    return mean, lo, hi


# ----------------------------------------------------------------------------- reading runs


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # tag -> (steps, values)
    emptied: set[str] = field(default_factory=set)  # tags in the event files whose points were all purged
    notes: list[str] = field(default_factory=list)  # what reading found odd, for the table's notes

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def final(self, tag: str) -> tuple[int, float]:
        steps, values = self.scalars[tag]
        return int(steps[-1]), float(values[-1])


def _event_files(path: Path) -> list[Path]:
    return sorted(path.glob("events.out.tfevents.*"))


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def find_runs(specs: Sequence[str]) -> list[Path]:
    """Run directories named by ``specs`` (paths, globs, or folders above runs), in order, unique."""
    if not specs:
        raise UserError("crl compare: give at least one run directory (or a folder or glob of them)")
    found: list[Path] = []
    for spec in specs:
        matches = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        if not matches:
            raise UserError(f"crl compare: '{spec}' matches nothing")
        for m in matches:
            p = Path(m)
            if not p.exists():
                raise UserError(f"crl compare: '{p}' does not exist")
            if _is_run(p):
                found.append(p)
                continue
            below = sorted(c.parent for c in p.rglob("config.yaml")) if p.is_dir() else []
            if not below:
                raise UserError(f"crl compare: '{p}' is not a run directory (no config.yaml) and holds no runs")
            found.extend(below)
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p.resolve(), None)
    return list(unique)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"crl compare: cannot read {path / 'config.yaml'}: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UserError(f"crl compare: {path / 'config.yaml'} is not a mapping of field: value")
    return config


def cut_off(event_file: Path) -> bool:
    """Whether ``event_file`` ends inside a record (the writer was killed mid-write).

    Walks the TFRecord framing: each record is an 8-byte little-endian length, a 4-byte
    checksum of it, the data and a 4-byte checksum of the data.
    """
    size, pos = event_file.stat().st_size, 0
    with open(event_file, "rb") as fh:
        while size - pos >= 12:
            fh.seek(pos)
            (length,) = struct.unpack("<Q", fh.read(8))
            pos += 12 + length + 4
    return pos != size


def _series(events: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``(steps, values, restart)`` of one tag's events in reading order.

    A step below the previous one means another process wrote from an earlier step without
    a resume's purge; as TensorBoard does for such files, its points replace the earlier
    process's from that step on. ``restart`` is the lowest such step, else None.
    """
    by_step: dict[int, float] = {}
    restart, last = None, None
    for ev in events:
        step = int(ev.step)
        if last is not None and step < last:
            by_step = {s: v for s, v in by_step.items() if s < step}
            restart = step if restart is None else min(restart, step)
        by_step[step] = float(ev.value)  # a step logged twice: the later value
        last = step
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64), restart


def read_run(path: Path) -> Run:
    """Config and every scalar series of one run (all its event files, read as TensorBoard does;
    see the module docstring). A run without any scalar point is a :class:`UserError`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Run(path, _read_config(path))
    files = _event_files(path)
    if not files:
        raise UserError(f"crl compare: run directory '{path}' has no TensorBoard event file")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    # TensorBoard's reader warns about a "TensorFlow restart" at every resume purge; compare reports
    # what matters (emptied tags, differing final steps) in its own notes instead.
    with quiet_logger("tensorboard"):
        acc.Reload()
    restarts = []
    for tag in acc.Tags().get("scalars", []):
        steps, values, restart = _series(acc.Scalars(tag))
        if steps.size:
            run.scalars[tag] = (steps, values)
        else:
            run.emptied.add(tag)
        if restart is not None:
            restarts.append(restart)
    cut = [f.name for f in files if cut_off(f)]
    if not run.scalars:
        what = "cut off" if cut else ("emptied by a resume's purge" if run.emptied else "empty")
        raise UserError(f"crl compare: run '{path}' has no scalar point in its event files ({what}: "
                        f"{', '.join(f.name for f in files)}); leave it out or let it log")
    if restarts:
        run.notes.append(f"{path}: an event file restarts at step {min(restarts)} without a resume's purge (another "
                         "process wrote to this run directory); its points replace the earlier ones from there on")
    if cut:
        run.notes.append(f"{path}: {', '.join(cut)} ends inside a record (the writer was killed); "
                         "the points before it are used")
    return run


def group_key(config: dict[str, Any], ignore: Sequence[str] = ()) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in GROUP_EXCLUDE and k not in ignore))


def group_runs(runs: Sequence[Run], ignore: Sequence[str] = ()) -> dict[str, list[Run]]:
    """Label -> runs with equal configs up to the seed and the ``ignore`` fields; labels name the
    differing fields."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(group_key(r.config, ignore), []).append(r)
    configs = [dict(k) for k in groups]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({c.get(k) for c in configs}) > 1]
    shown = {k: _shown([c.get(k) for c in configs]) for k in differing}
    labels: dict[str, list[Run]] = {}
    for key, members in groups.items():
        c = dict(key)
        if differing:
            label = ", ".join(f"{k}={shown[k][c.get(k)]}" for k in differing)
        else:
            cfg = members[0].config
            label = f"{cfg.get('scenario', '?')}: {cfg.get('agent', '?')}, norm={cfg.get('norm', '?')}"
        labels[label] = members
    return labels


def check_ignore(runs: Sequence[Run], ignore: Sequence[str]) -> None:
    """``--ignore``: every field must be in some run's config.yaml (a typo would silently group nothing)."""
    fields = sorted({k for r in runs for k in r.config})
    for name in ignore:
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else " (the keys of their config.yaml)"
            raise UserError(f"crl compare: --ignore: '{name}' is not a config field of these runs{hint}")


def ignored_notes(groups: dict[str, list[Run]], ignore: Sequence[str]) -> list[str]:
    """A note for each ``--ignore`` field whose value differs inside a group."""
    notes = []
    for label, members in groups.items():
        for name in ignore:
            values = sorted({repr(r.config.get(name)) for r in members})
            if len(values) > 1:
                notes.append(f"{label}: grouped across --ignore {name} ({', '.join(values)})")
    return notes


def _shown(values: Sequence[str | None]) -> dict[str | None, str]:
    """Label text of each value (a repr, or None where the field is unset) of one field: strings
    unquoted, unless that makes two values read alike (1 and '1'); then every value as its repr, so
    that two groups never share a label (one would replace the other)."""
    plain = {v: _unrepr(v) for v in values}
    if len(set(plain.values())) == len(plain):
        return plain
    return {v: "-" if v is None else v for v in plain}


def _unrepr(text: str | None) -> str:
    if text is None:
        return "-"
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


def repeated_seeds(groups: dict[str, list[Run]]) -> list[tuple[str, Any, list[Path]]]:
    """``(group, seed, run directories)`` for every seed that two or more runs of one group share (a
    copied run, or one command run under two names): those runs are not independent samples."""
    found = []
    for label, members in groups.items():
        by_seed: dict[str, list[Run]] = {}
        for r in members:
            by_seed.setdefault(repr(r.seed), []).append(r)  # repr: a seed may be any YAML value
        found += [(label, same[0].seed, [r.path for r in same]) for same in by_seed.values() if len(same) > 1]
    return found


def _seed_text(label: str, seed: Any, paths: Sequence[Path]) -> str:
    return f"{label}: seed {seed} is in {len(paths)} runs ({', '.join(str(p) for p in paths)})"


def repeated_seed_notes(repeats: Sequence[tuple[str, Any, list[Path]]]) -> list[str]:
    """The table's note on each repeated seed of :func:`repeated_seeds`."""
    return [f"{_seed_text(*rep)}: not independent samples, yet each counts as a run in this group's values "
            "and intervals, which are therefore too narrow; leave out all but one of them" for rep in repeats]


def repeated_seed_warnings(repeats: Sequence[tuple[str, Any, list[Path]]]) -> list[str]:
    """One ``warning:`` line for each repeated seed of :func:`repeated_seeds`."""
    return [f"warning: crl compare: group {_seed_text(*rep)}: not independent samples, so the group's intervals "
            "are too narrow (see the table's notes)" for rep in repeats]


# ----------------------------------------------------------------------------- tags


def _default_tag(tag: str) -> bool:
    if tag.startswith("plasticity/"):
        return tag.count("/") == 1
    return any(fnmatch.fnmatchcase(tag, p) for p in DEFAULT_TAGS)


def _names(runs: Sequence[Run]) -> str:
    return ", ".join(str(r.path) for r in runs[:3]) + (" ..." if len(runs) > 3 else "")


def _lacking(tag: str, runs: Sequence[Run]) -> list[Run]:
    return [r for r in runs if tag not in r.scalars]


def _missing_error(tag: str, runs: Sequence[Run], every: list[str]) -> UserError:
    lacking = _lacking(tag, runs)
    emptied = [r for r in lacking if tag in r.emptied]
    why = (f"; in {_names(emptied)} all its points were purged by a --resume from an earlier step and not "
           "logged again" if emptied else "")
    hint = "" if tag in every else f"; {_close(tag, every)}"  # a tag other runs have needs no spelling hint
    return UserError(f"crl compare: tag '{tag}' is missing from {len(lacking)} of {len(runs)} runs "
                     f"({_names(lacking)}){why}{hint}")


def select_tags(runs: Sequence[Run], patterns: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(tags, notes)``: the tags to compare. Named tags must be in every run and patterns must match
    something (else :class:`UserError`); default tags missing from some runs are left out, with a note."""
    every = sorted({t for r in runs for t in r.scalars})
    if not patterns:
        return _default_tags(runs, every)
    chosen: list[str] = []
    for pat in patterns:
        if glob.has_magic(pat):
            hits = [t for t in every if fnmatch.fnmatchcase(t, pat)]
            if not hits:
                raise UserError(f"crl compare: --tags '{pat}' matches no tag of these runs; {_close(pat, every)}")
        else:
            hits = [pat]
        chosen.extend(h for h in hits if h not in chosen)
    for tag in chosen:
        if _lacking(tag, runs):
            raise _missing_error(tag, runs, every)
    return chosen, []


def _default_tags(runs: Sequence[Run], every: list[str]) -> tuple[list[str], list[str]]:
    candidates = [t for t in every if _default_tag(t)]
    chosen = [t for t in candidates if not _lacking(t, runs)]
    if not chosen:
        if candidates:
            raise _missing_error(candidates[0], runs, every)
        raise UserError("crl compare: the runs have none of the default tags (eval/*/score, forgetting/*, ...); "
                        f"choose with --tags from: {', '.join(every[:12]) or 'no scalars at all'}")
    left = [t for t in candidates if t not in chosen]
    notes = [f"left out {len(left)} default tag(s) missing from some runs: "
             + "; ".join(f"`{t}` (missing from {_names(_lacking(t, runs))})" for t in left[:5])
             + (" ..." if len(left) > 5 else "") + "; name one with --tags for the details"] if left else []
    return chosen, notes


def _close(tag: str, every: list[str]) -> str:
    close = difflib.get_close_matches(tag, every, n=5, cutoff=0.4)
    return f"closest tags: {', '.join(close)}" if close else f"{len(every)} tags exist, e.g. {', '.join(every[:5])}"


def tag_filename(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", tag.replace("/", "__")) + ".png"


# ----------------------------------------------------------------------------- single-task runs


def task_count(run: Run) -> int | None:
    """Tasks the run has seen: the largest finite ``forgetting/num_tasks`` (stream positions, so a task
    met again in a later cycle counts again), else its number of ``eval/*/score`` tags, else None."""
    counts = run.scalars.get("forgetting/num_tasks", (None, np.array([])))[1]
    counts = counts[np.isfinite(counts)]
    if counts.size:
        return int(counts.max())
    evals = [t for t in run.scalars if fnmatch.fnmatchcase(t, "eval/*/score")]
    return len(evals) or None


def single_task(members: Sequence[Run]) -> bool:
    counts = [task_count(m) for m in members]
    return all(c is not None and c <= 1 for c in counts)


def plan_tags(groups: dict[str, list[Run]], tags: Sequence[str]) -> tuple[dict[str, dict[str, list[Run]]], list[str]]:
    """``({tag: {group: runs}}, notes)``: every group for every tag, except ``forgetting/*`` for
    groups whose runs all saw one task; a tag left with no group is dropped."""
    skip = [label for label, members in groups.items() if single_task(members)]
    plan: dict[str, dict[str, list[Run]]] = {}
    for tag in tags:
        keep = {k: v for k, v in groups.items() if not (tag.startswith("forgetting/") and k in skip)}
        if keep:
            plan[tag] = keep
    left = [t for t in tags if t.startswith("forgetting/") and skip]
    if not left:
        return plan, []
    where = "every group" if len(skip) == len(groups) else "group(s) " + "; ".join(skip)
    return plan, [f"left out {len(left)} forgetting/* tag(s) for {where}: every run saw a single task, where "
                  "forgetting, BWT and FWT have no value and avg_final/avg_seen repeat eval/<task>/score"]


# ----------------------------------------------------------------------------- outputs


def curves_on_grid(members: Sequence[Run], tag: str) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, values (runs, grid))``: each run interpolated inside its own step range, NaN outside."""
    series = [m.scalars[tag] for m in members]
    grid = np.unique(np.concatenate([s for s, _ in series]))
    if grid.size > MAX_POINTS:
        grid = np.unique(np.linspace(grid[0], grid[-1], MAX_POINTS).round().astype(np.int64))
    out = np.full((len(series), grid.size), np.nan)
    for i, (s, v) in enumerate(series):
        inside = (grid >= s[0]) & (grid <= s[-1])
        out[i, inside] = np.interp(grid[inside], s, v)
    return grid, out


def split_by_coverage(mean: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(solid, dashed)`` copies of ``mean``: solid where all ``n`` runs have a value, dashed where
    only some do, plus the neighbouring points of the dashed part so the two lines join."""
    full = counts == n
    partial = (counts > 0) & ~full
    joined = partial.copy()
    joined[1:] |= partial[:-1]
    joined[:-1] |= partial[1:]
    return np.where(full, mean, np.nan), np.where(joined, mean, np.nan)


def plot_tag(groups: dict[str, list[Run]], tag: str, path: Path, resamples: int, seed: int,
             colors: dict[str, str] | None = None) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.subplots()
    for k, (label, members) in enumerate(groups.items()):
        grid, values = curves_on_grid(members, tag)
        mean, lo, hi = bootstrap_band(values, resamples, seed=seed + k)
        solid, dashed = split_by_coverage(mean, (~np.isnan(values)).sum(axis=0), len(members))
        color = (colors or {}).get(label, f"C{k % 10}")
        marker = "o" if grid.size < 20 else None
        extra = ", no band" if len(members) == 1 else ("; dashed: fewer runs" if np.isfinite(dashed).any() else "")
        ax.plot(grid, solid, color=color, label=f"{label} (n={len(members)}{extra})", lw=1.5, marker=marker, ms=3)
        ax.plot(grid, dashed, color=color, lw=1.2, ls="--", marker=marker, ms=3)
        band = np.isfinite(lo) & np.isfinite(hi)
        if band.any():
            ax.fill_between(grid, lo, hi, where=band, color=color, alpha=0.2, lw=0)
            if marker:  # a band at an isolated point has no width: show it as a bar there too
                ax.vlines(grid[band], lo[band], hi[band], color=color, alpha=0.5, lw=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel(tag)
    title = f"{tag}: mean over seeds, 95% bootstrap band ({resamples} resamples)"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, metadata={"Title": title})  # the PNG's text chunk carries the title for scripts (and tests)


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.6g}"


def _csv_cell(key: str, value: Any) -> Any:
    if key in ("ci_low", "ci_high") and isinstance(value, float) and math.isnan(value):
        return ""  # one run: no interval
    return repr(value) if isinstance(value, float) else value


def ends_apart(steps: Sequence[np.ndarray]) -> bool:
    """Whether the runs' last logged steps lie at least one logging interval apart (the largest last
    interval of any run; any difference when every run has a single point): a missing point or a
    shorter run, not the jitter of tags logged at episode ends."""
    ends = [int(s[-1]) for s in steps]
    intervals = [int(s[-1] - s[-2]) for s in steps if s.size > 1]
    gap = max(ends) - min(ends)
    return gap > 0 and gap >= max(intervals, default=0)


def summarize(plan: dict[str, dict[str, list[Run]]], resamples: int,
              seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """``(rows, per_run, notes)``: one row per group and tag (``n_seeds``: its distinct seeds, fewer than
    ``n_runs`` where runs repeat a seed), one per run and tag, and a note for every group and tag whose
    runs end apart (:func:`ends_apart`)."""
    rows, per_run, notes = [], [], []
    for tag, groups in plan.items():
        for label, members in groups.items():
            finals = [m.final(tag) for m in members]
            for m, (step, value) in zip(members, finals):
                per_run.append({"group": label, "run_dir": str(m.path), "seed": m.seed, "tag": tag, "step": step,
                                "value": value})
            s = final_summary([v for _, v in finals], resamples, seed)
            steps = [st for st, _ in finals]
            seeds = {repr(m.seed) for m in members}
            rows.append({"group": label, "tag": tag, "n_runs": s["n"], "n_seeds": len(seeds),
                         "statistic": s["statistic"], "value": s["value"], "ci_low": s["ci_low"],
                         "ci_high": s["ci_high"], "final_step": max(steps), "final_step_min": min(steps)})
            if ends_apart([m.scalars[tag][0] for m in members]):
                first = members[steps.index(min(steps))].path
                notes.append(f"{label}, `{tag}`: the runs end at different steps ({min(steps)} to {max(steps)}; "
                             f"{first} ends first, a point missing or a shorter run); each value is that run's "
                             "last point, so the row mixes training lengths")
    return rows, per_run, notes


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows([{k: _csv_cell(k, v) for k, v in r.items()} for r in rows])


def _md_row(r: dict[str, Any]) -> str:
    few = 1 < r["n_runs"] < IQM_MIN_RUNS
    ci = NO_INTERVAL if r["n_runs"] == 1 else f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
    step = str(r["final_step"]) if r["final_step"] == r["final_step_min"] else \
        f"{r['final_step_min']} to {r['final_step']}"
    group = r["group"].replace("|", "\\|")
    seeds = f"{r['n_seeds']} seed{'s' if r['n_seeds'] != 1 else ''}"
    runs = f"{r['n_runs']} ({seeds})" if r["n_seeds"] < r["n_runs"] else str(r["n_runs"])
    return (f"| {group} | `{r['tag']}` | {runs} | {r['statistic']}{' ' + FEW_RUNS_MARK if few else ''} | "
            f"{_fmt(r['value'])} | {ci} | {step} |")


def markdown_table(rows: list[dict[str, Any]], notes: Sequence[str], resamples: int) -> str:
    lines = [
        "# Final values",
        "",
        f"Value at each run's last logged step. Statistic: IQM with a 95% stratified-bootstrap CI when a group has "
        f">= {IQM_MIN_RUNS} runs, else the mean with a 95% percentile-bootstrap CI; {resamples} resamples over runs.",
        "",
        "| group | tag | runs | statistic | value | 95% CI | final step |",
        "|---|---|---|---|---|---|---|",
        *[_md_row(r) for r in rows],
    ]
    if any(1 < r["n_runs"] < IQM_MIN_RUNS for r in rows):
        lines += ["", FEW_RUNS_NOTE]
    if notes:
        lines += ["", "Notes:", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def write_tables(plan: dict[str, dict[str, list[Run]]], out: Path, resamples: int, seed: int,
                 notes: Sequence[str] = ()) -> tuple[list[dict[str, Any]], str]:
    """Write ``final_values.csv``, ``runs.csv`` and ``final_values.md`` (with ``notes`` and the notes
    on differing final steps); returns the rows and the Markdown."""
    rows, per_run, step_notes = summarize(plan, resamples, seed)
    _write_csv(out / "final_values.csv", ["group", "tag", "n_runs", "n_seeds", "statistic", "value", "ci_low",
                                          "ci_high", "final_step", "final_step_min"], rows)
    _write_csv(out / "runs.csv", ["group", "run_dir", "seed", "tag", "step", "value"], per_run)
    md = markdown_table(rows, [*step_notes, *notes], resamples)
    (out / "final_values.md").write_text(md, encoding="utf-8")
    return rows, md


def _check_resamples(resamples: int) -> None:
    lo, hi = RESAMPLE_RANGE
    if not lo <= resamples <= hi:
        raise UserError(f"crl compare: --resamples must be between {lo} and {hi}, got {resamples}")


def _unique_png(tag: str, used: set[Path], out: Path) -> Path:
    """``<tag>.png``, with a counter when two tags map to the same file name (``a/b`` and ``a__b``)."""
    path, k = out / tag_filename(tag), 2
    while path in used:
        path, k = out / tag_filename(f"{tag}-{k}"), k + 1
    used.add(path)
    return path


def aggregate_scores(groups: dict[str, list[Run]], pattern: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """The tags matching ``pattern`` (the tasks) and, per group, the ``(runs, tasks)`` matrix of
    final values; a run lacking one of the tasks is a UserError (the bootstrap needs every cell)."""
    every = sorted({t for members in groups.values() for r in members for t in r.scalars})
    tasks = [t for t in every if fnmatch.fnmatchcase(t, pattern)]
    if not tasks:
        raise UserError(f"crl compare: --aggregate '{pattern}' matches no tag; {_close(pattern, every)}")
    matrices = {}
    for label, members in groups.items():
        for r in members:
            missing = [t for t in tasks if t not in r.scalars]
            if missing:
                raise UserError(f"crl compare: --aggregate: run {r.path} has no {', '.join(missing[:3])}; aggregate "
                                "runs of the same tasks")
        matrices[label] = np.array([[r.final(t)[1] for t in tasks] for r in members])
    return tasks, matrices


def write_aggregate(groups: dict[str, list[Run]], pattern: str, gamma: float, out: Path, resamples: int,
                    seed: int) -> str:
    """``aggregate.md`` / ``aggregate.csv`` (crl/aggregate.py); returns the Markdown."""
    from crl.aggregate import aggregate_table

    tasks, matrices = aggregate_scores(groups, pattern)
    rows, md = aggregate_table(matrices, tasks, gamma, resamples, seed)
    _write_csv(out / "aggregate.csv", ["group", "metric", "value", "ci_low", "ci_high", "n_runs", "n_tasks"], rows)
    (out / "aggregate.md").write_text(md, encoding="utf-8")
    return md


def compare(run_dirs: Sequence[str], tags: Sequence[str] | None = None, out: str | Path = "crl-compare",
            resamples: int = DEFAULT_RESAMPLES, seed: int = 0, aggregate: str | None = None,
            gamma: float = 1.0, ignore: Sequence[str] = ()) -> dict[str, Any]:
    """Read the runs, write the PNGs and tables to ``out``; returns what was written (``markdown``:
    the table as written, ``notes``: its notes; ``aggregate``: the Markdown of ``--aggregate``;
    ``repeated_seeds``: :func:`repeated_seeds` of the groups). ``ignore``: config fields left out of
    the grouping, besides the seed."""
    _check_resamples(resamples)
    runs = [read_run(p) for p in find_runs(run_dirs)]
    check_ignore(runs, ignore)
    chosen, tag_notes = select_tags(runs, tags)
    groups = group_runs(runs, ignore)
    plan, task_notes = plan_tags(groups, chosen)
    if not plan:
        raise UserError("crl compare: nothing left to compare: every chosen tag is forgetting/* and every run saw a "
                        "single task (forgetting has no value there); choose other --tags")
    repeats = repeated_seeds(groups)
    notes = [*repeated_seed_notes(repeats), *ignored_notes(groups, ignore), *tag_notes, *task_notes,
             *[n for r in runs for n in r.notes]]
    out = Path(out)
    colors = {label: f"C{k % 10}" for k, label in enumerate(groups)}  # a group keeps its colour in every plot
    try:
        out.mkdir(parents=True, exist_ok=True)
        used: set[Path] = set()
        plots = [_unique_png(tag, used, out) for tag in plan]
        for tag, path in zip(plan, plots):
            plot_tag(plan[tag], tag, path, resamples, seed, colors)
        rows, md = write_tables(plan, out, resamples, seed, notes)
        agg = write_aggregate(groups, aggregate, gamma, out, resamples, seed) if aggregate else ""
    except OSError as err:
        raise UserError(f"crl compare: cannot write to --out {out}: {err.strerror or err}") from None
    return {"runs": [r.path for r in runs], "groups": {k: [r.path for r in v] for k, v in groups.items()},
            "tags": list(plan), "plots": plots, "table": out / "final_values.md", "csv": out / "final_values.csv",
            "runs_csv": out / "runs.csv", "rows": rows, "markdown": md, "notes": notes, "aggregate": agg,
            "repeated_seeds": repeats}


# ----------------------------------------------------------------------------- CLI


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="plots and tables with confidence intervals from run directories",
                       description="Read TensorBoard event files of run directories. Groups runs by config "
                       "(all but the seed), plots "
                       "tags over steps (mean, 95% bootstrap band) and tabulates final values (IQM with >= 5 "
                       "seeds, else mean; 95% bootstrap CIs; none for a single run), printed at the end.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, folders above them, or globs")
    p.add_argument("--tags", nargs="+", default=None, metavar="TAG",
                   help="tags or patterns (default: eval/*/score, train/episode_return, forgetting/*, "
                        "network-level plasticity/*)")
    p.add_argument("--out", default="crl-compare", help="output folder (default: crl-compare)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                   help=f"bootstrap resamples of every band and interval, plots and tables "
                        f"(default: {DEFAULT_RESAMPLES}; {RESAMPLE_RANGE[0]} to {RESAMPLE_RANGE[1]})")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument("--aggregate", metavar="PATTERN", default=None,
                   help="also aggregate the final values of the tags matching PATTERN (one tag per task or game, "
                        "e.g. 'eval/*/score'): IQM, mean, median and optimality gap with stratified-bootstrap CIs, "
                        "as rliable (aggregate.md/.csv)")
    p.add_argument("--ignore", nargs="+", default=[], metavar="FIELD",
                   help="config fields also left out of the grouping, e.g. speed options that change results at "
                        "most by float rounding: --ignore channels_last compile_optimizer (the table notes where "
                        "they differ inside a group)")
    p.add_argument("--gamma", type=float, default=1.0,
                   help="target of the optimality gap (default: 1.0, for normalised scores)")
    p.set_defaults(command="compare")
    return p


def main_from_args(args: argparse.Namespace) -> int:
    result = compare(args.run_dirs, args.tags, args.out, args.resamples, args.seed, args.aggregate, args.gamma,
                     args.ignore)
    print(f"compared {len(result['runs'])} runs in {len(result['groups'])} group(s), {len(result['tags'])} tag(s)")
    for label, paths in result["groups"].items():
        print(f"  {label}: {len(paths)} run(s)")
    print(f"wrote {len(result['plots'])} plot(s), {result['table']}, {result['csv']} and {result['runs_csv']} "
          f"in {Path(args.out)}")
    print()
    print(result["markdown"], end="")
    if result["aggregate"]:
        print()
        print(result["aggregate"], end="")
    few = few_runs_warning(result["groups"], bool(result["aggregate"]))
    if few:
        print(few, file=sys.stderr)
    for line in repeated_seed_warnings(result["repeated_seeds"]):
        print(line, file=sys.stderr)
    return 0


def few_runs_warning(groups: dict[str, list], aggregate: bool) -> str:
    """One ``warning:`` line when a group has fewer than :data:`IQM_MIN_RUNS` runs (empty otherwise):
    its percentile-bootstrap intervals (and, with ``--aggregate``, the stratified ones) under-cover
    with so few runs (Agarwal et al. 2021); a single run has none."""
    few = {label: len(paths) for label, paths in groups.items() if len(paths) < IQM_MIN_RUNS}
    if not few:
        return ""
    what = "bootstrap intervals (final values and --aggregate)" if aggregate else "percentile-bootstrap intervals"
    names = "; ".join(f"{label}: {n}" for label, n in few.items())
    return (f"warning: crl compare: fewer than {IQM_MIN_RUNS} runs in {len(few)} group(s) ({names}): their {what} "
            "under-cover (none for 1 run); add seeds before drawing conclusions")
