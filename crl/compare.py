"""``crl compare RUN_DIR...``: TensorBoard event files -> plots and tables across seeds.

Each argument is a run directory (it holds ``config.yaml`` and an event file), a folder
above run directories (every run below it is used, as ``tensorboard --logdir`` would), or a
glob of those. Runs are grouped by their ``config.yaml`` with ``seed``, ``name``, ``run_dir``,
``resume`` and ``progress`` left out, so the runs of a group differ only by seed. Groups are
labelled by the config fields that differ between groups.

Written to ``--out``:

``<tag>.png`` (``/`` in the tag becomes ``__``)
    One line per group over env steps: the mean over the group's runs and a 95% percentile
    bootstrap band of that mean (resampling runs, ``--resamples`` draws). Runs logged at
    different steps are linearly interpolated onto the union of their steps (at most 500
    points, else an even grid), each only inside its own step range.
``final_values.md`` / ``final_values.csv``
    Per group and tag, over the runs' final values (the value at the last logged step):
    with ``>= 5`` runs the interquartile mean (IQM, mean of the middle 50%, ``trim_mean(x,
    0.25)``) with a 95% stratified-bootstrap CI (Agarwal et al., "Deep RL at the Edge of the
    Statistical Precipice", NeurIPS 2021, arXiv 2108.13264; implemented here, in the manner of
    ``rliable``'s ``StratifiedBootstrap``: runs are resampled with replacement within each
    task, here one task per tag); with fewer runs the mean with a 95% percentile bootstrap CI.
``runs.csv``
    The final value of every run and tag (group, run directory, seed, tag, step, value).

Tags (``--tags``) are exact names or shell-style patterns (``eval/*/score``); default:
``eval/*/score``, ``train/episode_return``, ``forgetting/*`` and the network-level
``plasticity/*`` metrics (no per-layer ones). A tag missing from some runs, or a pattern that
matches nothing, is a :class:`~crl.errors.UserError` naming the runs and close tags.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import fnmatch
import glob
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from crl.errors import UserError

GROUP_EXCLUDE = ("seed", "name", "run_dir", "resume", "progress")
DEFAULT_TAGS = ("eval/*/score", "train/episode_return", "forgetting/*", "plasticity/*")
IQM_MIN_RUNS = 5
MAX_POINTS = 500


# ----------------------------------------------------------------------------- statistics


def iqm(x: Any, axis: int | None = None) -> Any:
    """Interquartile mean: mean after cutting 25% at each end (``scipy.stats.trim_mean``)."""
    from scipy.stats import trim_mean

    return trim_mean(np.asarray(x, dtype=np.float64), proportiontocut=0.25, axis=axis)


def stratified_bootstrap_ci(scores: Any, statistic: Callable[..., Any] = np.mean, resamples: int = 2000,
                            level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and 95% (``level``) percentile CI of ``statistic`` over a ``(runs, tasks)`` matrix.

    Each bootstrap draw resamples the runs with replacement independently within every task
    (column) and applies ``statistic`` to the flattened resampled matrix: the stratified
    bootstrap of Agarwal et al. (2021). A 1-D input is one task (the plain bootstrap).
    ``statistic(x, axis=...)`` must reduce along ``axis`` (``np.mean`` and :func:`iqm` do).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise UserError(f"compare: scores must be a non-empty (runs, tasks) matrix, got shape {s.shape}")
    n, tasks = s.shape
    point = float(statistic(s.ravel(), axis=0))
    if n == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n, tasks))
    draws = s[idx, np.arange(tasks)]  # (resamples, n, tasks): column t resampled from column t only
    stats = np.asarray(statistic(draws.reshape(resamples, n * tasks), axis=1), dtype=np.float64)
    alpha = (1.0 - level) / 2
    lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return point, float(lo), float(hi)


def final_summary(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """IQM + stratified bootstrap CI with >= 5 runs, else mean + bootstrap CI (95%)."""
    v = np.asarray(values, dtype=np.float64)
    stat, fn = ("IQM", iqm) if v.size >= IQM_MIN_RUNS else ("mean", np.mean)
    point, lo, hi = stratified_bootstrap_ci(v, fn, resamples, seed=seed)
    return {"statistic": stat, "value": point, "ci_low": lo, "ci_high": hi, "n": int(v.size)}


def bootstrap_band(curves: np.ndarray, resamples: int = 1000, level: float = 0.95,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs and the percentile bootstrap band of the mean, per column (step).

    ``curves`` is ``(runs, steps)``; NaN marks a run without a value at that step and is left
    out of that step's mean and resamples.
    """
    c = np.asarray(curves, dtype=np.float64)
    valid = ~np.isnan(c)
    counts = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, np.nansum(c, axis=0) / np.maximum(counts, 1), np.nan)
    n = c.shape[0]
    if n == 1:
        return mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    alpha = (1.0 - level) / 2
    lo, hi = np.empty_like(mean), np.empty_like(mean)
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
    return mean, lo, hi


# ----------------------------------------------------------------------------- reading runs


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # tag -> (steps, values)

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


def read_run(path: Path) -> Run:
    """Config and every scalar series of one run (all its event files; a resumed run's
    purged events dropped by TensorBoard's reader; for a step logged twice the later value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"crl compare: cannot read {path / 'config.yaml'}: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UserError(f"crl compare: {path / 'config.yaml'} is not a mapping of field: value")
    if not _event_files(path):
        raise UserError(f"crl compare: run directory '{path}' has no TensorBoard event file")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    run = Run(path, config)
    for tag in acc.Tags().get("scalars", []):
        by_step: dict[int, float] = {}
        for ev in acc.Scalars(tag):
            by_step[int(ev.step)] = float(ev.value)
        steps = np.array(sorted(by_step), dtype=np.int64)
        run.scalars[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return run


def group_key(config: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in GROUP_EXCLUDE))


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Label -> runs with equal configs up to the seed; labels name the differing fields."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(group_key(r.config), []).append(r)
    configs = [dict(k) for k in groups]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({c.get(k) for c in configs}) > 1]
    labels: dict[str, list[Run]] = {}
    for key, members in groups.items():
        c = dict(key)
        if differing:
            label = ", ".join(f"{k}={_unrepr(c.get(k))}" for k in differing)
        else:
            cfg = members[0].config
            label = f"{cfg.get('scenario', '?')}: {cfg.get('agent', '?')}, norm={cfg.get('norm', '?')}"
        labels[label] = members
    return labels


def _unrepr(text: str | None) -> str:
    if text is None:
        return "-"
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


# ----------------------------------------------------------------------------- tags


def _default_tag(tag: str) -> bool:
    if tag.startswith("plasticity/"):
        return tag.count("/") == 1
    return any(fnmatch.fnmatchcase(tag, p) for p in DEFAULT_TAGS)


def select_tags(runs: Sequence[Run], patterns: Sequence[str] | None) -> list[str]:
    """Tags to compare. Explicit tags must be in every run; patterns must match something."""
    every = sorted({t for r in runs for t in r.scalars})
    if not patterns:
        chosen = [t for t in every if _default_tag(t)]
        if not chosen:
            raise UserError("crl compare: the runs have none of the default tags (eval/*/score, forgetting/*, ...); "
                            f"choose with --tags from: {', '.join(every[:12]) or 'no scalars at all'}")
    else:
        chosen = []
        for pat in patterns:
            if glob.has_magic(pat):
                hits = [t for t in every if fnmatch.fnmatchcase(t, pat)]
                if not hits:
                    raise UserError(f"crl compare: --tags '{pat}' matches no tag of these runs; "
                                    f"{_close(pat, every)}")
            else:
                hits = [pat]
            chosen.extend(h for h in hits if h not in chosen)
    for tag in chosen:
        lacking = [r for r in runs if tag not in r.scalars]
        if lacking:
            names = ", ".join(str(r.path) for r in lacking[:3]) + (" ..." if len(lacking) > 3 else "")
            raise UserError(f"crl compare: tag '{tag}' is missing from {len(lacking)} of {len(runs)} runs ({names}); "
                            f"{_close(tag, every)}")
    return chosen


def _close(tag: str, every: list[str]) -> str:
    close = difflib.get_close_matches(tag, every, n=5, cutoff=0.4)
    return f"closest tags: {', '.join(close)}" if close else f"{len(every)} tags exist, e.g. {', '.join(every[:5])}"


def tag_filename(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", tag.replace("/", "__")) + ".png"


# ----------------------------------------------------------------------------- outputs


def curves_on_grid(members: Sequence[Run], tag: str) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, values (runs, grid))``: each run interpolated inside its own step range."""
    series = [m.scalars[tag] for m in members]
    grid = np.unique(np.concatenate([s for s, _ in series]))
    if grid.size > MAX_POINTS:
        grid = np.unique(np.linspace(grid[0], grid[-1], MAX_POINTS).round().astype(np.int64))
    out = np.full((len(series), grid.size), np.nan)
    for i, (s, v) in enumerate(series):
        inside = (grid >= s[0]) & (grid <= s[-1])
        out[i, inside] = np.interp(grid[inside], s, v)
    return grid, out


def plot_tag(groups: dict[str, list[Run]], tag: str, path: Path, resamples: int, seed: int) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.subplots()
    for k, (label, members) in enumerate(groups.items()):
        grid, values = curves_on_grid(members, tag)
        mean, lo, hi = bootstrap_band(values, resamples, seed=seed + k)
        color = f"C{k % 10}"
        ax.plot(grid, mean, color=color, label=f"{label} (n={len(members)})", lw=1.5,
                marker="o" if grid.size < 20 else None, ms=3)
        if len(members) > 1:
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel(tag)
    ax.set_title(f"{tag}: mean over seeds, 95% bootstrap band ({resamples} resamples)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.6g}"


def write_tables(groups: dict[str, list[Run]], tags: Sequence[str], out: Path, resamples: int,
                 seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    per_run: list[dict[str, Any]] = []
    for label, members in groups.items():
        for tag in tags:
            finals = [m.final(tag) for m in members]
            for m, (step, value) in zip(members, finals):
                per_run.append({"group": label, "run_dir": str(m.path), "seed": m.seed, "tag": tag, "step": step,
                                "value": value})
            s = final_summary([v for _, v in finals], resamples, seed)
            rows.append({"group": label, "tag": tag, "n_runs": s["n"], "statistic": s["statistic"],
                         "value": s["value"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                         "final_step": max(st for st, _ in finals)})
    fields = ["group", "tag", "n_runs", "statistic", "value", "ci_low", "ci_high", "final_step"]
    with open(out / "final_values.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows([{k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows])
    with open(out / "runs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["group", "run_dir", "seed", "tag", "step", "value"])
        w.writeheader()
        w.writerows([{k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()} for r in per_run])
    lines = [
        "# Final values",
        "",
        f"Value at each run's last logged step. Statistic: IQM with a 95% stratified-bootstrap CI when a group has "
        f">= {IQM_MIN_RUNS} runs, else the mean with a 95% percentile-bootstrap CI; {resamples} resamples over runs.",
        "",
        "| group | tag | runs | statistic | value | 95% CI |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['group']} | `{r['tag']}` | {r['n_runs']} | {r['statistic']} | {_fmt(r['value'])} | "
                     f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] |")
    (out / "final_values.md").write_text("\n".join(lines) + "\n")
    return rows


def compare(run_dirs: Sequence[str], tags: Sequence[str] | None = None, out: str | Path = "crl-compare",
            resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Read the runs, write the PNGs and tables to ``out``; returns what was written."""
    if resamples < 100:
        raise UserError(f"crl compare: --resamples must be >= 100, got {resamples}")
    runs = [read_run(p) for p in find_runs(run_dirs)]
    chosen = select_tags(runs, tags)
    groups = group_runs(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for tag in chosen:
        path = out / tag_filename(tag)
        plot_tag(groups, tag, path, min(resamples, 1000), seed)
        plots.append(path)
    rows = write_tables(groups, chosen, out, resamples, seed)
    return {"runs": [r.path for r in runs], "groups": {k: [r.path for r in v] for k, v in groups.items()},
            "tags": chosen, "plots": plots, "table": out / "final_values.md", "csv": out / "final_values.csv",
            "runs_csv": out / "runs.csv", "rows": rows}


# ----------------------------------------------------------------------------- CLI


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="plots and tables with confidence intervals from run directories",
                       description="Read TensorBoard event files of run directories. Groups runs by config "
                       "(all but the seed), plots "
                       "tags over steps (mean, 95% bootstrap band) and tabulates final values (IQM with >= 5 "
                       "seeds, else mean; 95% bootstrap CIs).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, folders above them, or globs")
    p.add_argument("--tags", nargs="+", default=None, metavar="TAG",
                   help="tags or patterns (default: eval/*/score, train/episode_return, forgetting/*, "
                        "network-level plasticity/*)")
    p.add_argument("--out", default="crl-compare", help="output folder (default: crl-compare)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    p.set_defaults(command="compare")
    return p


def main_from_args(args: argparse.Namespace) -> int:
    result = compare(args.run_dirs, args.tags, args.out, args.resamples, args.seed)
    print(f"compared {len(result['runs'])} runs in {len(result['groups'])} group(s), {len(result['tags'])} tag(s)")
    for label, paths in result["groups"].items():
        print(f"  {label}: {len(paths)} run(s)")
    print(f"wrote {len(result['plots'])} plot(s), {result['table']}, {result['csv']} and {result['runs_csv']} "
          f"in {Path(args.out)}")
    return 0
