"""One typed config per run; every field is a CLI flag (``--field-name``) with a help line.

Subcommands start from different defaults (:data:`PRESETS`): ``crl atari`` uses the
Dopamine DQN settings on Atari, ``crl gym`` settings that solve classic-control tasks.
The resolved config is written to ``config.yaml`` in the run directory and can be loaded
back with :func:`load_config`.
"""
from __future__ import annotations

import dataclasses
import math
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
    # --- continual scenarios (scenarios/) --------------------------------------------------
    games: str = _f("", "sequential-atari: comma-separated games, each 'game[:mode[:difficulty]]' (ALE modes and "
                        "difficulties as tasks); empty = the 6 games of CORA")
    cycles: int = _f(1, "times the whole task sequence is repeated (sequential-atari, split and plasticity scenarios)")
    # --- supervised -----------------------------------------------------------------------
    dataset: str = _f("digits", "dataset of the plasticity scenarios: digits (scikit-learn, offline), mnist, "
                                "cifar10, cifar100 (read from --data-dir)",
                      choices=("digits", "mnist", "cifar10", "cifar100"))
    n_tasks: int = _f(0, "tasks (experiences) of split, permuted and plasticity scenarios; 0 = the scenario default")
    shuffle_classes: bool = _f(True, "split scenarios: class order shuffled by --seed (else 0, 1, 2, ...)")
    max_train_samples: int = _f(0, "use a fixed subset of this many training samples of the dataset (0 = all)")
    strategy: str = _f("naive", "classifier strategy: naive, replay (ER, reservoir), er-ace (Caccia et al. 2022), "
                                "der++ (Buzzega et al. 2020)", choices=("naive", "replay", "er-ace", "der++"))
    online: bool = _f(False, "online continual learning: one pass over each task's data (AdaB2N protocol: "
                             "--batch-size 10, replay batch 10)")
    epochs: float = _f(1.0, "offline: passes over each task's training data (a task's own steps win); "
                            "0 = --steps updates per task")
    il_mode: str = _f("class", "class: one head over all classes (class-incremental); task: logits masked to "
                               "the sample's task classes in training and evaluation (task-incremental)",
                      choices=("class", "task"))
    replay_size: int = _f(500, "replay memory of the classifier in samples (reservoir sampling)")
    replay_batch_size: int = _f(0, "replay samples per update (0 = --batch-size)")
    der_alpha: float = _f(0.2, "DER++ weight of the logit-matching (MSE) term")
    der_beta: float = _f(0.5, "DER++ weight of the replayed-label cross-entropy term")
    eval_batch_size: int = _f(512, "samples per forward in supervised evaluation")
    label_shuffle_eps: float = _f(0.2, "label-shuffle: fraction of labels re-drawn at each task")
    relabel_every: int = _f(0, "random-labels / label-shuffle: updates per task, i.e. labels re-drawn every K "
                               "updates (0 = use --epochs)")
    warm_start_fraction: float = _f(0.5, "warm-start: fraction of the training data of the first task")
    resnet_width: int = _f(20, "channels of the first stage of the reduced ResNet-18 (nf; 20 in GEM/mammoth)")
    adab2n_lambda: float = _f(0.1, "weight of the AdaB2N adaptation loss (official grid 0.01-10; no official default)")
    adab2n_t0: int = _f(0, "task index from which the AdaB2N adaptation loss is added (official ada_t0)")
    # --- interventions -------------------------------------------------------------------
    redo_tau: float = _f(0.1, "redo: a unit is dormant when its normalised mean |activation| is <= this")
    redo_every: int = _f(1_000, "redo: optimizer updates between recycles")
    redo_init: str = _f("layer", "redo: incoming-weight init of recycled units: layer (the layer's own "
                                 "reset_parameters) or xavier (xavier_uniform, as Dopamine)", choices=("layer", "xavier"))
    sp_form: str = _f("fresh", "shrink-perturb: perturb toward a fresh random init each time (fresh) or toward "
                               "the saved initial parameters (fixed)", choices=("fresh", "fixed"))
    sp_shrink: float = _f(0.5, "shrink-perturb: lambda in theta <- lambda*theta + p*theta_new")
    sp_perturb: float = _f(0.5, "shrink-perturb: p in theta <- lambda*theta + p*theta_new")
    sp_every: int = _f(0, "shrink-perturb: also apply every this many optimizer updates (0 = off)")
    sp_task_start: bool = _f(True, "shrink-perturb: apply at the start of every task after the first")
    l2_init_coef: float = _f(1e-4, "l2-init: lambda of the penalty lambda*||theta - theta0||^2")
    reset_layers: str = _f("output", "reset: output, last2 (output + penultimate block) or comma-separated "
                                     "module names")
    reset_every_task: bool = _f(True, "reset: re-initialise at the start of every task after the first")
    reset_every: int = _f(0, "reset: also re-initialise every this many optimizer updates (0 = off)")
    reset_target: bool = _f(True, "reset: copy the re-initialised layers into the learner's target network")
    bn_only_train_output: bool = _f(False, "bn-only: also train the output layer (default: only norm parameters)")
    meta_features: str = _f("loss,loss_z,entropy,margin,gradnorm", "meta-rescale: rescaler inputs, comma-separated "
                                                                   "from loss, loss_z, entropy, margin, gradnorm")
    meta_hidden: int = _f(64, "meta-rescale: hidden units of the rescaler MLP")
    meta_output: str = _f("sigmoid", "meta-rescale: rescaler output, 2*sigmoid or softplus/log(2)",
                          choices=("sigmoid", "softplus"))
    meta_normalize: bool = _f(True, "meta-rescale: normalise the weights to mean 1 over each batch")
    meta_lr: float = _f(1e-3, "meta-rescale: learning rate of the rescaler's optimizer")
    meta_inner_lr: float = _f(0.1, "meta-rescale: SGD lr of the virtual look-ahead step (Meta-Weight-Net: 0.1; "
                                   "0 = the learner's lr)")
    meta_weight_decay: float = _f(1e-4, "meta-rescale: L2 weight decay of the rescaler's optimizer "
                                        "(Meta-Weight-Net: 1e-4)")
    meta_optimizer: str = _f("adam", "meta-rescale: the rescaler's optimizer, adam or sgd (Nesterov momentum 0.9)",
                             choices=("adam", "sgd"))
    meta_every: int = _f(1, "meta-rescale: optimizer updates between meta steps")
    meta_val: str = _f("small-loss", "meta-rescale: validation batch from the training data: small-loss (the "
                                     "smallest-loss fraction --meta-keep of uniform candidates; Co-teaching's "
                                     "criterion), sampled (drawn from a pool in proportion to the weights), uniform, "
                                     "or weighted (uniform, loss weighted)",
                       choices=("small-loss", "sampled", "uniform", "weighted"))
    meta_keep: float = _f(0.5, "meta-rescale: --meta-val small-loss keeps this fraction of its candidates "
                               "(Co-teaching's 1 - noise rate; should not exceed 1 - the expected noise rate)")
    meta_loss: str = _f("mae", "meta-rescale: meta loss on the validation batch: mae (1 - exp(-loss): 1 - p(y|x) "
                               "for cross-entropy, noise-robust) or ce (the learner's per-sample loss as is)",
                        choices=("mae", "ce"))
    meta_val_size: int = _f(0, "meta-rescale: validation batch size (0 = the training batch size)")
    meta_pool: int = _f(4, "meta-rescale: candidate pool for --meta-val sampled, in validation batches")
    meta_warmup: int = _f(0, "meta-rescale: updates with all weights 1 before the rescaler is used")
    meta_reset_per_task: bool = _f(False, "meta-rescale: restart the rescaler and its statistics at each task")
    # --- speed (agents/fast.py; defaults = fastest measured on CPU, docs/results/throughput.md) ---
    fused_optimizer: bool = _f(True, "Adam/AdamW: PyTorch's fused kernel, one for all parameters (same update rule)")
    guard_copy_every: int = _f(10, "NaN guard: copy the parameters every N updates (restored if one turns non-finite; "
                                   "1 = exactly the last good update, ~1 ms per Nature-CNN update on CPU)")
    channels_last: bool = _f(True, "conv torsos: weights and image batches in channels-last layout (faster convs)")
    overlap_env: bool = _f(True, "ale-py vector env: step it (send/recv) while the due updates run, which then sample "
                                 "replay without that env step (1.08x env steps/s on the idle 2-core CPU)")
    fused_forward: bool = _f(False, "double DQN: one online forward over obs and next_obs (fewer GPU launches; more "
                                    "backward work on CPU); only with per-sample norms")
    compile: bool = _f(False, "torch.compile the online and target networks (minutes of compiling; no gain measured "
                              "on CPU)")
    cuda_graphs: bool = _f(False, "CUDA: capture the update's forward and backward once, replay it on each batch")
    amp_bf16: bool = _f(False, "bfloat16 autocast of the network forwards; value-head losses stay float32 "
                               "(changes numerics; slower on CPU without AMX)")
    # --- metrics -----------------------------------------------------------------------
    metrics_every: int = _f(10_000, "env steps between plasticity metrics (0 = off)")
    probe_steps: int = _f(20, "plasticity probe: Adam steps a copy of the network takes on random regression targets "
                              "(Lyle et al. 2023) at a metric step (0 = no probe)")
    probe_every: int = _f(1, "plasticity probe on every Nth metric step (the other metrics run on each one)")

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
    "gym": dict(torso="mlp", mlp_hidden="128,128", num_envs=1, steps=100_000, eval_every=5_000, eval_episodes=10, eval_max_steps=1_000,
                checkpoint_every=25_000, buffer_size=50_000, learning_starts=1_000, train_freq=2, batch_size=64,
                target_update=500, eps_decay_steps=10_000, eps_end=0.05, eval_eps=0.0, clip_rewards=False,
                lr=1e-3, adam_eps=1e-8, v_min=-10.0, v_max=110.0, log_every=500, metrics_every=5_000),
    # Supervised scenarios (`crl run split-digits`): small MLP, Adam, 20 epochs per task, eval at task ends only.
    # learning_starts/eps_decay_steps/target_update are DQN fields, set here only to keep adapt_to_budget quiet.
    "supervised": dict(agent="classifier", torso="mlp", mlp_hidden="100,100", optimizer="adam", lr=1e-3,
                       adam_eps=1e-8, batch_size=32, epochs=20.0, steps=1_000, eval_every=1_000_000_000,
                       checkpoint_every=1_000_000_000, log_every=50, metrics_every=500, max_grad_norm=0.0,
                       learning_starts=0, eps_decay_steps=0, target_update=1),
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
    return Config(**read_config_values(path))


def read_config_values(path: Path) -> dict[str, Any]:
    """The ``field: value`` pairs of a YAML file, each checked with :func:`coerce` (``--config FILE``)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:  # fuzz: binary files raised UnicodeDecodeError
        raise UserError(f"config: cannot read {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config: {path} is not a mapping of field: value")
    by_name = {f.name: f for f in fields(Config)}
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
        raise UserError(f"{source}: '{value}' is not one of {', '.join(choices)}")
    return value


_POSITIVE = ("steps", "eval_every", "eval_episodes", "eval_max_steps", "checkpoint_every", "num_envs", "n_step",
             "batch_size", "buffer_size", "train_freq", "target_update", "num_bins", "num_experts",
             "expert_hidden", "impala_width", "log_every",
             # found by tests/test_fuzz.py (negative or zero values were accepted):
             "max_episode_frames", "cycles", "eval_batch_size", "resnet_width", "redo_every", "meta_hidden",
             "meta_every", "meta_pool", "meta_lr", "probe_every",
             "guard_copy_every")
_NON_NEGATIVE = ("learning_starts", "eps_decay_steps", "lr_warmup", "metrics_every", "weight_decay", "max_grad_norm",
                 # found by tests/test_fuzz.py (0 means "off"/"default" for several of these; negatives were accepted):
                 "seed", "n_tasks", "max_train_samples", "replay_size", "replay_batch_size", "epochs",
                 "relabel_every", "adab2n_lambda", "adab2n_t0", "der_alpha", "der_beta", "sp_every", "reset_every",
                 "l2_init_coef", "meta_inner_lr", "meta_weight_decay", "meta_val_size", "meta_warmup", "redo_tau", "sp_shrink",
                 "sp_perturb", "adam_eps", "probe_steps")
_UNIT_INTERVAL = ("gamma", "sticky_actions", "eps_start", "eps_end", "eval_eps", "label_shuffle_eps",
                  "warm_start_fraction")


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
    if cfg.seed >= 2 ** 32:  # numpy's limit (fuzz: --seed -3 and 2**32 were numpy tracebacks)
        raise UserError(f"--seed: must be < 2**32, got {cfg.seed}")
    if not cfg.v_min < cfg.v_max:
        raise UserError(f"--v-min/--v-max: need v_min < v_max, got {cfg.v_min} >= {cfg.v_max}")
    if cfg.buffer_size < cfg.num_envs * 2:
        raise UserError(f"--buffer-size: must hold at least 2 transitions per env ({cfg.num_envs * 2}), got {cfg.buffer_size}")
    if cfg.sigma_ratio <= 0:
        raise UserError(f"--sigma-ratio: must be > 0, got {cfg.sigma_ratio}")
    if not 0.0 < cfg.meta_keep <= 1.0:
        raise UserError(f"--meta-keep: must be in (0, 1], got {cfg.meta_keep}")
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
    cap = max(budget // 4, 1_000)
    if "eval_max_steps" not in explicit and cfg.eval_max_steps > cap:
        # An agent this short-trained often stalls (e.g. never presses FIRE): don't let one eval outlast training.
        notes.append(f"evaluation episodes capped at {cap} steps instead of {cfg.eval_max_steps} to fit --steps {budget}")
        cfg.eval_max_steps = cap
    return notes
