"""The progress display of ``lopt evaluate benchmark=NAME``."""
from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

from lopt_cli.console import Heartbeat, count_line
from lopt_cli.evaluation.benchmark import RunProgress


def benchmark_progress(progress: Progress, console: Console, name: str, total: int
                       ) -> RunProgress:
    """The :class:`~lopt_cli.evaluation.benchmark.RunProgress` of ``lopt evaluate benchmark=``:
    one bar over task × optimizer, and a row for the run being computed, advanced after each
    segment of its horizon (per trial and seed on the host loop), which is what a long run
    shows while it works. Not on a terminal (a log file): a line when a run starts and when a
    task × optimizer ends, with the ETA, and in between a line on the run's segments every
    ``LOPT_PROGRESS_EVERY`` seconds, with the run's own ETA (at the pace of the segments after
    the first, which also compiles the run's programs)."""
    bar = progress.add_task(f"{name}: task × optimizer", total=total)
    current: dict = {}
    heartbeat = Heartbeat(console)

    def log(line: str) -> None:
        if not console.is_terminal:
            heartbeat.emit(f"{name}: {line}")

    def finished(label: str) -> None:
        if "row" in current:
            progress.remove_task(current.pop("row"))
        progress.update(bar, advance=1, description=f"{name}: {label}")
        done = progress.tasks[0]
        elapsed = done.elapsed or 0.0
        eta = elapsed * (done.total - done.completed) / max(done.completed, 1)
        log(f"{int(done.completed)}/{int(done.total)} {label}; elapsed {elapsed:.0f} s, "
            f"ETA {eta:.0f} s")

    def started(label: str, parts: int) -> None:
        current.update(label=label, parts=parts, done=0, restored=0)
        current["row"] = progress.add_task(f"  running {label}", total=parts)
        heartbeat.restart()
        log(f"running {label} ({parts} segments)")

    def restored(count: int) -> None:
        current["done"] += count
        current["restored"] += count
        progress.update(current["row"], advance=count)
        log(f"  {current['label']}: {current['done']}/{current['parts']} segments read back "
            "from a stopped run")

    def part_done() -> None:
        current["done"] += 1
        progress.update(current["row"], advance=1)
        run = current["done"] - current["restored"]  # segments run here: the pace's
        if run == 1:
            current["first"] = heartbeat.elapsed
        if heartbeat.due():
            log("  " + count_line(f"{current['label']}: segments", current["done"],
                                  current["parts"], heartbeat.elapsed, current["first"], run))

    return RunProgress(finished, started, part_done, restored)
