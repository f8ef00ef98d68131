"""DQN with interchangeable value heads (Mnih et al. 2015; double DQN, van Hasselt et al. 2016).

Heads (``crl.nn.heads``): scalar with Huber (``dqn``) or MSE (``dqn-mse``) loss, HL-Gauss
cross-entropy (``dqn-hlgauss``, Farebrother et al. 2024, arXiv 2403.03950), two-hot
(``dqn-twohot``) and C51 (``dqn-c51``, Bellemare et al. 2017). Scalar-target heads back up
``y = R_n + gamma^n (1 - terminated) Q_target(s', a*)`` with ``a*`` chosen on *decoded* Q
values; C51 backs up the projected next-state distribution.

Stateful norms (BatchNorm, PowerNorm, Unified Norm, AdaB2N, EvoNorm-B0) see one training-mode
forward per optimizer update, the online network's on the batch's observations: the target
network stays in eval mode (its running statistics copied with the weights at each target
sync, as Stable-Baselines3's DQN) and the double-DQN selector forward runs in eval mode (as
PQN's bootstrap, ``train=False``). Why: the norms' papers count training steps (PowerNorm's
10k-iteration warmup, AdaB2N's eta recursion, UN's gradient window), which a second or third
training forward per update would advance two or three times as fast, and a bootstrap value in
eval mode depends on its next state only, not on the other states of the batch (see
:meth:`DQNAgent.per_sample_loss`). CrossQ's alternative (one joint forward of s and s', no
target network) is not offered.

Read :meth:`DQNAgent.update` top to bottom for the algorithm; everything else is
bookkeeping: acting in a NEXT_STEP-autoreset vector env (an env's reset step is not an env step:
it is not counted, earns no update and never enters replay; truncation is bootstrapped,
termination is not), one update per ``--train-freq`` env steps (the updates due after one
vector step draw their batches in one replay call, and the target network's outputs on them in
one forward: neither replay nor the target changes between them), reward clipping inside the
agent (raw scores are logged), epsilon schedule, target copies, evaluation and resume state.
"""
from __future__ import annotations

import copy
import pickle
import warnings
from dataclasses import dataclass

import cloudpickle
import numpy as np
import torch

from agents import fast
from agents.replay import ReplayBuffer, host_to_device
from crl.errors import UserError
from crl.nn import module_walk
from crl.nn.network import build_network
from crl.nn.norms import adab2n
from crl.nn.norms import state as norm_state
from crl.interventions import nap
from crl.optim import LRSchedule, build_optimizer, optimizer_args
from crl.learner import optimizer_step
from crl.options import option
from crl.registry import AGENTS, HEADS


@dataclass
class DQNOptions:
    """DQN; defaults: Dopamine's dqn.gin with Adam, the `crl atari` preset."""

    gamma: float = option(0.99, "discount", check="unit")
    n_step: int = option(1, "n-step returns", check="positive")
    buffer_size: int = option(1_000_000, "replay capacity in transitions", check="positive")
    learning_starts: int = option(20_000, "env steps of random-policy data before the first update",
                                  check="non_negative")
    train_freq: int = option(4, "env steps per update (replay ratio = batch_size / train_freq)", check="positive")
    target_update: int = option(8_000, "env steps between hard target-network copies", check="positive")
    double_dqn: bool = option(True, "select the next action with the online network (van Hasselt et al. 2016)")
    eps_start: float = option(1.0, "initial exploration epsilon", check="unit")
    eps_end: float = option(0.01, "final exploration epsilon", check="unit")
    eps_decay_steps: int = option(250_000, "env steps of linear epsilon decay, after --learning-starts (epsilon is "
                                           "--eps-start until then; Dopamine's linearly_decaying_epsilon)",
                                  check="non_negative")
    eps_restart_per_task: bool = option(False, "restart the epsilon decay at each task's first env step (default: "
                                                "one decay over the whole run, later tasks explore at --eps-end)")
    eval_eps: float = option(0.001, "epsilon during evaluation", check="unit")
    clip_rewards: bool = option(True, "clip rewards to [-1, 1] for learning (raw scores are logged)")
    reset_replay_per_task: bool = option(False, "empty the replay buffer at each task change")
    num_envs: int = option(8, "parallel environments of the vector env", check="positive")
    eval_episodes: int = option(10, "episodes per task and evaluation", check="positive")
    eval_max_steps: int = option(27_000, "cap on agent steps per evaluation episode",
                                 check="positive")
    checkpoint_replay: bool = option(True, "store the replay buffer in checkpoints (needed for exact resume)")

    def check(self, cfg) -> None:
        if self.buffer_size < self.num_envs * 2:
            raise UserError(f"--buffer-size: must hold at least 2 transitions per env ({self.num_envs * 2}), "
                            f"got {self.buffer_size}")

    def fit_budget(self, cfg, explicit: set[str]) -> list[str]:
        """Shrink the schedules a short ``--steps`` would never reach; one note per change."""
        notes, budget = [], cfg.steps
        if "learning_starts" not in explicit and self.learning_starts > budget // 2:
            new = max(budget // 10, cfg.batch_size)
            notes.append(f"--steps {budget} is shorter than twice the default learning start "
                         f"({self.learning_starts}); learning starts at {new} instead")
            self.learning_starts = new
        if "eps_decay_steps" not in explicit and self.eps_decay_steps > budget // 2:
            new = max(budget // 10, 1)
            notes.append(f"epsilon decays over {new} steps instead of {self.eps_decay_steps} to fit --steps {budget}")
            self.eps_decay_steps = new
        if "target_update" not in explicit and self.target_update > budget // 10:
            new = max(budget // 10, self.train_freq)
            notes.append(f"target network copied every {new} steps instead of {self.target_update} to fit "
                         f"--steps {budget}")
            self.target_update = new
        cap = max(budget // 4, 1_000)
        if "eval_max_steps" not in explicit and self.eval_max_steps > cap:
            # An agent this short-trained often stalls (e.g. never presses FIRE): don't let one eval outlast training.
            notes.append(f"evaluation episodes capped at {cap} steps instead of {self.eval_max_steps} to fit "
                         f"--steps {budget}")
            self.eval_max_steps = cap
        return notes


def linear_epsilon(step: int, start: float, end: float, decay_steps: int, warmup_steps: int = 0) -> float:
    """Dopamine's ``linearly_decaying_epsilon`` (``dopamine/agents/dqn/dqn_agent.py``), with ``start``
    in place of its fixed 1.0: ``start`` for the first ``warmup_steps`` steps (the agent's
    ``--learning-starts``, Dopamine's ``min_replay_history``), then linear to ``end`` over
    ``decay_steps`` steps, then ``end``::

        eps = end + clip((start - end) * (decay_steps + warmup_steps - step) / decay_steps, 0, start - end)
    """
    if decay_steps <= 0:
        return end if step >= warmup_steps else start
    bonus = (start - end) * (decay_steps + warmup_steps - step) / decay_steps
    return end + min(max(bonus, 0.0), start - end)


# ALE's reset takes an int32 seed and seeds a vector env's envs with consecutive values from it: every env
# seed is reduced into [0, ENV_SEED_RANGE), which leaves room for 2**20 envs (seeds below it are unchanged).
ENV_SEED_RANGE = 2 ** 31 - 2 ** 20


def env_seed(value: int) -> int:
    """``value`` reduced into ALE's seed range (identity for the seeds of most runs, < ~2.1e9)."""
    return int(value) % ENV_SEED_RANGE


def evaluate_policy(task, cfg, eval_index: int, act) -> float:
    """crl's evaluation protocol, shared by its RL agents: mean raw return of ``--eval-episodes``
    episodes, one per env of a new vector env seeded ``seed * 1000003 + 7919 * eval_index + 1``
    (so every sweep gets new seeds), each cut at ``--eval-max-steps``; ``act(obs, rng)`` picks the
    actions (epsilon included)."""
    seed = cfg.seed * 1_000_003 + 7_919 * eval_index + 1
    rng = np.random.default_rng(seed)
    seed = env_seed(seed)  # (an --seed >= 2148 gave ALE a seed beyond int32)
    env = task.make_env(cfg.eval_episodes, seed)
    try:
        obs, _ = env.reset(seed=seed)
        returns = np.zeros(cfg.eval_episodes)
        running = np.ones(cfg.eval_episodes, bool)
        for _ in range(cfg.eval_max_steps):
            obs, reward, terminated, truncated, _ = env.step(act(obs, rng))
            returns += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                break
    finally:
        env.close()
    return float(returns.mean())


def _lives(info) -> np.ndarray | None:
    """Lives left per env from a vector env's info (ALE reports ``lives``), or None."""
    lives = info.get("lives") if isinstance(info, dict) else None
    return None if lives is None else np.asarray(lives).copy()


def _env_spaces(task, seed: int):
    env = task.make_env(1, env_seed(seed))
    try:
        return env.single_observation_space, env.single_action_space
    finally:
        env.close()


class DQNAgent:
    """A learner for RL scenarios; the runner calls ``train`` chunk by chunk and ``evaluate``."""

    def __init__(self, cfg, scenario, device: torch.device, head_name: str):
        self.cfg, self.device = cfg, device
        obs_space, act_space = _env_spaces(scenario.tasks[0], cfg.seed)
        for task in scenario.tasks[1:]:
            o, a = _env_spaces(task, cfg.seed)
            if o.shape != obs_space.shape or a.n != act_space.n:
                raise UserError(f"scenario: task '{task.name}' has observations {o.shape} and {a.n} actions, but "
                                f"'{scenario.tasks[0].name}' has {obs_space.shape} and {act_space.n}; tasks must share "
                                "spaces (for Atari use --full-action-space)")
        self.obs_shape, self.num_actions = tuple(obs_space.shape), int(act_space.n)
        self.head = HEADS.get(head_name)(cfg).to(device)
        self.network = build_network(cfg, self.obs_shape, self.num_actions, self.head).to(device)
        self.channels_last = cfg.channels_last and len(self.obs_shape) == 3  # speed: memory layout only
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        self.target = copy.deepcopy(self.network)
        self.target.requires_grad_(False)
        self.target.eval()  # always: running statistics, no state change (SB3); synced at each target copy
        # --norm adab2n: per-transition task ids (stored in replay) for the training forwards, begin_task at
        # each task switch and --adab2n-lambda * adaptation loss from task --adab2n-t0 on (see per_sample_loss)
        self.task_aware = bool(adab2n.adab2n_layers(self.network))
        self.adab2n_aux: torch.Tensor | None = None
        out_names = {f"output.{n}" for n, _ in self.network.output.named_parameters()}
        opt_args = optimizer_args(cfg)  # --lr/--adam-eps, or the optimizer's own options (NorMuon: --muon-lr, ...)
        self.optimizer = build_optimizer(cfg.optimizer, list(self.network.named_parameters()), muon_exclude=out_names,
                                         **opt_args)
        if cfg.fused_optimizer:
            fast.use_fused_kernel(self.optimizer)
        # horizons in updates: one per --train-freq env steps, none before --learning-starts
        budgets = [t.steps or cfg.steps for t in scenario.stream()]
        restart = cfg.lr_restart_per_task == "on" or (cfg.lr_restart_per_task == "auto" and cfg.norm == "nap")
        self.schedule = LRSchedule(self.optimizer, cfg.lr_schedule, opt_args["lr"],
                                   total_steps=self._updates_in(sum(budgets), 0), warmup_steps=cfg.lr_warmup,
                                   restart_per_task=restart, steps_per_task=self._updates_in(budgets[0], 0),
                                   **nap.schedule_ends(cfg))
        self.schedule_task = -1  # the stream position whose schedule segment runs (restarted at each new one)
        self.eps_origin = 0  # env step where the epsilon decay starts (--eps-restart-per-task: each task's first)
        # frames per observation: a task may say (MinAtar: 1, its channels are not frames); else image = stacked frames
        stack = int(scenario.tasks[0].info.get("frame_stack", self.obs_shape[0] if len(self.obs_shape) == 3 else 1))
        obs_dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
        self.replay = ReplayBuffer(cfg.buffer_size, cfg.num_envs, self.obs_shape, stack, obs_dtype, device, cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.env = None
        self.env_task_index = -1
        self.episodic_life = bool(getattr(cfg, "episodic_life", False))
        self.lives: np.ndarray | None = None
        self.env_steps = 0  # over the whole run
        self.steps_in_flight = 0  # --overlap-env: env steps being collected while their updates run
        self.updates = 0
        self.update_debt = 0.0
        self.next_target_sync = cfg.target_update
        self.probes: dict[str, torch.Tensor] = {}
        # scoring batches (ReDo) and metric probes: their own generator, so training samples the same batches
        self.probe_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
        self.run = None  # set by the runner
        self._draw_stamp: tuple | None = None  # the target's stamp when sample_batches ran it on a draw
        self._loss_sum = torch.zeros((), device=device)
        self._loss_count = 0
        self._setup_speed(cfg)

    def _updates_in(self, env_steps: int, start: int) -> int:
        """Updates in ``env_steps`` env steps from global env step ``start`` (none before
        ``--learning-starts``), at least the LR warmup so a schedule always fits."""
        learning = env_steps - max(0, self.cfg.learning_starts - start)
        return max(1, self.cfg.lr_warmup, learning // self.cfg.train_freq)

    def _setup_speed(self, cfg) -> None:
        """The rest of the config's "speed" section (agents/fast.py); none of it changes the math."""
        if cfg.fused_forward and cfg.norm not in fast.PER_SAMPLE_NORMS:
            raise UserError(f"--fused-forward: --norm {cfg.norm} normalises with batch statistics or keeps state, so "
                            "one forward over obs and next_obs would change them; per-sample norms: "
                            f"{', '.join(sorted(fast.PER_SAMPLE_NORMS))}")
        self.fused_forward = cfg.fused_forward and cfg.double_dqn
        if cfg.compile_optimizer:
            fast.compile_optimizer_step(self.optimizer)
        if cfg.compile:
            self.network.compile()
            self.target.compile()
        self.graphed_loss = None
        if cfg.cuda_graphs:
            why = fast.GraphedLoss.unsupported(cfg, self.device)
            if why:
                raise UserError(f"--cuda-graphs: {why}")
            self.graphed_loss = fast.GraphedLoss(self)

    # ------------------------------------------------------------------ the algorithm
    def update(self, b: dict | None = None) -> None:
        """One gradient step on the replay batch ``b`` (drawn here when None)."""
        cfg, net = self.cfg, self.network
        b = self.sample_batch(cfg.batch_size) if b is None else b
        fast.set_mode(net, training=True)
        if self.graphed_loss is not None and self.graphed_loss.usable():
            loss = self.graphed_loss(b)  # --cuda-graphs: the loss and backward below, captured once, replayed
        else:
            with fast.autocast(self.device, cfg.amp_bf16):
                per_sample, _ = self.per_sample_loss(b)  # float32, (B,)
            aux = self.adab2n_aux  # AdaB2N adaptation loss of that forward (hooks may run more forwards)
            if norm_state.transforms_loss(self.run):  # e.g. meta-rescale: its forwards leave no norm state behind
                with norm_state.preserved(net):
                    per_sample = self.run.hooks.transform_loss(self.run, per_sample, b)
            else:
                per_sample = self.run.hooks.transform_loss(self.run, per_sample, b)
            loss = per_sample.mean()
            if aux is not None and cfg.adab2n_lambda > 0 and self.env_task_index >= cfg.adab2n_t0:
                loss = loss + cfg.adab2n_lambda * aux
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer_step(self, loss, step=self.env_steps)  # NaN guard, clip, step, schedule, hooks
        self._loss_sum += loss.detach()
        self._loss_count += 1

    def per_sample_loss(self, b: dict, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """TD loss of each transition ``(B,)`` and the online outputs at the taken actions ``(B, K)``.

        ``params`` (name -> tensor) evaluates the online network functionally
        (``torch.func.functional_call``; meta-rescale's look-ahead); the bootstrap target
        always comes from the live online/target networks, without gradient.

        Norm statistics: the online forward of ``obs`` is the update's one training-mode forward,
        so running statistics and counters of stateful norms (BatchNorm, PowerNorm, Unified
        Norm, AdaB2N, EvoNorm-B0) advance exactly once per optimizer update. The target
        network is always in eval mode (running statistics, copied with the weights at each
        target sync, as Stable-Baselines3's DQN keeps its target in eval mode and copies the
        BatchNorm statistics with ``polyak_update`` of ``batch_norm_stats``); the double-DQN
        selector forward of the online network on ``next_obs`` runs in eval mode too (as PQN
        bootstraps with ``train=False``). So the bootstrap value of a next state does not depend
        on the other states of its batch.

        AdaB2N (``--norm adab2n``): the online network gets the batch's per-transition
        ``task_ids`` (the task each transition was collected in, stored in replay) for its
        training-mode forward here only (cleared on return, so other forwards, e.g. metric
        probes, see a plain BN); ``self.adab2n_aux`` keeps the adaptation loss of the online
        forward of ``obs`` (with graph), which ``update`` adds times ``--adab2n-lambda``. Acting,
        the target, the selector and evaluation run in eval mode, where AdaB2N uses its running
        statistics and no ids.
        """
        net, head = self.network, self.head
        if self.task_aware:
            adab2n.set_task_ids(net, b["task_ids"])
        rows = torch.arange(len(b["actions"]), device=self.device)
        fuse = self.fused_forward and params is None  # --fused-forward: obs and next_obs in one online forward
        x = torch.cat([b["obs"], b["next_obs"]]) if fuse else b["obs"]
        out = net(x) if params is None else torch.func.functional_call(net, params, (x,))
        self.adab2n_aux = adab2n.aux_loss(net) if self.task_aware else None
        out, online_next = (out[:len(rows)], out[len(rows):].detach()) if fuse else (out, None)
        out_sa = out[rows, b["actions"]]  # (B, K) at the taken actions
        target = self.bootstrap_target(b, online_next)
        if self.task_aware:
            for m in adab2n.adab2n_layers(net):
                m.clear_task_ids()
        return head.loss(out_sa, target), out_sa

    @torch.no_grad()
    def bootstrap_target(self, b: dict, online_next: torch.Tensor | None = None) -> torch.Tensor:
        """The backed-up target of each transition of ``b`` (no gradient): the target network's
        value at ``a* = argmax_a Q(s', a)`` (double DQN: Q of the online network, else of the
        target), through the head's ``bootstrap_target``. Both forwards run in eval mode, so a
        next state's target does not depend on the other states of the batch. ``online_next``:
        the online outputs on ``next_obs`` already computed (``--fused-forward``)."""
        net, head = self.network, self.head
        rows = torch.arange(len(b["actions"]), device=self.device)
        next_target = b.get("next_target")  # computed for the whole draw by sample_batches
        if next_target is None or self._draw_stamp != self._target_stamp():
            next_target = self.target(b["next_obs"])  # (B, A, K); the target is always in eval mode
        if self.cfg.double_dqn:
            if online_next is not None:  # --fused-forward, per-sample norms only: same values as eval mode
                selector = online_next
            else:
                with norm_state.eval_mode(net):  # no statistics update, no batch dependence
                    selector = net(b["next_obs"])
        else:
            selector = next_target
        a_star = head.q_values(selector).argmax(dim=1)  # greedy on decoded Q
        return head.bootstrap_target(next_target[rows, a_star], b["returns"], b["discounts"])

    def sample_batch(self, size: int) -> dict:
        """A uniform replay batch of ``size`` n-step transitions."""
        b = self.replay.sample(size, self.cfg.n_step, self.cfg.gamma)
        if self.channels_last:  # the conv layout of the network (same values)
            b["obs"], b["next_obs"] = fast.channels_last(b["obs"]), fast.channels_last(b["next_obs"])
        return b

    def sample_batches(self, count: int) -> list[dict]:
        """``count`` replay batches of ``--batch-size`` drawn in one call: i.i.d. uniform draws, as
        ``count`` calls of :meth:`sample_batch` would give while replay does not change (the
        updates due at one env step), for the bookkeeping cost of one call.

        The target network's outputs on all their next states come from one forward too
        (``next_target``, what :meth:`bootstrap_target` would compute per batch): the target
        only changes at a target copy, after these updates. Should something change it in
        between (e.g. ``--intervention reset`` with ``--reset-target``), the version counters of
        its tensors (:meth:`_target_stamp`) tell, and each later batch runs the target itself.
        Not under ``--cuda-graphs``, whose captured loss runs the target forward itself."""
        size = self.cfg.batch_size
        if count <= 1:
            return [self.sample_batch(size) for _ in range(count)]
        draw = self.sample_batch(count * size)
        if self.graphed_loss is None:
            with torch.no_grad(), fast.autocast(self.device, self.cfg.amp_bf16):
                draw["next_target"] = self.target(draw["next_obs"])
            self._draw_stamp = self._target_stamp()
        return [{k: v[i * size:(i + 1) * size] for k, v in draw.items()} for i in range(count)]

    def _target_stamp(self) -> tuple:
        """The identity and version counter (bumped by every in-place write) of each tensor of the target."""
        tensors = (*module_walk.parameters(self.target), *module_walk.float_buffers(self.target))
        return tuple((id(t), t._version) for t in tensors)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy actions. The random draws come first and are the same whether or not
        the network runs, so skipping the forward when every env explores changes no action."""
        explore = rng.random(len(obs)) < epsilon
        random_actions = rng.integers(self.num_actions, size=len(obs))
        if explore.all():
            return random_actions
        fast.set_mode(self.network, training=False)
        x = host_to_device(torch.as_tensor(obs), self.device)  # pinned and non-blocking on CUDA
        with fast.autocast(self.device, self.cfg.amp_bf16):
            q = self.network.q_values(fast.channels_last(x) if self.channels_last else x)
        greedy = q.argmax(dim=1).cpu().numpy()  # the one device sync of an env step: the env needs the actions
        return np.where(explore, random_actions, greedy)

    def _switch_env(self, task, task_index: int) -> None:
        if self.env is not None:
            self.env.close()
        seed = env_seed(self.cfg.seed + 10_007 * task_index)
        self.env = task.make_env(self.cfg.num_envs, seed)
        self.obs, info = self.env.reset(seed=seed)
        self.lives = _lives(info)
        n = self.cfg.num_envs
        self.prev_done = np.zeros(n, bool)
        self.ep_return, self.ep_len = np.zeros(n), np.zeros(n, np.int64)
        self.env_task_index = task_index
        adab2n.begin_task(self.network, task_index)  # AdaB2N's current task (no-op for other norms)
        adab2n.begin_task(self.target, task_index)
        if self.cfg.reset_replay_per_task and task_index > 0:
            self.replay = ReplayBuffer(self.cfg.buffer_size, n, self.obs_shape, self.replay.stack, self.replay.obs_dtype,
                                       self.device, self.cfg.seed + task_index)
        self.replay.end_episodes()  # the old task's episodes end here; stacks never join two tasks

    @property
    def metric_step(self) -> int:
        """Env steps so far, those whose updates are running included (docs/design.md: what hooks log at)."""
        return self.env_steps + self.steps_in_flight

    def train(self, task, steps: int) -> int:
        """Collect ``steps`` env steps (transitions; rounded up to whole vector steps), updating as we go."""
        cfg, n, run = self.cfg, self.cfg.num_envs, self.run
        if self.env_task_index != run.task_index:
            self._switch_env(task, run.task_index)
        if self.schedule_task != run.task_index:  # a new task (not a resume inside one): --lr-restart-per-task
            self.schedule.on_task_start(self._updates_in(task.steps or cfg.steps, self.env_steps))
            self.schedule_task = run.task_index
            if cfg.eps_restart_per_task:
                self.eps_origin = self.env_steps
        # --overlap-env needs an env whose step() is send() + recv() over all its envs (ale-py's vector env)
        overlap = cfg.overlap_env and hasattr(self.env, "send") and getattr(self.env, "batch_size", 0) == n
        done_steps = 0
        while done_steps < steps and not run.stop_requested:  # SIGINT/SIGTERM: return early, the runner checkpoints
            # NEXT_STEP autoreset: an env whose episode ended at the last step only resets at this one (no frame
            # is played, no transition stored), so it neither counts as an env step nor earns an update.
            valid = ~self.prev_done
            new = int(valid.sum())
            eps = self.epsilon()
            actions = self.act(self.obs, eps, self.np_rng)
            if overlap:  # the env steps in its own threads while the updates due at this step run
                self.env.send(actions)
                self.steps_in_flight = new
                self._learn(new, self.env_steps + new)
                self.steps_in_flight = 0
                next_obs, reward, terminated, truncated, info = self.env.recv()
            else:
                next_obs, reward, terminated, truncated, info = self.env.step(actions)
            learn_reward = np.clip(reward, -1.0, 1.0) if cfg.clip_rewards else reward
            learn_terminated = terminated | self._life_lost(info, valid) if self.episodic_life else terminated
            self.replay.add(self.obs, actions, learn_reward, next_obs, learn_terminated, truncated, valid,
                            task=self.env_task_index)
            self.env_steps += new
            done_steps += new
            self._track_episodes(reward, terminated | truncated, valid)  # logged at the env steps taken so far
            self.prev_done = terminated | truncated
            self.obs = next_obs
            if not overlap:
                self._learn(new, self.env_steps)
            if self.env_steps % cfg.log_every < new:  # a multiple of log_every reached at this step
                self._log_train(eps)
        return done_steps

    def epsilon(self) -> float:
        """Exploration epsilon now: one linear decay from ``eps_origin`` (0, or with
        ``--eps-restart-per-task`` the current task's first env step), held at --eps-start until
        --learning-starts."""
        cfg = self.cfg
        return linear_epsilon(self.env_steps - self.eps_origin, cfg.eps_start, cfg.eps_end, cfg.eps_decay_steps,
                              max(0, cfg.learning_starts - self.eps_origin))

    def _learn(self, new_steps: int, env_steps: int) -> None:
        """The updates and target copy due once ``env_steps`` env steps have been collected."""
        cfg = self.cfg
        if env_steps < cfg.learning_starts or len(self.replay) < cfg.batch_size:
            return
        self.update_debt += new_steps / cfg.train_freq
        for b in self.sample_batches(int(self.update_debt)):  # replay is the same for all of them: one draw
            self.update(b)
            self.update_debt -= 1.0
        if env_steps >= self.next_target_sync:
            self.target.load_state_dict(self.network.state_dict())
            self.next_target_sync = (env_steps // cfg.target_update + 1) * cfg.target_update

    def _life_lost(self, info, valid: np.ndarray) -> np.ndarray:
        """``--episodic-life``: True where a life was lost in this (valid) step. The transition is then
        stored as terminal (no bootstrap) and the next one opens a new replay episode, while the env
        plays on: the learning signal of CORA's / baselines' ``EpisodicLifeEnv``. Episode returns,
        lengths and evaluation keep whole games."""
        lives = _lives(info)
        if lives is None or self.lives is None:
            self.lives = lives
            return np.zeros(len(valid), bool)
        lost = valid & (lives < self.lives)
        self.lives = lives
        return lost

    def _track_episodes(self, reward, done, valid) -> None:
        self.ep_return += np.where(valid, reward, 0.0)
        self.ep_len += valid
        ended = np.flatnonzero(done & valid)
        if ended.size:  # episodes of several envs ending at one step: their mean, one point per tag and step
            self.run.logger.scalar("train/episode_return", float(self.ep_return[ended].mean()), self.env_steps)
            self.run.logger.scalar("train/episode_length", float(self.ep_len[ended].mean()), self.env_steps)
            self.ep_return[ended], self.ep_len[ended] = 0.0, 0

    def _log_train(self, eps: float) -> None:
        log, step = self.run.logger, self.env_steps
        log.scalar("train/epsilon", eps, step)
        log.scalar("train/lr", self.schedule.lr, step)
        log.scalar("train/updates", self.updates, step)
        if self._loss_count:
            log.scalar("train/loss", (self._loss_sum / self._loss_count).item(), step)
            self._loss_sum.zero_()
            self._loss_count = 0
        log.progress(step)  # the progress display moves with the train/* scalars (crl/logging.py)

    # ------------------------------------------------------------------ evaluation and probes
    @torch.no_grad()
    def evaluate(self, task, eval_index: int) -> float:
        """Mean raw return of ``eval_episodes`` episodes (one per env) with epsilon ``eval_eps``."""
        return evaluate_policy(task, self.cfg, eval_index, lambda obs, rng: self.act(obs, self.cfg.eval_eps, rng))

    def probe_batch(self, task, size: int = 256) -> torch.Tensor | None:
        """A batch of observations of ``task``'s own transitions in replay for plasticity metrics
        (not the shared replay's other tasks). Fixed once replay holds ``size`` transitions of the
        task: drawn then, reused for the rest of the task (and whenever the task comes back).
        Before that, a fresh batch of as many states as the task has stored (at least 32; None
        with fewer). Drawn with the learner's probe generator, so training samples the same
        batches with metrics on or off."""
        if task.name in self.probes or not self._is_current(task):
            return self.probes.get(task.name)
        have = self.replay.count_task(self.env_task_index)
        if have >= size:
            self.probes[task.name] = self.replay.sample_states(size, self.env_task_index, self.probe_gen).clone()
            return self.probes[task.name]
        return self.replay.sample_states(have, self.env_task_index, self.probe_gen) if have >= 32 else None

    def scoring_batch(self, size: int = 256) -> torch.Tensor | None:
        """A fresh uniform sample of ``size`` observations of the current task's transitions in replay
        (ReDo's scoring batch: Dopamine's ReDo agents draw a new replay batch at every recycle;
        the task's own transitions because the task id of each one is stored). Probe generator,
        as :meth:`probe_batch`. None before the task has a transition in replay."""
        return self.replay.sample_states(size, self.env_task_index, self.probe_gen)

    def _is_current(self, task) -> bool:
        current = getattr(self.run, "task", None)
        return self.env_task_index >= 0 and (current is None or current.name == task.name)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        try:
            env_bytes = cloudpickle.dumps(self.env) if self.env is not None else None
        except (TypeError, pickle.PicklingError, AttributeError):
            env_bytes = None  # ALE's C++ vector env cannot be pickled; see load_state_dict
        return {
            "network": self.network.state_dict(), "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "replay": self.replay.state_dict() if self.cfg.checkpoint_replay else None,
            "np_rng": self.np_rng.bit_generator.state, "env": env_bytes,
            "env_task_index": self.env_task_index, "schedule_task": self.schedule_task, "eps_origin": self.eps_origin,
            "episode": None if self.env is None else (self.obs, self.prev_done, self.ep_return, self.ep_len),
            "counters": (self.env_steps, self.updates, self.update_debt, self.next_target_sync),
            "probes": {k: v.cpu() for k, v in self.probes.items()},
            "probe_gen": self.probe_gen.get_state(), "lives": self.lives,
        }

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.cfg.compile_optimizer:
            fast.tensor_lrs(self.optimizer)
        self.schedule.load_state_dict(state["schedule"])
        # checkpoints before schedule_task existed: the task they stopped in had started its segment
        self.schedule_task = state.get("schedule_task", self.run.task_index if self.run is not None else -1)
        self.eps_origin = state.get("eps_origin", 0)  # absent before --eps-restart-per-task: one decay
        if state["replay"] is not None:
            self.replay.load_state_dict(state["replay"])
        self.np_rng.bit_generator.state = state["np_rng"]
        self.env_steps, self.updates, self.update_debt, self.next_target_sync = state["counters"]
        self.probes = {k: v.to(self.device) for k, v in state["probes"].items()}
        if "probe_gen" in state:  # absent in checkpoints written before it existed
            self.probe_gen.set_state(state["probe_gen"])
        self.lives = state.get("lives")
        if state["env"] is not None:
            self.env = pickle.loads(state["env"])
            self.env_task_index = state["env_task_index"]
            self.obs, self.prev_done, self.ep_return, self.ep_len = state["episode"]
        elif state["env_task_index"] >= 0:
            # Envs that cannot be pickled restart their episodes at the resume point (README: resume).
            warnings.warn("environment state cannot be saved for this env; episodes restart at the resume point",
                          stacklevel=2)
            self.env_task_index = -1


def _register(name: str, head: str, help: str) -> None:
    AGENTS.register(name, help, options=(DQNOptions, fast.SpeedOptions), head=head, kind="rl")(
        lambda cfg, scenario, device: DQNAgent(cfg, scenario, device, head))


_register("dqn", "scalar-huber", "DQN, scalar Q with Huber loss (Mnih et al. 2015), double-DQN target")
_register("dqn-mse", "scalar-mse", "DQN, scalar Q with MSE loss (q - y)^2 (Dopamine's loss_type='mse', CleanRL)")
_register("dqn-hlgauss", "hlgauss", "DQN with HL-Gauss cross-entropy value head (Farebrother et al. 2024)")
_register("dqn-twohot", "twohot", "DQN with two-hot cross-entropy value head")
_register("dqn-c51", "c51", "C51 distributional DQN (Bellemare et al. 2017)")
