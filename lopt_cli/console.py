"""The rich console that commands print their tables on.

On a terminal rich uses the terminal's width; when stdout is a file or a pipe (a Hydra log,
``make demo > file``) it would fall back to 80 columns and wrap every wide row into several
lines, so such output gets ``NON_TERMINAL_WIDTH`` columns (``COLUMNS=N`` still overrides it).
"""
from __future__ import annotations

import os

from rich.console import Console

NON_TERMINAL_WIDTH = 160


def output_console(stderr: bool = False, file=None) -> Console:
    """A Console on stdout (or stderr, or ``file``) that is wide enough off a terminal."""
    console = Console(stderr=stderr, file=file)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = NON_TERMINAL_WIDTH
    return console
