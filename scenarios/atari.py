"""Atari through ale-py's C++ vector env (``ale_py.AtariVectorEnv``, ROMs ship in the wheel).

Protocol (Machado et al. 2018, as Dopamine runs it: ``dopamine/discrete_domains/atari_lib.py``
``create_atari_environment`` / ``AtariPreprocessing``): sticky actions 0.25 per emulator
frame, frameskip 4 with max-pool over the last two frames, 84x84 grayscale, 4-frame
zero-padded stack, **no no-op starts** and **no FIRE on reset** (stochasticity comes from
sticky actions), no episodic life, episodes capped at 108,000 frames (truncation,
bootstrapped), NEXT_STEP autoreset, and *raw* rewards: the agent clips rewards for learning,
so real game scores are logged. ``--noop-max 30`` and ``--fire-reset`` give the Mnih et al.
(2015) / CleanRL starts instead (ale-py's vector env defaults). ``--episodic-life`` makes the
DQN agent store a life loss as a terminal transition (the learning signal of CORA's and
baselines' ``EpisodicLifeEnv``) while the game plays on; logged returns and evaluation keep
whole games. ale-py's own ``episodic_life`` is not used: it restarts the whole game at the
first life loss.

ale-py 0.12.1's vector env returns the final observation of an episode with a stale last
frame: its frameskip loop stops at the terminal frame before the 4th frame is captured, so the
newest frame of that observation repeats an earlier one. The observation is used only as the
``next_obs`` of a terminating transition, whose bootstrap is masked (termination), or of a
truncation at the frame cap (bootstrapped from a slightly stale frame). crl does not work
around it (no cheap way: the vector env does not expose the last screen).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from crl.errors import UserError
from crl.options import option
from crl.scenario import RLTask, Scenario, register_scenario


@dataclass
class AtariOptions:
    """The Atari emulator protocol (Machado et al. 2018)."""

    sticky_actions: float = option(0.25, "repeat_action_probability per emulator frame (Machado et al. 2018)",
                                         check="unit")
    max_episode_frames: int = option(108_000, "Atari episode cap in frames (truncation, bootstrapped)",
                                              check="positive")
    noop_max: int = option(0, "up to this many no-op actions at each reset (0 = none, as Dopamine and Machado et "
                              "al. 2018; 30 = Mnih et al. 2015, CleanRL)", check="non_negative")
    fire_reset: bool = option(False, "press FIRE after each reset in games that need it (off as Dopamine; on in "
                                     "CleanRL and ale-py's vector env)")
    episodic_life: bool = option(False, "learn as if each life loss ended the episode (terminal transition, no "
                                        "bootstrap), the env playing on; returns and evaluation keep whole games "
                                        "(CORA's EpisodicLifeEnv; off as Dopamine)")


@dataclass
class AtariGameOptions:
    """The game of `crl atari`."""

    game: str = option("breakout", "the game: an ale-py ROM id for crl atari (breakout, pong, ms_pacman, ...); "
                                   "asterix, breakout, freeway, seaquest or space_invaders for crl minatar")
    full_action_space: bool = option(False, "use the full action set (Atari: 18 actions; MinAtar: 6)")


def atari_games() -> list[str]:
    import ale_py.roms

    return sorted(ale_py.roms.get_all_rom_ids())


def check_game(game: str) -> None:
    games = atari_games()
    if game not in games:
        import difflib

        close = difflib.get_close_matches(game, games, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}; " if close else ""
        raise UserError(f"--game: unknown Atari game '{game}'; {hint}{len(games)} games accepted, e.g. "
                        f"breakout, pong, ms_pacman, space_invaders, seaquest")


def make_atari_env(game: str, num_envs: int, seed: int, *, sticky: float = 0.25, full_action_space: bool = False,
                   max_frames: int = 108_000, noop_max: int = 0, fire_reset: bool = False):
    """The vector env; ``seed`` is applied by the learner's ``reset(seed=...)``."""
    from ale_py import AtariVectorEnv

    return AtariVectorEnv(game, num_envs, repeat_action_probability=sticky, full_action_space=full_action_space,
                          max_num_frames_per_episode=max_frames, reward_clipping=False, episodic_life=False,
                          life_loss_info=False, autoreset_mode="NextStep", noop_max=noop_max,
                          use_fire_reset=fire_reset)


def env_settings(cfg) -> dict:
    """The :func:`make_atari_env` keywords of a run's Atari options."""
    return dict(sticky=cfg.sticky_actions, max_frames=cfg.max_episode_frames, noop_max=cfg.noop_max,
                fire_reset=cfg.fire_reset)


def atari_task(game: str, cfg, steps: int | None = None) -> RLTask:
    check_game(game)
    factory = partial(make_atari_env, game, full_action_space=cfg.full_action_space, **env_settings(cfg))
    return RLTask(game, factory, steps=steps,
                  info={"game": game, "sticky_actions": cfg.sticky_actions, "full_action_space": cfg.full_action_space,
                        "episodic_life": cfg.episodic_life, "noop_max": cfg.noop_max, "fire_reset": cfg.fire_reset})


@register_scenario("atari", "one Atari game (--game), Machado et al. protocol, sticky actions 0.25",
                   options=(AtariGameOptions, AtariOptions))
def atari(cfg) -> Scenario:
    return Scenario("atari", [atari_task(cfg.game, cfg)])

