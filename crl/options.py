"""Options that live with their component.

A component (agent, torso, norm, head, intervention, optimizer, scenario) that has settings
declares them as a small dataclass beside its code and names it in its registry line::

    @dataclass
    class RedoOptions:
        redo_tau: float = option(0.1, "a unit is dormant when its score is <= this", check="non_negative")

    @INTERVENTIONS.register("redo", "ReDo (Sokar et al. 2023)", options=RedoOptions)
    def _redo(cfg): ...

Each field becomes the flag ``--redo-tau`` and the ``config.yaml`` key ``redo_tau``; the run's
:class:`crl.config.Config` composes the options of every declared class, so the component reads
``cfg.redo_tau`` (or ``cfg.options(RedoOptions).redo_tau``). Field names are one flat namespace:
declaring a name twice is an error at import time. Parts that are not picked from a registry
(the metrics hook, the SoftMoE layer) declare theirs with :func:`declare_options` and say when
they are in play. Help screens show the options of the components in play only (``crl help NAME``
shows one component's). Parts built without the config at hand (a norm inside a torso) get
theirs from :func:`current`: the options of the run being built.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import field
from typing import Any, Callable, Iterator

CHECKS = {  # name -> (test, message); the flag-naming error is built in crl.config.validate
    "positive": (lambda v: v > 0, "must be > 0"),
    "non_negative": (lambda v: v >= 0, "must be >= 0"),
    "unit": (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"),
}


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, check: str | None = None,
           section: str | None = None) -> Any:
    """A dataclass field that is also a command-line flag.

    ``help`` is the flag's one-line help; ``choices`` the accepted strings; ``check`` one of
    :data:`CHECKS` (a range test run before anything is built); ``section`` groups the common
    options in help screens."""
    if check is not None and check not in CHECKS:
        raise ValueError(f"option check '{check}' is not one of {', '.join(CHECKS)}")
    meta = {"help": help, "choices": choices, "check": check, "section": section}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


class _Table:
    """Which class owns each option name, and which components use each class."""

    def __init__(self) -> None:
        self.classes: list[type] = []
        self.owner: dict[str, type] = {}
        self.users: dict[type, list[tuple[str, str]]] = {}  # cls -> [(kind, name)], e.g. ("intervention", "redo")
        self.in_play: dict[type, Callable[[Any], bool]] = {}  # classes not picked from a registry

    def add(self, cls: type) -> None:
        if cls in self.users:
            return
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"options class {cls.__name__} must be a @dataclass")
        for f in dataclasses.fields(cls):
            other = self.owner.get(f.name)
            if other is not None:
                raise ValueError(f"option '{f.name}' of {cls.__name__} is already declared by {other.__name__}")
        for f in dataclasses.fields(cls):
            self.owner[f.name] = cls
        self.classes.append(cls)
        self.users[cls] = []


TABLE = _Table()


def declare_common(cls: type) -> None:
    """The common options (every run has them): :class:`crl.config.RunOptions`."""
    TABLE.add(cls)


def declare_for(cls: type, kind: str, name: str) -> None:
    """``cls`` holds options of the registry entry ``name`` of ``kind`` (called by ``Registry.register``)."""
    TABLE.add(cls)
    TABLE.users[cls].append((kind, name))


def declare_options(cls: type, title: str, in_play: Callable[[Any], bool]) -> type:
    """Options of a part that is not picked from a registry; ``in_play(cfg)`` says when it is used."""
    TABLE.add(cls)
    TABLE.users[cls].append(("part", title))
    TABLE.in_play[cls] = in_play
    return cls


def option_fields() -> dict[str, dataclasses.Field]:
    """Every declared option by name: the common ones first, then each class in declaration order."""
    classes = sorted(TABLE.classes, key=lambda cls: not is_common(cls))
    return {f.name: f for cls in classes for f in dataclasses.fields(cls)}


def owner(name: str) -> type | None:
    return TABLE.owner.get(name)


def is_common(cls: type) -> bool:
    """Declared with :func:`declare_common`: options every run has."""
    return cls in TABLE.users and not TABLE.users[cls]


def users(cls: type) -> list[tuple[str, str]]:
    return TABLE.users.get(cls, [])


def title(cls: type) -> str:
    """How help screens name the component(s) of ``cls``, e.g. ``intervention redo``."""
    by_kind: dict[str, list[str]] = {}
    for kind, name in users(cls):
        by_kind.setdefault(kind, []).append(name)
    if not by_kind:
        return "common"
    return "; ".join(names[0] if kind == "part" else f"{kind} {', '.join(names)}" for kind, names in by_kind.items())


_BUILDING: list[Any] = []


@contextlib.contextmanager
def building(cfg: Any) -> Iterator[None]:
    """Within this block :func:`current` answers from ``cfg`` (``crl.api.prepare`` builds a run in it)."""
    _BUILDING.append(cfg)
    try:
        yield
    finally:
        _BUILDING.pop()


def current(cls: type) -> Any:
    """The options ``cls`` of the run being built; outside :func:`building`, its defaults."""
    return _BUILDING[-1].options(cls) if _BUILDING else cls()


def values(classes: tuple[type, ...]) -> dict[str, Any]:
    """``{option: value}`` of ``classes`` in the run being built (see :func:`current`)."""
    return {f.name: getattr(current(cls), f.name) for cls in classes for f in dataclasses.fields(cls)}
