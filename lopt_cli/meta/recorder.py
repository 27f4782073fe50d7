"""Records a meta-training run as it goes: rich progress, ``metrics.jsonl``, checkpoints."""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lopt_cli.io import append_jsonl
from lopt_cli.optimizers.storage import save_learned_optimizer


class MetaTrainRecorder:
    """``on_step`` callback for :func:`lopt_cli.meta.outer.meta_train`.

    Each outer step appends a line to ``metrics.jsonl`` (flushed, so a crash loses nothing
    already reported) and advances the progress bar; every ``checkpoint_every`` steps and at the
    end the current learned optimizer is saved atomically into ``out_dir``.
    """

    def __init__(self, out_dir: Path, total_steps: int, inner_steps_per_outer: int,
                 optimizer_config: dict, checkpoint_every: int, label: str = "meta-train",
                 console: Console | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.total_steps = total_steps
        self.inner_steps_per_outer = inner_steps_per_outer
        self.optimizer_config = optimizer_config
        self.checkpoint_every = checkpoint_every
        self.history: list[dict] = []
        self.progress = Progress(
            TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("meta-loss {task.fields[meta_loss]:.4f}"),
            TextColumn("{task.fields[rate]:,.0f} inner steps/s"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
        self.task_id = self.progress.add_task(label, total=total_steps, meta_loss=float("nan"),
                                              rate=0.0)
        self._last_time = time.perf_counter()

    def __enter__(self) -> "MetaTrainRecorder":
        self.progress.start()
        self._last_time = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, step: int, metrics: dict, theta) -> None:
        now = time.perf_counter()
        seconds = now - self._last_time
        self._last_time = now
        row = {"step": step, **metrics, "seconds": seconds,
               "inner_steps_per_second": self.inner_steps_per_outer / max(seconds, 1e-9)}
        self.history.append(row)
        append_jsonl(self.metrics_path, row)
        self.progress.update(self.task_id, advance=1, meta_loss=metrics["meta_loss"],
                             rate=row["inner_steps_per_second"])
        last = step + 1 == self.total_steps
        if last or (self.checkpoint_every and (step + 1) % self.checkpoint_every == 0):
            save_learned_optimizer(self.out_dir, self.optimizer_config, theta)
