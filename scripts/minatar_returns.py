"""Mean return of the last 100 training episodes of MinAtar runs, with a 95% CI over seeds.

The MinAtar paper (Young & Tian 2019) plots the returns of training episodes against frames;
this reads ``train/episode_return`` from each run's event files (``--at STEP``: only episodes
that ended at or before STEP, to compare runs at one budget), takes the mean of the last 100,
groups runs by their ``config.yaml`` and prints per group the mean over runs with a 95%
percentile-bootstrap CI (``crl compare``'s: resampling runs, the same draws for every group
whatever else is read; with 2-4 runs it under-covers, as ``crl compare`` notes too). Runs are
grouped as ``crl compare`` groups them: equal configs up to the seed, the name and the
``--ignore`` fields; the table shows agent, game or games, norm, intervention and steps, and
any other field that differs between the groups (e.g. ``lr=0.001``).

``--frames`` puts each episode at the game frame it ended: the summed ``train/episode_length``
of the run's episodes so far (the reference counts frames: ``env.act`` calls). Up to commit
``afc40b6`` crl also counted each env's reset step (NEXT_STEP autoreset: the game does not move)
as an env step, so the env steps of those runs run ahead of their frames; for later runs the
two are equal. Only for runs with one env.

``--window W`` also prints, per run, the mean return of the training episodes ending in each
window of W env steps (the learning curve), and ``--plot PNG`` draws those curves: one panel per
game, per group the mean over its runs with the runs' range as a band (up to the shortest run).

    python scripts/minatar_returns.py runs/minatar --at 500000 --window 50000 --plot curves.png \
        --ignore channels_last compile_optimizer eps_restart_per_task
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crl.compare import GROUP_EXCLUDE, stratified_bootstrap_ci  # noqa: E402

KEY = ("scenario", "agent", "game", "games", "norm", "intervention", "steps")


def other_differences(configs: list[dict], ignore: list[str]) -> list[str]:
    """Config fields outside ``KEY`` whose values differ between runs (seed, name... and ``ignore`` aside)."""
    fields = sorted({k for c in configs for k in c} - set(KEY) - set(GROUP_EXCLUDE) - set(ignore))
    return [k for k in fields if len({repr(c.get(k)) for c in configs}) > 1]


def episode_returns(run_dir: Path, at: int | None, frames: bool = False) -> tuple[list[tuple[int, float]], int]:
    """``(end step, return)`` of the run's training episodes (ended at or before ``at``), and the env
    step the run has reached (its last ``train/epsilon`` point, logged every ``--log-every`` steps).
    ``frames``: game frames instead of env steps (one env: episode ends at the summed episode lengths)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    if "train/episode_return" not in tags:
        return [], 0
    points = [(e.step, e.value) for e in acc.Scalars("train/episode_return")]
    reached = max([e.step for e in acc.Scalars("train/epsilon")] if "train/epsilon" in tags else [points[-1][0]])
    if frames:
        played = np.cumsum([int(e.value) for e in acc.Scalars("train/episode_length")])
        reached -= points[-1][0] - int(played[-1])  # the reset steps counted up to the last episode's end
        points = [(int(f), value) for f, (_, value) in zip(played, points)]
    if at is not None:
        points, reached = [(step, v) for step, v in points if step <= at], min(reached, at)
    return points, reached


def last_returns(points: list[tuple[int, float]], n: int) -> tuple[float, int, int]:
    """(mean of the last ``n`` episode returns, episodes used, step of the last one)."""
    values = np.array([v for _, v in points[-n:]])
    return float(values.mean()), len(values), points[-1][0]


def windowed(points: list[tuple[int, float]], reached: int, window: int) -> list[float]:
    """Mean return of the episodes ending in each window ``(k W, (k+1) W]`` the run has completed
    (``reached`` >= its end); a window without an episode ending in it ends the curve."""
    steps, values = np.array([s for s, _ in points]), np.array([v for _, v in points])
    curve = []
    for k in range(reached // window):
        inside = (steps > k * window) & (steps <= (k + 1) * window)
        if not inside.any():
            break
        curve.append(float(values[inside].mean()))
    return curve


def curve_label(key: tuple, runs: int) -> str:
    """A group's legend entry: its agent, norm and intervention where set, the other differing
    fields, and its number of runs."""
    parts = [str(key[KEY.index("agent")])]
    parts += [f"{field} {key[KEY.index(field)]}" for field in ("norm", "intervention")
              if key[KEY.index(field)] not in (None, "", "none")]
    return ", ".join(parts + list(key[len(KEY):])) + f" ({runs} run{'s' * (runs > 1)})"


def plot_curves(groups: dict[tuple, list], window: int, path: str, unit: str = "env steps") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = sorted({key[KEY.index("game")] or key[KEY.index("games")] for key in groups})
    fig, axes = plt.subplots(1, len(games), figsize=(4.5 * len(games), 3.4), squeeze=False)
    for key, runs in groups.items():
        ax = axes[0][games.index(key[KEY.index("game")] or key[KEY.index("games")])]
        n = min(len(r[-1]) for r in runs)
        curves = np.array([r[-1][:n] for r in runs])
        x = (np.arange(n) + 1) * window
        ax.plot(x, curves.mean(0), label=curve_label(key, len(runs)))
        ax.fill_between(x, curves.min(0), curves.max(0), alpha=0.25)
    for game, ax in zip(games, axes[0]):
        ax.set_title(str(game))
        ax.set_xlabel(unit)
        ax.set_ylabel(f"training return (mean per {window // 1000}k {unit.split()[-1]})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", help="run directories or folders above them")
    p.add_argument("--at", type=int, default=None, help="only episodes that ended at or before this env step "
                                                        "(game frame with --frames)")
    p.add_argument("--last", type=int, default=100, help="episodes averaged per run")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--window", type=int, default=0, help="also print each run's mean return per window of this "
                                                         "many env steps")
    p.add_argument("--plot", default="", help="with --window: draw those curves to this PNG")
    p.add_argument("--frames", action="store_true", help="game frames instead of env steps (runs with one env)")
    p.add_argument("--ignore", nargs="*", default=[], help="config fields not to group by, as crl compare's "
                                                           "--ignore (e.g. channels_last compile_optimizer)")
    args = p.parse_args(argv)
    if args.plot and args.window <= 0:
        print("--plot: needs --window > 0", file=sys.stderr)
        return 2
    found: list[tuple[Path, dict, list[tuple[int, float]], int]] = []
    for root in map(Path, args.roots):
        files = [root / "config.yaml"] if (root / "config.yaml").exists() else root.rglob("config.yaml")
        for cfg_file in sorted(files):
            cfg = yaml.safe_load(cfg_file.read_text())
            if args.frames and cfg.get("num_envs", 1) != 1:
                print(f"--frames: {cfg_file.parent} has --num-envs {cfg['num_envs']}; accepted: runs with one env",
                      file=sys.stderr)
                return 2
            points, reached = episode_returns(cfg_file.parent, args.at, args.frames)
            if points:
                found.append((cfg_file.parent, cfg, points, reached))
    if not found:
        print("no run with train/episode_return under " + ", ".join(args.roots), file=sys.stderr)
        return 2
    unknown = sorted(set(args.ignore) - {k for _, cfg, _, _ in found for k in cfg})
    if unknown:
        print(f"--ignore: {', '.join(unknown)} is in no run's config.yaml", file=sys.stderr)
        return 2
    other = other_differences([cfg for _, cfg, _, _ in found], args.ignore)
    groups: dict[tuple, list[tuple[str, float, int, int, list[float]]]] = {}
    for run_dir, cfg, points, reached in found:
        key = tuple(cfg.get(k) for k in KEY) + tuple(f"{k}={cfg.get(k)}" for k in other)
        curve = windowed(points, reached, args.window) if args.window > 0 else []
        groups.setdefault(key, []).append((str(run_dir), *last_returns(points, args.last), curve))
    columns = list(KEY) + (["other differing fields"] if other else [])
    print(f"| {' | '.join(columns)} | runs | mean of last {args.last} training episodes | 95% CI | "
          "last step (min-max) |")
    print("|" + "---|" * (len(columns) + 4))
    for key, runs in groups.items():
        shown = [str(k) for k in key[:len(KEY)]] + ([", ".join(key[len(KEY):])] if other else [])
        x = np.array([r[1] for r in runs])
        _, lo, hi = stratified_bootstrap_ci(x, resamples=args.resamples)
        ci = f"[{lo:.2f}, {hi:.2f}]" if len(x) > 1 else "n/a (1 run)"
        steps = [r[3] for r in runs]
        print(f"| {' | '.join(shown)} | {len(x)} | {x.mean():.2f} | {ci} | {min(steps)}-{max(steps)} |")
    if args.window > 0:
        print(f"\nmean return of the training episodes ending in each {args.window}-step window:")
        for runs in groups.values():
            for run in runs:
                print(f"{run[0]}: " + ", ".join(f"{v:.2f}" for v in run[-1]))
    if args.plot:
        plot_curves(groups, args.window, args.plot, "game frames" if args.frames else "env steps")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
