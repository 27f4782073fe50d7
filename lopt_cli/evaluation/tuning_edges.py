"""Tuned choices at the edge of their range: where a comparison is bounded by the search space.

A grid search over one hyperparameter (AdamLR's learning rate, a candidate's learning-rate
factor) whose best trial on a task is the grid's lowest or highest value says only that the
optimum lies there *or beyond*: that optimizer might do better outside the range, and its
comparison on that task is bounded by the range, not by the optimizer. The leaderboard lists
such tasks per optimizer and comparison (per-task tuning with the full trial budget, the
headline setting). Search spaces of several hyperparameters (``Adam8p``) or of a list of
settings (``opt_list``) have no single range and are not checked.
"""
from __future__ import annotations

import numpy as np

from lopt_cli.evaluation.tuning import choose_per_task

COMPARISON_TUNED_ON = {"generalisation": "valid", "optimisation": "train"}
MIN_TRIALS = 3  # fewer trials than this always choose an end of what they tried


def edge_of(values, index: int) -> str | None:
    """``"low"`` / ``"high"`` when ``values[index]`` is the smallest / largest of ``values``."""
    values = np.asarray(values, float)
    if values[index] <= values.min():
        return "low"
    if values[index] >= values.max():
        return "high"
    return None


def one_range(runs: dict, budget: int) -> tuple[str, np.ndarray] | None:
    """``(hyperparameter, its values in the budget's trials)`` of a one-dimensional grid, or
    None (several hyperparameters, too few trials, or a single value)."""
    if len(runs["hparams"]) != 1 or budget < MIN_TRIALS:
        return None
    name = next(iter(runs["hparams"]))
    values = np.asarray(runs["hparams"][name], float)[:budget]
    return (name, values) if values.min() < values.max() else None


def tuned_at_edge(results: dict, budgets: dict[tuple[str, str], int]) -> dict:
    """``{optimizer: {comparison: {"hyperparameter", "low": [tasks], "high": [tasks]}}}``.

    ``budgets`` maps ``(group, name)`` (``"baselines"``/``"candidates"``, the optimizer) to its
    trials per task; each task's choice is the best of those on the comparison's tuning metric.
    """
    edges: dict = {}
    for (group, name), budget in budgets.items():
        for task, entry in results.items():
            runs = entry[group][name]
            grid = one_range(runs, budget)
            if grid is None:
                continue
            hyperparameter, values = grid
            for comparison, tuned_on in COMPARISON_TUNED_ON.items():
                record = edges.setdefault(name, {}).setdefault(
                    comparison, {"hyperparameter": hyperparameter, "low": [], "high": []})
                side = edge_of(values, choose_per_task(runs["final"][tuned_on], budget))
                if side:
                    record[side].append(task)
    return edges


def edge_budgets(spec, candidates: list[str]) -> dict[tuple[str, str], int]:
    """The optimizers a benchmark run tunes and each one's full trial budget per task."""
    budgets = {("baselines", name): spec.trials[name] for name in spec.baselines}
    budgets.update({("candidates", name): spec.trials["candidates"] for name in candidates})
    return budgets


def edge_rows(edges: dict) -> list[list[str]]:
    """Markdown cells: optimizer, comparison, hyperparameter, tasks at the low / high end."""
    rows = []
    for name, per in edges.items():
        for comparison, record in per.items():
            rows.append([name, comparison, record["hyperparameter"],
                         ", ".join(record["low"]) or "-", ", ".join(record["high"]) or "-"])
    return rows


def suite_edges(results: list[dict], max_trials: int) -> dict:
    """:func:`tuned_at_edge` for ``lopt evaluate``'s suite results (tasks named by id)."""
    shaped = {str(r["task_id"]): {"baselines": {
        name: {"final": {"valid": runs["final_valid"], "train": runs["final_train"]},
               "hparams": runs["hparams"]} for name, runs in r["baselines"].items()}}
        for r in results}
    names = results[0]["baselines"] if results else {}
    return tuned_at_edge(shaped, {("baselines", name): max_trials for name in names})


def any_at_edge(edges: dict) -> bool:
    return any(r["low"] or r["high"] for per in edges.values() for r in per.values())


def edge_line(edges: dict, num_tasks: int, listed_in: str = "leaderboard.md") -> str | None:
    """One line for the terminal naming how many choices sit at an edge, or None if none."""
    parts = [f"{name} {comparison} {len(r['low']) + len(r['high'])}/{num_tasks}"
             for name, per in edges.items() for comparison, r in per.items()
             if r["low"] or r["high"]]
    if not parts:
        return None
    return (f"tuned at the edge of its range (may do better outside it; {listed_in} lists "
            "the tasks): " + ", ".join(parts))
