"""Shared test helpers: small configs and a runner over real environments."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from crl.registry import load_builtins

load_builtins()
torch.set_num_threads(1)  # the CI machine has 2 cores; deterministic and fair to parallel jobs


@pytest.fixture
def run_root(tmp_path):
    return tmp_path / "runs"


def gym_args(run_root, *extra: str) -> list[str]:
    """A fast CartPole command line for the CLI."""
    return ["gym", "--env-id", "CartPole-v1", "--run-dir", str(run_root), "--no-progress", "--metrics-every", "0",
            *extra]


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
