"""The README's user-scenario example, run exactly as the README shows it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from crl.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "three_tasks.py"


def _readme_text() -> str:
    text = (ROOT / "README.md").read_text()
    assert "examples/three_tasks.py" in text, "the README must show examples/three_tasks.py"
    return text


def test_readme_shows_exactly_the_example_file():
    text = _readme_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert EXAMPLE.read_text() in blocks
    assert "crl run examples/three_tasks.py" in text


def test_three_task_user_scenario_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = ["run", "examples/three_tasks.py", "--agent", "classifier", "--strategy", "replay", "--norm", "layernorm",
            "--epochs", "2", "--run-dir", str(tmp_path), "--name", "r", "--no-progress", "--metrics-every", "0"]
    assert main(argv) == 0
    (path,) = tmp_path.glob("three-tasks/*/r/summary.json")
    s = json.loads(path.read_text())
    R = np.array(s["eval_matrix"])
    assert R.shape == (3, 3) and np.isfinite(R).all()
    assert list(s["final_scores"]) == ["digits0-3", "digits4-6", "digits7-9"]
    assert "forgetting/max_minus_last" in s


def test_preset_auto_picks_the_supervised_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = ["run", "examples/three_tasks.py", "--epochs", "1", "--run-dir", str(tmp_path), "--name", "r",
            "--no-progress", "--metrics-every", "0"]
    assert main(argv) == 0  # no --agent: the scenario declares kind="supervised"
    (path,) = tmp_path.glob("three-tasks/classifier-none-none/r/config.yaml")
    assert "agent: classifier" in path.read_text()
