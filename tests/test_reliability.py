"""Runs that survive crashes and bad numbers (crl/reliability.py, crl/checkpoint.py, crl/runner.py).

* SIGKILL at a random moment after the first checkpoint, then ``--resume``: the same weights,
  eval matrix and summary as an uninterrupted run (CPU, same seed; CartPole envs are pickled
  into checkpoints, so the resume is exact).
* SIGTERM: a final checkpoint, flushed logs, a one-line message and exit code 143; a resume
  whose newest checkpoint was then corrupted falls back to the previous one with a warning
  and still finishes exactly like the uninterrupted run.
* A NaN in the loss, a gradient or a parameter stops the run naming the step and the layer,
  with a checkpoint of the last good state; the CLI reports it as one line, exit code 1.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import gym_args
from crl.checkpoint import list_checkpoints, load_checkpoint, load_latest_checkpoint, save_checkpoint
from crl.cli import main
from crl.hooks import Hook
from crl.reliability import NumericalError, check_finite, clip_grads, grad_norms

REPO = Path(__file__).resolve().parents[1]
STEPS = 900
RUN = ("--steps", str(STEPS), "--learning-starts", "100", "--eval-every", "300", "--checkpoint-every", "300",
       "--eval-episodes", "2", "--eval-max-steps", "200", "--seed", "1", "--log-every", "100")
KEEP_OUT = ("run_dir",)  # summary fields that differ between two directories of the same run


def _run_dir(root: Path, name: str) -> Path:
    return next(root.glob(f"*/*/{name}"))


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _final_weights(run_dir: Path) -> dict:
    return load_latest_checkpoint(run_dir)["learner"]["network"]


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _final_weights(a), _final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa, sb = _summary(a), _summary(b)
    for k in KEEP_OUT:
        sa.pop(k), sb.pop(k)
    assert sa["eval_matrix"] == sb["eval_matrix"]
    assert sa == sb


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (in this process, 1 torch thread as conftest sets)."""
    root = tmp_path_factory.mktemp("ref") / "runs"
    assert main(gym_args(root, *RUN, "--name", "ref")) == 0
    return _run_dir(root, "ref")


def _spawn(root: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.Popen([sys.executable, "-m", "crl.cli", *gym_args(root, *RUN, "--name", name)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_first_checkpoint(proc: subprocess.Popen, root: Path, timeout: float = 120.0) -> Path:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = list(root.glob("*/*/*/checkpoints/step_*.sha256"))  # the .sha256 is written after the .pt
        if found:
            return found[0].parents[1]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before its first checkpoint: {proc.returncode}\n{out}\n{err}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no checkpoint within the timeout")


def test_sigkill_at_random_step_then_resume_is_exact(reference, tmp_path, capsys):
    root = tmp_path / "runs"
    proc = _spawn(root, "killed")
    run_dir = _wait_for_first_checkpoint(proc, root)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 1.0))  # a random step after the first checkpoint
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    # Event files are flushed at every evaluation: the step-300 evaluation survived the kill.
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    assert [e.step for e in ea.Scalars("eval/CartPole-v1/score")][:1] == [300]

    capsys.readouterr()
    assert main(["gym", "--resume", str(run_dir)]) == 0
    _assert_same_run(reference, run_dir)


def test_sigterm_writes_final_checkpoint_then_corrupt_newest_falls_back(reference, tmp_path, capsys):
    root = tmp_path / "runs"
    proc = _spawn(root, "termed")
    run_dir = _wait_for_first_checkpoint(proc, root)
    time.sleep(0.5)
    assert proc.poll() is None, "the run finished before SIGTERM"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "SIGTERM received" in err and "final checkpoint written" in err and "--resume" in err, err
    summary = _summary(run_dir)
    assert summary["stopped_early"] and summary["stop_signal"] == "SIGTERM"
    ckpts = list_checkpoints(run_dir)
    assert len(ckpts) == 2
    stop_step = summary["global_step"]
    assert 300 < stop_step < STEPS
    assert ckpts[-1].name == f"step_{stop_step:012d}.pt"  # the final checkpoint, at the step it stopped

    # The newest checkpoint is damaged (e.g. by the disk): resume warns and uses the one before.
    data = bytearray(ckpts[-1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpts[-1].write_bytes(bytes(data))
    capsys.readouterr()
    with pytest.warns(UserWarning, match=rf"{ckpts[-1].name} is corrupt"):
        assert main(["gym", "--resume", str(run_dir)]) == 0
    _assert_same_run(reference, run_dir)


def test_corrupt_or_unverified_newest_checkpoint_falls_back(tmp_path):
    for step in (100, 200, 300):
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((3,), float(step))})
    ckpts = list_checkpoints(tmp_path)
    assert [p.name for p in ckpts] == ["step_000000000200.pt", "step_000000000300.pt"]  # KEEP = 2
    assert not list(tmp_path.rglob("*.tmp"))  # written to a temp file, then renamed
    assert load_latest_checkpoint(tmp_path)["step"] == 300
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:-10])  # truncated (e.g. a full disk)
    with pytest.warns(UserWarning, match="step_000000000300.pt is corrupt"):
        assert load_latest_checkpoint(tmp_path)["step"] == 200
    ckpts[-1].with_suffix(".sha256").unlink()  # killed between the .pt and its checksum
    with pytest.warns(UserWarning, match="corrupt"):
        assert load_latest_checkpoint(tmp_path)["step"] == 200


# ----------------------------------------------------------------------------- NaN / inf


class _Inject(Hook):
    """At the ``at``-th update: a NaN loss, a NaN gradient of one layer, or a NaN parameter after the step."""

    name = "inject"

    def __init__(self, kind: str, at: int = 5, layer: str | None = None):
        self.kind, self.at, self.layer, self.calls = kind, at, layer, 0
        self.good: dict[str, torch.Tensor] | None = None
        self.history: dict[int, dict[str, torch.Tensor]] = {}  # env step -> weights before that update
        self.step: int | None = None

    def transform_loss(self, run, per_sample_loss, batch):
        self.calls += 1
        net = run.learner.network
        self.history[run.learner.env_steps] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if self.calls == self.at:
            self.good = self.history[run.learner.env_steps]  # before this update
            self.step = run.learner.env_steps
            if self.kind == "loss":
                return per_sample_loss * float("nan")
            if self.kind == "grad":
                dict(net.named_parameters())[self.layer].register_hook(lambda g: g + float("inf"))
        return per_sample_loss

    def after_optimizer_step(self, run):
        if self.kind == "param" and self.calls == self.at:
            with torch.no_grad():
                dict(run.learner.network.named_parameters())[self.layer][0, 0] = float("nan")


def _runner_with(hook: Hook, root: Path, *extra: str):
    from crl import api
    from crl.flags import config_from_args, parse_args
    from crl.config import adapt_to_budget
    from crl.runner import Runner

    cfg, explicit = config_from_args(parse_args(gym_args(root, *RUN, "--name", "nan", *extra)))
    adapt_to_budget(cfg, explicit)
    scenario, learner, hooks = api.prepare(cfg)
    hooks.append(hook)
    return Runner(cfg, scenario, learner, hooks, api.run_directory(cfg, scenario))


@pytest.mark.parametrize("kind", ["loss", "grad", "param"])
def test_nan_stops_run_naming_step_and_layer_with_last_good_checkpoint(kind, tmp_path):
    hook = _Inject(kind, at=5)
    runner = _runner_with(hook, tmp_path / "runs", "--guard-copy-every", "1")
    layer = hook.layer = next(n for n, p in runner.learner.network.named_parameters() if p.dim() == 2)
    with pytest.raises(NumericalError) as info:
        runner.run()
    err, msg = info.value, str(info.value)
    what = {"loss": "non-finite loss (nan)", "grad": f"non-finite gradient (inf) in layer '{layer}'",
            "param": f"non-finite parameter (nan) in layer '{layer}'"}[kind]
    assert what in msg, msg
    # The loss and gradient checks run before the optimizer step of the bad update; a NaN parameter is
    # found at the next update, and the parameters are put back to the last good copy.
    step = hook.step if kind != "param" else hook.step + runner.config.train_freq
    assert f"at step {step}" in msg, msg
    assert err.checkpoint and Path(err.checkpoint).name == f"last_good_step_{step:012d}.pt", msg
    assert f"last good state saved in {err.checkpoint}" in msg
    state = load_checkpoint(Path(err.checkpoint))  # verified against its .sha256
    weights = state["learner"]["network"]
    for k, good in hook.good.items():
        assert torch.equal(weights[k], good), k  # the weights of before the bad update, no NaN
    summary = json.loads((runner.run_dir / "summary.json").read_text())
    assert summary["stopped_early"] and "non-finite" in summary["diverged"]
    # The regular step_*.pt files (resume points) are untouched: none was written with bad weights.
    assert all(p.name.startswith("step_") for p in list_checkpoints(runner.run_dir))


def test_nan_parameter_restored_to_the_guards_last_copy(tmp_path):
    """With --guard-copy-every 3 the parameters go back to the copy the guard took last (at the first
    of every 3 updates), the step named in the message."""
    hook = _Inject("param", at=5)
    runner = _runner_with(hook, tmp_path / "runs", "--guard-copy-every", "3")
    hook.layer = next(n for n, p in runner.learner.network.named_parameters() if p.dim() == 2)
    with pytest.raises(NumericalError) as info:
        runner.run()
    msg = str(info.value)
    steps = sorted(hook.history)  # env steps of the updates 1, 2, ...; copies at updates 1 and 4
    assert f"parameters restored to their last good copy (step {steps[3]})" in msg, msg
    weights = load_checkpoint(Path(info.value.checkpoint))["learner"]["network"]
    for k, good in hook.history[steps[3]].items():
        assert torch.equal(weights[k], good), k


def test_nan_from_cli_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    import crl.api

    monkeypatch.setattr(crl.api, "extra_hooks", lambda cfg: [_Inject("loss", at=3)])
    assert main(gym_args(tmp_path / "runs", *RUN, "--name", "cli")) == 1
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("note: ")]
    assert len(err) == 1 and err[0].startswith("error: non-finite loss (nan) at step "), err
    assert "last_good_step_" in err[0] and "Traceback" not in err[0]


def test_guard_ignores_huge_but_finite_values():
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.fill_(3e38)  # the norm overflows to inf; the values are finite
    loss = net.bias.sum()
    loss.backward()
    check_finite(None, loss, net, step=7)
    with torch.no_grad():
        net.bias[0] = float("inf")  # e.g. left by a hook after the optimizer step
    loss = net(torch.zeros(1, 2)).sum()  # the next update's forward sees it
    loss.backward()
    with pytest.raises(NumericalError, match=r"non-finite parameter \(inf\) in layer 'bias' at step 7"):
        check_finite(None, loss, net, step=7)
    assert torch.isfinite(net.bias).all()  # restored from the last good copy


@pytest.mark.parametrize("max_norm", [0.0, 0.5, 1e6])
def test_guard_clips_like_clip_grad_norm(max_norm):
    """The guard's gradient norms, reused for the clip: same result as torch's clip_grad_norm_."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.randn(11, 5)
    for net in nets:
        (net(x) ** 2).sum().backward()
    before = [p.grad.clone() for p in nets[0].parameters()]
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(nets[0].parameters(), max_norm)
    grads, total = grad_norms(nets[1])
    check_finite(None, torch.zeros(()), nets[1], step=0, total_grad_norm=total)
    clip_grads(grads, total, max_norm)
    for ref, got, raw in zip(nets[0].parameters(), nets[1].parameters(), before):
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-6, atol=0)
        assert (max_norm == 0.5) != torch.equal(got.grad, raw)  # 0.5 clips, the others leave them
