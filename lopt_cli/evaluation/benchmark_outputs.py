"""What a benchmark run writes: ``summary.json``, ``results.jsonl``, ``leaderboard.md``,
``leaderboard.png`` and ``horizon.png`` (every number of the leaderboard is in the summary,
and recomputable from ``results.jsonl``)."""
from __future__ import annotations

from pathlib import Path

from lopt_cli.evaluation.leaderboard import (
    comparison_rows,
    divergence_counts,
    headline,
    headline_intervals,
    horizon_record,
    horizon_rows,
    paired_differences,
    per_task,
    reference_label,
    summarize_rows,
)
from lopt_cli.evaluation.tuning_edges import edge_budgets, tuned_at_edge

HEADLINE_KEYS = ("iqm_loss_ratio", "iqm_speedup", "win_rate", "horizon_rise")


def trials_run(spec) -> dict:
    """Trials per task of the baselines this run has (a removed one, ``~baselines.X``, is not
    listed) and of every candidate."""
    return {name: n for name, n in spec.trials.items()
            if name in spec.baselines or name == "candidates"}


def benchmark_summary(spec, results: dict, candidates: list[str],
                      lr_multiplier: tuple) -> tuple[dict, list[dict]]:
    """``(summary, rows)``: the leaderboard's numbers and the per-task rows behind them."""
    rows = comparison_rows(results, spec, candidates)
    rows += horizon_rows(results, spec, candidates)
    reference = reference_label(spec) or rows[0]["setting"]
    leaderboard = summarize_rows(rows, reference)
    horizon = horizon_record(rows)
    rise = horizon["rise"]
    summary = {
        "benchmark": spec.name, "candidates": candidates,
        "num_tasks": len(spec.tasks), "task_names": [t.name for t in spec.tasks],
        "horizons": [t.horizon for t in spec.tasks], "tasks": [t.description for t in spec.tasks],
        "seed": spec.measure.seed, "num_seeds": spec.measure.num_seeds,
        "num_points": spec.measure.num_points,
        "eval_batches": spec.measure.eval_batches, "final_fraction": spec.measure.final_fraction,
        "long_horizon": spec.long_horizon, "trials": trials_run(spec),
        "lr_multiplier": list(lr_multiplier), "baselines": list(spec.baselines),
        "reference_setting": reference, "leaderboard": leaderboard,
        "per_task": per_task(rows, reference),
        "intervals": headline_intervals(rows, reference),
        "paired": paired_differences(rows, reference, candidates),
        "horizon": horizon,
        "diverged": divergence_counts(results),
        "tuned_at_edge": tuned_at_edge(results, edge_budgets(spec, candidates)),
        **{key: {name: headline(leaderboard, rise, name, key) for name in candidates}
           for key in HEADLINE_KEYS},
    }
    return summary, rows


def write_benchmark(out_dir: Path, summary: dict, rows: list[dict]) -> None:
    from lopt_cli.evaluation.leaderboard_report import markdown_leaderboard
    from lopt_cli.evaluation.plots import plot_horizon, plot_leaderboard
    from lopt_cli.io import write_json_atomic, write_jsonl_atomic, write_text_atomic

    write_jsonl_atomic(out_dir / "results.jsonl", rows)
    write_json_atomic(out_dir / "summary.json", summary)
    plot_leaderboard(summary, out_dir / "leaderboard.png")
    plot_horizon(rows, out_dir / "horizon.png")
    write_text_atomic(out_dir / "leaderboard.md", markdown_leaderboard(summary))
