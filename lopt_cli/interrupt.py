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
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

# Set by a sweep whose jobs run in other processes (hydra/launcher=joblib): a file that exists
# once the sweep is asked to stop. Its jobs poll it beside their own signals, so a SIGTERM sent
# to the sweep's process alone reaches them, and a job not started yet does not start.
SWEEP_STOP_ENV = "LOPT_SWEEP_STOP_FILE"


def sweep_stopped() -> bool:
    """Whether this process is a job of a sweep that was asked to stop."""
    path = os.environ.get(SWEEP_STOP_ENV)
    return bool(path) and os.path.exists(path)


def in_parallel_sweep() -> bool:
    """Whether this process runs jobs of a sweep whose jobs are processes of their own."""
    return bool(os.environ.get(SWEEP_STOP_ENV))


class RunStopped(Exception):
    """A command stopped on request, its state saved; the message says how to continue."""

    exit_code = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_requests(what: str, unit: str = "step", on_stop: Callable[[], object] = lambda: None
                  ) -> Iterator[Callable[[], bool]]:
    """Within: ``requested()`` turns true at the first SIGINT or SIGTERM, which prints one line
    saying that ``what`` stops after its current ``unit``; a second SIGINT raises
    ``KeyboardInterrupt`` at once. Off the main thread (no handlers can be set there) the
    signals keep their handlers and ``requested()`` stays false; a signal the process was
    started ignoring (a shell's background job ignores SIGINT) stays ignored. ``on_stop()``
    runs at the first request; in a job of a stopped parallel sweep (:func:`sweep_stopped`)
    ``requested()`` is true too."""
    if threading.current_thread() is not threading.main_thread():
        yield sweep_stopped
        return
    state = {"requested": False}
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}

    def on_signal(signum, frame) -> None:
        if state["requested"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not state["requested"]:
            on_stop()
        state["requested"] = True
        print(f"lopt: {signal.Signals(signum).name}: {what} stops after its current {unit} "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield lambda: state["requested"] or sweep_stopped()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def sweep_stop_requests() -> Iterator[Callable[[], bool]]:
    """Around a sweep whose jobs are other processes: the first SIGINT or SIGTERM creates the
    sweep's stop file (:data:`SWEEP_STOP_ENV`), so every running job stops after its current
    step or segment, as if it had the signal itself, and no further job starts; the sweep's
    process then waits for them. A second SIGINT raises ``KeyboardInterrupt`` (the jobs stop
    at once). ``requested()`` says whether a stop was asked for."""
    handle, stop_file = tempfile.mkstemp(prefix="lopt-sweep-stop-")
    os.close(handle)
    os.unlink(stop_file)  # the name only: the file exists once a stop is asked for
    previous_env = os.environ.get(SWEEP_STOP_ENV)
    os.environ[SWEEP_STOP_ENV] = stop_file
    try:
        with stop_requests("every job of the sweep", "step or segment",
                           on_stop=lambda: open(stop_file, "w").close()) as requested:
            yield requested
    finally:
        if previous_env is None:
            os.environ.pop(SWEEP_STOP_ENV, None)
        else:
            os.environ[SWEEP_STOP_ENV] = previous_env
        with contextlib.suppress(OSError):
            os.unlink(stop_file)
