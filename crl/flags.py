"""The command line of one run, ``crl atari|gym|run ...``: flags built from the options.

Every option (:mod:`crl.options`) is a flag of the same name (``redo_tau`` -> ``--redo-tau``).
All of them parse, but help shows only the common ones and those of the components in play
(the agent, its value head, torso, norm, optimizer, interventions and scenario that this
command line picks), grouped by component; ``crl help NAME`` shows any component's. A flag
of a component that the run does not use is an error naming that component: it would
otherwise be silently ignored.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from dataclasses import fields
from typing import Any, Sequence

from crl import options as opts
from crl.config import PRESETS, Config, coerce, field_help, flag, make_config, parts_in_play, read_config_values
from crl.errors import UserError, did_you_mean
from crl.registry import AGENTS, SCENARIOS, load_builtins

RUN_COMMANDS = {
    "atari": ("atari", "DQN on one Atari game (--game)"),
    "gym": ("gym", "DQN on a gymnasium env with discrete actions (--env-id)"),
    "minatar": ("minatar", "DQN on one MinAtar game (--game), the MinAtar paper's reference DQN"),
    "run": ("auto", "run a scenario: a registered name or a .py file that registers one"),
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one UserError line (exit code 2 in the CLI),
    with a "did you mean" for a mistyped flag."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            first = next((t for t in extras if t.startswith("-")), extras[0])
            hint = did_you_mean(first.split("=")[0], known)
            self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return ns


def is_scenario_file(spec: str) -> bool:
    return spec.endswith(".py") or ".py:" in spec


def absolute(spec: str) -> str:
    """A scenario file's path made absolute (``FILE.py[:NAME]``), so ``--resume`` works from any
    working directory; a registered name as it is."""
    if not is_scenario_file(spec):
        return spec
    path, _, entry = spec.partition(".py")
    return str(Path(path + ".py").resolve()) + entry


def scenario_name(spec: str) -> str:
    """A registered scenario name; a scenario file is imported first (it registers its own)."""
    if not is_scenario_file(spec):
        return spec
    from crl.api import load_scenario_file

    return load_scenario_file(spec)


def _add_flag(parser, f, default: Any, shown: bool) -> None:
    name = flag(f.name)
    text = field_help(f)
    if "default:" not in text and default != "":
        text += f" (default: {default})"
    help_text = text.replace("%", "%%") if shown else argparse.SUPPRESS  # argparse formats help with %
    if isinstance(f.default, bool):
        parser.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    else:
        metavar = "{" + ",".join(f.metadata["choices"]) + "}" if "choices" in f.metadata else \
            type(f.default).__name__.upper()
        parser.add_argument(name, dest=f.name, default=None, metavar=metavar, help=help_text)


def help_formatter(prog: str) -> argparse.HelpFormatter:
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    return argparse.HelpFormatter(prog, max_help_position=34, width=width)


def add_option_groups(parser, groups: dict[type, str], defaults: Config, hidden: Sequence[type] = (),
                      skip: set[str] = frozenset()) -> None:
    """One argument group per options class: the common options by section, then each
    component's under ``groups[cls]``; the classes in ``hidden`` parse but are not shown."""
    sections: dict[str, Any] = {}

    def group(title: str):
        if title not in sections:
            sections[title] = parser.add_argument_group(title)
        return sections[title]

    for cls in [*groups, *hidden]:
        for f in fields(cls):
            if f.name in skip:
                continue
            title = f.metadata.get("section", "common") if opts.is_common(cls) else groups.get(cls, "hidden")
            _add_flag(group(title), f, getattr(defaults, f.name), shown=cls in groups)


def group_title(cls: type, who: str) -> str:
    """``agent dqn - DQN settings``: the component and the first line of the class docstring."""
    doc = (cls.__doc__ or "").strip().splitlines()[0].rstrip(".") if cls.__doc__ else ""
    return f"{who} - {doc}" if doc else who


def _group_titles(in_play: dict[type, str]) -> dict[type, str]:
    return {cls: "common" if opts.is_common(cls) else group_title(cls, who) for cls, who in in_play.items()}


def _context(command: str, argv: Sequence[str]) -> tuple[str, Config, str]:
    """The preset, a config with the components this command line picks (for help and the in-play
    check) and the scenario's registered name. A scenario file is imported here, so that the
    components it registers have their flags."""
    pre = Parser(prog=f"crl {command}", add_help=False, allow_abbrev=False)
    if command == "run":
        pre.add_argument("scenario", nargs="?")
        pre.add_argument("--preset", default="auto")
    add_option_groups(pre, {}, make_config(), hidden=opts.TABLE.classes, skip={"scenario"})
    ns, _ = pre.parse_known_args(argv)
    spec = ns.scenario if command == "run" else command
    name = scenario_name(spec) if spec else "gym"
    picked = {k: v for k, v in vars(ns).items() if k in ("agent", "torso", "norm", "intervention", "optimizer", "moe")
              and v is not None}
    preset = RUN_COMMANDS[command][0]
    if command == "run":
        preset = auto_preset(name, picked) if ns.preset == "auto" else ns.preset
    try:
        cfg = make_config(preset, **picked, scenario=name)
    except UserError:
        cfg = make_config(preset, scenario=name)
    return preset, cfg, name


def build_run_parser(command: str, argv: Sequence[str] = ()) -> Parser:
    """The parser of ``crl <command>``; ``argv`` (the rest of the command line) decides which
    components' options its help shows."""
    load_builtins()
    preset, context, name = _context(command, argv)
    title = RUN_COMMANDS[command][1]
    parser = Parser(prog=f"crl {command}", usage=f"crl {command}{' SCENARIO' if command == 'run' else ''} [options]",
                    description=title, formatter_class=help_formatter, allow_abbrev=False,
                    epilog="Options of a component not in play: crl help NAME (e.g. crl help redo); every "
                           "component: crl help.")
    if command == "run":
        parser.add_argument("scenario", help="scenario name or path/to/file.py[:name]")
        parser.add_argument("--preset", choices=["auto", *sorted(PRESETS)], default="auto",
                            help="defaults to start from: gym (small MLP settings), atari (Dopamine DQN settings), "
                                 "supervised (classifier, small MLP); auto: the scenario's own, else supervised for "
                                 "supervised scenarios or agents, else gym")
    in_play = parts_in_play(context, name)
    hidden = [c for c in opts.TABLE.classes if c not in in_play]
    add_option_groups(parser, _group_titles(in_play), make_config(preset), hidden, skip={"scenario"})
    parser.add_argument("--config", dest="config_file", metavar="FILE.yaml", default=None,
                        help="YAML file of option: value pairs (e.g. a run's config.yaml) used as defaults; flags "
                             "given here win; an unknown option or a wrong type is an error")
    parser.set_defaults(command=command, preset=preset if command != "run" else "auto")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``["gym", "--steps", "5000"]`` -> the namespace of ``crl gym --steps 5000``."""
    argv = list(argv)
    if not argv or argv[0] not in RUN_COMMANDS:
        raise UserError(f"crl: expected one of {', '.join(RUN_COMMANDS)}, got '{argv[0] if argv else ''}'")
    return build_run_parser(argv[0], argv[1:]).parse_args(argv[1:])


def config_from_args(args: argparse.Namespace) -> tuple[Config, set[str]]:
    """The run's config and the options set explicitly (flags or ``--config``)."""
    by_name = opts.option_fields()
    given = {k for k, v in vars(args).items() if k in by_name and v is not None and k != "scenario"}
    values = {k: coerce(by_name[k], getattr(args, k), source=flag(k)) for k in given}
    explicit = set(given)
    command_scenario = absolute(args.scenario) if args.command == "run" else args.command
    if getattr(args, "config_file", None):  # --config FILE.yaml: defaults from a file, flags win (crl/sweep.py author)
        file_values = read_config_values(args.config_file)
        if absolute(file_values.pop("scenario", command_scenario)) != command_scenario:
            raise UserError(f"--config: {args.config_file} is for another scenario than `crl {args.command}` "
                            f"({command_scenario})")
        explicit |= set(file_values)
        values = {**file_values, **values}
    values["scenario"] = command_scenario
    name = scenario_name(command_scenario)
    preset = auto_preset(name, values) if args.preset == "auto" else args.preset
    cfg = make_config(preset, **values)
    check_in_play(cfg, name, given)
    return cfg, explicit


def check_in_play(cfg: Config, scenario: str, given: set[str]) -> None:
    """A flag given for a component this run does not use is a mistake, not a no-op."""
    from crl.help import CATALOGUE

    in_play = parts_in_play(cfg, scenario)
    selects = {registry.kind: registry.option for _, registry in CATALOGUE}
    for name in sorted(given):
        cls = opts.owner(name)
        if cls not in in_play:
            kind, user = opts.users(cls)[0]
            hint = f" (it takes effect with {selects[kind]} {user})" if kind in selects else ""
            raise UserError(f"{flag(name)}: an option of {opts.title(cls)}, which this run does not use{hint}")


def auto_preset(name: str, values: dict) -> str:
    """The scenario's declared preset; else 'supervised' when the agent (if given) or the scenario
    learns supervised tasks; else 'gym'."""
    meta = SCENARIOS.entry(name).meta
    if meta.get("preset"):
        return meta["preset"]
    if "agent" in values:
        return "supervised" if AGENTS.entry(values["agent"]).meta.get("kind") == "supervised" else "gym"
    kind = meta.get("kind")
    if kind is None:  # a user scenario that does not declare its kind: build it once to look
        try:
            kind = SCENARIOS.get(name)(make_config("gym", **values)).kind
        except Exception:  # noqa: BLE001  (the real run reports any error properly)
            kind = "rl"
    return "supervised" if kind == "supervised" else "gym"


def print_run_help(command: str, argv: Sequence[str]) -> None:
    build_run_parser(command, argv).print_help(sys.stdout)
