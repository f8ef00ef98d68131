"""``--agent sb3-dqn``: Stable-Baselines3's own DQN (``stable_baselines3.DQN``) as a crl learner.

SB3 does the acting, the replay, the updates and the target copies with its own code; crl's
runner drives it chunk by chunk with ``model.learn(chunk, reset_num_timesteps=False)`` and keeps
everything else crl's: the evaluation protocol (the DQN learner's seeds and ``--eval-eps``), the
eval matrix, ``forgetting/*``, ``plasticity/*`` (measured on SB3's Q-network, after each of SB3's
optimizer steps through a ``torch.optim`` step hook), checkpoints and exact resume. So crl's DQN and
SB3's can be compared in one scenario with one set of metrics.

Hyperparameters: crl's options where SB3's DQN has the same notion (SB3 keyword in brackets):
``--lr`` (learning_rate), ``--adam-eps`` (the Adam ``eps`` of optimizer_kwargs), ``--gamma``,
``--buffer-size``, ``--learning-starts``, ``--batch-size``, ``--n-step`` (n_steps), ``--target-update``
(target_update_interval), ``--eps-start``/``--eps-end`` (exploration_initial_eps/final_eps),
``--eps-decay-steps`` (exploration_fraction = eps-decay-steps / the run's total steps: SB3 decays
from step 0, crl's DQN after ``--learning-starts``), ``--max-grad-norm`` (0 = no clip), ``--num-envs``,
``--train-freq`` (env steps per update: SB3's train_freq in vector steps and gradient_steps are chosen
so that updates per env step are ``1 / --train-freq``, as in crl's DQN; or SB3's own rhythm with
``--sb3-train-freq`` and ``--sb3-gradient-steps``, e.g. rl-zoo's 256 and 128), ``--mlp-hidden`` (net_arch of
SB3's MlpPolicy) with ``--torso mlp``, or SB3's CnnPolicy (NatureCNN) with ``--torso nature``;
``--clip-rewards`` clips the rewards SB3 learns from (raw returns are logged) and
``--reset-replay-per-task`` empties SB3's buffer at each task change. SB3's defaults for the rest:
tau 1.0 (hard target copies), Huber loss, no double DQN (SB3's DQN bootstraps with the target network's
max: ``--double-dqn`` is refused, and recorded as off when left out; ``--eps-restart-per-task`` is refused
too: SB3 decays epsilon once over the run), one scalar Q output per action (crl's
value heads do not apply).
Refused with one error line: another ``--torso``, ``--norm``, ``--activation``, ``--reparam``, ``--optimizer``,
an ``--intervention``, ``--lr-schedule`` other than constant or ``--lr-warmup``: they are crl's, not SB3's.

Environments: each task's ``make_env`` (crl's :class:`crl.RLTask`) is turned into an SB3 ``VecEnv``
(:class:`TaskVecEnv`) of ``--num-envs`` one-env vector envs, sub-env ``k`` seeded ``s + k`` as crl's DQN
seeds its vector env; crl's NEXT_STEP autoreset is turned into SB3's convention (the reset observation
at once, the last one in ``info["terminal_observation"]``, truncation in ``info["TimeLimit.truncated"]``).
Before training, every task's env is checked with SB3's ``check_env`` when its vector env exposes
gymnasium envs (``SyncVectorEnv``), else its spaces are checked (Discrete actions, Box observations).

Reference: Raffin et al. 2021, "Stable-Baselines3: Reliable Reinforcement Learning
Implementations", JMLR 22(268); https://stable-baselines3.readthedocs.io (DQN, VecEnv, callbacks).
"""
from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np
import torch
from torch import nn

from agents.dqn import DQNOptions, env_seed, evaluate_policy
from crl.errors import UserError
from crl.options import option
from crl.registry import AGENTS


@dataclass
class SB3Options:
    """SB3's rollout/update rhythm, which crl's DQN has no notion of (0: from --train-freq)."""

    sb3_train_freq: int = option(0, "sb3-dqn: SB3's train_freq, vector steps collected per rollout (0: from "
                                    "--train-freq)", check="non_negative")
    sb3_gradient_steps: int = option(0, "sb3-dqn: SB3's gradient_steps after each rollout (0: from --train-freq, "
                                        "or 1 with --sb3-train-freq)", check="non_negative")

    def fit_budget(self, cfg, explicit: set[str]) -> list[str]:
        """``--double-dqn`` (crl's DQN default) does not exist in SB3's DQN: refused when asked for, else
        recorded as off, so a run's config.yaml says what SB3 ran."""
        if cfg.double_dqn and "double_dqn" in explicit:
            raise UserError("--double-dqn: --agent sb3-dqn runs SB3's own DQN, which bootstraps with the target "
                            "network's max; accepted: --no-double-dqn (or leave it out)")
        cfg.double_dqn = False
        if cfg.eps_restart_per_task:
            raise UserError("--eps-restart-per-task: --agent sb3-dqn keeps SB3's one exploration schedule over the "
                            "run; accepted with --agent dqn and its variants")
        return []


# ----------------------------------------------------------------------------- environments

def _vec_env_base():
    from stable_baselines3.common.vec_env import VecEnv

    return VecEnv


class _Stop(Exception):
    """Raised from the callback between two of SB3's rollouts when the run asks to stop."""


def make_task_vec_env(task, num_envs: int, seed: int, clip_rewards: bool):
    """An SB3 ``VecEnv`` over ``task`` (see :class:`TaskVecEnv`)."""
    base = _vec_env_base()

    class TaskVecEnv(base):
        """``num_envs`` one-env vector envs ``task.make_env(1, seed + k)``, stepped one by one.

        When sub-env ``k`` ends an episode, its vector env (NEXT_STEP autoreset) is stepped once
        more right away: that step is its reset (the action is ignored, no reward), which gives
        SB3 the reset observation in the same step, as SB3's ``DummyVecEnv`` does."""

        def __init__(self):
            self.envs = [task.make_env(1, seed + k) for k in range(num_envs)]
            first = self.envs[0]
            self.first_seed, self.seeded, self.clip = seed, False, clip_rewards
            self.ep_return, self.ep_len = np.zeros(num_envs), np.zeros(num_envs, np.int64)
            self.on_episode = None  # (mean return, mean length) of a step's ended episodes; set by the learner, not pickled
            self._actions = None
            super().__init__(num_envs, first.single_observation_space, first.single_action_space)

        def reset(self):
            obs = []
            for k, env in enumerate(self.envs):
                o, _ = env.reset(seed=None if self.seeded else self.first_seed + k)
                obs.append(o[0])
            self.seeded = True
            self.ep_return[:], self.ep_len[:] = 0.0, 0
            return np.stack(obs)

        def step_async(self, actions):
            self._actions = np.asarray(actions)

        def step_wait(self):
            obs, rewards, dones, infos, ended = [], [], [], [], []
            for k, env in enumerate(self.envs):
                a = self._actions[k:k + 1]
                o, r, term, trunc, _ = env.step(a)
                r, term, trunc = float(r[0]), bool(term[0]), bool(trunc[0])
                self.ep_return[k] += r
                self.ep_len[k] += 1
                info: dict[str, Any] = {}
                if term or trunc:
                    info["terminal_observation"] = o[0]
                    info["TimeLimit.truncated"] = trunc and not term
                    ended.append((self.ep_return[k], self.ep_len[k]))
                    self.ep_return[k], self.ep_len[k] = 0.0, 0
                    o, *_ = env.step(a)  # NEXT_STEP autoreset: this step is the reset
                obs.append(o[0])
                rewards.append(max(-1.0, min(1.0, r)) if self.clip else r)
                dones.append(term or trunc)
                infos.append(info)
            if ended and self.on_episode is not None:  # several envs ending at one step: their mean, one point
                self.on_episode(*np.mean(ended, axis=0))
            return np.stack(obs), np.asarray(rewards, np.float32), np.asarray(dones), infos

        def close(self):
            for env in self.envs:
                env.close()

        def seed(self, seed=None):  # crl seeds the envs itself (see the class docstring)
            return [None] * self.num_envs

        def get_attr(self, attr_name, indices=None):
            return [getattr(self.envs[i], attr_name) for i in self._get_indices(indices)]

        def set_attr(self, attr_name, value, indices=None):
            for i in self._get_indices(indices):
                setattr(self.envs[i], attr_name, value)

        def env_method(self, method_name, *args, indices=None, **kwargs):
            return [getattr(self.envs[i], method_name)(*args, **kwargs) for i in self._get_indices(indices)]

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False for _ in self._get_indices(indices)]

        def __getstate__(self):
            state = self.__dict__.copy()
            state["on_episode"] = None
            return state

    return TaskVecEnv()


def check_task_env(task, seed: int) -> tuple[Any, Any]:
    """SB3's ``check_env`` on the task's env (one line on failure); returns (obs space, action space)."""
    import gymnasium as gym

    env = task.make_env(1, env_seed(seed))
    try:
        obs_space, act_space = env.single_observation_space, env.single_action_space
        if not isinstance(act_space, gym.spaces.Discrete):
            raise UserError(f"--agent sb3-dqn: task '{task.name}' has {type(act_space).__name__} actions; SB3's DQN "
                            "needs Discrete actions")
        if not isinstance(obs_space, gym.spaces.Box):
            raise UserError(f"--agent sb3-dqn: task '{task.name}' has {type(obs_space).__name__} observations; "
                            "sb3-dqn takes Box observations")
        single = getattr(env, "envs", None)
        if single:
            from stable_baselines3.common.env_checker import check_env

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    check_env(single[0], warn=False)
            except Exception as err:  # noqa: BLE001  (the checker's finding, in one line)
                text = " ".join(str(err).split()) or type(err).__name__
                raise UserError(f"--agent sb3-dqn: task '{task.name}' fails SB3's env checker: {text}") from None
        return obs_space, act_space
    finally:
        env.close()


# ----------------------------------------------------------------------------- the Q-network, for crl's metrics

class SB3QNetwork(nn.Module):
    """SB3's online Q-network (``model.q_net``, the same parameters) seen through crl's
    ``Introspectable`` interface: ``hidden_activations()`` (every activation module, in order),
    ``output_layer`` (the last ``nn.Linear``), ``features`` and no projectable weights."""

    def __init__(self, q_net: nn.Module):
        super().__init__()
        self.q_net = q_net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_net(x)  # SB3's preprocessing (float, /255 for images) included

    def q_values(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def hidden_activations(self) -> list[tuple[str, nn.Module]]:
        kinds = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.GELU, nn.LeakyReLU, nn.SiLU)
        return [(name, m) for name, m in self.named_modules() if isinstance(m, kinds)]

    def projectable_weights(self) -> list[tuple[str, nn.Parameter]]:
        return []

    @property
    def output_layer(self) -> nn.Linear:
        return [m for m in self.q_net.q_net.modules() if isinstance(m, nn.Linear)][-1]


# ----------------------------------------------------------------------------- the learner

def _refuse_crl_only(cfg) -> None:
    checks = (("torso", cfg.torso in ("mlp", "nature"), "mlp (SB3's MlpPolicy) or nature (SB3's CnnPolicy)"),
              ("norm", cfg.norm == "none", "none (SB3's networks have no norm layers)"),
              ("activation", cfg.activation == "relu", "relu (SB3's policies' own ReLU)"),
              ("reparam", cfg.reparam == "none", "none (SB3's networks have plain weights)"),
              ("optimizer", cfg.optimizer == "adam", "adam (SB3's DQN optimizer)"),
              ("intervention", not cfg.interventions(), "none (crl's interventions act on crl's learners)"),
              ("moe", cfg.moe == "none", "none"),
              ("lr_schedule", cfg.lr_schedule == "constant", "constant"),
              ("lr_warmup", cfg.lr_warmup == 0, "0"))
    for name, ok, accepted in checks:
        if not ok:
            raise UserError(f"--{name.replace('_', '-')}: --agent sb3-dqn runs SB3's own DQN, which takes "
                            f"{getattr(cfg, name)!r} nowhere; accepted: {accepted}")


def _train_freq(cfg) -> tuple[int, int]:
    """(vector steps per rollout, gradient steps per rollout): ``--sb3-train-freq``/``--sb3-gradient-steps``
    when given, else the smallest pair giving ``1 / --train-freq`` updates per env step."""
    if cfg.sb3_train_freq:
        return cfg.sb3_train_freq, cfg.sb3_gradient_steps or 1
    g = math.gcd(cfg.train_freq, cfg.num_envs)
    return cfg.train_freq // g, cfg.sb3_gradient_steps or cfg.num_envs // g


class SB3DQNLearner:
    """The runner contract (docs/design.md) around a ``stable_baselines3.DQN``."""

    def __init__(self, cfg, scenario, device: torch.device):
        from stable_baselines3 import DQN

        _refuse_crl_only(cfg)
        self.cfg, self.device, self.scenario = cfg, device, scenario
        spaces = [check_task_env(t, cfg.seed) for t in scenario.tasks]
        obs0, act0 = spaces[0]
        for t, (o, a) in zip(scenario.tasks[1:], spaces[1:]):
            if o.shape != obs0.shape or a.n != act0.n:
                raise UserError(f"scenario: task '{t.name}' has observations {o.shape} and {a.n} actions, but "
                                f"'{scenario.tasks[0].name}' has {obs0.shape} and {act0.n}; tasks must share spaces")
        self.total_steps = sum(t.steps or cfg.steps for t in scenario.stream())
        rollout, grad_steps = _train_freq(cfg)
        policy_kwargs: dict[str, Any] = {"optimizer_kwargs": {"eps": cfg.adam_eps}}
        if cfg.torso == "mlp":
            policy_kwargs["net_arch"] = cfg.options(_mlp_options()).sizes()
        total = self.total_steps

        class CrlDQN(DQN):
            def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
                # the run's whole budget, not the end of the current learn() chunk
                super()._update_current_progress_remaining(num_timesteps, total)

        self.model = CrlDQN(
            "MlpPolicy" if cfg.torso == "mlp" else "CnnPolicy",
            make_task_vec_env(scenario.tasks[0], cfg.num_envs, env_seed(cfg.seed), cfg.clip_rewards),
            learning_rate=cfg.lr, buffer_size=cfg.buffer_size, learning_starts=cfg.learning_starts,
            batch_size=cfg.batch_size, gamma=cfg.gamma, train_freq=(rollout, "step"), gradient_steps=grad_steps,
            n_steps=cfg.n_step, target_update_interval=cfg.target_update,
            exploration_fraction=min(1.0, cfg.eps_decay_steps / total), exploration_initial_eps=cfg.eps_start,
            exploration_final_eps=cfg.eps_end, max_grad_norm=cfg.max_grad_norm or math.inf,
            policy_kwargs=policy_kwargs, seed=cfg.seed, device=device, verbose=0)
        from stable_baselines3.common.logger import Logger

        self.model.set_logger(Logger(folder=None, output_formats=[]))  # crl logs; SB3's values read from it
        self.network = SB3QNetwork(self.model.q_net)
        self.optimizer = self.model.policy.optimizer
        self.optimizer.register_step_post_hook(self._after_optimizer_step)
        self.updates = 0
        self.env_task_index = -1  # the stream position of the env in self.model.env (-1: none yet)
        self.trained_task_index = -1  # the stream position trained last
        self.task_start = 0  # num_timesteps when that task started
        self.next_log = cfg.log_every
        self.probes: dict[str, torch.Tensor] = {}
        self.probe_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
        self.run = None  # set by the runner

    @property
    def env_steps(self) -> int:
        return int(self.model.num_timesteps)

    @property
    def metric_step(self) -> int:
        """What hooks log at (docs/design.md): env steps so far; SB3 updates after a rollout, when they are counted."""
        return self.env_steps

    # ------------------------------------------------------------------ training
    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        self.updates += 1
        if self.run is not None:
            self.run.hooks.after_optimizer_step(self.run)  # plasticity metrics (crl/metrics/hooks.py)

    def _on_episode(self, ret: float, length: float) -> None:
        """The mean return and length of the episodes that ended at one vector step (one point per tag
        and step, as crl's DQN logs them)."""
        step = self.env_steps + self.cfg.num_envs  # SB3 counts the step after the env returned
        self.run.logger.scalar("train/episode_return", float(ret), step)
        self.run.logger.scalar("train/episode_length", float(length), step)

    def _switch_env(self, task, task_index: int) -> None:
        """A new env for stream position ``task_index`` (seeded as crl's DQN seeds its env); at a new task
        also the task's start (for probes) and, with ``--reset-replay-per-task``, an empty buffer."""
        cfg = self.cfg
        if self.model.env is not None:
            self.model.env.close()
        env = make_task_vec_env(task, cfg.num_envs, env_seed(cfg.seed + 10_007 * task_index), cfg.clip_rewards)
        self.model.set_env(env, force_reset=True)  # the next learn() resets it (seeded: the first reset)
        if task_index != self.trained_task_index:
            if cfg.reset_replay_per_task and task_index > 0:
                self.model.replay_buffer.reset()
            self.trained_task_index, self.task_start = task_index, self.env_steps
        self.env_task_index = task_index

    def train(self, task, steps: int) -> int:
        """``model.learn(steps, reset_num_timesteps=False)``: whole SB3 rollouts, so it may run a few env
        steps past ``steps``; between two rollouts it stops when the run asks to (SIGINT/SIGTERM)."""
        from stable_baselines3.common.callbacks import BaseCallback

        if self.env_task_index != self.run.task_index:
            self._switch_env(task, self.run.task_index)
        self.model.env.on_episode = self._on_episode
        learner = self

        class Callback(BaseCallback):
            def _on_rollout_start(self) -> None:
                if learner.run.stop_requested:  # nothing of the next rollout has happened: a clean stop
                    raise _Stop

            def _on_step(self) -> bool:
                if learner.env_steps >= learner.next_log:
                    learner._log_train()
                return True

        before = self.env_steps
        try:
            self.model.learn(total_timesteps=steps, reset_num_timesteps=False, callback=Callback(), log_interval=None)
        except _Stop:
            pass
        return self.env_steps - before

    def _log_train(self) -> None:
        log, step, values = self.run.logger, self.env_steps, self.model.logger.name_to_value
        log.scalar("train/epsilon", float(self.model.exploration_rate), step)
        log.scalar("train/lr", float(self.optimizer.param_groups[0]["lr"]), step)
        log.scalar("train/updates", self.updates, step)
        if "train/loss" in values:
            log.scalar("train/loss", float(values["train/loss"]), step)
        log.progress(step)
        self.next_log = (step // self.cfg.log_every + 1) * self.cfg.log_every

    # ------------------------------------------------------------------ evaluation and probes
    @torch.no_grad()
    def evaluate(self, task, eval_index: int) -> float:
        """crl's DQN protocol (agents/dqn.py ``DQNAgent.evaluate``): ``--eval-episodes`` episodes, one per
        env of a new vector env seeded ``seed * 1000003 + 7919 * eval_index + 1``, epsilon ``--eval-eps``,
        greedy actions from SB3's online Q-network."""
        cfg = self.cfg
        self.model.policy.set_training_mode(False)
        n_actions = int(self.model.action_space.n)

        def act(obs, rng):
            greedy = self.network(torch.as_tensor(obs, device=self.device)).argmax(dim=1).cpu().numpy()
            explore = rng.random(len(obs)) < cfg.eval_eps
            return np.where(explore, rng.integers(n_actions, size=len(obs)), greedy)

        return evaluate_policy(task, cfg, eval_index, act)

    def probe_batch(self, task, size: int = 256) -> torch.Tensor | None:
        """Observations of ``task``'s own transitions in SB3's replay buffer (those stored since its env
        started), for plasticity metrics: drawn once when there are ``size`` of them, then reused; before
        that a fresh draw of all there are (None under 32). Its own generator: training is unchanged."""
        if task.name in self.probes or self.env_task_index < 0 or self.run.task.name != task.name:
            return self.probes.get(task.name)
        buf = self.model.replay_buffer
        rows = min((self.env_steps - self.task_start) // buf.n_envs, buf.buffer_size)
        have = rows * buf.n_envs
        if have < 32:
            return None
        take = min(size, have)
        flat = torch.randperm(have, generator=self.probe_gen)[:take]
        row = (buf.pos - 1 - flat // buf.n_envs) % buf.buffer_size
        states = torch.as_tensor(buf.observations[row.numpy(), (flat % buf.n_envs).numpy()], device=self.device)
        if have >= size:
            self.probes[task.name] = states
        return states

    def scoring_batch(self, size: int = 256) -> torch.Tensor | None:
        return None

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        m = self.model
        return {
            "policy": m.policy.state_dict(), "optimizer": m.policy.optimizer.state_dict(),
            "replay": pickle.dumps(m.replay_buffer) if self.cfg.checkpoint_replay else None,
            "env": self._env_bytes(),
            "last_obs": (m._last_obs, m._last_episode_starts, m._last_original_obs),
            "counters": (m.num_timesteps, m._n_updates, m._n_calls, m._episode_num, m.exploration_rate,
                         m._current_progress_remaining, self.updates, self.env_task_index, self.task_start,
                         self.next_log, self.trained_task_index),
            "action_space_rng": m.action_space.np_random.bit_generator.state,
            "probes": {k: v.cpu() for k, v in self.probes.items()}, "probe_gen": self.probe_gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        m = self.model
        m.policy.load_state_dict(state["policy"])
        m.policy.optimizer.load_state_dict(state["optimizer"])
        if state["replay"] is not None:
            m.replay_buffer = pickle.loads(state["replay"])
        (m.num_timesteps, m._n_updates, m._n_calls, m._episode_num, m.exploration_rate,
         m._current_progress_remaining, self.updates, self.env_task_index, self.task_start,
         self.next_log, self.trained_task_index) = state["counters"]
        m.action_space.np_random.bit_generator.state = state["action_space_rng"]
        self.probes = {k: v.to(self.device) for k, v in state["probes"].items()}
        self.probe_gen.set_state(state["probe_gen"])
        if state["env"] is not None:
            m.env.close()
            m.env = pickle.loads(state["env"])
            m._last_obs, m._last_episode_starts, m._last_original_obs = state["last_obs"]
        elif self.env_task_index >= 0:
            # Envs that cannot be pickled (ale-py's vector env) restart their episodes at the resume point,
            # as with crl's DQN (README: resume): the next train() builds the env again.
            warnings.warn("environment state cannot be saved for this env; episodes restart at the resume point",
                          stacklevel=2)
            self.env_task_index = -1

    def _env_bytes(self) -> bytes | None:
        if self.env_task_index < 0:
            return None
        try:
            return cloudpickle.dumps(self.model.env)
        except (TypeError, pickle.PicklingError, AttributeError):
            return None  # e.g. ale-py's C++ vector env; see load_state_dict


def _mlp_options():
    from crl.nn.torsos.mlp import MLPOptions

    return MLPOptions


@AGENTS.register("sb3-dqn", "Stable-Baselines3's own DQN (SB3 DQN, MlpPolicy/CnnPolicy) in crl's runner, with crl's "
                            "evaluation and metrics", options=(DQNOptions, SB3Options), kind="rl")
def _sb3_dqn(cfg, scenario, device):
    return SB3DQNLearner(cfg, scenario, device)
