"""``crl atari|gym|run ...``: one run from a command line, and its exit code.

Exit codes: 0 done; 1 the run stopped on a NaN/inf in the loss, a gradient or a parameter
(the message names the step and the layer; the last good state is in the run's
checkpoints/last_good_step_*.pt); 2 bad input, nothing ran or was written; 128+N stopped by
signal N (130 SIGINT, 143 SIGTERM) after writing a final checkpoint: ``--resume RUN_DIR``
continues the run exactly.
"""
from __future__ import annotations

import sys
from typing import Sequence

from crl.config import adapt_to_budget
from crl.errors import UserError
from crl.flags import config_from_args, parse_args

EXIT_USER_ERROR = 2


def main(argv: Sequence[str]) -> int:
    """``argv``: the command and its flags, e.g. ``["gym", "--steps", "5000"]``."""
    from crl import api
    from crl.reliability import EXIT_NUMERICAL, NumericalError, exit_code_for_signal

    try:
        args = parse_args(argv)
        cfg, explicit = config_from_args(args)
        if cfg.resume:  # the other flags given may change a few options of the run (crl.api.resume)
            summary = api.resume(cfg.resume, {k: getattr(cfg, k) for k in explicit - {"resume"}})
        else:
            summary = api.run(cfg, notes=adapt_to_budget(cfg, explicit))
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
    if summary.get("already_finished"):  # --resume of a finished run: api.resume said so in one line
        return 0
    final = ", ".join(f"{k}={v:.2f}" for k, v in summary["final_scores"].items())
    print(f"done: {summary['run_dir']}  final eval: {final}")
    return 0
