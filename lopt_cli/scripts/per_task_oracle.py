"""The per-task oracle over benchmark leaderboards: for every task, the best ratio any listed
candidate reached, and the IQM of those bests. A diagnostic of a bar, not a result: no single
optimizer reaches the oracle, and the best of many noisy readings is biased upward, so an oracle
below a bar says the optimizers measured cannot meet it whatever is picked per task.

    python -m lopt_cli.scripts.per_task_oracle LEADERBOARD.md [LEADERBOARD.md ...] [--tasks N]

Reads the *Per task* tables of ``leaderboard.md`` files (as ``lopt evaluate benchmark=...``
writes them; each candidate's section counts as one entry, repeats of the same optimizer
included) and keeps the entries that cover ``--tasks`` tasks (default: the most common count),
so one leaderboard over a subset does not mix in. A file without a per-task table is skipped
with a note on stderr; none left is a one-line error (exit 2).
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

from lopt_cli.evaluation.metrics import iqm

COLUMNS = ("test: loss ratio", "test: speedup", "train: loss ratio", "train: speedup")


def per_task_entries(text: str) -> list[dict[str, tuple[float, ...]]]:
    """``[{task: (test ratio, test speedup, train ratio, train speedup)}]``, one per candidate
    section of a leaderboard's *Per task* part (a ``-`` cell reads as nan)."""
    if "\n## Per task" not in text:
        return []
    part = text.split("\n## Per task", 1)[1].split("\n## ", 1)[0]
    entries = []
    for section in part.split("\n### ")[1:]:
        rows = {}
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 5 or cells[0] in ("task", "") or set(cells[0]) <= {"-"}:
                continue
            rows[cells[0]] = tuple(float("nan") if c == "-" else float(c) for c in cells[1:5])
        if rows:
            entries.append(rows)
    return entries


def oracle(entries: list[dict], num_tasks: int | None = None) -> tuple[dict, dict, int]:
    """``(best per task and column, IQM per column, entries used)`` over the entries with
    ``num_tasks`` tasks (``None``: the most common count)."""
    counts = collections.Counter(len(e) for e in entries)
    num_tasks = num_tasks or counts.most_common(1)[0][0]
    used = [e for e in entries if len(e) == num_tasks]
    tasks = sorted({task for e in used for task in e})
    best = {task: tuple(float(np.nanmax([e[task][k] for e in used if task in e]))
                        for k in range(len(COLUMNS))) for task in tasks}
    iqms = {column: iqm([best[t][k] for t in tasks]) for k, column in enumerate(COLUMNS)}
    return best, iqms, len(used)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lopt_cli.scripts.per_task_oracle",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("leaderboards", nargs="+", type=Path)
    parser.add_argument("--tasks", type=int, default=None, help="keep entries of N tasks")
    args = parser.parse_args(argv)
    entries = []
    for path in args.leaderboards:
        try:
            found = per_task_entries(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return 2
        if not found:
            print(f"note: {path} has no per-task table, skipped", file=sys.stderr)
        entries += found
    if not entries or (args.tasks and not any(len(e) == args.tasks for e in entries)):
        print("error: no per-task entries to take the oracle of", file=sys.stderr)
        return 2
    best, iqms, used = oracle(entries, args.tasks)
    print(f"{used} entries over {len(best)} tasks; best per task "
          f"({', '.join(COLUMNS)}):")
    for task, values in best.items():
        print(f"  {task}: " + " / ".join(f"{v:.3f}" for v in values))
    print("oracle IQM: " + ", ".join(f"{c} {v:.3f}" for c, v in iqms.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
