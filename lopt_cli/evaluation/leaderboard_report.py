"""``leaderboard.md`` and the terminal table of a benchmark run (numbers from ``summary.json``)."""
from __future__ import annotations

import math

from rich.table import Table

from lopt_cli.evaluation.candidates import first_multiplier
from lopt_cli.evaluation.leaderboard import COMPARISONS
from lopt_cli.evaluation.metrics import BOOTSTRAP_RESAMPLES
from lopt_cli.evaluation.tuning_edges import any_at_edge, edge_rows

COMPARISON_TEXT = {"generalisation": "test loss, every optimizer tuned on validation loss",
                   "optimisation": "training loss, every optimizer tuned on training loss"}
COLUMNS = ("wins", "win rate", "median Δ", "Δ quartiles", "IQM loss ratio", "IQM speedup")


def number(value: float) -> str:
    return f"{value:.3f}"


def count(value: int, noun: str) -> str:
    """``1 task``, ``14 tasks``."""
    return f"{value} {noun}{'s' * (value != 1)}"


def metric_cells(values: dict) -> list[str]:
    """The cells of :data:`COLUMNS` for one candidate against one baseline setting."""
    return [f"{values['wins']}/{values['num_tasks']}", f"{100 * values['win_rate']:.0f}%",
            number(values["median"]), f"[{number(values['q25'])}, {number(values['q75'])}]",
            number(values["iqm_loss_ratio"]), number(values["iqm_speedup"])]


def headline_rows(summary: dict) -> list[list[str]]:
    """Per candidate: against the reference setting, both comparisons, and horizon rise."""
    reference = summary["reference_setting"]
    rows = []
    for name, per in summary["leaderboard"].items():
        cells = [name]
        for comparison in COMPARISONS:
            values = per[comparison]["settings"].get(reference)
            cells += ([f"{100 * values['win_rate']:.0f}%", number(values["iqm_loss_ratio"]),
                       number(values["iqm_speedup"]),
                       f"{100 * per[comparison]['faster_than_adamlr']:.0f}%"]
                      if values else ["-"] * 4)
        rise = summary["horizon_rise"].get(name)
        cells.append("-" if rise is None else f"{100 * rise:.0f}%")
        rows.append(cells)
    return rows


def interval_cell(interval: list | None, percent: bool = False) -> str:
    """``[0.981, 1.120]`` (``[50%, 86%]`` for a rate); ``-`` where there is none."""
    if not interval or any(v is None or not math.isfinite(v) for v in interval):
        return "-"
    low, high = interval
    return f"[{100 * low:.0f}%, {100 * high:.0f}%]" if percent else \
        f"[{number(low)}, {number(high)}]"


def interval_rows(summary: dict) -> list[list[str]]:
    """Per candidate, the cells of :data:`INTERVAL_COLUMNS` (none in a summary written before
    the intervals were kept)."""
    rows = []
    for name, per in (summary.get("intervals") or {}).items():
        cells = [name]
        for comparison in COMPARISONS:
            values = per.get(comparison, {})
            cells += [interval_cell(values.get("win_rate"), percent=True),
                      interval_cell(values.get("iqm_loss_ratio")),
                      interval_cell(values.get("iqm_speedup"))]
        rows.append(cells)
    return rows


def interval_title(summary: dict) -> str:
    return f"How sure: 95% intervals over tasks, vs {summary['reference_setting']}"


def interval_section(summary: dict) -> list[str]:
    """95% bootstrap intervals over tasks of the headline's win rates and IQMs."""
    rows = interval_rows(summary)
    if not rows:
        return []
    return [f"### {interval_title(summary)}", "",
            "The 2.5th and 97.5th percentiles of each headline number recomputed on "
            f"{BOOTSTRAP_RESAMPLES} draws of {count(summary['num_tasks'], 'task')} with "
            "replacement: how far it could move on another draw of tasks like these.", "",
            *markdown_table(INTERVAL_COLUMNS, rows)]


def difference_cell(values: dict | None) -> str:
    """``+0.044 [-0.022, 0.166]``: a difference of IQMs and its interval."""
    if not values or values.get("difference") is None:
        return "-"
    difference = values["difference"]
    text = f"{difference:+.3f}" if math.isfinite(difference) else str(difference)
    interval = interval_cell(values.get("interval"))
    return text if interval == "-" else f"{text} {interval}"


def paired_section(summary: dict) -> list[str]:
    """The first candidate's IQMs minus each other candidate's, with paired intervals (none
    with one candidate, or in a summary written before they were kept)."""
    paired = summary.get("paired")
    if not paired:
        return []
    first = summary["candidates"][0]
    rows = [[f"{first} − {other}", *(difference_cell(per.get(comparison, {}).get(key))
                                     for comparison in COMPARISONS
                                     for key in ("iqm_loss_ratio", "iqm_speedup"))]
            for other, per in paired.items()]
    return [f"### Paired: {first} against each other candidate", "",
            "Its IQM minus the other's, and the 95% interval of that difference over the same "
            f"{BOOTSTRAP_RESAMPLES} draws of tasks for both: an interval that holds 0 does not "
            "tell the two apart on tasks like these.", "",
            *markdown_table(PAIRED_COLUMNS, rows)]


PAIRED_COLUMNS = ("candidates", "test: IQM loss ratio", "test: IQM speedup",
                  "train: IQM loss ratio", "train: IQM speedup")
INTERVAL_COLUMNS = ("optimizer", "test: win rate", "test: IQM loss ratio", "test: IQM speedup",
                    "train: win rate", "train: IQM loss ratio", "train: IQM speedup")
HEADLINE_COLUMNS = ("optimizer", "test: win rate", "test: IQM loss ratio", "test: IQM speedup",
                    "test: faster than AdamLR", "train: win rate", "train: IQM loss ratio",
                    "train: IQM speedup", "train: faster than AdamLR", "horizon rise")


def markdown_table(header, rows) -> list[str]:
    """A markdown table's lines (header, rule, rows) and a blank line after it."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def edge_section(edges: dict | None) -> list[str]:
    """Tasks whose per-task choice (full budget) is the lowest or highest value tried."""
    if edges is None:  # a summary written before the check existed
        return []
    lines = ["## Tuned at the edge of its range", "",
             "Per task (full trial budget), a choice at the lowest or highest value of a "
             "one-hyperparameter grid: that optimizer might do better outside the range, so "
             "its comparison on the task is bounded by the range.", ""]
    if not edges:
        return [*lines, "Not checked: no optimizer was tuned on one hyperparameter with at "
                "least 3 trials.", ""]
    if not any_at_edge(edges):
        return [*lines, "None: every choice is inside its range.", ""]
    return [*lines, *markdown_table(("optimizer", "comparison", "tuned", "at the low end",
                             "at the high end"), edge_rows(edges))]


PER_TASK_COLUMNS = ("task", "test: loss ratio", "test: speedup", "train: loss ratio",
                    "train: speedup", "training loss rises")


def per_task_cells(task: str, entry: dict) -> list[str]:
    """One task's row of :data:`PER_TASK_COLUMNS` (``-`` where a number is missing)."""
    cells = [task]
    for comparison in COMPARISONS:
        values = entry.get(comparison)
        cells += ([number(values["loss_ratio"]), number(values["speedup"])]
                  if values else ["-", "-"])
    rises = entry.get("rises")
    return [*cells, "-" if rises is None else rise_cell(rises, entry.get("rise_ratio"))]


def with_ratio(text: str, ratio: float | None) -> str:
    """``text (1.17×)``; just ``text`` where the ratio is missing or not finite (diverged)."""
    return text if ratio is None or not math.isfinite(ratio) else f"{text} ({ratio:.2f}×)"


def rise_cell(rises: bool, ratio: float | None) -> str:
    """``yes (1.17×)``: the flag and, where kept, the final ÷ minimum behind it."""
    return with_ratio("yes" if rises else "no", ratio)


def rising_cell(names: list[str], ratios: dict | None) -> str:
    """The rising tasks, each with its final ÷ minimum where the summary keeps it."""
    ratios = ratios or {}
    return ", ".join(with_ratio(task, ratios.get(task)) for task in names) or "-"


def per_task_section(summary: dict) -> list[str]:
    """Per candidate, every task's loss ratio and speedup against the headline baseline (the
    values the IQMs average; a summary written before they were kept has none)."""
    table = summary.get("per_task")
    if not table:
        return []
    lines = [f"## Per task: vs {summary['reference_setting']}", "",
             "Loss ratio > 1: the candidate's final loss is lower; speedup 0: it never reaches "
             "the baseline's final loss; rises: on tasks of ≥ "
             f"{summary['long_horizon']} steps, whether its training loss ends above 1.05 × "
             "its minimum (in brackets: final ÷ minimum).", ""]
    for name, tasks in table.items():
        lines += [f"### {name}", "",
                  *markdown_table(PER_TASK_COLUMNS, [per_task_cells(task, entry)
                                             for task, entry in tasks.items()])]
    return lines


def markdown_leaderboard(summary: dict) -> str:
    """The leaderboard: a headline table, then every baseline setting for both comparisons."""
    trials = ", ".join(f"{name} {n}" for name, n in summary["trials"].items())
    low, high = summary["lr_multiplier"]
    lines = [
        f"# Leaderboard: `{summary['benchmark']}`", "",
        f"- {count(summary['num_tasks'], 'held-out task')} ({', '.join(summary['task_names'])}); "
        f"horizons {min(summary['horizons'])}–{max(summary['horizons'])} steps; "
        f"{count(summary['num_seeds'], 'seed')} per run",
        f"- trials per task: {trials} (candidates: their learning-rate factor on "
        f"[{low:g}, {high:g}], factor {first_multiplier(low, high):.3g} first)",
        f"- losses measured {summary['num_points']} times per run on fixed samples of "
        f"{summary['eval_batches']} batches of each split (the same for every optimizer); "
        f"final = mean of the last {100 * summary['final_fraction']:.0f}% of the curve, "
        "normalised per task",
        "- loss ratio = baseline final / candidate final (> 1: candidate lower); speedup = "
        "steps the baseline needs to reach its final loss ÷ steps the candidate needs (0: "
        "never); Δ = (baseline − candidate) / max ∈ [−1, 1]; IQM = mean of the middle 50%",
        f"- headline baseline: **{summary['reference_setting']}**; horizon rise = share of "
        f"tasks of ≥ {summary['long_horizon']} steps whose final training loss exceeds 1.05 × "
        "its minimum (by more than 1e-6, normalised)",
        "- diverged trials: " + ", ".join(
            f"{name} {c['diverged']}/{c['trials']}" for name, c in summary["diverged"].items()),
        "", f"## Headline: vs {summary['reference_setting']}, "
        f"{count(summary['num_seeds'], 'seed')}, "
        f"candidates {summary['trials']['candidates']} trials", "",
        *markdown_table(HEADLINE_COLUMNS, headline_rows(summary)),
        *interval_section(summary),
        *paired_section(summary),
        *edge_section(summary.get("tuned_at_edge")),
    ]
    for comparison in COMPARISONS:
        lines += [f"## {comparison.capitalize()}: {COMPARISON_TEXT[comparison]}", ""]
        labels = next(iter(summary["leaderboard"].values()))[comparison]["settings"]
        for label in labels:
            rows = [[name, *metric_cells(per[comparison]["settings"][label])]
                    for name, per in summary["leaderboard"].items()]
            some = next(iter(summary["leaderboard"].values()))[comparison]["settings"][label]
            tasks_and_seeds = (f"{count(summary['num_tasks'], 'task')}, "
                               f"{count(summary['num_seeds'], 'seed')}")
            lines += [f"### vs {label}", "",
                      f"{tasks_and_seeds}; candidates "
                      f"tuned the same way with {some['candidate_trials']} "
                      f"trial{'s' * (some['candidate_trials'] > 1)}", "",
                      *markdown_table(("optimizer", *COLUMNS), rows)]
    lines += per_task_section(summary)
    lines += ["## Horizon generalisation (training loss rises after its minimum)", "",
              *markdown_table(("optimizer", "long-horizon tasks rising", "which"),
                      [[name, f"{100 * value:.0f}%",
                        rising_cell(summary["horizon"]["rising_tasks"][name],
                                    summary["horizon"].get("rise_ratio", {}).get(name))]
                       for name, value in summary["horizon"]["rise"].items()]),
              "![leaderboard](leaderboard.png)", "", "![horizon](horizon.png)", ""]
    return "\n".join(lines)


def terminal_interval_table(summary: dict) -> Table | None:
    """The intervals under the terminal's headline (``None``: one task, or none kept)."""
    rows = interval_rows(summary)
    if not rows or summary["num_tasks"] < 2:
        return None
    table = Table(title=interval_title(summary))
    for column in INTERVAL_COLUMNS:
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def terminal_table(summary: dict) -> Table:
    table = Table(title=f"{summary['benchmark']}: vs {summary['reference_setting']} "
                        f"({count(summary['num_tasks'], 'task')}, "
                        f"{count(summary['num_seeds'], 'seed')})")
    for column in HEADLINE_COLUMNS:
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for row in headline_rows(summary):
        table.add_row(*row)
    return table
