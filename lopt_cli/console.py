"""The rich console that commands print their tables on.

On a terminal rich uses the terminal's width; when stdout is a file or a pipe (a Hydra log,
``make demo > file``) it would fall back to 80 columns and wrap every wide row into several
lines, so such output gets ``NON_TERMINAL_WIDTH`` columns (``COLUMNS=N`` still overrides it).

Off a terminal rich draws a progress bar only when it stops, so a long job run in the
background (``nohup lopt meta-train ... > log &``) would write nothing for hours; such jobs also
print a plain progress line every :func:`heartbeat_seconds` (``LOPT_PROGRESS_EVERY``).

Progress bars come from :func:`progress_bar`: rich redraws them on a thread, and TFDS's imports
(``etils.epy.lazy_imports``) swap ``builtins.__import__`` for every thread while they run, so a
redraw that imports (rich's markup renderer does, at each call) inside such a window dies with
"Relative import statements not supported" and the bar freezes. TFDS is imported before a bar
starts, and a redraw inside a window shows the previous frame.
"""
from __future__ import annotations

import builtins
import functools
import math
import os
import time

from rich.console import Console, RenderableType
from rich.progress import Progress
from rich.text import Text

from lopt_cli.errors import LoptUserError

NON_TERMINAL_WIDTH = 160
HEARTBEAT_ENV = "LOPT_PROGRESS_EVERY"  # seconds between plain progress lines off a terminal
DEFAULT_HEARTBEAT_SECONDS = 60.0


def output_console(stderr: bool = False, file=None) -> Console:
    """A Console on stdout (or stderr, or ``file``) that is wide enough off a terminal."""
    console = Console(stderr=stderr, file=file)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = NON_TERMINAL_WIDTH
    return console


def heartbeat_interval() -> float:
    """``LOPT_PROGRESS_EVERY`` in seconds (default 60; 0: every step); a one-line
    :class:`LoptUserError` for anything else (the CLI checks it before any work)."""
    raw = os.environ.get(HEARTBEAT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_HEARTBEAT_SECONDS
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise LoptUserError(f"{HEARTBEAT_ENV} must be a number of seconds >= 0, got {raw!r}")
    return seconds


def heartbeat_seconds(console: Console) -> float | None:
    """Seconds between plain progress lines of a long job on ``console``
    (:func:`heartbeat_interval`), or None on a terminal, where the live bar shows progress."""
    seconds = heartbeat_interval()
    return None if console.is_terminal else seconds


def duration(seconds: float) -> str:
    """``3h05m``, ``12m04s`` or ``42s``: a wall time for a progress line."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Heartbeat:
    """Plain progress lines off a terminal: :meth:`due` says whether ``LOPT_PROGRESS_EVERY``
    seconds have passed since the last :meth:`emit` (always when ``final``); never on a
    terminal. :attr:`elapsed` counts from construction (or :meth:`restart`)."""

    def __init__(self, console: Console):
        self.console = console
        self.every = heartbeat_seconds(console)
        self.restart()

    def restart(self) -> None:
        self.started = self.last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def due(self, final: bool = False) -> bool:
        return self.every is not None and (
            final or time.perf_counter() - self.last >= self.every)

    def emit(self, line: str) -> None:
        """Prints ``line`` unwrapped and unstyled (a log keeps it on one line)."""
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self.last = time.perf_counter()


def elapsed_and_eta(elapsed: float, remaining: int, done: int,
                    first: float | None = None, pace: float | None = None) -> str:
    """``elapsed 1m05s, ETA 2m32s``: the ``remaining`` units at the mean pace of the ``done``
    ones that took ``elapsed`` seconds. ``first``: the seconds the first unit took when it
    also paid a one-off cost (compilation); once two are done the pace leaves it out.
    ``pace``: seconds per unit measured otherwise (e.g. over the last minutes), used instead."""
    if pace is not None:
        eta = pace * remaining
    elif first is not None and done >= 2:
        eta = max(elapsed - first, 0.0) * remaining / (done - 1)
    else:
        eta = elapsed * remaining / max(done, 1)
    return f"elapsed {duration(elapsed)}, ETA {duration(eta)}"


def count_line(label: str, done: int, total: int, elapsed: float,
               first: float | None = None, paced: int | None = None) -> str:
    """``label: 12/40 (30%), elapsed 1m05s, ETA 2m32s`` (ETA at the mean pace so far, or of
    the units after the ``first``: see :func:`elapsed_and_eta`). ``paced``: how many of the
    ``done`` units took the ``elapsed`` time (default all; fewer when some were read back)."""
    return (f"{label}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%), "
            f"{elapsed_and_eta(elapsed, total - done, done if paced is None else paced, first)}")


def settle_imports() -> None:
    """Imports TFDS now, on this thread, so that its import hook is gone before any progress
    bar's redraw thread runs (a no-op once imported, or when TFDS is not installed)."""
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:  # pragma: no cover - TFDS is a dependency; nothing to settle without it
        pass


def import_hook_active() -> bool:
    """Whether ``etils.epy.lazy_imports`` has replaced ``builtins.__import__`` right now:
    the current ``__import__`` (or the function a ``functools.partial`` wraps) comes from an
    ``etils`` module. Any function of etils counts, so a renamed private hook is still seen;
    another library's import hook is not, so it never freezes the bar."""
    hook = builtins.__import__
    function = hook.func if isinstance(hook, functools.partial) else hook
    return str(getattr(function, "__module__", "") or "").split(".")[0] == "etils"


class ImportSafeProgress(Progress):
    """A rich ``Progress`` whose redraws never import while a lazy-import hook is active."""

    _frame: RenderableType = Text("")

    def get_renderable(self) -> RenderableType:
        if import_hook_active():
            return self._frame
        self._frame = super().get_renderable()
        return self._frame


def progress_bar(*columns, **kwargs) -> Progress:
    """A rich ``Progress`` (same arguments), import-safe, started after :func:`settle_imports`."""
    settle_imports()
    return ImportSafeProgress(*columns, **kwargs)
