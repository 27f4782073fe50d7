"""Tables of an evaluation: a rich table for the terminal and ``report.md`` for the run."""
from __future__ import annotations

from rich.table import Table

from lopt_cli.evaluation.leaderboard_report import edge_section
from lopt_cli.evaluation.tuning import METRICS

METRIC_TEXT = {"valid": "validation loss", "train": "training loss"}


def _pct(value: float) -> str:
    return f"{100 * value:+.1f}%"


def _by_setting(rows: list[dict], metric: str) -> dict:
    table = {}
    for row in rows:
        if row["tuned_on"] == metric:
            table.setdefault(row["setting"], {})[row["split"]] = row
    return table


def summary_table(summary: dict, metric: str = "valid") -> Table:
    """Rows: baseline settings; columns: won and median improvement per split."""
    splits = summary["splits"]
    table = Table(title=f"learned optimizer vs. tuned baselines — {METRIC_TEXT[metric]} "
                        f"(each baseline tuned on it)\n{summary['horizon']} steps, "
                        f"{summary['num_seeds']} seeds; Δ > 0: learned better")
    table.add_column("baseline setting")
    for split in splits:
        table.add_column(f"{split}: won", justify="right")
        table.add_column(f"{split}: median Δ", justify="right")
    for setting, per_split in _by_setting(summary["comparisons"], metric).items():
        cells = []
        for split in splits:
            row = per_split.get(split)
            cells += ([f"{row['wins']}/{row['num_tasks']}", _pct(row["median"])] if row
                      else ["-", "-"])
        table.add_row(setting, *cells)
    return table


def _summary_section(summary: dict, metric: str) -> list[str]:
    splits = summary["splits"]
    header = "| baseline setting | " + " | ".join(
        f"{s}: won | {s}: win rate | {s}: median Δ | {s}: IQR" for s in splits) + " |"
    lines = [f"## {METRICS[metric].capitalize()}: {METRIC_TEXT[metric]}, baselines tuned on "
             f"{METRIC_TEXT[metric]}", "", header,
             "|---|" + "---|" * (4 * len(splits))]
    for setting, per_split in _by_setting(summary["comparisons"], metric).items():
        cells = []
        for split in splits:
            row = per_split.get(split)
            cells += ([f"{row['wins']}/{row['num_tasks']}", f"{100 * row['win_rate']:.0f}%",
                       _pct(row["median"]), f"[{_pct(row['q25'])}, {_pct(row['q75'])}]"]
                      if row else ["-"] * 4)
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _per_task_section(rows: list[dict], metric: str) -> list[str]:
    learned = {(r["split"], r["task_id"]): r for r in rows if r["optimizer"] == "learned"}
    settings = list(dict.fromkeys(r["optimizer"] for r in rows
                                  if r["optimizer"] != "learned" and r["tuned_on"] == metric))
    lines = [f"## Per task ({METRIC_TEXT[metric]}, normalised; Δ in parentheses)", "",
             "| split | task | learned | " + " | ".join(settings) + " |",
             "|---|---|---|" + "---|" * len(settings)]
    values = {(r["split"], r["task_id"], r["optimizer"]): r for r in rows
              if r["optimizer"] != "learned" and r["tuned_on"] == metric}
    for (split, task_id), row in learned.items():
        cells = [f"{values[(split, task_id, s)][f'final_{metric}']:.4f} "
                 f"({_pct(values[(split, task_id, s)]['improvement'])})" for s in settings]
        lines.append(f"| {split} | #{task_id} {row['task']['family']} | "
                     f"{row[f'final_{metric}']:.4f} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown_report(summary: dict, rows: list[dict]) -> str:
    """``report.md``: what was run, both comparisons, global choices and every task."""
    lines = [
        "# Evaluation report", "",
        f"- learned optimizer: `{summary['learned_optimizer']}`",
        f"- task family: `{summary['task_family']}`; test tasks per split: "
        + ", ".join(f"{s} {n}" for s, n in summary["tasks_per_split"].items())
        + f"; global tuning on {summary['num_tuning_tasks']} disjoint tasks",
        *[f"- {split} task ids: {', '.join(map(str, ids))}"
          for split, ids in summary.get("task_ids", {}).items()],
        f"- every run: {summary['horizon']} steps, {summary['num_seeds']} seeds; final value = "
        f"mean of the last {100 * summary['final_fraction']:.0f}% of the curve, over seeds; "
        "losses normalised per task",
        f"- baselines: {', '.join(summary['baselines'])}; each runs {summary['max_trials']} "
        "trials per task; *per-task (n trials)* = best of the first n on that task, "
        "*global* = the one trial best on average over the tuning tasks",
        "- Δ = (baseline − learned) / max(baseline, learned) ∈ [−1, 1]; Δ > 0: the learned "
        "optimizer reaches the lower loss", "",
        *_summary_section(summary, "valid"),
        *_summary_section(summary, "train"),
        *edge_section(summary.get("tuned_at_edge")),
        "## Global choices (trial index, on the tuning tasks)", "",
        *[f"- {name}: {choice}" for name, choice in summary["global_choices"].items()], "",
        *_per_task_section(rows, "valid"),
        "![improvement, validation loss](improvement.png)", "",
        "![improvement, training loss](improvement_train.png)", "",
        "![learning curves](curves.png)", "",
    ]
    return "\n".join(lines)
