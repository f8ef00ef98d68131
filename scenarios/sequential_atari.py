"""Sequential Atari: a list of games (or game modes / difficulties) trained one after another.

``sequential-atari``: ``--games`` is a comma-separated list of ``game[:mode[:difficulty]]``
(ale-py ROM ids, e.g. ``breakout,pong`` or ``breakout:0:0,breakout:4:1``); ``--steps`` agent
steps per task; ``--cycles`` repeats of the whole list; evaluated on every game at each eval
(the runner scores every task of the scenario). All tasks use the **full action space** (18
actions shared across games), whatever ``--full-action-space`` says: a single Q-network head
must mean the same action in every game. Empty ``--games`` = the CORA list below.

``cora-atari``: the 6-game sequence of CORA's ``atari_6_tasks_5_cycles`` (Powers, Xing, Kolve,
Mottaghi, Gupta, "CORA: Benchmarks, Baselines, and Metrics as a Platform for Continual
Reinforcement Learning Agents", CoLLAs 2022; ``AGI-Labs/continual_rl:
continual_rl/experiment_specs.py``): SpaceInvaders, Krull, BeamRider, Hero, StarGunner,
MsPacman. ``mini-cora-atari``: its 3-game ``mini_atari_3_tasks_3_cycles`` (SpaceInvaders,
BeamRider, MsPacman), with crl's Atari protocol.

``cora-atari`` starts from CORA's settings (the ``cora-atari`` preset, :data:`CORA_SETTINGS`),
read from ``experiment_specs.py`` (``create_atari_sequence_loader(..., max_episode_steps=10000,
num_timesteps=5e7, continual_testing_freq=0.25e6, cycle_count=5, full_action_space=True)``)
and ``experiments/tasks/make_atari_task.py`` (``*NoFrameskip-v4``, ``NoopResetEnv(noop_max=30)``,
``MaxAndSkipEnv(skip=4)``, then ``TimeLimit(max_episode_steps)``, so the cap counts agent
steps: 10,000 x 4 = 40,000 frames; ``EpisodicLifeEnv``; ``FireResetEnv``): ``--cycles 5``,
``--steps 50000000`` per task, ``--sticky-actions 0``, ``--noop-max 30``, ``--fire-reset``,
``--episodic-life``, ``--max-episode-frames 40000``, ``--eval-every 250000``. Flags given
on the command line win. Rewards are not clipped in the env (the agent clips for learning),
as in CORA. Not reproduced: CORA's agents (IMPALA, CLEAR, EWC, ...) and their evaluation
episodes; crl evaluates with ``--eval-episodes`` whole games.

Modes and difficulties (Machado et al. 2018; ``ALE docs/environments``): ``ale_py``'s vector
env cannot set them, so such tasks run on ``ale_py.env.AtariEnv(mode=, difficulty=,
frameskip=1)`` wrapped in :class:`AtariFrames` (1 to ``--noop-max`` no-ops, none by default;
frameskip 4 with a max over the last two frames, 84x84 grey; gymnasium's ``AtariPreprocessing``
needs OpenCV), a FIRE-on-reset step with ``--fire-reset``, and a zero-padded 4-frame stack, in a ``SyncVectorEnv`` with NEXT_STEP autoreset: the same observation (4, 84, 84)
uint8, action space and sticky actions as the other tasks. A task without mode/difficulty
uses crl's ``make_atari_env`` (the C++ vector env). An invalid mode or difficulty is an
error naming the ones the game offers.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np

from crl.config import PRESETS
from crl.errors import UserError
from crl.options import option
from crl.scenario import CycleOptions, RLTask, Scenario, register_scenario
from scenarios.atari import AtariOptions, check_game, env_settings, make_atari_env

CORA_GAMES = ("space_invaders", "krull", "beam_rider", "hero", "star_gunner", "ms_pacman")
# CORA's atari_6_tasks_5_cycles settings (module docstring), as crl options
CORA_SETTINGS = dict(cycles=5, steps=50_000_000, sticky_actions=0.0, noop_max=30, fire_reset=True, episodic_life=True,
                     max_episode_frames=40_000, eval_every=250_000)
MINI_CORA_GAMES = ("space_invaders", "beam_rider", "ms_pacman")


def parse_games(spec: str) -> list[tuple[str, int | None, int | None]]:
    """``'breakout:4:1,pong'`` -> ``[('breakout', 4, 1), ('pong', None, None)]``."""
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        parts = item.split(":")
        if len(parts) > 3 or not parts[0]:
            raise UserError(f"--games: '{item}' is not game[:mode[:difficulty]]")
        try:
            nums = [int(p) if p != "" else None for p in parts[1:]]
        except ValueError:
            raise UserError(f"--games: mode and difficulty must be integers in '{item}'") from None
        nums += [None] * (2 - len(nums))
        out.append((parts[0], nums[0], nums[1]))
    if not out:
        raise UserError("--games: expected a comma-separated list of games, e.g. 'breakout,pong'")
    return out


def check_mode(game: str, mode: int | None, difficulty: int | None) -> None:
    from ale_py.env import AtariEnv

    env = AtariEnv(game=game, frameskip=1)
    try:
        modes, diffs = list(env.ale.getAvailableModes()), list(env.ale.getAvailableDifficulties())
    finally:
        env.close()
    if mode is not None and mode not in modes:
        raise UserError(f"--games: {game} has no mode {mode}; modes: {', '.join(map(str, modes))}")
    if difficulty is not None and difficulty not in diffs:
        raise UserError(f"--games: {game} has no difficulty {difficulty}; difficulties: {', '.join(map(str, diffs))}")


class FireOnReset(gym.Wrapper):
    """Press FIRE once after each reset in games that need it to start (as ale-py's vector env does)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        meanings = self.env.unwrapped.get_action_meanings()
        if "FIRE" in meanings:
            obs, _, terminated, truncated, info = self.env.step(meanings.index("FIRE"))
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


@functools.lru_cache(maxsize=8)
def _area_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Area averaging as a sparse (n_out, k) gather: output cell i is the mean of the input
    interval [i n_in / n_out, (i + 1) n_in / n_out), partial pixels weighted by their overlap
    (the rule of OpenCV's INTER_AREA, which ale-py uses). Returns (indices, weights)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    k = int(np.ceil(n_in / n_out)) + 1
    idx = np.zeros((n_out, k), np.int64)
    w = np.zeros((n_out, k), np.float32)
    for i in range(n_out):
        lo, hi = edges[i], edges[i + 1]
        for m, j in enumerate(range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in))):
            idx[i, m], w[i, m] = j, min(hi, j + 1) - max(lo, j)
    return idx, w / w.sum(1, keepdims=True)


def area_resize(frame: np.ndarray, size: int = 84) -> np.ndarray:
    """(H, W) uint8 -> (size, size) uint8 by area averaging (no BLAS, no OpenCV)."""
    ri, rw = _area_weights(frame.shape[0], size)
    ci, cw = _area_weights(frame.shape[1], size)
    f = frame.astype(np.float32)
    rows = (f[ri] * rw[:, :, None]).sum(1)  # (size, W)
    out = (rows[:, ci] * cw[None]).sum(2)  # (size, size)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class AtariFrames(gym.Wrapper):
    """Machado et al. preprocessing for one ``AtariEnv(frameskip=1)`` without OpenCV: 1 to
    ``noop_max`` no-ops on reset (none when 0, the default, as Dopamine), each action repeated 4 frames (rewards summed) with the max of the last two grey
    screens, resized to 84x84 by area averaging (the rule of OpenCV's INTER_AREA, which ale-py uses)."""

    def __init__(self, env, noop_max: int = 0, frame_skip: int = 4):
        super().__init__(env)
        self.noop_max, self.frame_skip = noop_max, frame_skip
        self.observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)

    def _screen(self) -> np.ndarray:
        return self.env.unwrapped.ale.getScreenGrayscale()

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        noops = int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for _ in range(noops):
            _, _, terminated, truncated, info = self.env.step(0)  # NOOP
            if terminated or truncated:
                _, info = self.env.reset()
        return area_resize(self._screen()), info

    def step(self, action):
        total, frames = 0.0, []
        terminated = truncated = False
        info = {}
        for i in range(self.frame_skip):
            _, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if i >= self.frame_skip - 2:
                frames.append(self._screen())
            if terminated or truncated:
                break
        frame = np.maximum(frames[0], frames[-1]) if frames else self._screen()
        return area_resize(frame), total, terminated, truncated, info


def _one_mode_env(game, mode, difficulty, sticky, max_frames, noop_max, fire_reset):
    from ale_py.env import AtariEnv
    from gymnasium.wrappers import FrameStackObservation

    env = AtariEnv(game=game, mode=mode, difficulty=difficulty, obs_type="grayscale", frameskip=1,
                   repeat_action_probability=sticky, full_action_space=True, max_num_frames_per_episode=max_frames)
    env = AtariFrames(env, noop_max=noop_max)
    if fire_reset:
        env = FireOnReset(env)
    return FrameStackObservation(env, 4, padding_type=np.zeros((84, 84), np.uint8))


def make_atari_mode_env(game: str, num_envs: int, seed: int, *, mode: int | None = None,
                        difficulty: int | None = None, sticky: float = 0.25, max_frames: int = 108_000,
                        noop_max: int = 0, fire_reset: bool = False):
    """A vector env of one game in one mode/difficulty (see the module docstring)."""
    fns = [partial(_one_mode_env, game, mode, difficulty, sticky, max_frames, noop_max, fire_reset)
           for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


def atari_sequence(name: str, games: list[tuple[str, int | None, int | None]], cfg) -> Scenario:
    tasks = []
    for game, mode, difficulty in games:
        check_game(game)
        info = {"game": game, "full_action_space": True, "sticky_actions": cfg.sticky_actions,
                "noop_max": cfg.noop_max, "fire_reset": cfg.fire_reset, "episodic_life": cfg.episodic_life}
        if mode is None and difficulty is None:
            factory = partial(make_atari_env, game, full_action_space=True, **env_settings(cfg))
            task_name = game
        else:
            check_mode(game, mode, difficulty)
            factory = partial(make_atari_mode_env, game, mode=mode, difficulty=difficulty, **env_settings(cfg))
            task_name = f"{game}-m{mode if mode is not None else 'default'}-d{difficulty if difficulty is not None else 'default'}"
            info.update(mode=mode, difficulty=difficulty)
        tasks.append(RLTask(task_name, factory, info=info))
    return Scenario(name, tasks, cycles=cfg.cycles)


@dataclass
class SequentialAtariOptions:
    """The games of a sequential Atari or MinAtar scenario."""

    games: str = option("", "sequential-atari: comma-separated games, each 'game[:mode[:difficulty]]' (ALE modes and "
                            "difficulties as tasks), empty = the 6 games of CORA; sequential-minatar: comma-separated "
                            "MinAtar games, empty = all five")


@register_scenario("sequential-atari", "Atari games in sequence (--games game[:mode[:difficulty]],...; default the "
                                       "6 CORA games), --steps each, --cycles, full action space", kind="rl", preset="atari",
                   options=(SequentialAtariOptions, AtariOptions, CycleOptions))
def sequential_atari(cfg) -> Scenario:
    games = parse_games(cfg.games) if cfg.games.strip() else [(g, None, None) for g in CORA_GAMES]
    return atari_sequence("sequential-atari", games, cfg)


# The cora-atari preset: the atari preset (Dopamine DQN) with CORA's scenario settings. Registered here, beside
# the scenario, so `crl run cora-atari` starts from it (crl/flags.py auto_preset).
PRESETS.setdefault("cora-atari", {**PRESETS["atari"], **CORA_SETTINGS})


@register_scenario("cora-atari", "CORA's 6-game Atari sequence (SpaceInvaders, Krull, BeamRider, Hero, StarGunner, "
                                 "MsPacman), full action space, CORA's settings (5 cycles of 50M steps, no sticky "
                                 "actions, 30 no-ops, FIRE, episodic life, 40k-frame cap)", kind="rl",
                   preset="cora-atari",
                   options=(AtariOptions, CycleOptions))
def cora_atari(cfg) -> Scenario:
    return atari_sequence("cora-atari", [(g, None, None) for g in CORA_GAMES], cfg)


@register_scenario("mini-cora-atari", "CORA's 3-game sequence (SpaceInvaders, BeamRider, MsPacman), full action "
                                      "space", kind="rl", preset="atari", options=(AtariOptions, CycleOptions))
def mini_cora_atari(cfg) -> Scenario:
    return atari_sequence("mini-cora-atari", [(g, None, None) for g in MINI_CORA_GAMES], cfg)
