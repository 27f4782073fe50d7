"""One leaderboard pooled over benchmark runs that differ only in their evaluation ``seed``.

    python -m lopt_cli.scripts.pool_draws RUN [RUN ...] --out DIR [--force]

Each ``RUN`` is a ``lopt evaluate benchmark=...`` run directory, or a sweep directory whose
finished job directories are (``lopt evaluate ... seed=0,1,2 --multirun hydra.sweep.dir=DIR``;
jobs without a summary yet are named on stderr and left out); the runs
must agree in every setting but ``seed`` (tasks, trials, factor range, seeds per run), e.g. the
same command with ``seed=0``, ``seed=1`` and ``seed=2``. ``DIR`` gets ``summary.json``,
``results.jsonl``, ``leaderboard.md``, ``leaderboard.png`` and ``horizon.png`` in the shape of
one run's, computed from the pooled finals (:mod:`lopt_cli.evaluation.pooled`): a headline that
does not hang on one draw of seeds. A missing or unreadable run, runs that differ in anything
but the seed or share one, or an ``out dir`` that already holds a leaderboard (without
``--force``) is a one-line error (exit 2).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from lopt_cli.errors import LoptUserError

SUMMARY, RESULTS, LEADERBOARD = "summary.json", "results.jsonl", "leaderboard.md"
POOLED_DIR = "pooled"  # where `lopt evaluate ... seed=0,1,2 --multirun` pools its draws


def evaluation_seed(run: Path, summary: dict) -> int:
    """The run's evaluation ``seed``: from its summary, or (runs written before the summary
    held it) from the config Hydra saved beside it."""
    if "seed" in summary:
        return int(summary["seed"])
    config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        raise LoptUserError(f"{run}: its summary has no seed and {config} is missing")
    try:
        seed = (yaml.safe_load(config.read_text()) or {}).get("seed")
    except (yaml.YAMLError, AttributeError) as error:  # not YAML, or not a mapping
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LoptUserError(f"{config} is not a readable Hydra config ({first_line})") from error
    if not isinstance(seed, int):
        raise LoptUserError(f"{config} has no integer top-level seed")
    return seed


def is_sweep(path: Path) -> bool:
    """Whether ``path`` is a directory that is not a run itself (a ``--multirun`` sweep)."""
    return path.is_dir() and not (path / SUMMARY).exists()


def expand_sweeps(paths: list[Path]) -> list[Path]:
    """Each path that is not a run itself but holds run directories (a ``--multirun`` sweep)
    replaced by those, in the order of their job numbers (its ``pooled/`` left out)."""
    runs = []
    for path in paths:
        jobs = [child for child in path.iterdir()
                if (child / SUMMARY).is_file() and child.name != POOLED_DIR
                ] if is_sweep(path) else []
        runs += sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if
                                            p.name.isdigit() else 0, p.name)) or [path]
    return runs


def unfinished_jobs(paths: list[Path]) -> list[Path]:
    """The job directories of the sweeps among ``paths`` that have no summary yet (a job still
    running, or killed): :func:`expand_sweeps` leaves them out, and the user should know."""
    return sorted(job for sweep in filter(is_sweep, paths) for job in sweep.iterdir()
                  if job.is_dir() and job.name.isdigit() and not (job / SUMMARY).exists())


def read_run(run: Path) -> tuple[dict, list[dict], int]:
    """``(summary, rows, seed)`` of one benchmark run directory."""
    if not (run / SUMMARY).is_file() or not (run / RESULTS).is_file():
        raise LoptUserError(f"{run} is not a benchmark run (no {SUMMARY} and {RESULTS})")
    try:
        summary = json.loads((run / SUMMARY).read_text())
        rows = [json.loads(line) for line in (run / RESULTS).read_text().splitlines() if line]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LoptUserError(f"{run}: unreadable {SUMMARY} or {RESULTS} ({error})") from error
    if "leaderboard" not in summary:
        raise LoptUserError(f"{run}/{SUMMARY} is not a benchmark summary")
    if "pooled_seeds" in summary:
        raise LoptUserError(f"{run} is already pooled; pool the runs it was made of")
    return summary, rows, evaluation_seed(run, summary)


def pooling_note(summary: dict, runs: list[Path]) -> str:
    seeds = ", ".join(f"seed={s}" for s in summary["pooled_seeds"])
    return (f"- **pooled over {len(runs)} draws of the evaluation's seeds** ({seeds}, "
            f"{summary['seeds_per_draw']} seeds each; runs: "
            f"{', '.join(f'`{r}`' for r in runs)}): per task, the loss ratio of the finals "
            "averaged over the draws (each draw tuned on its own), the median speedup, a rise "
            "if any draw rises (the horizon plot shows that draw)")


def write_pooled(runs: list[Path], out: Path, force: bool = False) -> dict:
    """Pools ``runs`` into ``out``; returns the pooled summary."""
    from lopt_cli.evaluation.benchmark_outputs import write_benchmark
    from lopt_cli.evaluation.pooled import pooled_summary
    from lopt_cli.io import write_text_atomic

    if (out / LEADERBOARD).exists() and not force:
        raise LoptUserError(f"{out} already holds a leaderboard; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise LoptUserError(f"{out} is a file, not a directory")
    runs = expand_sweeps(runs)
    read = [read_run(run) for run in runs]
    summary, rows = pooled_summary([r[0] for r in read], [r[1] for r in read],
                                   [r[2] for r in read])
    summary["pooled_runs"] = [str(run) for run in runs]
    out.mkdir(parents=True, exist_ok=True)
    write_benchmark(out, summary, rows)
    title, *rest = (out / LEADERBOARD).read_text().split("\n")
    write_text_atomic(out / LEADERBOARD, "\n".join([title, "", pooling_note(summary, runs),
                                                    *rest[1:]]))
    return summary


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lopt_cli.scripts.pool_draws",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="benchmark run directories, or sweeps holding them")
    parser.add_argument("--out", type=Path, required=True, help="the directory to write")
    parser.add_argument("--force", action="store_true", help="replace a leaderboard there")
    args = parser.parse_args(argv)
    try:
        summary = write_pooled(args.runs, args.out, args.force)
    except (LoptUserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from lopt_cli.console import output_console
    from lopt_cli.evaluation.leaderboard_report import terminal_interval_table, terminal_table

    unfinished = unfinished_jobs(args.runs)
    if unfinished:
        print(f"not pooled, no {SUMMARY} yet (unfinished jobs): "
              f"{', '.join(map(str, unfinished))}", file=sys.stderr)
    console = output_console()
    console.print(terminal_table(summary))
    intervals = terminal_interval_table(summary)
    if intervals is not None:
        console.print(intervals)
    console.print(f"written: {args.out / LEADERBOARD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
