"""The one error type a user can cause.

Anything raised as :class:`UserError` is printed by the CLI as one line on stderr and
exits with code 2; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user typed or supplied (option, value, file, data)."""
