"""Scenarios: ordered streams of tasks, knowing nothing of agents.

A user-defined scenario is a short Python file::

    import crl

    @crl.register_scenario("two-cartpoles", "CartPole, then CartPole cut at 200 steps", kind="rl")
    def two_cartpoles(cfg):
        return crl.Scenario("two-cartpoles", [
            crl.RLTask("cartpole500", crl.gym_env_factory("CartPole-v1")),
            crl.RLTask("cartpole200", crl.gym_env_factory("CartPole-v1", max_episode_steps=200)),
        ])

and runs with ``crl run path/to/file.py --agent dqn-hlgauss``.
"""
from __future__ import annotations

import contextlib
import hashlib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from crl.errors import UserError
from crl.options import option
from crl.registry import SCENARIOS

# (num_envs, seed) -> a gymnasium VectorEnv (or ale_py.AtariVectorEnv) with NEXT_STEP autoreset.
EnvFactory = Callable[[int, int], Any]


@dataclass
class RLTask:
    """One RL task: a vector-env factory and an optional step budget (else ``--steps``).

    ``make_env(num_envs, seed)`` returns a new vector env of ``num_envs`` copies of the task's
    environment (a gymnasium ``VectorEnv`` or an ``ale_py.AtariVectorEnv``; ``crl.gym_env_factory``
    makes one). It must use NEXT_STEP autoreset (the step after an episode end returns the reset
    observation): the DQN learner assumes it and does not check it. The tasks of a scenario must
    share the observation shape and the number of (discrete) actions; the DQN learner checks that
    when it is built.

    Who seeds the env: the learner, not the factory. The DQN learner (``agents/dqn.py``) calls
    ``env = make_env(n, s)`` and then ``env.reset(seed=s)`` with the same ``s``; an integer seed
    seeds sub-env ``k`` with ``s + k`` (gymnasium's and ale-py's rule). After that first reset it
    passes no seed: later episodes continue each sub-env's own random stream. The built-in factories
    (``crl.gym_env_factory``, ``scenarios/atari.py``, ``scenarios/sequential_atari.py``) ignore
    ``seed`` for this reason. The values the DQN learner uses:

    * training, stream position ``i`` (cycles unrolled): ``n = --num-envs``,
      ``s = --seed + 10007 * i``; a new env at each task switch, and again at a resume when the
      env could not be pickled into the checkpoint (e.g. ale-py's C++ vector env; its episodes then
      restart from the same ``s``);
    * evaluation: a new env per task and evaluation sweep, ``n = --eval-episodes`` (one episode per
      sub-env), ``s = --seed * 1000003 + 7919 * eval_index + 1`` with ``eval_index = sweep *
      len(tasks) + task position``, closed afterwards; so every evaluation gets new seeds;
    * reading the spaces when the learner is built: ``make_env(1, env_seed(--seed))``, never reset,
      closed.

    Every ``s`` above goes through ``agents.dqn.env_seed`` (``s mod (2**31 - 2**20)``, ALE's seed
    range; the identity for seeds below about 2.1e9).

    Random actions come from the learner's own generators (training: seeded from ``--seed``;
    evaluation: from ``s``), never from ``action_space.sample()``, so the env's action space needs
    no seed.
    """

    name: str
    make_env: EnvFactory
    steps: int | None = None
    # free-form (game, mode, difficulty, ...); read by crl: "game" (an Atari ROM id: eval/<task>/hns) and
    # "frame_stack" (how many of an image observation's channels are stacked frames, which replay stores
    # once; default: all channels of a 3-D observation, 1 otherwise)
    info: dict[str, Any] = field(default_factory=dict)

    kind = "rl"


@dataclass
class SupervisedTask:
    """One supervised task: train/test datasets of (x, y) and the classes it holds."""

    name: str
    train: Any  # torch Dataset returning (x, y)
    test: Any
    classes: Sequence[int]
    task_label: int = 0
    steps: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    kind = "supervised"


@dataclass
class Scenario:
    """An ordered list of tasks, run ``cycles`` times (the task list repeats)."""

    name: str
    tasks: list
    cycles: int = 1

    def stream(self) -> list:
        """The tasks in training order, cycles unrolled."""
        return list(self.tasks) * self.cycles

    @property
    def kind(self) -> str:
        return self.tasks[0].kind

    def validate(self) -> None:
        """Refuse a scenario that cannot be trained, before any training starts."""
        if not self.tasks:
            raise UserError(f"scenario '{self.name}': it has no tasks")
        if self.cycles < 1:
            raise UserError(f"scenario '{self.name}': cycles must be >= 1, got {self.cycles}")
        kinds = {t.kind for t in self.tasks}
        if len(kinds) > 1:
            raise UserError(f"scenario '{self.name}': mixes RL and supervised tasks")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise UserError(f"scenario '{self.name}': task names must be unique, got {names}")
        for t in self.tasks:
            if t.steps is not None and t.steps <= 0:
                raise UserError(f"scenario '{self.name}': task '{t.name}' has steps={t.steps}; must be > 0")
            if t.kind == "supervised" and len(t.train) == 0:
                raise UserError(f"scenario '{self.name}': task '{t.name}' has an empty training set")
            if t.kind == "supervised" and (len(t.test) == 0 or len(list(t.classes)) == 0):
                raise UserError(f"scenario '{self.name}': task '{t.name}' has an empty test set or no classes")
        if self.kind == "supervised":  # inputs must share one shape (one network for every task)
            shapes = {t.name: tuple(getattr(t.train[0][0], "shape", ())) for t in self.tasks}
            if len(set(shapes.values())) > 1:
                raise UserError(f"scenario '{self.name}': tasks have different input shapes {shapes}")


def register_scenario(name: str, help: str = "user-defined scenario", **meta):
    """Decorator registering ``fn(cfg) -> Scenario`` under ``name`` (``crl run name``).

    ``kind="supervised"`` (or ``"rl"``) lets ``crl run NAME`` pick the matching preset without building it."""
    return SCENARIOS.register(name, help, **meta)


def build_scenario(name: str, cfg) -> Scenario:
    build = SCENARIOS.get(name)
    scenario = build(cfg)
    if not isinstance(scenario, Scenario):
        raise UserError(f"crl run: scenario '{name}' returned {type(scenario).__name__}, expected crl.Scenario")
    scenario.validate()
    if getattr(build, "__module__", "").startswith(USER_MODULE_PREFIX):  # from a user's file: one-line env errors
        file = getattr(getattr(build, "__code__", None), "co_filename", name)
        for task in scenario.tasks:
            if task.kind == "rl" and not isinstance(task.make_env, UserEnvFactory):
                task.make_env = UserEnvFactory(file, task.name, task.make_env)
    return scenario


# ------------------------------------------------------------------------------ user scenario files

USER_MODULE_PREFIX = "crl_user_scenario_"
_USER_FILES: set[str] = set()  # resolved paths of the scenario files imported by crl.api.load_scenario_file


def user_module_name(path) -> str:
    """The module name a scenario file is imported under: the same in every process for the same file
    (a digest of its resolved path; ``hash()`` of a str changes per process), because a checkpoint
    pickles the env, and a wrapper class or function of the file in it, by that module name."""
    resolved = str(Path(path).resolve())
    _USER_FILES.add(resolved)
    return USER_MODULE_PREFIX + hashlib.sha256(resolved.encode()).hexdigest()[:16]


def user_frame(err: BaseException) -> tuple[str, int] | None:
    """(file, line) of the innermost frame of ``err``'s traceback inside a user's scenario file, or None."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if str(Path(frame.filename).resolve()) in _USER_FILES:
            return frame.filename, frame.lineno
    return None


def user_error_line(err: BaseException, frame: tuple[str, int | None]) -> str:
    """``scenario file F (line N): Type: first line of the message`` (no line when N is None)."""
    # str() of a SyntaxError repeats the file and line
    message = err.msg if isinstance(err, SyntaxError) else _first_line(err)
    where = f" (line {frame[1]})" if frame[1] else ""
    return f"scenario file {frame[0]}{where}: {type(err).__name__}" + (f": {message}" if message else "")


class UserEnvFactory:
    """The ``make_env`` of a task from a user's scenario file: an exception while building the env
    (e.g. a misspelt keyword of ``crl.gym_env_factory``, raised inside gymnasium with no frame in
    the user's file) becomes one :class:`UserError` line naming the file and the task."""

    def __init__(self, file: str, task_name: str, make_env: EnvFactory):
        self.file, self.task_name, self.make_env = file, task_name, make_env

    def __call__(self, num_envs: int, seed: int) -> Any:
        try:
            return self.make_env(num_envs, seed)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001  (the user's factory; reported, not a crl bug)
            frame = user_frame(err) or (self.file, None)
            raise UserError(f"task '{self.task_name}': make_env({num_envs}, {seed}) failed: "
                            f"{user_error_line(err, frame)}") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


@contextlib.contextmanager
def user_code_errors() -> Iterator[None]:
    """Report an exception raised by code of a user's scenario file (the scenario function, a
    ``make_env``, an env wrapper) as one :class:`UserError` line naming that file and line; any
    other exception is crl's own bug and keeps its traceback."""
    from crl.reliability import NumericalError

    try:
        yield
    except (UserError, NumericalError):
        raise
    except Exception as err:  # noqa: BLE001  (re-raised unless the user's file raised it)
        frame = user_frame(err)
        if frame is None:
            raise
        raise UserError(user_error_line(err, frame)) from None


@dataclass
class CycleOptions:
    """Repetition of a scenario's task sequence."""

    cycles: int = option(1, "times the whole task sequence is repeated (sequential-atari, split and plasticity "
                            "scenarios)", check="positive")
