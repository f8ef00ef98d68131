"""Checkpoints written atomically (temp file + rename) and verified on load (SHA-256).

Layout: ``<run_dir>/checkpoints/step_<global_step>.pt`` plus ``.sha256`` beside it. The
newest checkpoint that verifies is used; a corrupt one is reported and skipped.

Every checkpoint carries crl's :data:`PROTOCOL` number, so that ``--resume`` with a crl that counts
or trains differently from the one that wrote it refuses instead of switching mid-run.
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

# Raised by one whenever a change of crl makes a run resumed from an older checkpoint go on differently
# from how it began (what a step is, when updates run); each number says what changed. Checkpoints
# written before the mark existed carry none.
PROTOCOL = 2
PROTOCOL_CHANGES = {
    2: "crl's DQN no longer counts an env's autoreset step as an env step (nor runs an update on it)",
}


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


def protocol_problem(state: dict[str, Any]) -> tuple[str, bool] | None:
    """Why a checkpoint's run would go on differently under this crl, and whether that is certain:
    ``(text, True)`` for another protocol number (resume must refuse), ``(text, False)`` for a checkpoint
    without one (written before the mark; whether its run predates the changes is unknown). None: same."""
    got = state.get("protocol")
    if got == PROTOCOL:
        return None
    if got is None:
        return (f"its checkpoint carries no protocol mark (crl before protocol {PROTOCOL}: "
                f"{PROTOCOL_CHANGES[PROTOCOL]}); if the run was started before that change it counts differently "
                "from here on", False)
    if got > PROTOCOL:
        return f"its checkpoint was written by a newer crl (protocol {got}; this crl has {PROTOCOL})", True
    changed = "; ".join(f"{n}: {PROTOCOL_CHANGES[n]}" for n in range(got + 1, PROTOCOL + 1))
    return (f"it was written by crl protocol {got} and this crl has protocol {PROTOCOL} ({changed}); resume it "
            f"with the crl that started it", True)


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
