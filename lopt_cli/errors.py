"""User-facing errors: one clear line, exit status 2, no traceback (DESIGN §5)."""


class LoptUserError(Exception):
    """A bad input from the user: an override, a file, a task that cannot be built."""

    exit_code = 2
