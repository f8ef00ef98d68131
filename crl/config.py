"""One typed config per run; every field is a CLI flag (``--field-name``) with a help line.

Subcommands start from different defaults (:data:`PRESETS`): ``crl atari`` uses the
Dopamine DQN settings on Atari, ``crl gym`` settings that solve classic-control tasks.
The resolved config is written to ``config.yaml`` in the run directory and can be loaded
back with :func:`load_config`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from crl.errors import UserError


def _f(default: Any, help: str, **meta: Any):
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class Config:
    # --- what to run ---------------------------------------------------------------
    scenario: str = _f("atari", "scenario name (see `crl --help`) or, for `crl run`, a path to a .py file")
    agent: str = _f("dqn-hlgauss", "learner (agents registry)")
    torso: str = _f("nature", "network torso (torsos registry)")
    norm: str = _f("none", "normalization before each nonlinearity (norms registry)")
    intervention: str = _f("", "comma-separated interventions, e.g. 'redo,l2-init' ('nap' is implied by --norm nap)")
    moe: str = _f("none", "'softmoe' replaces the penultimate dense layer of a conv torso with a SoftMoE", choices=("none", "softmoe"))
    num_experts: int = _f(8, "SoftMoE experts")
    expert_hidden: int = _f(512, "hidden units of each SoftMoE expert")
    impala_width: int = _f(1, "channel multiplier of the Impala ResNet")
    mlp_hidden: str = _f("256,256", "hidden sizes of the MLP torso, comma-separated")
    # --- run control -----------------------------------------------------------------
    seed: int = _f(0, "seed for python, numpy, torch and the environments")
    device: str = _f("auto", "auto (CUDA when present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    steps: int = _f(10_000_000, "env steps per task (agent steps, i.e. 4 frames each on Atari)")
    eval_every: int = _f(250_000, "env steps between evaluation sweeps over all tasks")
    eval_episodes: int = _f(10, "episodes per task and evaluation")
    eval_max_steps: int = _f(27_000, "cap on agent steps per evaluation episode (27,000 = Atari's 108k frames)")
    checkpoint_every: int = _f(500_000, "env steps between checkpoints (also one at each task end)")
    checkpoint_replay: bool = _f(True, "store the replay buffer in checkpoints (needed for exact resume)")
    run_dir: str = _f("runs", "root directory of run directories")
    name: str = _f("", "run directory name (default: seed<k>-<timestamp>)")
    resume: str = _f("", "continue the run in this run directory from its last checkpoint")
    log_every: int = _f(1_000, "env steps between train/* scalars")
    progress: bool = _f(True, "show a progress bar")
    # --- environment -----------------------------------------------------------------
    game: str = _f("breakout", "Atari game (ale-py ROM id, e.g. breakout, pong, ms_pacman)")
    env_id: str = _f("CartPole-v1", "gymnasium id for `crl gym` (discrete actions, vector observations)")
    num_envs: int = _f(8, "parallel environments of the vector env")
    sticky_actions: float = _f(0.25, "repeat_action_probability per emulator frame (Machado et al. 2018)")
    full_action_space: bool = _f(False, "use all 18 Atari actions")
    max_episode_frames: int = _f(108_000, "Atari episode cap in frames (truncation, bootstrapped)")
    data_dir: str = _f("data", "where datasets that cannot be downloaded (CIFAR, MNIST) are read from")
    # --- DQN -------------------------------------------------------------------------
    gamma: float = _f(0.99, "discount")
    n_step: int = _f(1, "n-step returns")
    batch_size: int = _f(32, "transitions per update")
    buffer_size: int = _f(1_000_000, "replay capacity in transitions")
    learning_starts: int = _f(20_000, "env steps of random-policy data before the first update")
    train_freq: int = _f(4, "env steps per update (replay ratio = batch_size / train_freq)")
    target_update: int = _f(8_000, "env steps between hard target-network copies")
    double_dqn: bool = _f(True, "select the next action with the online network (van Hasselt et al. 2016)")
    eps_start: float = _f(1.0, "initial exploration epsilon")
    eps_end: float = _f(0.01, "final exploration epsilon")
    eps_decay_steps: int = _f(250_000, "env steps of linear epsilon decay")
    eval_eps: float = _f(0.001, "epsilon during evaluation")
    clip_rewards: bool = _f(True, "clip rewards to [-1, 1] for learning (raw scores are logged)")
    max_grad_norm: float = _f(10.0, "gradient norm clip (0 = off)")
    reset_replay_per_task: bool = _f(False, "empty the replay buffer at each task change")
    # --- value head --------------------------------------------------------------------
    num_bins: int = _f(51, "bins of categorical heads (HL-Gauss, two-hot, C51 atoms)")
    v_min: float = _f(-10.0, "lower end of the value support")
    v_max: float = _f(10.0, "upper end of the value support")
    sigma_ratio: float = _f(0.75, "HL-Gauss sigma / bin width (Farebrother et al. 2024)")
    # --- optimisation ------------------------------------------------------------------
    optimizer: str = _f("adam", "optimizer (optimizers registry)")
    lr: float = _f(6.25e-5, "learning rate (peak when a schedule is used)")
    adam_eps: float = _f(1.5e-4, "Adam epsilon")
    weight_decay: float = _f(0.0, "weight decay (decoupled for adamw/adamp)")
    lr_schedule: str = _f("constant", "constant, linear or cosine", choices=("constant", "linear", "cosine"))
    lr_warmup: int = _f(0, "updates of linear warmup")
    lr_restart_per_task: str = _f("auto", "restart the schedule at each task: auto (on for --norm nap), on, off",
                                  choices=("auto", "on", "off"))
    # --- metrics -----------------------------------------------------------------------
    metrics_every: int = _f(10_000, "env steps between plasticity metrics (0 = off)")

    def mlp_sizes(self) -> list[int]:
        try:
            sizes = [int(s) for s in self.mlp_hidden.split(",") if s.strip()]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) <= 0:
            raise UserError(f"--mlp-hidden: expected positive integers like '256,256', got '{self.mlp_hidden}'")
        return sizes

    def interventions(self) -> list[str]:
        names = [n.strip() for n in self.intervention.split(",") if n.strip()]
        if self.norm == "nap" and "nap" not in names:
            names.insert(0, "nap")
        return names


PRESETS: dict[str, dict[str, Any]] = {
    # Dopamine DQN (dqn.gin) with Adam; HL-Gauss support [-10, 10], 51 bins (value_heads_and_torsos.md 1.3).
    "atari": {},
    # Classic control: small MLP, fast learning, unclipped rewards, returns up to ~100 with gamma 0.99.
    "gym": dict(torso="mlp", num_envs=1, steps=100_000, eval_every=5_000, eval_episodes=10, eval_max_steps=1_000,
                checkpoint_every=25_000, buffer_size=50_000, learning_starts=1_000, train_freq=1, batch_size=64,
                target_update=500, eps_decay_steps=10_000, eps_end=0.05, eval_eps=0.0, clip_rewards=False,
                lr=1e-3, adam_eps=1e-8, v_min=-10.0, v_max=110.0, log_every=500, metrics_every=5_000),
}


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def config_fields() -> list[dataclasses.Field]:
    return list(fields(Config))


def make_config(preset: str = "atari", **overrides: Any) -> Config:
    values = {**PRESETS.get(preset, {}), **overrides}
    names = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"config: unknown field(s) {', '.join(unknown)}")
    return Config(**values)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def load_config(path: Path) -> Config:
    """Read a ``config.yaml``; unknown keys or wrong types are a UserError, not a traceback."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"config: cannot read {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config: {path} is not a mapping of field: value")
    by_name = {f.name: f for f in fields(Config)}
    for key, value in data.items():
        if key not in by_name:
            raise UserError(f"config: {path}: unknown field '{key}'")
        data[key] = coerce(by_name[key], value, source=f"{path}: {key}")
    return Config(**data)


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
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if out != out:
                raise ValueError
            return out
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError
        value = str(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{source}: expected {kind.__name__}, got '{value}'") from None
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UserError(f"{source}: '{value}' is not one of {', '.join(choices)}")
    return value


_POSITIVE = ("steps", "eval_every", "eval_episodes", "eval_max_steps", "checkpoint_every", "num_envs", "n_step",
             "batch_size", "buffer_size", "train_freq", "target_update", "num_bins", "num_experts",
             "expert_hidden", "impala_width", "log_every")
_NON_NEGATIVE = ("learning_starts", "eps_decay_steps", "lr_warmup", "metrics_every", "weight_decay", "max_grad_norm")
_UNIT_INTERVAL = ("gamma", "sticky_actions", "eps_start", "eps_end", "eval_eps")


def validate(cfg: Config) -> None:
    """Range checks that do not need the registries; one UserError naming the flag."""
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    for name in _POSITIVE:
        if getattr(cfg, name) <= 0:
            raise UserError(f"{flag(name)}: must be > 0, got {getattr(cfg, name)}")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise UserError(f"{flag(name)}: must be >= 0, got {getattr(cfg, name)}")
    for name in _UNIT_INTERVAL:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise UserError(f"{flag(name)}: must be in [0, 1], got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise UserError(f"--lr: must be > 0, got {cfg.lr}")
    if not cfg.v_min < cfg.v_max:
        raise UserError(f"--v-min/--v-max: need v_min < v_max, got {cfg.v_min} >= {cfg.v_max}")
    if cfg.buffer_size < cfg.num_envs * 2:
        raise UserError(f"--buffer-size: must hold at least 2 transitions per env ({cfg.num_envs * 2}), got {cfg.buffer_size}")
    if cfg.sigma_ratio <= 0:
        raise UserError(f"--sigma-ratio: must be > 0, got {cfg.sigma_ratio}")
    cfg.mlp_sizes()


def adapt_to_budget(cfg: Config, explicit: set[str]) -> list[str]:
    """Shrink schedules that would not fit a short budget (e.g. a 20k-step demo).

    Only fields the user did not set are changed; each change is returned as a note the
    CLI prints, so a short run never silently differs from the defaults.
    """
    notes = []
    budget = cfg.steps
    if "learning_starts" not in explicit and cfg.learning_starts > budget // 2:
        new = max(budget // 10, cfg.batch_size)
        notes.append(f"--steps {budget} is shorter than twice the default learning start "
                     f"({cfg.learning_starts}); learning starts at {new} instead")
        cfg.learning_starts = new
    if "eps_decay_steps" not in explicit and cfg.eps_decay_steps > budget // 2:
        new = max(budget // 10, 1)
        notes.append(f"epsilon decays over {new} steps instead of {cfg.eps_decay_steps} to fit --steps {budget}")
        cfg.eps_decay_steps = new
    if "target_update" not in explicit and cfg.target_update > budget // 10:
        new = max(budget // 10, cfg.train_freq)
        notes.append(f"target network copied every {new} steps instead of {cfg.target_update} to fit --steps {budget}")
        cfg.target_update = new
    return notes
