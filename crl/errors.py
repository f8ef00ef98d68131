"""The one error type a user can cause.

Anything raised as :class:`UserError` is printed by the CLI as one line on stderr and
exits with code 2; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user typed or supplied (option, value, file, data)."""


def did_you_mean(name: str, candidates) -> str:
    """``"; did you mean 'nap'?"`` for the candidate that equals ``name`` up to case, else the closest
    one by spelling; ``""`` when none is close."""
    import difflib

    candidates = list(candidates)
    same_case = [c for c in candidates if c.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
