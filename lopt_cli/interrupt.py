"""Stopping a long command cleanly: Ctrl-C (SIGINT) or SIGTERM asks it to stop at the next
consistent point instead of dying mid-step.

Meta-training polls :func:`stop_requests`' flag once per outer step: on a request it writes a
checkpoint of the state after the last finished step and raises :class:`RunStopped`, which the
command turns into one line (where the checkpoint is and the command that continues it) and
exit status 130. ``lopt evaluate benchmark=...`` polls it after each segment of a run
(:mod:`lopt_cli.evaluation.partial_runs`). A second Ctrl-C stops at once (the default
``KeyboardInterrupt``).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator


class RunStopped(Exception):
    """A command stopped on request, its state saved; the message says how to continue."""

    exit_code = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_requests(what: str, unit: str = "step") -> Iterator[Callable[[], bool]]:
    """Within: ``requested()`` turns true at the first SIGINT or SIGTERM, which prints one line
    saying that ``what`` stops after its current ``unit``; a second SIGINT raises
    ``KeyboardInterrupt`` at once. Off the main thread (no handlers can be set there) the
    signals keep their handlers and ``requested()`` stays false; a signal the process was
    started ignoring (a shell's background job ignores SIGINT) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    state = {"requested": False}
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}

    def on_signal(signum, frame) -> None:
        if state["requested"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        state["requested"] = True
        print(f"lopt: {signal.Signals(signum).name}: {what} stops after its current {unit} "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield lambda: state["requested"]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
