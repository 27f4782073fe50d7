"""Records a meta-training run as it goes: rich progress, ``metrics.jsonl``, checkpoints."""
from __future__ import annotations

import math
import os
import platform
import time
from collections import deque
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lopt_cli.console import Heartbeat, elapsed_and_eta, progress_bar
from lopt_cli.io import append_jsonl, write_jsonl_atomic
from lopt_cli.meta.checkpoint import save_checkpoint
from lopt_cli.optimizers.storage import LAST_DIR, save_learned_optimizer

PLOT_EVERY_SECONDS = 60.0
RECENT_PACE_SECONDS = 600.0  # the progress line's ETA: the pace over about this long
META_LOSS_PLOT = "meta_loss.png"


class MetaTrainRecorder:
    """``on_step`` and ``on_checkpoint`` callbacks for :func:`lopt_cli.meta.outer.meta_train`.

    Each outer step appends a line to ``metrics.jsonl`` (flushed, so a crash loses nothing
    already reported; with ``heldout_loss`` when the held-out evaluator is due) and advances the
    progress bar; every ``checkpoint_every`` steps and at the end the current learned optimizer
    is saved atomically into ``out_dir``, and ``checkpoint`` saves the loop's state with the
    rows so far. A resumed run passes the checkpoint's rows as ``history``: ``metrics.jsonl`` is
    rewritten to exactly those rows, so no line is duplicated. With ``save_last`` (a run that
    publishes an average of θ or its best θ) the last checkpoint also saves the raw last θ into ``last/``.

    ``initial_heldout_loss`` (the held-out check of θ₀, taken before the first outer step) goes
    into step 0's row. With ``keep_best`` the published θ is the one with the lowest held-out
    loss so far, θ₀ included (``initial_theta``): it is saved at each new best, and the
    periodic saves leave it alone (they save the current θ while there is no best). A resumed
    run starts from its history's best; since it reruns deterministically, it ends with the θ
    an uninterrupted run publishes.

    Off a terminal (a log file) a plain :func:`heartbeat_line` is printed every
    ``LOPT_PROGRESS_EVERY`` seconds (default 60) and after the last step.

    ``meta_loss.png`` is redrawn at a checkpoint when ``plot_every`` seconds (60) have passed
    since it was last drawn, so a long run's curve can be looked at while it runs (the run
    draws it once more at its end); the drawing time is not counted as step time.
    """

    def __init__(self, out_dir: Path, total_steps: int, inner_steps_per_outer: int,
                 optimizer_config: dict, checkpoint_every: int, label: str = "meta-train",
                 console: Console | None = None, heldout=None, seed: int = 0,
                 history: list[dict] | None = None, save_last: bool = False,
                 keep_best: bool = False, initial_heldout_loss: float | None = None,
                 initial_theta=None, plot_every: float = PLOT_EVERY_SECONDS):
        self.label = label
        self.plot_every = plot_every
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.total_steps = total_steps
        self.inner_steps_per_outer = inner_steps_per_outer
        self.optimizer_config = optimizer_config
        self.checkpoint_every = checkpoint_every
        self.heldout = heldout
        self.seed = seed
        self.save_last = save_last
        self.history: list[dict] = list(history or [])
        self._theta = None  # the published θ after the last recorded step (for stopped)
        self.keep_best = keep_best
        self.initial_heldout_loss = initial_heldout_loss
        self.best_loss = best_heldout(self.history).get("best_heldout_loss", float("inf"))
        if keep_best and initial_heldout_loss is not None and initial_heldout_loss < self.best_loss:
            self.best_loss = initial_heldout_loss
            save_learned_optimizer(self.out_dir, optimizer_config, initial_theta)
        if history is not None:
            write_jsonl_atomic(self.metrics_path, self.history)
        self.progress = progress_bar(
            TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("meta-loss {task.fields[meta_loss]:.4f}"),
            TextColumn("{task.fields[rate]:,.0f} inner steps/s"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
        last = self.history[-1]["meta_loss"] if self.history else float("nan")
        self.task_id = self.progress.add_task(label, total=total_steps, meta_loss=last,
                                              rate=0.0, completed=len(self.history))
        self.heartbeat = Heartbeat(self.progress.console)
        self._last_time = time.perf_counter()
        self._plotted = time.perf_counter()  # a run's first plot waits plot_every seconds
        self._rows = (len(self.history), len(self.history))  # (at the start, at the last line)
        self._marks: deque[tuple[float, int]] = deque()  # (time, rows) at each progress line

    def __enter__(self) -> MetaTrainRecorder:
        self.progress.start()
        self._last_time = time.perf_counter()
        self.heartbeat.restart()
        self._marks = deque([(self._last_time, len(self.history))])
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, step: int, metrics: dict, theta) -> None:
        now = time.perf_counter()
        seconds = now - self._last_time
        row = {"step": step, **metrics, "seconds": seconds,
               "inner_steps_per_second": self.inner_steps_per_outer / max(seconds, 1e-9)}
        if step == 0 and self.initial_heldout_loss is not None:
            row["initial_heldout_loss"] = self.initial_heldout_loss
        if self.heldout is not None and self.heldout.due(step, self.total_steps):
            row["heldout_loss"] = self.heldout(theta)
            row["heldout_seconds"] = time.perf_counter() - now
            if self.keep_best and row["heldout_loss"] < self.best_loss:  # NaN is never best
                self.best_loss = row["heldout_loss"]
                save_learned_optimizer(self.out_dir, self.optimizer_config, theta)
        self.history.append(row)
        self._theta = theta
        append_jsonl(self.metrics_path, row)
        self.progress.update(self.task_id, advance=1, meta_loss=metrics["meta_loss"],
                             rate=row["inner_steps_per_second"])
        last = step + 1 == self.total_steps
        self.maybe_print_heartbeat(last)
        due = last or (self.checkpoint_every and (step + 1) % self.checkpoint_every == 0)
        if due and not (self.keep_best and self.best_loss < float("inf")):
            save_learned_optimizer(self.out_dir, self.optimizer_config, theta)
        self._last_time = time.perf_counter()  # held-out and file time is not step time

    def maybe_print_heartbeat(self, last: bool) -> None:
        """One :func:`heartbeat_line` when ``LOPT_PROGRESS_EVERY`` seconds have passed since the
        previous one (or at the last step), off a terminal only."""
        if not self.heartbeat.due(final=last):
            return
        first_row, rows = self._rows
        now = time.perf_counter()
        self._marks.append((now, len(self.history)))
        self.heartbeat.emit(heartbeat_line(
            self.label, self.history, self.total_steps, self.inner_steps_per_outer,
            window_seconds=now - self.heartbeat.last, window_rows=len(self.history) - rows,
            elapsed=self.heartbeat.elapsed, rows_this_run=len(self.history) - first_row,
            recent_pace=recent_pace(self._marks, RECENT_PACE_SECONDS)))
        self._rows = (first_row, len(self.history))

    def stopped(self) -> None:
        """The run stopped on request after its last recorded step: its published θ is
        written (with ``keep_best``, the best one already is) and a last progress line
        printed."""
        if self._theta is not None and not (self.keep_best and self.best_loss < float("inf")):
            save_learned_optimizer(self.out_dir, self.optimizer_config, self._theta)
        self.maybe_print_heartbeat(last=True)

    def checkpoint(self, state) -> None:
        """Saves the loop's ``state`` (a ``MetaTrainState``) with the metrics rows so far."""
        save_checkpoint(self.out_dir, state, self.seed, self.history)
        if self.save_last and state.step == self.total_steps:
            save_learned_optimizer(self.out_dir / LAST_DIR, self.optimizer_config, state.theta)
        started = time.perf_counter()
        if state.step < self.total_steps and started - self._plotted >= self.plot_every:
            from lopt_cli.evaluation.plots import plot_meta_loss

            plot_meta_loss({self.label: self.history}, self.out_dir / META_LOSS_PLOT,
                           "meta-training")
            self._plotted = time.perf_counter()
            self._last_time += self._plotted - started  # drawing is not the next step's time


def heartbeat_line(label: str, history: list[dict], total_steps: int, inner_steps_per_outer: int,
                   window_seconds: float, window_rows: int, elapsed: float,
                   rows_this_run: int, recent_pace: float | None = None) -> str:
    """A plain progress line: steps done of ``total_steps``, the mean meta-loss and the inner
    steps/s over the last ``window_rows`` steps (``window_seconds``), the best held-out loss so
    far, elapsed time and ETA (remaining steps at ``recent_pace`` seconds each, else at this
    run's mean pace)."""
    done = len(history)
    window = history[-max(window_rows, 1):]
    meta_loss = sum(r["meta_loss"] for r in window) / len(window)
    rate = inner_steps_per_outer * len(window) / max(window_seconds, 1e-9)
    parts = [f"{label}: step {done:,}/{total_steps:,} ({100 * done / total_steps:.0f}%)",
             f"meta-loss {meta_loss:.4f} (mean of the last {len(window):,})",
             f"{rate:,.0f} inner steps/s"]
    best = best_heldout(history)
    if best:
        parts.append(f"held-out best {best['best_heldout_loss']:.4f} "
                     f"(step {best['best_heldout_step']})")
    parts.append(elapsed_and_eta(elapsed, total_steps - done, rows_this_run, pace=recent_pace))
    return ", ".join(parts)


def recent_pace(marks: deque[tuple[float, int]], window: float) -> float | None:
    """Seconds per step from the youngest of ``marks`` (``(time, rows)``, oldest first) that is
    at least ``window`` seconds older than the newest (else the oldest) to the newest; the
    marks before it are dropped. ``None`` until a step lies between them. A run that was
    paused or niced for an hour reads its ETA at its present pace, not at its mean one.

    >>> marks = deque([(0.0, 0), (3000.0, 10), (3600.0, 6010), (3660.0, 6610)])
    >>> recent_pace(marks, 600.0), marks[0]  # 6,600 steps in the last 660 s, not 6,610 in 1 h
    (0.1, (3000.0, 10))
    """
    newest_time, newest_rows = marks[-1]
    while len(marks) > 2 and newest_time - marks[1][0] >= window:
        marks.popleft()
    anchor_time, anchor_rows = marks[0]
    steps = newest_rows - anchor_rows
    return (newest_time - anchor_time) / steps if steps > 0 else None


def final_meta_loss(history: list[dict]) -> float:
    """The mean meta-loss over the last tenth of a run's steps (at least one)."""
    tail = history[-max(1, len(history) // 10):]
    return sum(row["meta_loss"] for row in tail) / len(tail)


def best_heldout(history: list[dict]) -> dict:
    """``best_heldout_loss`` and its ``best_heldout_step`` among the finite held-out losses of
    ``history`` (the earliest on a tie; step -1 is θ₀, from step 0's ``initial_heldout_loss``);
    empty when there is none."""
    checked = [(-1, r["initial_heldout_loss"]) for r in history[:1] if "initial_heldout_loss" in r]
    checked += [(r["step"], r["heldout_loss"]) for r in history if "heldout_loss" in r]
    checked = [(step, loss) for step, loss in checked if math.isfinite(loss)]
    if not checked:
        return {}
    step, loss = min(checked, key=lambda pair: pair[1])
    return {"best_heldout_loss": loss, "best_heldout_step": step}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


MACHINE_FILE = "machine.json"  # machine_facts() of a run, written when it starts


def machine_facts() -> dict:
    """Where a run ran: OS, CPU model and cores (all and usable), JAX version and devices."""
    import jax

    from lopt_cli.meta.cpu_tuning import usable_cores

    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "usable_cores": usable_cores(), "python": platform.python_version(),
            "jax_version": jax.__version__, "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()]}
