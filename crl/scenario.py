"""Scenarios: ordered streams of tasks, knowing nothing of agents.

A user-defined scenario is a short Python file::

    import crl

    @crl.register_scenario("two-cartpoles", "CartPole, then CartPole with longer poles")
    def two_cartpoles(cfg):
        return crl.Scenario("two-cartpoles", [
            crl.RLTask("short", crl.gym_env_factory("CartPole-v1")),
            crl.RLTask("long", crl.gym_env_factory("CartPole-v1", length=1.0)),
        ])

and runs with ``crl run path/to/file.py --agent dqn-hlgauss``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from crl.errors import UserError
from crl.registry import SCENARIOS

# (num_envs, seed) -> a gymnasium VectorEnv (or ale_py.AtariVectorEnv) with NEXT_STEP autoreset.
EnvFactory = Callable[[int, int], Any]


@dataclass
class RLTask:
    """One RL task: a vector-env factory and an optional step budget (else ``--steps``)."""

    name: str
    make_env: EnvFactory
    steps: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # free-form: game, mode, difficulty, ...

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
    """Decorator registering ``fn(cfg) -> Scenario`` under ``name`` (``--scenario name``).

    ``kind="supervised"`` (or ``"rl"``) lets ``crl run NAME`` pick the matching preset without building it."""
    return SCENARIOS.register(name, help, **meta)


def build_scenario(name: str, cfg) -> Scenario:
    scenario = SCENARIOS.get(name)(cfg)
    if not isinstance(scenario, Scenario):
        raise UserError(f"--scenario: '{name}' returned {type(scenario).__name__}, expected crl.Scenario")
    scenario.validate()
    return scenario
