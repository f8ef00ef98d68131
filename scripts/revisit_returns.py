"""Return, forgetting and any logged metric on each visit of each task of sequential RL runs
(``sequential-minatar``, ``sequential-atari``, any multi-task RL scenario), with a 95% CI over seeds.

For every stream position (a task's visit: its first cycle, its second, ...) this reads from the
runs' event files:

* ``train``: the mean return of the last ``--last`` (100) training episodes that ended inside
  that visit's env steps (how well the agent plays the game it is learning, at the visit's end);
* ``eval``: the greedy score of the visited task evaluated at the visit's end
  (``eval/<task>/score`` at the step where the visit ends: the runner evaluates every task there);
* ``eval after the next visit``: the same task's score at the end of the stream position that
  follows (forgetting over one visit of the next task);
* ``eval after the stream``: the same task's score at the last visit end the run has reached
  (forgetting: how much of the visit survives the later tasks);
* with ``--tags``, any other logged scalars (``plasticity/effective_rank``, ...): the value last
  logged inside the visit, at or before its end, in one more table per tag.

Runs are grouped by their ``config.yaml`` without the seed and run name (agent, norm,
interventions, scenario, games, steps, cycles, ...); per group each cell is the mean over runs
and a 95% percentile-bootstrap CI over runs (``crl compare``'s, 2000 resamples; with 2-4 runs it
under-covers, as ``crl compare`` notes). A visit not reached by every run of a group uses the runs that
reached it (their count is printed). Visit boundaries come from the scenario built from the
config (each task's ``steps`` or ``--steps``), so every env step counted by crl is a step here.

    python scripts/revisit_returns.py runs/sequential-minatar
    python scripts/revisit_returns.py runs/sequential-minatar/dqn-nap-none/seq3-s* --last 50
    python scripts/revisit_returns.py runs/sequential-minatar --tags plasticity/effective_rank
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crl.api import resolve_scenario  # noqa: E402
from crl.compare import stratified_bootstrap_ci  # noqa: E402
from crl.config import load_config  # noqa: E402
from crl.errors import UserError  # noqa: E402
from crl.registry import load_builtins  # noqa: E402

NOT_GROUPED = ("seed", "name", "resume", "run_dir", "progress")


def visits(cfg) -> list[tuple[str, int, int]]:
    """``(task name, first env step, last env step)`` of each stream position."""
    out, start = [], 0
    for task in resolve_scenario(cfg).stream():
        steps = task.steps or cfg.steps
        out.append((task.name, start, start + steps))
        start += steps
    return out


def last_inside(points: dict[int, float], start: int, end: int) -> float | None:
    """The value logged last in ``(start, end]``; None if none was."""
    steps = [s for s in points if start < s <= end]
    return points[max(steps)] if steps else None


def read_run(run_dir: Path, last: int, tags: list[str]) -> tuple[tuple, list[dict], dict, set[str]]:
    """The run's group key, per visit a dict (``task``, ``train``, ``eval``, ``eval_next`` and each
    of ``tags``; None where not reached), each task's score at the last visit end reached, and the
    scalar tags the run logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(run_dir / "config.yaml")
    key = tuple(sorted((k, str(v)) for k, v in cfg.to_dict().items() if k not in NOT_GROUPED))
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    all_tags = set(acc.Tags()["scalars"])
    episodes = [(e.step, e.value) for e in acc.Scalars("train/episode_return")] if "train/episode_return" in all_tags else []
    scores = {t: {e.step: e.value for e in acc.Scalars(t)} for t in all_tags if t.startswith("eval/")}
    extra = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags if t in all_tags}
    rows, final = [], {}
    stream = visits(cfg)
    for i, (name, start, end) in enumerate(stream):
        own = scores.get(f"eval/{name}/score", {})
        done = end in own  # the visit's closing evaluation is logged: the visit is complete
        inside = [v for s, v in episodes if start < s <= end][-last:]
        row = {"task": name, "eval": own.get(end), "train": float(np.mean(inside)) if done and inside else None,
               "eval_next": own.get(stream[i + 1][2]) if i + 1 < len(stream) else None}
        row.update({t: last_inside(extra.get(t, {}), start, end) if done else None for t in tags})
        rows.append(row)
        if done:
            final = {t[len("eval/"):-len("/score")]: v[end] for t, v in scores.items() if end in v}
    return key, rows, final, all_tags


def mean_ci(values: list[float], fmt: str = ".2f") -> str:
    """Mean over runs with crl compare's percentile-bootstrap 95% CI (2000 resamples)."""
    if not values:
        return "-"
    mean, lo, hi = stratified_bootstrap_ci(values)
    if len(values) == 1:
        return f"{mean:{fmt}} (1 run)"
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}] ({len(values)})"


def column(runs: list, i: int, field: str) -> list[float]:
    """Visit ``i``'s ``field`` of every run that has it."""
    return [r[1][i][field] for r in runs if r[1][i][field] is not None]


def table(runs: list) -> list[str]:
    lines = ["| visit | task | train (last episodes) | eval at visit end | eval after the next visit "
             "| eval after the stream so far |", "|---|---|---|---|---|---|"]
    for i, row in enumerate(runs[0][1]):
        name = row["task"]
        after = [r[2][name] for r in runs if r[1][i]["eval"] is not None and name in r[2]]
        lines.append(f"| {i} | {name} | {mean_ci(column(runs, i, 'train'))} | {mean_ci(column(runs, i, 'eval'))} "
                     f"| {mean_ci(column(runs, i, 'eval_next'))} | {mean_ci(after)} |")
    return lines


def tag_table(runs: list, tag: str) -> list[str]:
    """``tag``'s last value inside each visit, mean and CI over runs (3 significant digits: the
    metrics' scales differ)."""
    lines = [f"| visit | task | {tag} at visit end |", "|---|---|---|"]
    for i, row in enumerate(runs[0][1]):
        lines.append(f"| {i} | {row['task']} | {mean_ci(column(runs, i, tag), '.3g')} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", help="run directories or folders above them")
    p.add_argument("--last", type=int, default=100, help="training episodes averaged per visit (default 100)")
    p.add_argument("--tags", nargs="+", default=[], help="more scalar tags to read at each visit's end")
    args = p.parse_args(argv)
    if args.last < 1:
        p.error(f"--last: a positive number of episodes, got {args.last}")
    load_builtins()
    groups: dict[tuple, list] = {}
    logged: set[str] = set()
    try:
        for root in map(Path, args.roots):
            files = [root / "config.yaml"] if (root / "config.yaml").exists() else sorted(root.rglob("config.yaml"))
            for cfg_file in files:
                key, rows, final, tags = read_run(cfg_file.parent, args.last, args.tags)
                groups.setdefault(key, []).append((cfg_file.parent, rows, final))
                logged |= tags
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not groups:
        print("error: no run (config.yaml) under " + ", ".join(args.roots), file=sys.stderr)
        return 2
    unknown = [t for t in args.tags if t not in logged]
    if unknown:
        print(f"error: --tags: no run logged {', '.join(unknown)}; they logged {', '.join(sorted(logged))}",
              file=sys.stderr)
        return 2
    for key, runs in groups.items():
        fields = dict(key)
        label = ", ".join(f"{k} {fields[k]}" for k in ("scenario", "games", "agent", "norm", "intervention")
                          if fields.get(k))
        print(f"\n{label}: {len(runs)} run(s), " + ", ".join(str(r[0]) for r in runs))
        print("\n".join(table(runs)))
        for tag in args.tags:
            print("\n" + "\n".join(tag_table(runs, tag)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
