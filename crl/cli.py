"""The ``crl`` command: a subcommand per job, each in its own module.

    crl atari --agent dqn-hlgauss --norm nap      # one Atari game          (crl/run_command.py)
    crl gym --env-id CartPole-v1                   # any discrete-action gymnasium env
    crl run my_scenario.py --agent dqn-hlgauss     # a registered scenario or a user file
    crl compare runs/                              # plots and tables      (crl/compare.py)
    crl sweep --grid seed=0,1,2 -- gym             # a grid of runs        (crl/sweep.py)
    crl help [NAME]                                # components and their options

Every option is a flag (crl/flags.py); user mistakes print one line on stderr and exit with
code 2. Nothing heavy is imported before a subcommand needs it, so ``crl --help`` is quick.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from crl.errors import UserError, did_you_mean

COMMANDS = {
    "atari": "DQN on one Atari game (--game)",
    "gym": "DQN on a gymnasium env with discrete actions (--env-id)",
    "minatar": "DQN on one MinAtar game (--game), the MinAtar paper's reference DQN",
    "run": "run a scenario: a registered name or a .py file that registers one",
    "compare": "plots and tables with confidence intervals from run directories",
    "sweep": "run a grid of runs (Ray Tune, or one after another), then compare them",
    "help": "list the components (crl help) or one component's options (crl help NAME)",
}
EXIT_USER_ERROR = 2


def top_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(["usage: crl COMMAND [options]", "", "crl: a testbed for plasticity and continual learning.",
                      "", "commands:", *lines, "",
                      "crl COMMAND --help shows a command's options; crl help NAME one component's."])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader closed the pipe (`crl help | head`): stop quietly, as Unix tools do; stdout
        # goes to devnull so that the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(top_help())
        return 0
    try:
        command = _command(argv)
        if command in ("atari", "gym", "minatar", "run"):
            return _run_or_help(argv)
        if command == "help":
            from crl.help import main as help_main

            return help_main(argv[1:])
        return _compare_or_sweep(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


def _command(argv: list[str]) -> str:
    if not argv:
        raise UserError(f"crl: give a command: {', '.join(COMMANDS)} (crl --help)")
    if argv[0] not in COMMANDS:
        raise UserError(f"crl: unknown command '{argv[0]}'{did_you_mean(argv[0], COMMANDS) or ';'} "
                        f"accepted: {', '.join(COMMANDS)}")
    return argv[0]


def _run_or_help(argv: list[str]) -> int:
    if "-h" in argv[1:] or "--help" in argv[1:]:
        from crl.flags import print_run_help

        print_run_help(argv[0], [a for a in argv[1:] if a not in ("-h", "--help")])
        return 0
    from crl.run_command import main as run_main

    return run_main(argv)


def _compare_or_sweep(argv: list[str]) -> int:
    from crl.flags import Parser

    parser = Parser(prog="crl")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    if argv[0] == "compare":
        from crl.compare import add_parser, main_from_args
    else:
        from crl.sweep import add_parser, main_from_args
    add_parser(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    return main_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
