"""Name -> factory tables for everything a user can pick by name.

A new agent, torso, norm, activation, weight reparameterization, head, scenario or intervention
is one ``@REGISTRY.register`` entry in the file that defines it; ``options=SomeOptions`` names the dataclass of its options
(:mod:`crl.options`). Built-in entries live in the packages ``crl.nn``, ``crl.interventions``,
``crl.optim``, ``crl.metrics``, ``agents`` and ``scenarios``; :func:`load_builtins` imports them.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from crl import options as opts
from crl.errors import UserError, did_you_mean


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    help: str
    meta: dict[str, Any] = field(default_factory=dict)
    options: tuple[type, ...] = ()  # dataclasses of its options (crl/options.py)


class Registry:
    """A named table of factories with helpful errors for unknown names."""

    def __init__(self, kind: str, option: str):
        self.kind = kind  # e.g. "norm"
        self.option = option  # how the CLI picks from it, e.g. "--norm"
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, help: str, options: type | tuple[type, ...] = (), **meta: Any) -> Callable:
        """Decorator: ``@NORMS.register("layernorm", "LayerNorm over features")``; ``options``: the
        dataclass(es) of the entry's options, shared with other entries when they are the same class."""
        classes = options if isinstance(options, tuple) else (options,)

        def deco(factory: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            for cls in classes:
                opts.declare_for(cls, self.kind, name)
            self._entries[name] = Entry(name, factory, help, dict(meta), classes)
            return factory

        return deco

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise UserError(self.unknown_message(name))
        return self._entries[name]

    def get(self, name: str) -> Callable:
        return self.entry(name).factory

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=len(self._entries), cutoff=0.0)
        hint = did_you_mean(name, self.names()) or ";"
        return f"{self.option}: unknown {self.kind} '{name}'{hint} accepted: {', '.join(close)}"

    def help_lines(self) -> str:
        width = max((len(n) for n in self._entries), default=0)
        return "\n".join(f"  {e.name:<{width}}  {e.help}" for e in self._entries.values())


AGENTS = Registry("agent", "--agent")
TORSOS = Registry("torso", "--torso")
NORMS = Registry("norm", "--norm")
HEADS = Registry("head", "--head")
SCENARIOS = Registry("scenario", "crl run")
INTERVENTIONS = Registry("intervention", "--intervention")
OPTIMIZERS = Registry("optimizer", "--optimizer")
ACTIVATIONS = Registry("activation", "--activation")
REPARAMS = Registry("reparam", "--reparam")
LOSSES = Registry("loss", "--loss")  # classification losses of the classifier learner (crl/losses/)

_BUILTIN_MODULES = ("crl.nn", "crl.interventions", "crl.optim", "crl.optim_conda", "crl.losses", "crl.metrics.hooks",
                    "agents", "scenarios")


def load_builtins() -> None:
    """Import the packages whose modules register the built-in entries."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
