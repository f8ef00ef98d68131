"""Options live with their component: composition, config.yaml, checks, budget notes, in-play."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml

from crl import options as opts
from crl.config import Config, RunOptions, adapt_to_budget, load_config, make_config, parts_in_play, save_config, \
    validate
from crl.errors import UserError
from crl.interventions.redo import RedoOptions
from crl.registry import Registry


def test_config_composes_component_options_flat():
    cfg = make_config("gym", redo_tau=0.05, steps=123)
    assert cfg.options(RedoOptions).redo_tau == 0.05 and cfg.redo_tau == 0.05
    cfg.redo_every = 7  # set through the flat name, lands in the component's dataclass
    assert cfg.options(RedoOptions).redo_every == 7
    assert cfg.options(RunOptions).steps == 123
    with pytest.raises(AttributeError):
        cfg.no_such_option  # noqa: B018
    with pytest.raises(UserError, match="unknown field"):
        Config(no_such_option=1)


def test_config_yaml_round_trip_keeps_the_flat_keys(tmp_path):
    cfg = make_config("gym", redo_tau=0.05, meta_keep=0.3, game="pong")
    save_config(cfg, tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert {"redo_tau", "meta_keep", "game", "steps", "sigma_ratio", "metrics_every"} <= set(data)
    assert load_config(tmp_path / "config.yaml") == cfg


def test_range_checks_come_from_the_option_declarations():
    for name, bad, message in (("redo_every", 0, "must be > 0"), ("sp_shrink", -1.0, "must be >= 0"),
                               ("gamma", 1.5, "must be in [0, 1]"), ("meta_keep", 0.0, "must be in (0, 1]")):
        with pytest.raises(UserError, match=rf"^--{name.replace('_', '-')}: {message.replace('[', '.').replace('(', '.')}"):
            validate(make_config("gym", **{name: bad}))


def test_budget_notes_only_for_components_in_play():
    dqn = make_config("atari", steps=20_000)
    notes = adapt_to_budget(dqn, explicit={"steps"})
    assert any("evaluation episodes capped at 5000" in n for n in notes) and dqn.learning_starts == 2_000
    supervised = make_config("supervised", scenario="split-digits", steps=10)
    assert adapt_to_budget(supervised, explicit={"steps"}) == []  # no episodes, no epsilon, no target network


def test_in_play_follows_the_picked_components():
    cfg = make_config("gym", intervention="redo", agent="dqn", torso="impala", moe="softmoe")
    names = {cls.__name__ for cls in parts_in_play(cfg, "gym")}
    assert {"RunOptions", "DQNOptions", "RedoOptions", "ImpalaOptions", "SoftMoEOptions", "GymOptions",
            "MetricsOptions", "AdamOptions"} <= names
    assert not names & {"SupportOptions", "HLGaussOptions", "MLPOptions", "ClassifierOptions", "AtariOptions"}


def test_an_option_name_declared_twice_is_refused():
    @dataclass
    class Clash:
        redo_tau: float = opts.option(0.2, "same name as ReDo's")

    with pytest.raises(ValueError, match="redo_tau.*already declared by RedoOptions"):
        Registry("thing", "--thing").register("clash", "a clash", options=Clash)(lambda cfg: None)


def test_public_config_knows_component_options_in_a_fresh_interpreter():
    # crl.Config(...) / crl.make_config(...) from a user script: the built-in components must have
    # declared their options (DQN's learning_starts, MinAtar's game) before the names are checked.
    code = ("import crl; c = crl.Config(agent='dqn', learning_starts=5); "
            "m = crl.make_config('minatar', scenario='minatar', game='breakout'); print(c.learning_starts, m.game)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5", "breakout"]
