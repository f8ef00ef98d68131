"""``crl help [NAME]``: every component with one line, or one component's options.

NAME is any registered agent, torso, value head, norm, activation, weight reparameterization,
intervention, optimizer, classification loss or scenario
(``crl help meta-rescale``), a part with options of its own (``metrics``, ``softmoe``), or
``common`` for the options every run has.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from crl import options as opts
from crl.errors import UserError, did_you_mean
from crl.registry import (ACTIVATIONS, AGENTS, HEADS, INTERVENTIONS, NORMS, OPTIMIZERS, REPARAMS, SCENARIOS, TORSOS,
                          load_builtins)
from crl.registry import LOSSES

CATALOGUE = (("agents (--agent)", AGENTS), ("torsos (--torso)", TORSOS), ("value heads (chosen by the agent)", HEADS),
             ("norms (--norm)", NORMS), ("activations (--activation)", ACTIVATIONS),
             ("weight reparameterizations (--reparam)", REPARAMS), ("interventions (--intervention)", INTERVENTIONS),
             ("optimizers (--optimizer)", OPTIMIZERS), ("classification losses (--loss, agent classifier)", LOSSES),
             ("scenarios (crl run NAME)", SCENARIOS))


def catalogue() -> str:
    parts = [f"{title}:\n{registry.help_lines()}" for title, registry in CATALOGUE]
    extra = [name for cls in opts.TABLE.in_play for kind, name in opts.users(cls)]
    parts.append("also: crl help common (every run's options), " + ", ".join(f"crl help {n.split()[0]}" for n in extra))
    return "\n\n".join(parts)


def _matches(name: str) -> list[tuple[str, str, tuple[type, ...]]]:
    """(title, one-line help, options classes) of every component called ``name``."""
    found = [(f"{registry.kind} {name}", registry.entry(name).help, registry.entry(name).options)
             for _, registry in CATALOGUE if name in registry]
    for cls in opts.TABLE.classes:
        for kind, title in opts.users(cls):
            if kind == "part" and title.split()[0] == name:
                found.append((title, (cls.__doc__ or "").strip().splitlines()[0], (cls,)))
        if name == "common" and opts.is_common(cls):
            found.append(("common", "options every run has", (cls,)))
    return found


def _known_names() -> list[str]:
    names = [n for _, registry in CATALOGUE for n in registry.names()] + ["common"]
    return names + [t.split()[0] for cls in opts.TABLE.in_play for kind, t in opts.users(cls)]


def component_help(name: str) -> str:
    from crl.config import make_config
    from crl.flags import Parser, add_option_groups, help_formatter

    found = _matches(name)
    if not found:
        known = _known_names()
        raise UserError(f"crl help: unknown component '{name}'{did_you_mean(name, known) or ';'} "
                        "`crl help` lists them all")
    out = []
    for title, text, classes in found:
        parser = Parser(prog="crl", usage=argparse.SUPPRESS, add_help=False, formatter_class=help_formatter)
        groups = {cls: "options" if len(classes) == 1 else (cls.__doc__ or cls.__name__).strip().splitlines()[0]
                  for cls in classes}
        add_option_groups(parser, groups, make_config())
        body = parser.format_help().strip() if classes else "no options"
        out.append(f"{title}: {text}\n\n{body}")
    return "\n\n".join(out)


def main(argv: Sequence[str]) -> int:
    load_builtins()
    if not argv:
        print(catalogue())
        return 0
    if len(argv) > 1:
        raise UserError(f"crl help: give one name, got {len(argv)}: {' '.join(argv)}")
    print(component_help(argv[0]), file=sys.stdout)
    return 0
