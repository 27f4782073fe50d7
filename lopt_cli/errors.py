"""User-facing errors: one clear line, exit status 2, no traceback (DESIGN §5)."""


class LoptUserError(Exception):
    """A bad input from the user: an override, a file, a task that cannot be built."""

    exit_code = 2


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
