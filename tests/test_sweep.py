"""``crl sweep`` (crl/sweep.py): a grid of ordinary runs on local Ray or in-process; re-runs skip
finished trials and resume interrupted ones; a comparison table at the end."""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from conftest import gym_args
from crl.checkpoint import list_checkpoints
from crl.cli import main
from crl.sweep import parse_grid, trial_name

TINY = ("--steps", "200", "--learning-starts", "50", "--eval-every", "100", "--checkpoint-every", "100",
        "--eval-episodes", "1", "--eval-max-steps", "100", "--log-every", "50")
FAST = ("--compare-tags", "eval/*/score")  # one plot instead of ten


def _trial_dirs(root: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in root.glob("*/*/*/config.yaml")}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_ray_sweep_2x2_then_rerun_skips(run_root, capsys):
    pytest.importorskip("ray.tune")
    argv = ["sweep", "--cpus-per-run", "0.5", "--max-concurrent", "2", *FAST, "--grid", "norm=none,layernorm", "--grid", "seed=0,1", "--",
            *gym_args(run_root, *TINY)]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    assert main(argv) == 0
    # Ray Tune leaves its own handlers installed after fit(): a later Ctrl-C in this process would be swallowed
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    out = capsys.readouterr().out
    dirs = _trial_dirs(run_root)
    assert sorted(dirs) == ["norm=layernorm,seed=0", "norm=layernorm,seed=1", "norm=none,seed=0", "norm=none,seed=1"]
    for name, d in dirs.items():
        s = _summary(d)
        assert s["global_step"] == 200 and not s["stopped_early"], name
        assert f"| {name} |" in out and d.parent.name == f"dqn-hlgauss-{name.split(',')[0][5:]}-none"
    assert out.count("| finished |") == 4
    assert "# Final values" in out and "`eval/CartPole-v1/score`" in out  # the crl compare table
    assert "| norm=none | `eval/CartPole-v1/score` | 2 |" in out  # groups over the two seeds
    before = {n: (d / "summary.json").read_bytes() for n, d in dirs.items()}

    import ray

    assert not ray.is_initialized()
    assert main(argv) == 0  # the same sweep again: nothing runs, Ray is not even started
    out = capsys.readouterr().out
    assert "0 to run, 0 to resume, 4 finished (skipped)" in out
    assert out.count("| skipped |") == 4 and "# Final values" in out
    assert {n: (d / "summary.json").read_bytes() for n, d in _trial_dirs(run_root).items()} == before


def test_local_sweep_resumes_interrupted_and_restarts_unstarted(run_root, capsys):
    argv = ["sweep", "--backend", "local", *FAST, "--grid", "seed=0,1", "--", *gym_args(run_root, *TINY)]
    assert main(argv) == 0
    dirs = _trial_dirs(run_root)
    assert sorted(dirs) == ["seed=0", "seed=1"]
    done = {n: _summary(d) for n, d in dirs.items()}
    # seed=0 as if killed after its step-100 checkpoint; seed=1 as if killed before its first checkpoint.
    killed, unstarted = dirs["seed=0"], dirs["seed=1"]
    (killed / "summary.json").unlink()
    newest = list_checkpoints(killed)[-1]
    newest.unlink()
    newest.with_suffix(".sha256").unlink()
    assert [p.name for p in list_checkpoints(killed)] == ["step_000000000100.pt"]
    (unstarted / "summary.json").unlink()
    for p in (unstarted / "checkpoints").iterdir():
        p.unlink()
    capsys.readouterr()

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 to run, 1 to resume, 0 finished" in out
    assert "resuming seed=0" in out and "running seed=1" in out
    for name, d in _trial_dirs(run_root).items():
        s = _summary(d)
        assert s.pop("run_dir") == done[name].pop("run_dir")
        assert s == done[name], name  # resumed bit-for-bit, restarted from scratch: the same results
    assert len(list((unstarted).glob("events.out.tfevents.*"))) == 1  # the unstarted trial's old events are gone


def test_sweep_refuses_a_directory_of_another_config_and_reports_failed_trials(run_root, capsys):
    assert main(["sweep", "--backend", "local", *FAST, "--grid", "seed=0", "--", *gym_args(run_root, *TINY)]) == 0
    capsys.readouterr()
    # The same trial name with another --steps: refused before anything runs.
    assert main(["sweep", "--backend", "local", *FAST, "--grid", "seed=0", "--",
                 *gym_args(run_root, *TINY, "--steps", "300")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run with another config (steps: 200 there, 300 here" in err[0], err
    # A trial that fails (an unknown env id, found only when it runs) does not stop the others; exit 1.
    base = ["gym", "--run-dir", str(run_root), "--no-progress", "--metrics-every", "0", *TINY]
    assert main(["sweep", "--backend", "local", *FAST, "--grid", "env_id=CartPole-v1,CartPole-v9", "--grid", "seed=1",
                 "--", *base]) == 1
    out = capsys.readouterr().out
    assert "| env_id=CartPole-v1,seed=1 | CartPole-v1 | 1 | finished |" in out
    assert "env_id=CartPole-v9,seed=1: failed" in out


def test_sweep_without_ray_says_how_to_install(run_root, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["sweep", "--grid", "seed=0,1", "--", *gym_args(run_root, *TINY)]) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[ray]'" in err and "--backend local" in err
    assert not run_root.exists()


def test_grid_values_are_typed_and_names_deterministic(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text('mlp_hidden: ["64,64", "128"]\ndouble_dqn: [true, false]\n')
    grid = parse_grid(["lr=1e-3,0.0003", "--norm=none,nap", "eval-eps=0"], str(grid_file))
    assert grid == {"mlp_hidden": ["64,64", "128"], "double_dqn": [True, False], "lr": [0.001, 0.0003],
                    "norm": ["none", "nap"], "eval_eps": [0.0]}
    name = trial_name({"mlp_hidden": "64,64", "double_dqn": True, "lr": 0.001, "norm": "nap", "eval_eps": 0.0})
    assert name.startswith("mlp_hidden=64_64~") and name.endswith(",double_dqn=true,lr=0.001,norm=nap,eval_eps=0.0")
    assert "/" not in name and name == trial_name({"mlp_hidden": "64,64", "double_dqn": True, "lr": 1e-3,
                                                   "norm": "nap", "eval_eps": 0.0})
    assert trial_name({"mlp_hidden": "64,64"}) != trial_name({"mlp_hidden": "64_64"})
