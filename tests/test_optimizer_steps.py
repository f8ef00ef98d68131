"""scripts/optimizer_steps.py on a real checkpoint and real event files (its denominator,
``crl.metrics.plasticity.adaptive_denominator``, is tested against the optimizers' steps in
``tests/test_metrics_plasticity.py``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from crl.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "optimizer_steps.py"


def test_reads_a_checkpoint(tmp_path):
    """From a crl checkpoint on disk: 3 of 7 rows get gradients of size ~2, the other 4 of size
    ~0.02; with eps 0.1 the 12 weights of those 4 rows are the ones below eps (12/21 = 0.571)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(7, 3))
    opt = torch.optim.RMSprop([w], lr=1e-3, eps=0.1)
    scale = torch.tensor([100.0] * 3 + [1.0] * 4)[:, None] * 0.02
    for _ in range(3):
        w.grad = torch.randn_like(w).sign() * scale
        opt.step()
    save_checkpoint(tmp_path, 300, {"learner": {"optimizer": opt.state_dict()}})
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--per-layer"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    head, layer = out.stdout.splitlines()
    assert head.startswith(f"{tmp_path} @ 300: below eps 0.571")
    assert layer.startswith("  parameter 0 (7, 3): below eps 0.571")
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--step", "7"], capture_output=True,
                             text=True)
    assert missing.returncode == 2 and missing.stderr == f"error: {tmp_path}: no checkpoint at --step 7\n"
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--windows", "0,x"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--windows: comma-separated increasing env steps" in bad.stderr


def test_update_ratio_windows_from_event_files(tmp_path):
    """--windows: the mean of the logged points of --tag (update_ratio by default) in each window (lo, hi]."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step, value in [(50, 1.0), (100, 3.0), (150, 10.0), (400, 99.0)]:
        writer.add_scalar("plasticity/update_ratio", value, step)
        writer.add_scalar("plasticity/below_eps", value / 100, step)
    writer.close()
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--windows", "0,100,200,300"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{tmp_path}: 2.00e+00 (2) | 1.00e+01 (1) | -"
    other = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--windows", "0,100,200",
                            "--tag", "plasticity/below_eps"], capture_output=True, text=True)
    assert other.stdout.strip() == f"{tmp_path}: 2.00e-02 (2) | 1.00e-01 (1)"
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--windows", "0,100",
                              "--tag", "plasticity/grad_norm"], capture_output=True, text=True)
    assert missing.returncode == 2 and "no plasticity/grad_norm in its event files" in missing.stderr
