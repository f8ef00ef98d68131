"""MinAtar (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible
Reinforcement Learning Experiments", arXiv 1903.03176; code: github.com/kenjyoung/MinAtar).

Five Atari-like games on a 10x10 grid (asterix, breakout, freeway, seaquest, space_invaders),
each observation ``(10, 10, C)`` booleans with one channel per object kind (C = 4, 4, 7, 10, 6).
The ``minatar`` package is an optional, GPL-licensed extra (``pip install -e ".[minatar]"``);
crl imports it only when a MinAtar scenario is built.

``crl minatar --game breakout`` runs one game with the ``minatar`` preset (crl/config.py), the
reference DQN of the paper and of ``examples/dqn.py`` in the MinAtar repository; the table of
its values and their sources is in README.md, section "MinAtar".

What crl's env does (:class:`MinAtarVectorEnv`, written for crl on ``minatar.Environment``,
not the package's gymnasium wrapper):

* sticky actions with probability ``--minatar-sticky-actions`` (MinAtar's default 0.1) and
  difficulty ramping (``--minatar-difficulty-ramping``, MinAtar's default on), both done by
  ``minatar.Environment`` itself;
* actions: with ``--full-action-space`` (the preset's setting) all 6 MinAtar actions, as
  ``examples/dqn.py`` uses (``env.num_actions()`` = 6 for every game); without it the game's
  minimal action set (what the gymnasium ids ``MinAtar/<Game>-v1`` use);
* observations: channel-first ``(C, 10, 10)`` uint8 with values 0 or 255, so that every crl
  torso's ``uint8 / 255`` gives exactly the reference's 0/1 floats, and replay stores 1 byte
  per cell; ``channels`` pads with all-zero channels to a common count (sequential MinAtar);
* episodes end only when the game ends (terminated; MinAtar has no time limit of its own:
  freeway ends itself after 2,500 frames); raw rewards (all MinAtar rewards are 0 or 1);
* NEXT_STEP autoreset, as every crl RL env: the step after a terminal step resets that game;
* seeding: ``reset(seed=s)`` seeds game ``k`` with ``(s + k) mod 2**32`` (``Environment.seed``: one numpy
  RandomState for the game and its sticky actions); the env pickles, so a checkpoint holds it
  and ``--resume`` continues its episodes exactly.

``sequential-minatar``: the games in a cycle as tasks (``--games``, default all five;
``--cycles``), all with the full 6-action set so that one Q-head output means the same
action in every game, and observations padded with zero channels to the largest channel count
of the chosen games (10 when seaquest is in the list). The padding is documented in the task
info (``channels``); it adds inputs that are always 0, which the first conv sees as absent.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np

from crl.errors import UserError
from crl.options import option
from crl.scenario import CycleOptions, RLTask, Scenario, register_scenario
from scenarios.atari import AtariGameOptions
from scenarios.sequential_atari import SequentialAtariOptions

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}
NUM_ACTIONS = 6  # every MinAtar game: no-op, left, up, right, down, fire
INSTALL_HINT = ("MinAtar is an optional extra (GPL-3.0): install it with pip install -e \".[minatar]\" "
                "(or pip install minatar)")


def require_minatar():
    """The ``minatar`` package, or one UserError line saying how to install it."""
    try:
        import minatar
    except ImportError:
        raise UserError(f"crl minatar: the package 'minatar' is not installed; {INSTALL_HINT}") from None
    return minatar


def check_game(game: str, flag: str = "--game") -> None:
    if game not in GAMES:
        hint = difflib.get_close_matches(game, GAMES, n=1, cutoff=0.5)
        hint_text = f"; did you mean '{hint[0]}'?" if hint else ";"
        raise UserError(f"{flag}: unknown MinAtar game '{game}'{hint_text} accepted: {', '.join(GAMES)}")


@dataclass
class MinAtarOptions:
    """MinAtar's environment settings (Young & Tian 2019; defaults: minatar.Environment's)."""

    minatar_sticky_actions: float = option(0.1, "MinAtar: probability that the previous action is repeated "
                                                "(MinAtar's default 0.1)", check="unit")
    minatar_difficulty_ramping: bool = option(True, "MinAtar: games speed up as they go on (MinAtar's default)")


class MinAtarVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of one MinAtar game in one process (see the module docstring).

    A plain loop over ``minatar.Environment`` objects: a MinAtar step costs 10-100 us of
    Python, so threads or processes would cost more than they save."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, game: str, num_envs: int, *, sticky: float = 0.1, ramping: bool = True,
                 full_action_space: bool = True, channels: int | None = None):
        minatar = require_minatar()
        check_game(game)
        self.game, self.num_envs = game, int(num_envs)
        self.games = [minatar.Environment(game, sticky_action_prob=sticky, difficulty_ramping=ramping)
                      for _ in range(self.num_envs)]
        self.game_channels = CHANNELS[game]
        self.channels = int(channels or self.game_channels)
        if self.channels < self.game_channels:
            raise UserError(f"MinAtar {game}: has {self.game_channels} channels, cannot pad to {self.channels}")
        actions = range(NUM_ACTIONS) if full_action_space else self.games[0].minimal_action_set()
        self.action_set = [int(a) for a in actions]
        self.single_observation_space = gym.spaces.Box(0, 255, (self.channels, 10, 10), np.uint8)
        self.single_action_space = gym.spaces.Discrete(len(self.action_set))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._state = np.zeros((self.num_envs, self.channels, 10, 10), bool)  # padded channels stay False
        self._done = np.zeros(self.num_envs, bool)
        self._reward = np.zeros(self.num_envs, np.float32)
        self._term = np.zeros(self.num_envs, bool)
        self._trunc = np.zeros(self.num_envs, bool)  # MinAtar never truncates

    def _read(self, i: int) -> None:
        self._state[i, :self.game_channels] = self.games[i].state().transpose(2, 0, 1)

    def _obs(self) -> np.ndarray:
        return self._state.view(np.uint8) * np.uint8(255)  # a new array: callers keep it

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        for i, g in enumerate(self.games):
            if seed is not None:  # numpy's RandomState takes seeds below 2**32 (evaluation seeds can be larger)
                g.seed((seed + i) % 2 ** 32)
            g.reset()
            self._read(i)
        self._done[:] = False
        return self._obs(), {}

    def step(self, actions):
        actions = np.asarray(actions).reshape(-1)
        for i, g in enumerate(self.games):
            if self._done[i]:  # NEXT_STEP autoreset: this step only resets the game
                g.reset()
                self._reward[i], self._term[i] = 0.0, False
            else:
                r, d = g.act(self.action_set[int(actions[i])])
                self._reward[i], self._term[i] = r, d
            self._read(i)
        self._done[:] = self._term
        return self._obs(), self._reward.copy(), self._term.copy(), self._trunc.copy(), {}

    def close(self, **kwargs) -> None:
        pass  # MinAtar holds no resources


def make_minatar_env(game: str, num_envs: int, seed: int, *, sticky: float = 0.1, ramping: bool = True,
                     full_action_space: bool = True, channels: int | None = None) -> MinAtarVectorEnv:
    """``(num_envs, seed) -> env`` for :class:`crl.RLTask`; ``seed`` is applied by the learner's ``reset``."""
    return MinAtarVectorEnv(game, num_envs, sticky=sticky, ramping=ramping, full_action_space=full_action_space,
                            channels=channels)


def minatar_task(game: str, cfg, *, full_action_space: bool, channels: int | None = None) -> RLTask:
    check_game(game)
    factory = partial(make_minatar_env, game, sticky=cfg.minatar_sticky_actions,
                      ramping=cfg.minatar_difficulty_ramping, full_action_space=full_action_space, channels=channels)
    # "minatar_game", not "game": info["game"] names an Atari ROM (crl/metrics/human_normalized.py would score
    # MinAtar breakout against Atari Breakout's human and random scores)
    return RLTask(game, factory, info={"minatar_game": game, "channels": channels or CHANNELS[game],
                                       "game_channels": CHANNELS[game], "full_action_space": full_action_space,
                                       "sticky_actions": cfg.minatar_sticky_actions,
                                       "difficulty_ramping": cfg.minatar_difficulty_ramping, "frame_stack": 1})


@register_scenario("minatar", "one MinAtar game (--game: asterix, breakout, freeway, seaquest, space_invaders); "
                              "the MinAtar paper's DQN preset", options=(AtariGameOptions, MinAtarOptions),
                   kind="rl", preset="minatar")
def minatar_scenario(cfg) -> Scenario:
    require_minatar()
    return Scenario("minatar", [minatar_task(cfg.game, cfg, full_action_space=cfg.full_action_space)])


def parse_minatar_games(spec: str) -> list[str]:
    games = [s.strip() for s in spec.split(",") if s.strip()] if spec.strip() else list(GAMES)
    for g in games:
        check_game(g, "--games")
    if len(set(games)) != len(games):
        raise UserError(f"--games: each game at most once per cycle (use --cycles to repeat), got {spec}")
    return games


@register_scenario("sequential-minatar", "MinAtar games in a cycle (--games, default all five; --cycles), full "
                                         "6-action set, channels zero-padded to a common count",
                   options=(SequentialAtariOptions, MinAtarOptions, CycleOptions), kind="rl",
                   preset="sequential-minatar")
def sequential_minatar(cfg) -> Scenario:
    require_minatar()
    games = parse_minatar_games(cfg.games)
    channels = max(CHANNELS[g] for g in games)
    return Scenario("sequential-minatar", [minatar_task(g, cfg, full_action_space=True, channels=channels)
                                           for g in games], cycles=cfg.cycles)
