"""The progress display of ``lopt evaluate benchmark=NAME``."""
from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

from lopt_cli.console import Heartbeat, count_line, duration
from lopt_cli.evaluation.benchmark import RunProgress
from lopt_cli.evaluation.benchmark_cost import PacedEstimate


def benchmark_progress(progress: Progress, console: Console, name: str, total: int,
                       predicted: dict[str, float] | None = None) -> RunProgress:
    """The :class:`~lopt_cli.evaluation.benchmark.RunProgress` of ``lopt evaluate benchmark=``:
    one bar over task × optimizer, and a row for the run being computed, advanced after each
    segment of its horizon (per trial and seed on the host loop), which is what a long run
    shows while it works. Not on a terminal (a log file): a line when a run starts and when a
    task × optimizer ends, with the ETA, and in between a line on the run's segments every
    ``LOPT_PROGRESS_EVERY`` seconds, with the run's own ETA (at the pace of the segments after
    the first, which also compiles the run's programs).

    ``predicted``: the predicted seconds of each part to compute (``"task: optimizer"``,
    :func:`~lopt_cli.evaluation.benchmark_cost.predicted_parts`). The bar then moves by those
    (per segment within a part), so its time remaining, and the ETA of the lines, weigh a
    transformer's part as the hours it takes and a cached one as nothing."""
    estimate = PacedEstimate(predicted or {})
    weighted = estimate.total > 0
    bar = progress.add_task(f"{name}: task × optimizer",
                            total=estimate.total if weighted else total)
    current: dict = {}
    heartbeat = Heartbeat(console)
    counts = {"done": 0}

    def log(line: str) -> None:
        if not console.is_terminal:
            heartbeat.emit(f"{name}: {line}")

    def finished(label: str) -> None:
        counted = 0.0
        if "row" in current:
            progress.remove_task(current.pop("row"))
            counted = current["done"] / max(current["parts"], 1)
        counts["done"] += 1
        added = estimate.finish(label, counted if current.get("label") == label else 0.0)
        progress.update(bar, advance=added if weighted else 1,
                        description=f"{name}: {counts['done']}/{total} {label}")
        elapsed = progress.tasks[0].elapsed or 0.0  # the bar: the first task, never removed
        eta = (estimate.remaining_seconds(elapsed) if weighted
               else elapsed * (total - counts["done"]) / max(counts["done"], 1))
        log(f"{counts['done']}/{total} {label}; elapsed {duration(elapsed)}, "
            f"ETA {duration(eta)}")

    def started(label: str, parts: int) -> None:
        current.update(label=label, parts=parts, done=0, restored=0)
        current["row"] = progress.add_task(f"  running {label}", total=parts)
        heartbeat.restart()
        log(f"running {label} ({parts} segments)")

    def restored(count: int) -> None:
        current["done"] += count
        current["restored"] += count
        progress.update(current["row"], advance=count)
        if weighted:  # done, but in no time: not the pace's
            progress.update(bar, advance=estimate.skip(current["label"],
                                                       count / max(current["parts"], 1)))
        log(f"  {current['label']}: {current['done']}/{current['parts']} segments read back "
            "from a stopped run")

    def segment_counted(count: int) -> None:
        if weighted:
            progress.update(bar, advance=estimate.advance(current["label"],
                                                          count / max(current["parts"], 1)))

    def part_done() -> None:
        current["done"] += 1
        progress.update(current["row"], advance=1)
        segment_counted(1)
        run = current["done"] - current["restored"]  # segments run here: the pace's
        if run == 1:
            current["first"] = heartbeat.elapsed
        if heartbeat.due():
            log("  " + count_line(f"{current['label']}: segments", current["done"],
                                  current["parts"], heartbeat.elapsed, current["first"], run))

    return RunProgress(finished, started, part_done, restored)
