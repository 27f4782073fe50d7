"""Tables of an evaluation: a rich table for the terminal and ``report.md`` for the run."""
from __future__ import annotations

from rich.table import Table

COMPARISON_TEXT = {
    "generalisation": "validation loss (baseline tuned on validation loss)",
    "optimisation": "training loss (baseline tuned on training loss)",
}
SHORT_TEXT = {"generalisation": "valid", "optimisation": "train"}


def _pct(value: float) -> str:
    return f"{100 * value:+.1f}%"


def summary_table(summary: dict) -> Table:
    """One row per comparison: tasks won, win rate, median and quartiles of the improvement."""
    table = Table(title=f"learned optimizer vs. per-task tuned baselines\n"
                        f"({summary['num_tasks']} tasks, {summary['num_seeds']} seeds, "
                        f"{summary['horizon']} steps; each baseline tuned on the loss it is "
                        "compared on)")
    for column in ("baseline", "loss", "trials", "won", "win rate", "median Δ", "IQR of Δ"):
        table.add_column(column, justify="left" if column in ("baseline", "loss") else "right")
    for name, row in summary["comparisons"].items():
        table.add_row(row["baseline"], SHORT_TEXT[name], str(row["trials_per_task"]),
                      f"{row['wins']}/{row['num_tasks']}", f"{100 * row['win_rate']:.0f}%",
                      _pct(row["median"]), f"[{_pct(row['q25'])}, {_pct(row['q75'])}]")
    return table


def markdown_report(summary: dict, per_task: list[dict]) -> str:
    """``report.md``: settings, the summary per comparison, and the per-task table."""
    lines = [
        "# Evaluation report", "",
        f"- learned optimizer: `{summary['learned_optimizer']}`",
        f"- tasks: {summary['num_tasks']} from family `{summary['task_family']}`, ids "
        f"{summary['first_task_id']}..{summary['first_task_id'] + summary['num_tasks'] - 1}",
        f"- horizon: {summary['horizon']} steps, {summary['num_seeds']} seeds per run; final value "
        f"= mean of the last {100 * summary['final_fraction']:.0f}% of the curve, over seeds",
        "- losses are normalised per task (cross-entropy / log(classes), bowls / initial loss)",
        "- improvement Δ = (baseline − learned) / max(baseline, learned), in [−1, 1]; positive "
        "means the learned optimizer reaches the lower loss", "",
        "## Summary", "",
        "| baseline | compared on | trials per task | won | win rate | median | 25% | 75% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary["comparisons"].items():
        lines.append(
            f"| {row['baseline']} | {COMPARISON_TEXT[name]} | {row['trials_per_task']} | "
            f"{row['wins']}/{row['num_tasks']} | {100 * row['win_rate']:.0f}% | "
            f"{_pct(row['median'])} | {_pct(row['q25'])} | {_pct(row['q75'])} |")
    lines += ["", "## Per task", "",
              "| task | learned (valid) | Adam lr (valid-tuned) | Adam (valid) | improvement "
              "| learned (train) | Adam lr (train-tuned) | Adam (train) | improvement |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in per_task:
        g, o = row["generalisation"], row["optimisation"]
        lines.append(
            f"| {row['title']} | {g['learned']:.4f} | {g['learning_rate']:.2g} | "
            f"{g['baseline']:.4f} | {_pct(g['improvement'])} | {o['learned']:.4f} | "
            f"{o['learning_rate']:.2g} | {o['baseline']:.4f} | {_pct(o['improvement'])} |")
    lines += ["", "![learning curves](curves.png)", ""]
    return "\n".join(lines)
