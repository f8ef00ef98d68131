"""scripts/minatar_returns.py on real config.yaml and TensorBoard event files: the last-100 mean,
the step cut, and runs grouped as ``crl compare`` groups them (a differing lr is its own group)."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from conftest import load_script
from crl.config import make_config, save_config


def fake_run(root: Path, name: str, returns: list[float], **overrides) -> Path:
    """A run directory with the preset's config and one training episode every 10 env steps."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = make_config("minatar", scenario="minatar", game="breakout", name=name, **overrides)
    save_config(cfg, run_dir / "config.yaml")
    writer = SummaryWriter(str(run_dir))
    for i, value in enumerate(returns):
        writer.add_scalar("train/episode_return", value, 10 * (i + 1))
    writer.close()
    return run_dir


@pytest.fixture
def runs(tmp_path):
    return [fake_run(tmp_path, "a", [float(i) for i in range(150)], seed=0),  # last 100: 50..149, mean 99.5
            fake_run(tmp_path, "b", [float(i) + 1 for i in range(150)], seed=1),  # mean 100.5
            fake_run(tmp_path, "c", [5.0] * 150, seed=0, lr=1e-3)]


def table_rows(out: str) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line.startswith("| minatar")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_a_differing_lr_is_its_own_group(runs, capsys):
    script = load_script("minatar_returns")
    assert script.main([str(r) for r in runs]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [(r[1], r[7], r[8], r[9]) for r in rows] == [("dqn", "lr=0.00025", "2", "100.00"),
                                                         ("dqn", "lr=0.001", "1", "5.00")]
    assert rows[0][10] == "[99.50, 100.50]"  # 2 runs: every resample's mean lies between theirs
    assert script.main([str(r) for r in runs] + ["--ignore", "lr"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [(r[7], r[8]) for r in rows] == [("3", f"{(99.5 + 100.5 + 5) / 3:.2f}")]  # no "other fields" column


def test_at_keeps_the_episodes_ended_by_then(runs, capsys):
    script = load_script("minatar_returns")
    assert script.main([str(runs[0]), "--at", "1000"]) == 0  # episodes 0..99 (steps 10..1000): mean 49.5
    (row,) = table_rows(capsys.readouterr().out)
    assert row[7:10] == ["1", "49.50", "n/a (1 run)"] and row[10] == "1000-1000"


def test_an_ignored_field_no_run_has_is_refused(runs, capsys):
    assert load_script("minatar_returns").main([str(runs[0]), "--ignore", "lr_typo"]) == 2
    assert capsys.readouterr().err == "--ignore: lr_typo is in no run's config.yaml\n"


def test_the_legend_names_norm_intervention_and_other_differences():
    script = load_script("minatar_returns")
    key = ("minatar", "dqn-hlgauss", "freeway", None, "layernorm", "redo", 500000, "lr=0.001")
    assert script.curve_label(key, 2) == "dqn-hlgauss, norm layernorm, intervention redo, lr=0.001 (2 runs)"
    plain = ("minatar", "dqn", "breakout", None, "none", "", 500000)
    assert script.curve_label(plain, 1) == "dqn (1 run)"
