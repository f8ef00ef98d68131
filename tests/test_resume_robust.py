"""Resume in the cases users hit (issue 11), with real runs, real processes and real event files.

* A user scenario file whose env holds a class of the file: SIGKILL at a random moment after
  the first checkpoint, then ``--resume`` in another process (another hash seed): the same
  weights, summary and scalars as an uninterrupted run.
* ``--resume`` of a finished run: without a larger ``--steps`` one line and no file touched;
  with one, training goes on and equals a run given the larger budget from the start, with the
  old final evaluation still in the event file. Other options cannot change on resume.
* A checkpoint of another crl protocol (a crl that counts steps differently) is refused; one
  written before the protocol mark existed resumes with a warning.
* SIGINT mid-task: ``summary.json`` is strict JSON (no bare NaN).
* An exception in a user's scenario file (at import, in the scenario function, in a make_env, in an
  env wrapper during training), or a make_env of the file that fails inside gymnasium: one line
  naming the file (and the line, the task), exit code 2.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import gym_args
from crl.checkpoint import (PROTOCOL, PROTOCOL_CHANGES, atomic_write, list_checkpoints, load_checkpoint,
                            load_latest_checkpoint)
from crl.cli import main

REPO = Path(__file__).resolve().parents[1]
SCHEDULE = ("--learning-starts", "100", "--eval-every", "300", "--checkpoint-every", "300", "--eval-episodes", "2",
            "--eval-max-steps", "200", "--eps-decay-steps", "300", "--target-update", "100", "--log-every", "100",
            "--seed", "3")  # given explicitly: a short budget would otherwise adapt them (crl.config.adapt_to_budget)
COMMON = ("--run-dir", "RUNS", "--no-progress", "--metrics-every", "0", *SCHEDULE)

WRAPPED = '''"""CartPole with a reward wrapper defined here: the checkpointed env holds this file's class."""
import gymnasium as gym

import crl


class HalfReward(gym.RewardWrapper):
    def reward(self, reward):
        return 0.5 * reward


def make_env(num_envs, seed):
    return gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync", wrappers=[HalfReward])


@crl.register_scenario("half-reward-cartpole", "CartPole with halved rewards", kind="rl")
def half_reward_cartpole(cfg):
    return crl.Scenario("half-reward-cartpole", [crl.RLTask("half", make_env)])
'''


def _args(root: Path, *extra: str) -> list[str]:
    return [str(root) if a == "RUNS" else a for a in COMMON] + list(extra)


def _run_dir(root: Path, name: str) -> Path:
    return next(root.glob(f"*/*/{name}"))


def _env(hash_seed: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning",
            "PYTHONHASHSEED": hash_seed}


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve TensorBoard shows for the run (perf/* timings left out)."""
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]
            if not tag.startswith("perf/")}


def _weights(run_dir: Path) -> dict:
    return load_latest_checkpoint(run_dir)["learner"]["network"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _files(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _wait_for_first_checkpoint(proc: subprocess.Popen, root: Path, name: str, timeout: float = 120.0) -> Path:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = list(root.glob(f"*/*/{name}/checkpoints/step_*.sha256"))  # the .sha256 is written after the .pt
        if found:
            return found[0].parents[1]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before its first checkpoint: {proc.returncode}\n{out}\n{err}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no checkpoint within the timeout")


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.strip().splitlines() if not ln.startswith("note: ")]


# ----------------------------------------------------------------------------- 1. user scenario file, SIGKILL


@pytest.fixture(scope="module")
def wrapped_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "half_reward.py"
    path.write_text(WRAPPED)
    return path


def test_user_file_with_own_wrapper_sigkill_then_resume_in_new_process_is_exact(wrapped_file, tmp_path, capsys):
    root = tmp_path / "runs"
    run = ("--steps", "600", "--eval-every", "200", "--checkpoint-every", "200")
    assert main(["run", str(wrapped_file), *_args(root, *run, "--name", "ref")]) == 0
    reference = _run_dir(root, "ref")

    # Killed in a process with another hash seed than this one, which resumes it: the wrapper class
    # pickled with the env must be found under the same module name in both.
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    argv = [sys.executable, "-m", "crl.cli", "run", str(wrapped_file), *_args(root, *run, "--name", "k")]
    proc = subprocess.Popen(argv, cwd=REPO, env=_env(seed), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = _wait_for_first_checkpoint(proc, root, "k")
    delay = random.Random(11).uniform(0.0, 1.0)  # seeded: the same "random" moment on every run of the test
    time.sleep(delay)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (run_dir / "summary.json").exists(), f"killed after {delay:.2f} s: too late"

    capsys.readouterr()
    assert main(["run", str(wrapped_file), "--resume", str(run_dir)]) == 0
    assert f"resuming {run_dir} from step " in capsys.readouterr().err
    assert load_latest_checkpoint(run_dir)["runner"]["global_step"] == 600
    _assert_same_weights(reference, run_dir)
    ref, got = (_strict_json((d / "summary.json").read_text()) for d in (reference, run_dir))
    ref.pop("run_dir"), got.pop("run_dir")
    assert got == ref
    # Every point of every curve, the evaluation at the checkpoint's step included, is there exactly once.
    assert _scalars(run_dir) == _scalars(reference)
    assert [s for s, _ in _scalars(run_dir)["eval/half/score"]] == [200, 400, 600]


# ----------------------------------------------------------------------------- 2. resume of a finished run


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 900-step CartPole run and a 1500-step run of the same config from the start."""
    root = tmp_path_factory.mktemp("finished") / "runs"
    assert main(gym_args(root, *SCHEDULE, "--steps", "900", "--name", "short")) == 0
    assert main(gym_args(root, *SCHEDULE, "--steps", "1500", "--name", "long")) == 0
    return _run_dir(root, "short"), _run_dir(root, "long")


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy" / run_dir.name
    shutil.copytree(run_dir, dest)
    return dest


@pytest.mark.parametrize("steps", [None, "900", "600"])
def test_resume_of_finished_run_says_so_and_touches_nothing(finished, tmp_path, capsys, steps):
    run_dir = _copy(finished[0], tmp_path)
    before = _files(run_dir)
    capsys.readouterr()
    assert main(["gym", "--resume", str(run_dir), *(["--steps", steps] if steps else [])]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [f"run {run_dir} is finished at step 900; give a larger --steps to continue it"]
    assert _files(run_dir) == before  # same files, byte for byte; no new event file


@pytest.mark.parametrize("flag, value", [("--lr", "0.5"), ("--eval-every", "100"), ("--seed", "4")])
def test_resume_refuses_other_changes_and_touches_nothing(finished, tmp_path, capsys, flag, value):
    run_dir = _copy(finished[0], tmp_path)
    before = _files(run_dir)
    capsys.readouterr()
    assert main(["gym", "--resume", str(run_dir), "--steps", "1500", flag, value]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: {flag}: cannot change when resuming"), line
    assert _files(run_dir) == before


def test_resume_accepts_the_runs_own_values(finished, tmp_path, capsys):
    """``crl sweep`` resumes with the trial's whole command line: equal values are no change."""
    run_dir = _copy(finished[0], tmp_path)
    before = _files(run_dir)
    argv = gym_args(run_dir.parents[2], *SCHEDULE, "--steps", "900", "--name", run_dir.name)
    assert main([*argv, "--resume", str(run_dir)]) == 0
    assert "is finished at step 900" in capsys.readouterr().err
    assert _files(run_dir) == before


def test_larger_steps_continue_a_finished_run_like_a_longer_run(finished, tmp_path, capsys):
    short, long = finished
    run_dir = _copy(short, tmp_path)
    old_final = _scalars(run_dir)["eval/CartPole-v1/score"][-1]
    assert old_final[0] == 900
    capsys.readouterr()
    assert main(["gym", "--resume", str(run_dir), "--steps", "1500"]) == 0
    assert f"resuming {run_dir} from step 900" in capsys.readouterr().err
    summary = _strict_json((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 1500 and not summary["stopped_early"]
    assert "steps: 1500\n" in (run_dir / "config.yaml").read_text()
    # The same network and evaluations as the run given 1500 steps from the start ...
    _assert_same_weights(long, run_dir)
    got, ref = _scalars(run_dir), _scalars(long)
    assert got["eval/CartPole-v1/score"] == ref["eval/CartPole-v1/score"]
    assert [s for s, _ in got["eval/CartPole-v1/score"]] == [300, 600, 900, 1200, 1500]
    assert old_final in got["eval/CartPole-v1/score"]  # the old final evaluation was not purged
    for tag in ref:
        if tag.startswith("train/"):
            assert got[tag] == ref[tag], tag
    assert summary["final_scores"] == _strict_json((long / "summary.json").read_text())["final_scores"]
    # ... and it is finished again: a second resume changes nothing.
    before = _files(run_dir)
    assert main(["gym", "--resume", str(run_dir), "--steps", "1500"]) == 0
    assert _files(run_dir) == before


def test_finished_run_without_summary_is_only_finalised(finished, tmp_path, capsys):
    """Killed between the final checkpoint and summary.json: the resume writes the summary, trains nothing."""
    run_dir = _copy(finished[0], tmp_path)
    expected = _strict_json((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").unlink()
    weights = _weights(run_dir)
    assert main(["gym", "--resume", str(run_dir)]) == 0
    got = _strict_json((run_dir / "summary.json").read_text())
    assert got["global_step"] == 900 and got["eval_matrix"] == expected["eval_matrix"]
    assert got["final_scores"] == expected["final_scores"]
    new = _weights(run_dir)
    assert all(torch.equal(new[k], weights[k]) for k in weights)


def _edit_newest_checkpoint(run_dir: Path, edit) -> None:
    """Rewrite the run's newest checkpoint after ``edit(state)``, with a matching .sha256 (as crl writes it)."""
    path = list_checkpoints(run_dir)[-1]
    state = load_checkpoint(path)
    edit(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())
    atomic_write(path.with_suffix(".sha256"), hashlib.sha256(buf.getvalue()).hexdigest().encode())


def test_checkpoint_of_another_protocol_is_refused_and_touches_nothing(finished, tmp_path, capsys):
    """A run written by a crl that counted steps differently must not switch counting mid-run."""
    assert load_latest_checkpoint(finished[0])["protocol"] == PROTOCOL
    run_dir = _copy(finished[0], tmp_path)
    _edit_newest_checkpoint(run_dir, lambda state: state.update(protocol=PROTOCOL - 1))
    before = _files(run_dir)
    capsys.readouterr()
    assert main(["gym", "--resume", str(run_dir), "--steps", "1500"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --resume: cannot resume {run_dir}: it was written by crl protocol "
                           f"{PROTOCOL - 1}"), line
    assert PROTOCOL_CHANGES[PROTOCOL] in line
    assert _files(run_dir) == before


def test_checkpoint_without_protocol_mark_resumes_with_a_warning(finished, tmp_path, capsys):
    """Checkpoints written before the mark existed: resumed as before, with one line saying what may differ."""
    short, long = finished
    run_dir = _copy(short, tmp_path)
    _edit_newest_checkpoint(run_dir, lambda state: state.pop("protocol"))
    capsys.readouterr()
    assert main(["gym", "--resume", str(run_dir), "--steps", "1500"]) == 0
    warning = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ")]
    assert warning == [f"warning: resuming {run_dir}: its checkpoint carries no protocol mark (crl before "
                       f"protocol {PROTOCOL}: {PROTOCOL_CHANGES[PROTOCOL]}); if the run was started before that "
                       "change it counts differently from here on"]
    assert load_latest_checkpoint(run_dir)["protocol"] == PROTOCOL  # marked from now on
    _assert_same_weights(long, run_dir)


OWN_BUDGET = '''import crl


@crl.register_scenario("own-budget-resume-test", "CartPole for 200 steps", kind="rl")
def own(cfg):
    return crl.Scenario("own-budget-resume-test", [crl.RLTask("a", crl.gym_env_factory("CartPole-v1"), steps=200)])
'''


def test_steps_cannot_change_for_a_task_with_its_own_budget(tmp_path, capsys):
    path = tmp_path / "own.py"
    path.write_text(OWN_BUDGET)
    root = tmp_path / "runs"
    assert main(["run", str(path), *_args(root, "--name", "own")]) == 0
    run_dir = _run_dir(root, "own")
    before = _files(run_dir)
    capsys.readouterr()
    assert main(["run", str(path), "--resume", str(run_dir), "--steps", "400"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == ("error: --steps: task 'a' of scenario 'own-budget-resume-test' sets its own budget (200 steps); "
                    "--steps does not change it"), line
    assert _files(run_dir) == before


TWO_TASKS = '''import crl


@crl.register_scenario("two-cartpoles-resume-test", "CartPole twice", kind="rl")
def two(cfg):
    return crl.Scenario("two-cartpoles-resume-test", [
        crl.RLTask("a", crl.gym_env_factory("CartPole-v1")),
        crl.RLTask("b", crl.gym_env_factory("CartPole-v1", max_episode_steps=100)),
    ])
'''


def test_steps_cannot_change_on_resume_of_a_multi_task_run(tmp_path, capsys):
    path = tmp_path / "two.py"
    path.write_text(TWO_TASKS)
    root = tmp_path / "runs"
    assert main(["run", str(path), *_args(root, "--steps", "200", "--name", "two")]) == 0
    run_dir = _run_dir(root, "two")
    before = _files(run_dir)
    capsys.readouterr()
    assert main(["run", str(path), "--resume", str(run_dir)]) == 0
    assert capsys.readouterr().err.strip() == f"run {run_dir} is finished at step 400"
    assert main(["run", str(path), "--resume", str(run_dir), "--steps", "400"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: --steps: cannot change when resuming") and "2 tasks" in line, line
    assert _files(run_dir) == before


# ----------------------------------------------------------------------------- 4. strict summary.json


def test_sigint_mid_task_leaves_strict_json_summary(tmp_path, capsys):
    root = tmp_path / "runs"
    argv = [sys.executable, "-m", "crl.cli", *gym_args(root, *SCHEDULE, "--steps", "3000", "--name", "int")]
    proc = subprocess.Popen(argv, cwd=REPO, env=_env("0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = _wait_for_first_checkpoint(proc, root, "int")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = _strict_json((run_dir / "summary.json").read_text())  # raises on NaN / Infinity
    assert summary["stopped_early"] and summary["stop_signal"] == "SIGINT"
    assert summary["global_step"] < 3000
    assert summary["eval_matrix"] == [[None]] and summary["final_scores"] == {"CartPole-v1": None}  # not evaluated yet

    # A budget below the steps it has done cannot be given on resume; nothing changes.
    before = _files(run_dir)
    assert main(["gym", "--resume", str(run_dir), "--steps", "100"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    done = summary["global_step"]
    assert line == f"error: --steps: {run_dir} has already trained {done} steps; give at least that many"
    assert _files(run_dir) == before


# ----------------------------------------------------------------------------- 5. errors in the user's file

RAISES = {
    "function": '''import crl


@crl.register_scenario("raises-in-function", kind="rl")
def scenario(cfg):
    levels = {}
    return levels["hard"]  # RAISES
''',
    "make_env": '''import crl


def make_env(num_envs, seed):
    raise ValueError("no level 7")  # RAISES


@crl.register_scenario("raises-in-make-env", kind="rl")
def scenario(cfg):
    return crl.Scenario("raises-in-make-env", [crl.RLTask("seven", make_env)])
''',
    "import": '''import crl

WIDTH = int("wide")  # RAISES
''',
    "wrapper": '''import gymnasium as gym

import crl


class Breaks(gym.Wrapper):
    def step(self, action):
        raise RuntimeError("sensor unplugged")  # RAISES


@crl.register_scenario("raises-in-wrapper", kind="rl")
def scenario(cfg):
    make = crl.gym_env_factory("CartPole-v1", wrappers=[Breaks])
    return crl.Scenario("raises-in-wrapper", [crl.RLTask("cart", make)])
''',
}
EXPECTED = {"function": "KeyError: 'hard'", "make_env": "ValueError: no level 7",
            "import": "ValueError: invalid literal for int() with base 10: 'wide'",
            "wrapper": "RuntimeError: sensor unplugged"}


@pytest.mark.parametrize("where", sorted(RAISES))
def test_exception_in_user_file_is_one_line_naming_file_and_line(where, tmp_path, capsys):
    path = tmp_path / f"raises_{where}.py"
    path.write_text(RAISES[where])
    line_no = next(i for i, ln in enumerate(RAISES[where].splitlines(), 1) if "# RAISES" in ln)
    root = tmp_path / "runs"
    assert main(["run", str(path), *_args(root, "--steps", "200", "--name", "r")]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"{path} (line {line_no}): {EXPECTED[where]}" in line, line
    assert line.startswith("error: ") and "Traceback" not in line
    if where != "wrapper":  # refused while building the run: nothing written
        assert not root.exists()


def test_env_factory_error_without_a_frame_in_the_user_file_names_file_and_task(tmp_path, capsys):
    """A misspelt keyword of crl.gym_env_factory raises inside gymnasium, not in the user's file."""
    path = tmp_path / "typo.py"
    path.write_text('''import crl


@crl.register_scenario("typo-kwarg-test", kind="rl")
def scenario(cfg):
    make = crl.gym_env_factory("CartPole-v1", pole_lenght=1.0)
    return crl.Scenario("typo-kwarg-test", [crl.RLTask("long-pole", make)])
''')
    root = tmp_path / "runs"
    assert main(["run", str(path), *_args(root, "--steps", "200", "--name", "t")]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: task 'long-pole': make_env(1, 3) failed: scenario file {path}: TypeError: "), line
    assert "pole_lenght" in line
    assert not root.exists()
