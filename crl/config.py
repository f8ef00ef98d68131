"""One config per run: the common options below plus the options of every component.

:class:`RunOptions` holds what every run has (what to run, budget, logging, optimizer
basics); each agent, torso, norm, head, intervention, optimizer and scenario declares its own
options beside its code (:mod:`crl.options`). :class:`Config` composes them into one flat
namespace: ``cfg.steps``, ``cfg.redo_tau``, each a flag (``--redo-tau``) and a key of the
``config.yaml`` written to the run directory and read back by :func:`load_config`.

Subcommands start from different defaults (:data:`PRESETS`): ``crl atari`` uses the
Dopamine DQN settings on Atari (the components' own defaults), ``crl gym`` settings that
solve classic-control tasks, ``supervised`` the classifier's.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crl import options as opts
from crl.errors import UserError, did_you_mean
from crl.options import option


@dataclass
class RunOptions:
    """Options every run has."""

    scenario: str = option("atari", "scenario name or, for `crl run`, a path to a .py file", section="what to run")
    agent: str = option("dqn-hlgauss", "learner (crl help: agents)", section="what to run")
    torso: str = option("nature", "network torso (crl help: torsos)", section="what to run")
    norm: str = option("none", "normalization before each nonlinearity (crl help: norms)", section="what to run")
    activation: str = option("relu", "nonlinearity after each norm, in every torso (crl help: activations)",
                             section="what to run")
    reparam: str = option("none", "weight reparameterization of every Linear/Conv weight of the torso, e.g. "
                                  "compander (crl help: reparams)", section="what to run")
    intervention: str = option("", "comma-separated interventions, e.g. 'redo,l2-init' ('nap' is implied by --norm "
                                   "nap)", section="what to run")
    moe: str = option("none", "'softmoe' replaces the penultimate dense layer of a conv torso with a SoftMoE",
                      choices=("none", "softmoe"), section="what to run")
    seed: int = option(0, "seed for python, numpy, torch and the environments", check="non_negative",
                       section="run control")
    device: str = option("auto", "auto (CUDA when present), cpu or cuda", choices=("auto", "cpu", "cuda"),
                         section="run control")
    steps: int = option(10_000_000, "steps per task (env steps in RL, updates in supervised scenarios)",
                        check="positive", section="run control")
    eval_every: int = option(250_000, "steps between evaluations of all tasks (also one at each task end)",
                             check="positive", section="run control")
    checkpoint_every: int = option(500_000, "steps between checkpoints (also one at each task end)", check="positive",
                                   section="run control")
    run_dir: str = option("runs", "root directory of run directories", section="run control")
    name: str = option("", "run directory name (default: seed<k>-<timestamp>)", section="run control")
    resume: str = option("", "continue the run in this run directory from its last checkpoint",
                         section="run control")
    log_every: int = option(1_000, "steps between train/* scalars and progress updates", check="positive",
                            section="run control")
    progress: bool = option(True, "show progress (a bar on a terminal, plain lines otherwise)", section="run control")
    guard_copy_every: int = option(10, "NaN guard: copy the parameters every N updates (restored if one turns "
                                       "non-finite; 1 = exactly the last good update)", check="positive",
                                   section="run control")
    batch_size: int = option(32, "samples per update", check="positive", section="optimisation")
    optimizer: str = option("adam", "optimizer (crl help: optimizers)", section="optimisation")
    lr: float = option(6.25e-5, "learning rate (peak when a schedule is used)", check="positive",
                       section="optimisation")
    weight_decay: float = option(0.0, "weight decay (decoupled for adamw/adamp)", check="non_negative",
                                 section="optimisation")
    lr_schedule: str = option("constant", "constant, linear or cosine", choices=("constant", "linear", "cosine"),
                              section="optimisation")
    lr_warmup: int = option(0, "updates of linear warmup", check="non_negative", section="optimisation")
    lr_restart_per_task: str = option("auto", "restart the schedule at each task: auto (on for --norm nap), on, off",
                                      choices=("auto", "on", "off"), section="optimisation")
    max_grad_norm: float = option(10.0, "gradient norm clip (0 = off)", check="non_negative", section="optimisation")

    def check(self, cfg: Config) -> None:
        if cfg.seed >= 2 ** 32:  # numpy's limit (fuzz: --seed -3 and 2**32 were numpy tracebacks)
            raise UserError(f"--seed: must be < 2**32, got {cfg.seed}")


opts.declare_common(RunOptions)


class Config:
    """The resolved options of one run: :class:`RunOptions` plus every component's options.

    ``Config(steps=20_000, redo_tau=0.05)``; unknown names are a :class:`UserError`. Read and set
    any option as an attribute; :meth:`options` returns one component's typed dataclass.
    """

    def __init__(self, **values: Any):
        from crl.registry import load_builtins  # the built-in components declare their options on import

        load_builtins()
        known = opts.option_fields()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(f"config: unknown field(s) {', '.join(unknown)}")
        grouped: dict[type, dict[str, Any]] = {}
        for name, value in values.items():
            grouped.setdefault(opts.owner(name), {})[name] = value
        object.__setattr__(self, "_parts", {cls: cls(**vals) for cls, vals in grouped.items()})

    def options(self, cls: type) -> Any:
        """The options dataclass ``cls`` of this run (its defaults if none was set)."""
        parts = self.__dict__["_parts"]
        if cls not in parts:  # e.g. declared by a user file imported after this config was made
            parts[cls] = cls()
        return parts[cls]

    def __getattr__(self, name: str) -> Any:
        cls = opts.owner(name) if not name.startswith("_") else None
        if cls is None:
            raise AttributeError(f"config has no option '{name}'")
        return getattr(self.options(cls), name)

    def __setattr__(self, name: str, value: Any) -> None:
        cls = opts.owner(name)
        if cls is None:
            raise AttributeError(f"config has no option '{name}'")
        setattr(self.options(cls), name, value)

    def to_dict(self) -> dict[str, Any]:
        """Every option by name (the content of ``config.yaml``)."""
        return {name: getattr(self, name) for name in opts.option_fields()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.to_dict().items() if v != _default(k)}
        return f"Config({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def interventions(self) -> list[str]:
        names = [n.strip() for n in self.intervention.split(",") if n.strip()]
        if self.norm == "nap" and "nap" not in names:
            names.insert(0, "nap")
        return names


def _default(name: str) -> Any:
    f = opts.option_fields()[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def parts_in_play(cfg: Config, scenario: str | None = None) -> dict[type, str]:
    """The options classes this run uses, each with the component that brings it (e.g.
    ``"intervention redo"``): the common ones, those of its agent, value head, torso, norm,
    activation, reparameterization, optimizer, interventions and scenario (``scenario``: its
    registered name, when ``cfg.scenario`` is a file), and the parts whose own test says they
    are used."""
    from crl.registry import ACTIVATIONS, AGENTS, HEADS, INTERVENTIONS, NORMS, OPTIMIZERS, REPARAMS, SCENARIOS, TORSOS

    picked = [(AGENTS, cfg.agent), (TORSOS, cfg.torso), (NORMS, cfg.norm), (ACTIVATIONS, cfg.activation),
              (REPARAMS, cfg.reparam), (OPTIMIZERS, cfg.optimizer),
              (SCENARIOS, scenario or cfg.scenario), *((INTERVENTIONS, n) for n in cfg.interventions())]
    if cfg.agent in AGENTS and AGENTS.entry(cfg.agent).meta.get("head"):
        picked.insert(1, (HEADS, AGENTS.entry(cfg.agent).meta["head"]))
    if opts.owner("loss") is not None:  # the classifier's --loss (crl/losses/): its options, e.g. --zloss-a
        from crl.registry import LOSSES

        picked.append((LOSSES, cfg.loss))
    out: dict[type, str] = {RunOptions: "common"}
    for registry, name in picked:
        if name in registry:
            for cls in registry.entry(name).options:
                out.setdefault(cls, f"{registry.kind} {name}")
    for cls, test in opts.TABLE.in_play.items():
        if test(cfg):
            out.setdefault(cls, opts.title(cls))
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # Dopamine DQN (dqn.gin) with Adam; HL-Gauss support [-10, 10], 51 bins (value_heads_and_torsos.md 1.3).
    "atari": {},
    # Classic control: small MLP, fast learning, unclipped rewards, returns up to ~100 with gamma 0.99.
    "gym": dict(torso="mlp", mlp_hidden="128,128", num_envs=1, steps=100_000, eval_every=5_000, eval_episodes=10, eval_max_steps=1_000,
                checkpoint_every=25_000, buffer_size=50_000, learning_starts=1_000, train_freq=2, batch_size=64,
                target_update=500, eps_decay_steps=10_000, eps_end=0.05, eval_eps=0.0, clip_rewards=False,
                lr=1e-3, adam_eps=1e-8, v_min=-10.0, v_max=110.0, log_every=500, metrics_every=5_000),
    # Supervised scenarios (`crl run split-digits`): small MLP, Adam, 20 epochs per task, eval at task ends only.
    "supervised": dict(agent="classifier", torso="mlp", mlp_hidden="100,100", optimizer="adam", lr=1e-3,
                       adam_eps=1e-8, batch_size=32, epochs=20.0, steps=1_000, eval_every=1_000_000_000,
                       checkpoint_every=1_000_000_000, log_every=50, metrics_every=500, max_grad_norm=0.0),
    # MinAtar's reference DQN (Young & Tian 2019 and examples/dqn.py of kenjyoung/MinAtar); every value and its
    # source: README.md, section "MinAtar". One env, one update per env step, no double DQN, no gradient clip.
    "minatar": dict(agent="dqn", torso="minatar", full_action_space=True, num_envs=1, steps=5_000_000,
                    buffer_size=100_000, batch_size=32, learning_starts=5_000, train_freq=1, target_update=1_000,
                    eps_start=1.0, eps_end=0.1, eps_decay_steps=100_000, gamma=0.99, n_step=1, double_dqn=False,
                    clip_rewards=False, optimizer="rmsprop", lr=2.5e-4, rmsprop_alpha=0.95, rmsprop_eps=0.01,
                    rmsprop_centered=True, max_grad_norm=0.0, minatar_sticky_actions=0.1,
                    minatar_difficulty_ramping=True, v_min=-10.0, v_max=100.0, eval_every=250_000, eval_episodes=10,
                    eval_eps=0.0, eval_max_steps=10_000, checkpoint_every=250_000, log_every=1_000,
                    compile_optimizer=True, channels_last=False),
}
PRESETS["sequential-minatar"] = {**PRESETS["minatar"], "steps": 500_000, "cycles": 2, "eval_every": 100_000,
                                 "checkpoint_every": 100_000}  # shorter: 5 games x 2 cycles x 500k = 5M env steps


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def make_config(preset: str = "atari", **overrides: Any) -> Config:
    return Config(**{**PRESETS.get(preset, {}), **overrides})


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_config(path: Path) -> Config:
    """Read a ``config.yaml``; unknown keys or wrong types are a UserError, not a traceback."""
    return Config(**read_config_values(path))


def read_config_values(path: Path) -> dict[str, Any]:
    """The ``field: value`` pairs of a YAML file, each checked with :func:`coerce` (``--config FILE``)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:  # fuzz: binary files raised UnicodeDecodeError
        raise UserError(f"config: cannot read {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config: {path} is not a mapping of field: value")
    by_name = opts.option_fields()
    for key, value in data.items():
        if key not in by_name:
            raise UserError(f"config: {path}: unknown field '{key}'")
        data[key] = coerce(by_name[key], value, source=f"{path}: {key}")
    return data


def coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Convert ``value`` to the type of field ``f``; a clear UserError when it cannot be."""
    kind = type(f.default)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            if isinstance(value, str) and "e" in value.lower():  # 1e6; not 2.5e0 (fuzz: was silently 2)
                as_float = float(value)
                if not as_float.is_integer():
                    raise ValueError
                return int(as_float)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):  # NaN and +-inf (also 1e400) are never a setting (fuzz: inf got through)
                raise UserError(f"{source}: expected a finite number, got '{value}'")
            return out
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError
        value = str(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{source}: expected {kind.__name__}, got '{value}'") from None
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UserError(f"{source}: '{value}' is not one of {', '.join(choices)}{did_you_mean(value, choices)}")
    return value


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg: Config) -> None:
    """Each option's range check, then each options class's ``check(cfg)`` for what spans
    several options; one UserError naming the flag. Needs no registry lookup."""
    for name, f in opts.option_fields().items():
        check = f.metadata.get("check")
        if check is not None:
            test, message = opts.CHECKS[check]
            value = getattr(cfg, name)
            if not test(value):
                raise UserError(f"{flag(name)}: {message}, got {value}")
    for cls in opts.TABLE.classes:
        if hasattr(cls, "check"):
            cfg.options(cls).check(cfg)


def adapt_to_budget(cfg: Config, explicit: set[str]) -> list[str]:
    """Shrink schedules that would not fit a short budget (e.g. a 20k-step demo).

    Each options class in play may define ``fit_budget(cfg, explicit) -> notes`` (the DQN agent
    does: learning start, epsilon decay, target sync, evaluation episode cap). Only options the
    user did not set are changed; each change is returned as a note the CLI prints, so a short
    run never silently differs from the defaults.
    """
    notes = []
    for cls in parts_in_play(cfg):
        if hasattr(cls, "fit_budget"):
            notes += cfg.options(cls).fit_budget(cfg, explicit)
    return notes
