"""The ``crl`` command. Subcommands map onto :class:`crl.config.Config` with a preset:

    crl atari --agent dqn-hlgauss --norm nap      # one Atari game
    crl gym --env-id CartPole-v1                   # any discrete-action gymnasium env
    crl run my_scenario.py --agent dqn-hlgauss     # a user-defined scenario file

Every config field is a flag; user mistakes print one line on stderr and exit with code 2.
``--config FILE.yaml`` reads field values from YAML as defaults (flags win).

Exit codes: 0 done; 1 the run stopped on a NaN/inf in the loss, a gradient or a parameter
(the message names the step and the layer; the last good state is in the run's
checkpoints/last_good_step_*.pt); 2 bad input, nothing ran or was written; 128+N stopped by
signal N (130 SIGINT, 143 SIGTERM) after writing a final checkpoint: ``--resume RUN_DIR``
continues the run exactly. ``crl sweep`` (crl/sweep.py) runs a grid of these commands.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Sequence

from crl.config import Config, PRESETS, adapt_to_budget, coerce, field_help, make_config
from crl.errors import UserError
from crl.registry import AGENTS, HEADS, INTERVENTIONS, NORMS, OPTIMIZERS, SCENARIOS, TORSOS, load_builtins

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line (no usage block), exit code 2."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def _catalogue() -> str:
    load_builtins()
    parts = [("agents (--agent)", AGENTS), ("torsos (--torso)", TORSOS), ("value heads (chosen by the agent)", HEADS),
             ("norms (--norm)", NORMS), ("interventions (--intervention)", INTERVENTIONS),
             ("optimizers (--optimizer)", OPTIMIZERS), ("scenarios (crl run NAME)", SCENARIOS)]
    return "\n\n".join(f"{title}:\n{reg.help_lines()}" for title, reg in parts)


def _add_config_flags(parser: argparse.ArgumentParser, preset: str, skip: set[str]) -> None:
    defaults = make_config(preset)
    for f in fields(Config):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{field_help(f)} (default: {default})".replace("%", "%%")  # argparse formats help with %
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=type(f.default).__name__.upper(),
                                help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crl", description="crl: a testbed for plasticity and continual learning.",
                     epilog=_catalogue(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, preset, help_text, skip in (
        ("atari", "atari", "DQN on one Atari game (--game)", {"scenario", "env_id"}),
        ("gym", "gym", "DQN on a gymnasium env with discrete actions (--env-id)", {"scenario", "game"}),
        ("run", "gym", "run a scenario: a registered name or a .py file that registers one", {"scenario"}),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_catalogue(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "run":
            p.add_argument("scenario", help="scenario name or path/to/file.py[:name]")
            p.add_argument("--preset", choices=["auto", *sorted(PRESETS)], default="auto",
                           help="defaults to start from: gym (small MLP settings), atari (Dopamine DQN settings), "
                                "supervised (classifier, small MLP); auto: supervised for supervised scenarios "
                                "or agents, else gym")
        _add_config_flags(p, preset, skip)
        p.add_argument("--config", dest="config_file", metavar="FILE.yaml", default=None,
                       help="YAML file of field: value pairs (e.g. a run's config.yaml) used as defaults; flags "
                            "given here win; an unknown field or a wrong type is an error")
        p.set_defaults(preset="auto" if name == "run" else preset, command=name)
    from crl.compare import add_parser as add_compare_parser

    add_compare_parser(sub)  # `crl compare RUN_DIR...` (crl/compare.py)
    from crl.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)  # `crl sweep --grid k=v1,v2 -- gym ...` (crl/sweep.py)
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[Config, set[str]]:
    by_name = {f.name: f for f in fields(Config)}
    explicit = {k for k, v in vars(args).items() if k in by_name and v is not None and k != "scenario"}
    values = {k: coerce(by_name[k], getattr(args, k), source="--" + k.replace("_", "-")) for k in explicit}
    if getattr(args, "config_file", None):  # --config FILE.yaml: defaults from a file, flags win (crl/sweep.py author)
        from crl.config import read_config_values

        file_values = read_config_values(args.config_file)
        command_scenario = args.scenario if args.command == "run" else args.command
        if file_values.pop("scenario", command_scenario) != command_scenario:
            raise UserError(f"--config: {args.config_file} is for another scenario than `crl {args.command}` "
                            f"({command_scenario})")
        explicit |= set(file_values)
        values = {**file_values, **values}
    if args.command == "run":
        values["scenario"] = args.scenario
    else:
        values["scenario"] = args.command
    preset = _auto_preset(values) if args.preset == "auto" else args.preset
    return make_config(preset, **values), explicit


def _auto_preset(values: dict) -> str:
    """The scenario's declared preset; else 'supervised' when the agent (if given) or the scenario
    learns supervised tasks; else 'gym'."""
    load_builtins()
    from crl.api import load_scenario_file

    spec = values["scenario"]
    name = load_scenario_file(spec) if spec.endswith(".py") or ".py:" in spec else spec
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


def main(argv: Sequence[str] | None = None) -> int:
    from crl import api
    from crl.reliability import EXIT_NUMERICAL, NumericalError, exit_code_for_signal

    try:
        args = build_parser().parse_args(argv)
        if args.command == "compare":
            from crl.compare import main_from_args

            return main_from_args(args)
        if args.command == "sweep":
            from crl.sweep import main_from_args as sweep_main

            return sweep_main(args)
        cfg, explicit = config_from_args(args)
        notes = [] if cfg.resume else adapt_to_budget(cfg, explicit)
        summary = api.run(cfg, notes=notes)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NumericalError as err:  # the run diverged: exit 1 (crl/reliability.py)
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NUMERICAL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if summary.get("stop_signal"):  # SIGINT/SIGTERM: final checkpoint written, exit 128 + signal number
        again = f"crl {args.command}{' ' + args.scenario if args.command == 'run' else ''} --resume {summary['run_dir']}"
        print(f"stopped by {summary['stop_signal']} at step {summary['global_step']}; final checkpoint written; "
              f"continue with: {again}", file=sys.stderr)
        return exit_code_for_signal(summary["stop_signal"])
    final = ", ".join(f"{k}={v:.2f}" for k, v in summary["final_scores"].items())
    print(f"done: {summary['run_dir']}  final eval: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
