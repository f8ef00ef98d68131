"""``--resume`` continues a run exactly for every intervention: the same scalar curves, the same final
weights and the same intervention state as an uninterrupted run, whether the run is resumed from a
checkpoint in the middle of a task or from the checkpoint at a task boundary (taken before the next
task's ``on_task_start``, crl/runner.py).

Each intervention runs on 2 tasks x 20 updates of split-digits with a checkpoint every 10 updates
(checkpoints at 10, 20 = the boundary, 30, 40), with options that make it act within those 40
updates, and plasticity metrics every 5 updates. One reference run per intervention keeps all its
checkpoints; each case copies it, deletes the checkpoints after the resume point (as if the process
had been killed then: its event files still hold the points written after that checkpoint) and
resumes the copy. A longer meta-rescale run checks its logging, which comes only every 100 updates.
"""
from __future__ import annotations

import shutil
from collections import Counter

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import crl.checkpoint
from crl.checkpoint import load_checkpoint, load_latest_checkpoint
from crl.cli import main

BASE = ["run", "split-digits", "--n-tasks", "2", "--epochs", "0", "--steps", "20", "--mlp-hidden", "16",
        "--no-progress", "--log-every", "1", "--metrics-every", "5", "--probe-steps", "3",
        "--checkpoint-every", "10", "--eval-every", "10"]


def _frozen_hidden(ref) -> bool:
    """bn-only: the hidden layer's weights at step 40 are those at step 10 (they never train)."""
    a, b = (load_checkpoint(ref / "checkpoints" / f"step_{s:012d}.pt")["learner"]["network"] for s in (10, 40))
    return torch.equal(a["torso.blocks.0.layer.weight"], b["torso.blocks.0.layer.weight"])


# name -> (its options, the hook's name in checkpoints, proof that it acted: f(reference curves, hook state,
# reference run dir), with counts worked out from the schedule of 2 x 20 updates)
CASES = {
    # the projection after each of the 40 updates
    "nap": (["--intervention", "nap", "--norm", "layernorm"], "nap", lambda c, h, r: h["steps"] == 40),
    # warmup (2 updates: a tenth of a task) + cosine, restarted at the task start: update 21 has update 1's lr
    "norm-nap": (["--norm", "nap"], "nap",
                 lambda c, h, r: h["steps"] == 40 and c["train/lr"][20] == (21, c["train/lr"][0][1])
                 and c["train/lr"][1][1] > c["train/lr"][19][1]),
    # periodic resets after updates 10 (a mid-task checkpoint), 20 (the last of task 0), 30, 40, and the
    # task-start reset at 20: step 20 gets one point, the count after both
    "reset": (["--intervention", "reset", "--reset-every", "10"], "reset",
              lambda c, h, r: c["train/reset_count"] == [(10, 1.0), (20, 3.0), (30, 4.0), (40, 5.0)]),
    # recycles after every 5th update, each scoring a fresh random batch
    "redo": (["--intervention", "redo", "--redo-every", "5", "--redo-batch-size", "32", "--redo-tau", "0.5"], "redo",
             lambda c, h, r: [s for s, _ in c["train/redo_recycled_fraction"]] == list(range(5, 41, 5))
             and h["recycled_total"] > 0),
    # fresh form (a new random init each time) after updates 7, 14, 21, 28, 35 and at the start of task 1
    "shrink-perturb": (["--intervention", "shrink-perturb", "--sp-every", "7"], "shrink-perturb",
                       lambda c, h, r: h["applied"] == 6 and c["train/shrink_perturb_count"] == [(20, 3.0)]),
    # theta0 of every parameter (the penalty itself only shows in the weights)
    "l2-init": (["--intervention", "l2-init", "--l2-init-coef", "0.01"], "l2-init",
                lambda c, h, r: len(h["theta0"]) == 4),
    "bn-only": (["--intervention", "bn-only", "--norm", "batchnorm"], "bn-only",
                lambda c, h, r: _frozen_hidden(r) and len(c["train/bn_only_gamma_near_zero"]) == 5),
    # meta steps on updates 1, 4, ..., 40; the rescaler and its optimizer restart at the start of task 1
    "meta-rescale": (["--intervention", "meta-rescale", "--meta-hidden", "8", "--meta-every", "3",
                      "--meta-reset-per-task"], "meta-rescale",
                     lambda c, h, r: h["meta_steps"] == 14 and h["updates"] == 40),
}
RESUME_STEPS = {"mid-task": 30, "boundary": 20}


def _kill_after(ref, step: int, name: str):
    """A copy of run ``ref`` as if killed after its checkpoint at ``step`` (event files kept whole)."""
    killed = ref.parent / name
    shutil.copytree(ref, killed)
    for p in (killed / "checkpoints").glob("step_*"):
        if int(p.name.split("_")[1].split(".")[0]) > step:
            p.unlink()
    (killed / "summary.json").unlink()
    return killed


def _curves(run_dir):
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"] if not t.startswith("perf/")}


def _equal(a, b) -> bool:
    """Deep equality of checkpoint values: tensors bit for bit, NaN equal to NaN."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return a == b


def _hook_state(state, name):
    (hook,) = [v for k, v in state["hooks"].items() if k.split(":")[-1] == name]
    return hook


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Run directory of each intervention's uninterrupted run, with every checkpoint kept (run lazily)."""
    made = {}

    def get(name):
        if name not in made:
            root = tmp_path_factory.mktemp(name)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(crl.checkpoint, "KEEP", 100)  # keep the checkpoints at 10 and 20 to resume from
                assert main([*BASE, *CASES[name][0], "--run-dir", str(root), "--name", "ref"]) == 0
            (made[name],) = root.glob("*/*/ref")
        return made[name]

    return get


@pytest.mark.parametrize("point", list(RESUME_STEPS))
@pytest.mark.parametrize("name", list(CASES))
def test_resume_is_exact(references, name, point):
    ref = references(name)
    _, hook_name, acted = CASES[name]
    step = RESUME_STEPS[point]
    killed = _kill_after(ref, step, f"killed-{point}")
    state = load_latest_checkpoint(killed)
    assert state["runner"]["global_step"] == step
    assert (state["runner"]["task_index"], state["runner"]["step_in_task"]) == ((1, 0) if point == "boundary"
                                                                                 else (1, 10))

    assert main(["run", "split-digits", "--resume", str(killed)]) == 0
    got, want = _curves(killed), _curves(ref)
    assert any(t.startswith("plasticity/") for t in want), sorted(want)
    assert sorted(got) == sorted(want)
    for tag in want:
        assert got[tag] == want[tag], tag
    assert all(max(Counter(s for s, _ in points).values()) == 1 for points in got.values())
    final_ref, final_got = (load_latest_checkpoint(d) for d in (ref, killed))
    assert final_got["runner"]["global_step"] == final_ref["runner"]["global_step"] == 40
    a, b = final_ref["learner"]["network"], final_got["learner"]["network"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert acted(want, _hook_state(final_ref, hook_name), ref), f"{name} did not act as scheduled"
    assert _equal(_hook_state(final_got, hook_name), _hook_state(final_ref, hook_name))


def test_resume_of_meta_rescale_between_a_meta_step_and_its_logged_meta_loss_is_exact(tmp_path):
    # meta steps on updates 1, 8, ..., 99; the meta loss is logged on update 100, which is no meta step:
    # the value logged is the one of update 99's meta step, taken before the checkpoint at 99
    argv = ["run", "split-digits", "--n-tasks", "1", "--epochs", "0", "--steps", "100", "--mlp-hidden", "16",
            "--no-progress", "--log-every", "1", "--metrics-every", "0", "--checkpoint-every", "33",
            "--eval-every", "100", "--intervention", "meta-rescale", "--meta-hidden", "8", "--meta-every", "7",
            "--run-dir", str(tmp_path), "--name", "ref"]
    assert main(argv) == 0
    (ref,) = tmp_path.glob("*/*/ref")
    killed = _kill_after(ref, 99, "killed")
    assert main(["run", "split-digits", "--resume", str(killed)]) == 0
    got, want = _curves(killed), _curves(ref)
    assert want["train/meta_rescale_meta_loss"][0][0] == 100 and want["train/meta_rescale_meta_loss"][0][1] > 0
    assert got == want
