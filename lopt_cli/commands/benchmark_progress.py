"""The progress display of ``lopt evaluate benchmark=NAME``."""
from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

from lopt_cli.evaluation.benchmark import RunProgress


def benchmark_progress(progress: Progress, console: Console, name: str, total: int
                       ) -> RunProgress:
    """The :class:`~lopt_cli.evaluation.benchmark.RunProgress` of ``lopt evaluate benchmark=``:
    one bar over task × optimizer, and a row for the run being computed (its compiled calls:
    one vmapped call, or one per trial and seed on the host loop), which is what a long run
    shows while it works. Not on a terminal (a log file), one line per event, with the ETA."""
    bar = progress.add_task(f"{name}: task × optimizer", total=total)
    current: dict = {}

    def log(line: str) -> None:
        if not console.is_terminal:
            console.print(f"{name}: {line}", highlight=False)

    def finished(label: str) -> None:
        if "row" in current:
            progress.remove_task(current.pop("row"))
        progress.update(bar, advance=1, description=f"{name}: {label}")
        done = progress.tasks[0]
        elapsed = done.elapsed or 0.0
        eta = elapsed * (done.total - done.completed) / max(done.completed, 1)
        log(f"{int(done.completed)}/{int(done.total)} {label}; elapsed {elapsed:.0f} s, "
            f"ETA {eta:.0f} s")

    def started(label: str, calls: int) -> None:
        current.update(label=label, calls=calls, done=0)
        current["row"] = progress.add_task(f"  running {label}", total=calls)
        log(f"running {label}" + (f" ({calls} runs, one at a time)" if calls > 1 else ""))

    def call_done() -> None:
        current["done"] += 1
        progress.update(current["row"], advance=1)
        if current["calls"] > 1:
            log(f"  {current['label']}: {current['done']}/{current['calls']} runs")

    return RunProgress(finished, started, call_done)
