"""One table over the jobs of a ``lopt meta-train`` or ``lopt self-train`` ``--multirun`` sweep.

    python -m lopt_cli.scripts.sweep_summary SWEEP_DIR

A sweep's job directories (``0``, ``1``, ...) each hold one meta-training run. This reads
every job's overrides, ``metrics.jsonl`` and ``summary.json`` and writes, in the sweep
directory:

* ``sweep_summary.json`` and ``sweep_summary.md``: per job, the overrides that tell it apart
  from the others, its state (finished; stopped at step s, with the command that continues it;
  or failed before its first checkpoint), its outer steps, first and final meta-loss (the mean
  of the last tenth of its steps, as its own ``summary.json``), last and best held-out loss,
  inner steps per second and the seconds its steps took; the finished job whose published θ
  has the lowest held-out loss (its best check with ``keep_best``, else its last; without
  checks, the lowest final meta-loss) is marked best;
* ``meta_loss.png``: every job's meta-loss (and held-out loss, when checked) against the outer
  step, one colour per job.

For a ``lopt self-train`` sweep (each job meta-trains twice: with a learned outer optimizer and
with AdamW) the files are ``sweep_summary.json`` and ``sweep_summary.md``: per job, the final
meta-loss of both runs and which is lower, and in how many finished jobs the learned outer
optimizer's is.

Both commands write them when a sweep's last job ends (a Hydra callback); the script rebuilds
them at any time, e.g. after resuming a stopped job. A path that is not a sweep directory is a
one-line error (exit 2).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lopt_cli.commands.recorder import final_meta_loss
from lopt_cli.errors import LoptUserError
from lopt_cli.evaluation.leaderboard_report import markdown_table
from lopt_cli.optimizers.storage import SWEEP_SUMMARY_FILE as SWEEP_JSON

SWEEP_MD, SWEEP_PLOT = "sweep_summary.md", "meta_loss.png"


def job_dirs(sweep: Path) -> list[Path]:
    """The sweep's job directories (named by their job number, with Hydra's overrides), in
    job order."""
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()
            and (p / ".hydra" / "overrides.yaml").is_file()] if sweep.is_dir() else []
    if not jobs:
        raise LoptUserError(f"{sweep}: not a sweep directory (no numbered job directories with "
                            ".hydra/overrides.yaml)")
    return sorted(jobs, key=lambda p: int(p.name))


def read_overrides(job: Path) -> list[str]:
    try:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def read_history(job: Path) -> list[dict]:
    """The job's ``metrics.jsonl`` rows (a damaged line, e.g. one cut by a kill, skipped)."""
    path = job / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("meta_loss"), (int, float)):
                rows.append(row)
    return rows


def distinguishing(overrides: list[list[str]]) -> list[list[str]]:
    """Per job, the overrides not shared by every job (all of them when every job has the same:
    a sweep of one job).

    >>> distinguishing([["compute=smoke", "seed=0"], ["compute=smoke", "seed=1"]])
    [['seed=0'], ['seed=1']]
    """
    shared = set.intersection(*map(set, overrides)) if len(overrides) > 1 else set()
    return [[o for o in job if o not in shared] for job in overrides]


def job_record(job: Path, label: list[str]) -> dict:
    """One job's row: its state, losses, speed and time (see the module's docstring)."""
    history = read_history(job)
    try:
        summary = json.loads((job / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        summary = None
    heldout = [r["heldout_loss"] for r in history if isinstance(r.get("heldout_loss"), (int, float))]
    tail = history[-max(1, len(history) // 10):]
    if summary is not None:
        state = "finished"
    elif (job / "checkpoint.msgpack").is_file():
        state = f"stopped at step {len(history)}: lopt meta-train resume={job}"
    else:
        state = "failed before its first checkpoint"
    speeds = sorted(r["inner_steps_per_second"] for r in tail if "inner_steps_per_second" in r)
    return {
        "job": job.name, "overrides": label, "state": state, "outer_steps": len(history),
        "first_meta_loss": history[0]["meta_loss"] if history else None,
        "final_meta_loss": (summary or {}).get(
            "final_meta_loss", final_meta_loss(history) if history else None),
        "last_heldout_loss": heldout[-1] if heldout else None,
        "best_heldout_loss": min(heldout) if heldout else None,
        # the held-out loss of the θ it published: its best with keep_best, else its last
        "published_heldout_loss": (summary or {}).get(
            "best_heldout_loss", heldout[-1] if heldout else None),
        "inner_steps_per_second": speeds[len(speeds) // 2] if speeds else None,
        "seconds": sum(r.get("seconds", 0.0) + r.get("heldout_seconds", 0.0) for r in history),
        "history": history,
    }


def best_job(records: list[dict]) -> str | None:
    """The finished job whose published θ has the lowest held-out loss (when every finished
    job has one; with ``keep_best`` that is its best check, else its last), else the lowest
    final meta-loss."""
    finished = [r for r in records if r["state"] == "finished"
                and _finite(r["final_meta_loss"])]
    if not finished:
        return None
    key = ("published_heldout_loss" if all(_finite(r["published_heldout_loss"])
                                           for r in finished) else "final_meta_loss")
    return min(finished, key=lambda r: r[key])["job"]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def summarize_sweep(sweep: Path) -> dict:
    """Writes the sweep's summary files (and a meta-training sweep's figure); returns the
    summary."""
    from lopt_cli.evaluation.plots import plot_meta_loss
    from lopt_cli.io import write_json_atomic, write_text_atomic

    jobs = job_dirs(sweep)
    labels = distinguishing([read_overrides(job) for job in jobs])
    if all(job_command(job) == "self-train" for job in jobs):
        summary = self_train_summary(sweep, jobs, labels)
        write_json_atomic(sweep / SWEEP_JSON, summary)
        write_text_atomic(sweep / SWEEP_MD, self_train_markdown(summary))
        return summary
    records = [job_record(job, label) for job, label in zip(jobs, labels)]
    best = best_job(records)
    summary = {"sweep": str(sweep), "best_job": best,
               "jobs": [{k: v for k, v in r.items() if k != "history"} for r in records]}
    write_json_atomic(sweep / SWEEP_JSON, summary)
    write_text_atomic(sweep / SWEEP_MD, markdown(summary))
    plot_meta_loss({job_name(r): r["history"] for r in records if r["history"]},
                   sweep / SWEEP_PLOT, f"meta-training sweep: {len(records)} jobs")
    return summary


def job_command(job: Path) -> str | None:
    """The ``lopt`` command that ran the job (Hydra's job name), or ``None`` when unreadable."""
    try:
        hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text()) or {}
        return hydra["hydra"]["job"]["name"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


LEARNED, ADAM = "learned outer optimizer", "AdamW"  # self-train's two runs (its summary's keys)


def self_train_summary(sweep: Path, jobs: list[Path], labels: list[list[str]]) -> dict:
    """Per self-train job: both runs' final meta-loss and which is lower; the count over the
    finished jobs."""
    records = []
    for job, label in zip(jobs, labels):
        try:
            finals = json.loads((job / "summary.json").read_text())["final_meta_loss"]
            state = "finished"
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            finals, state = {}, f"unfinished: lopt self-train resume={job} learned_optimizer=" \
                                f"{job_setting(job, 'learned_optimizer')}"
        learned, adam = finals.get(LEARNED), finals.get(ADAM)
        lower = None if not (_finite(learned) and _finite(adam)) else (
            "learned" if learned < adam else "AdamW" if adam < learned else "tie")
        records.append({"job": job.name, "overrides": label, "state": state,
                        "learned_final_meta_loss": learned, "adamw_final_meta_loss": adam,
                        "lower": lower})
    decided = [r for r in records if r["lower"] is not None]
    return {"sweep": str(sweep), "command": "self-train", "jobs": records,
            "learned_lower": sum(r["lower"] == "learned" for r in decided),
            "finished": len(decided)}


def job_setting(job: Path, key: str) -> str:
    try:
        return str((yaml.safe_load((job / ".hydra" / "config.yaml").read_text()) or {})[key])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return "<as before>"


SELF_TRAIN_COLUMNS = ("job", "overrides", "state", f"{LEARNED}: final meta-loss",
                      f"{ADAM}: final meta-loss", "lower")


def self_train_rows(summary: dict) -> list[list[str]]:
    def number(value):
        return "-" if value is None else f"{value:.4g}"

    return [[j["job"], " ".join(j["overrides"]) or "-", j["state"],
             number(j["learned_final_meta_loss"]), number(j["adamw_final_meta_loss"]),
             j["lower"] or "-"] for j in summary["jobs"]]


def self_train_verdict(summary: dict) -> str:
    return (f"the learned outer optimizer ends lower in {summary['learned_lower']} of "
            f"{summary['finished']} finished jobs (final meta-loss: the mean of the last tenth "
            "of the outer steps)")


def self_train_markdown(summary: dict) -> str:
    return "\n".join([f"# Self-training sweep: {summary['sweep']}", "",
                      self_train_verdict(summary) + ".", "",
                      *markdown_table(SELF_TRAIN_COLUMNS, self_train_rows(summary))])


def job_name(record: dict) -> str:
    return f"{record['job']}: {' '.join(record['overrides']) or '(no overrides)'}"


COLUMNS = ("job", "overrides", "state", "outer steps", "meta-loss first → final",
           "held-out last (best)", "inner steps/s", "time")


def rows(summary: dict) -> list[list[str]]:
    """The table's cells, one list per job (the best job starred)."""
    from lopt_cli.console import duration

    out = []
    for job in summary["jobs"]:
        heldout = "-" if job["last_heldout_loss"] is None else (
            f"{job['last_heldout_loss']:.4g} ({job['best_heldout_loss']:.4g})")
        losses = "-" if job["first_meta_loss"] is None else (
            f"{job['first_meta_loss']:.4g} → {job['final_meta_loss']:.4g}")
        speed = "-" if job["inner_steps_per_second"] is None else \
            f"{job['inner_steps_per_second']:,.0f}"
        star = " ★" if job["job"] == summary["best_job"] else ""
        out.append([job["job"] + star, " ".join(job["overrides"]) or "-", job["state"],
                    str(job["outer_steps"]), losses, heldout, speed, duration(job["seconds"])])
    return out


def markdown(summary: dict) -> str:
    lines = [f"# Meta-training sweep: {summary['sweep']}", "",
             "★: the finished job whose published θ has the lowest held-out loss (its best "
             "check with keep_best, else its last; without checks the lowest final meta-loss). "
             "Final meta-loss: the mean of the last tenth of the outer steps; time: the seconds "
             "its outer steps and held-out checks took.", "",
             *markdown_table(COLUMNS, rows(summary))]
    return "\n".join(lines + [f"![meta-loss]({SWEEP_PLOT})", ""])


def print_summary(summary: dict, sweep: Path) -> None:
    from rich.table import Table

    from lopt_cli.console import output_console

    self_train = summary.get("command") == "self-train"
    title = "self-training sweep" if self_train else "meta-training sweep"
    table = Table(title=f"{title}: {len(summary['jobs'])} jobs" + ("" if self_train else
                                                                    " (★ best)"))
    for column in SELF_TRAIN_COLUMNS if self_train else COLUMNS:
        table.add_column(column)
    for cells in self_train_rows(summary) if self_train else rows(summary):
        table.add_row(*cells)
    console = output_console()
    console.print(table)
    if self_train:
        console.print(self_train_verdict(summary), markup=False)
    written = [sweep / SWEEP_MD, sweep / SWEEP_JSON] + ([] if self_train else [sweep / SWEEP_PLOT])
    console.print(f"written: {', '.join(map(str, written))}", markup=False)


class SweepSummary(Callback):
    """Summarises a finished ``lopt meta-train`` or ``self-train`` ``--multirun`` sweep (see
    the module's docstring); a summary that cannot be written is one line on stderr, never a
    failed sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.job.name not in ("meta-train", "self-train"):
            return
        sweep = Path(config.hydra.sweep.dir)
        try:
            summary = summarize_sweep(sweep)
        except (LoptUserError, OSError, ValueError) as error:
            print(f"lopt: no sweep summary: {error}", file=sys.stderr)
            return
        print_summary(summary, sweep)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lopt_cli.scripts.sweep_summary",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a `lopt meta-train --multirun` sweep directory")
    args = parser.parse_args(argv)
    try:
        summary = summarize_sweep(args.sweep)
    except (LoptUserError, OSError) as error:
        print(f"lopt: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print_summary(summary, args.sweep)


if __name__ == "__main__":
    main()
