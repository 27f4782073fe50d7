"""Wall-clock cost of a training step of each ``lopt_bench`` task, per optimizer, against Adam.

    python -m benchmarks.task_step_time [--optimizers adam_nominal_wsd,muon_nominal_wsd]
        [--tasks a,b] [--runs 1] [--steps 50] [--repeats 3] [--out-dir D]
        [--leaderboard SUMMARY_JSON] [--timings TASK_STEP_TIME_JSON]

The update-overhead benchmark times the update alone on one big matrix; this one times what a
user waits for: the gradient of the task's loss on one batch plus the update, ``--steps`` steps
in one jitted ``lax.scan`` (``--runs`` vmapped runs; 1 is a user's single run, not vmapped),
compiled and run once before timing, the median of ``--repeats`` timings. Every optimizer comes from
``load_optimizer(name, horizon)`` (learned ones take their own rate), Adam is ``optax.adam(1e-3)``
and is timed in the same loop, task after task, so each row's ratios are within one stretch of
the machine. Prints a table and writes ``<out-dir>/task_step_time.json`` and ``.md``.

With ``--leaderboard`` (a ``summary.json`` of ``lopt evaluate``) the steps become seconds: a
task's speedup in steps over AdamLR (steps AdamLR needs to reach its final loss ÷ steps the
candidate needs) divided by the candidate's step time over Adam's is its speedup in seconds
(AdamLR's step costs Adam's at any rate); the IQM over tasks is printed beside the leaderboard's
IQM in steps, for every candidate of the summary that was timed under the same name.
``--timings`` reads the step times of an earlier run instead of timing again.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks.step_cost_check import benchmark_tasks, measured_step_seconds
from lopt_cli.errors import LoptUserError

ADAM = "adam"
DEFAULT_OPTIMIZERS = ("adam_nominal_wsd", "muon_nominal_wsd")


def parameter_count(task) -> int:
    import jax

    params = task.init(jax.random.PRNGKey(0))
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)))


def build_optimizer(name: str, horizon: int):
    import optax

    from lopt_cli import load_optimizer

    return optax.adam(1e-3) if name == ADAM else load_optimizer(name, horizon)


def markdown(rows: list[dict], optimizers: tuple[str, ...], runs: int, steps: int) -> str:
    """The rows as a table: ms per step of Adam, then each optimizer's time over Adam's."""
    head = ["task", "parameters", "Adam ms/step"] + [f"{name} × Adam" for name in optimizers]
    lines = [f"Seconds per training step (gradient + update), {runs} run(s), {steps} steps "
             "per timing, median of the repeats; ratios within one row's stretch of time.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        ratios = [f"{row['ratio'][name]:.2f}" for name in optimizers]
        lines.append(f"| {row['task']} | {row['parameters']:,} | {1e3 * row['seconds'][ADAM]:.3f} | "
                     + " | ".join(ratios) + " |")
    medians = [f"{statistics.median(row['ratio'][name] for row in rows):.2f}"
               for name in optimizers]
    lines.append("| **median** | | | " + " | ".join(medians) + " |")
    return "\n".join(lines) + "\n"


def main(out_dir: str | Path, optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS,
         tasks: tuple[str, ...] | None = None, runs: int = 1, steps: int = 50,
         repeats: int = 3) -> list[dict]:
    """Times every task under Adam and each optimizer; writes the JSON and markdown rows."""
    from lopt_cli.io import json_line, write_text_atomic

    known = benchmark_tasks()
    names = tuple(known) if tasks is None else tasks
    unknown = [name for name in names if name not in known]
    if unknown:
        raise LoptUserError(f"not a lopt_bench task: {', '.join(unknown)} "
                            f"(known: {', '.join(known)})")
    for name in optimizers:
        build_optimizer(name, 100)  # a bad name fails before any timing
    rows = []
    for name in names:
        entry = known[name]
        task = entry.task
        seconds = {opt: measured_step_seconds(task, runs, steps,
                                              build_optimizer(opt, entry.horizon), repeats)
                   for opt in (ADAM, *optimizers)}
        row = {"task": name, "horizon": entry.horizon,
               "parameters": parameter_count(task),
               "seconds": seconds, "ratio": {opt: seconds[opt] / seconds[ADAM] for opt in optimizers}}
        rows.append(row)
        print(f"{name:26s} {row['parameters']:>9,} params  Adam {1e3 * seconds[ADAM]:8.3f} ms  "
              + "  ".join(f"{opt} {row['ratio'][opt]:6.2f}×" for opt in optimizers), flush=True)
    out = Path(out_dir)
    write_text_atomic(out / "task_step_time.json", json_line(rows, indent=1) + "\n")
    write_text_atomic(out / "task_step_time.md", markdown(rows, optimizers, runs, steps))
    return rows


def seconds_speedups(summary: dict, rows: list[dict]) -> dict:
    """Per candidate timed and in ``summary["per_task"]``: per task and split (``test``,
    ``train``) the speedup in seconds, :math:`s_{steps} / (t_{cand} / t_{Adam})`; tasks not
    timed are left out."""
    ratio_of = {row["task"]: row["ratio"] for row in rows}
    splits = {"test": "generalisation", "train": "optimisation"}
    result = {}
    for name, tasks in summary.get("per_task", {}).items():
        timed = {task: ratio_of[task][name] for task in tasks
                 if task in ratio_of and name in ratio_of[task]}
        if timed:
            result[name] = {task: {split: tasks[task][key]["speedup"] / ratio
                                   for split, key in splits.items()}
                            for task, ratio in timed.items()}
    return result


def seconds_report(summary: dict, rows: list[dict]) -> str:
    """Each timed candidate's IQM speedup over AdamLR in steps (as the leaderboard) and in
    seconds, per split, over the tasks timed."""
    from lopt_cli.evaluation.metrics import iqm

    per_name = seconds_speedups(summary, rows)
    if not per_name:
        raise LoptUserError("no candidate of the leaderboard was timed under its name "
                            f"(candidates: {', '.join(summary.get('per_task', {}))})")
    lines = ["| candidate | tasks | test: IQM speedup in steps | test: in seconds | "
             "train: IQM speedup in steps | train: in seconds |", "|---|---|---|---|---|---|"]
    for name, tasks in per_name.items():
        cells = []
        for split, key in (("test", "generalisation"), ("train", "optimisation")):
            steps = iqm([summary["per_task"][name][task][key]["speedup"] for task in tasks])
            seconds = iqm([entry[split] for entry in tasks.values()])
            cells += [f"{steps:.3f}", f"{seconds:.3f}"]
        lines.append(f"| {name} | {len(tasks)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_timings(path: str | Path) -> list[dict]:
    """The rows of a ``task_step_time.json`` (one-line LoptUserError if it holds none)."""
    try:
        rows = json.loads(Path(path).read_text())
    except ValueError:
        rows = None
    if not (isinstance(rows, list) and rows and all(
            isinstance(row, dict) and isinstance(row.get("ratio"), dict) and "task" in row
            for row in rows)):
        raise LoptUserError(f"{path}: not the rows of a task_step_time.json")
    return rows


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.task_step_time",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS),
                        help="comma-separated load_optimizer sources; name them as the "
                             "leaderboard does to convert its speedups")
    parser.add_argument("--tasks", default=None, help="comma-separated lopt_bench tasks (all)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--leaderboard", default=None,
                        help="summary.json of lopt evaluate: print its speedups in seconds")
    parser.add_argument("--timings", default=None,
                        help="task_step_time.json of an earlier run: no timing")
    args = parser.parse_args(argv)
    if min(args.runs, args.steps, args.repeats) < 1:
        parser.error("--runs, --steps and --repeats must be positive")
    tasks = None if args.tasks is None else tuple(args.tasks.split(","))
    try:
        if args.timings is None:
            rows = main(args.out_dir, tuple(args.optimizers.split(",")), tasks, args.runs,
                        args.steps, args.repeats)
        else:
            rows = read_timings(args.timings)
        if args.leaderboard is not None:
            print(seconds_report(json.loads(Path(args.leaderboard).read_text()), rows), end="")
    except (LoptUserError, OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
