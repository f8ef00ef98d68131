"""Checkpoints written atomically (temp file + rename) and verified on load (SHA-256).

Layout: ``<run_dir>/checkpoints/step_<global_step>.pt`` plus ``.sha256`` beside it. The
newest checkpoint that verifies is used; a corrupt one is reported and skipped.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from crl.errors import UserError

KEEP = 2  # checkpoints kept per run: the newest and one to fall back to


def _ckpt_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename: readers see the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], prefix: str = "step") -> Path:
    """Write ``<prefix>_<step>.pt`` atomically; only ``step_*`` files are resume points (and pruned)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    folder = _ckpt_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}_{step:012d}.pt"
    atomic_write(path, data)
    atomic_write(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
    for old in (list_checkpoints(run_dir)[:-KEEP] if prefix == "step" else []):
        old.unlink(missing_ok=True)
        old.with_suffix(".sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    folder = _ckpt_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if re.fullmatch(r"step_\d+\.pt", p.name))


def _verified(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    digest = path.with_suffix(".sha256")
    if not digest.exists() or digest.read_text().strip() != hashlib.sha256(data).hexdigest():
        raise ValueError("checksum mismatch")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """One checkpoint file, verified against its ``.sha256``; ValueError when it does not match."""
    return _verified(Path(path))


def load_latest_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Newest checkpoint that verifies; warns about each corrupt one skipped."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise UserError(f"--resume: no checkpoint in {run_dir}")
    for path in reversed(candidates):
        try:
            return _verified(path)
        except Exception as err:  # corrupt bytes surface as many exception types from pickle/zip
            warnings.warn(f"checkpoint {path.name} is corrupt ({err}); falling back to an older one", stacklevel=2)
    raise UserError(f"--resume: every checkpoint in {run_dir} is corrupt")
