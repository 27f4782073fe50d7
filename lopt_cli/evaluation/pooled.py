r"""One leaderboard from several benchmark runs that differ only in their evaluation ``seed``.

A benchmark run measures every optimizer on one draw of seeds (``seed`` picks the draw,
``benchmark.num_seeds`` its size), and on chaotic tasks its headline moves with the draw (the
default's 14-task test IQM ratio: 1.012, 1.063, 1.024 on draws 0, 1, 2). Pooling D draws,
each tuned on its own as the benchmark does, gives per task and comparison

* the pooled finals :math:`\bar\ell = \frac1D \sum_d \ell_d` (baseline and candidate), and from
  them the loss ratio :math:`\bar\ell_\text{baseline} / \bar\ell_\text{candidate}` and
  :math:`\Delta`, as if the D draws were one run of :math:`D \times` ``num_seeds`` seeds;
* the median over draws of the speedup (a step count is not recomputable from finals, and one
  draw's 0, "never reached", should not zero the task);
* on long-horizon tasks a rise if any draw rises, with the largest rise ratio (and that
  draw's training curve, for the horizon plot).

The headline, intervals over tasks and paired differences are then computed by the same
functions as one run's (:mod:`~lopt_cli.evaluation.leaderboard`), for the candidates that every
draw has (a draw may have measured more), each of them the same optimizer in every draw
(``candidate_digests``: a run directory re-trained between draws would mix two θs).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lopt_cli.errors import LoptUserError
from lopt_cli.evaluation.benchmark_outputs import HEADLINE_KEYS
from lopt_cli.evaluation.compare import relative_improvement
from lopt_cli.evaluation.leaderboard import (
    headline,
    headline_intervals,
    horizon_record,
    paired_differences,
    per_task,
    summarize_rows,
)
from lopt_cli.evaluation.metrics import loss_ratio

# what must agree between the draws for their pooled numbers to mean anything
SAME_IN_EVERY_DRAW = ("benchmark", "task_names", "horizons", "trials",
                      "lr_multiplier", "baselines", "reference_setting", "num_seeds",
                      "num_points", "eval_batches", "final_fraction", "long_horizon")
COMPARISON_KEY = ("candidate", "task", "comparison", "setting")
HORIZON_KEY = ("optimizer", "group", "task")


def check_draws(summaries: Sequence[dict], seeds: Sequence[int]) -> None:
    """Raises :class:`LoptUserError` unless there are two or more draws with distinct seeds
    whose settings (:data:`SAME_IN_EVERY_DRAW`) agree."""
    if len(summaries) < 2:
        raise LoptUserError("pooling needs at least two benchmark runs")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise LoptUserError(f"two runs share the evaluation seed {repeated[0]}: the same draw "
                            "would be counted twice (run the others with seed=1, seed=2, ...)")
    for index, summary in enumerate(summaries[1:], start=1):
        for key in SAME_IN_EVERY_DRAW:
            if summary.get(key) != summaries[0].get(key):
                raise LoptUserError(
                    f"run {index + 1} differs from run 1 in {key!r} ({summary.get(key)!r} "
                    f"against {summaries[0].get(key)!r}); only the evaluation seed may differ")


def common_candidates(summaries: Sequence[dict]) -> list[str]:
    """The candidates of the first draw that every other draw has too, in its order; each
    the same optimizer in every draw that records its digest (``candidate_digests``: its
    weights, code and configuration; runs older than the record are not checked)."""
    common = [c for c in summaries[0]["candidates"]
              if all(c in s["candidates"] for s in summaries[1:])]
    if not common:
        raise LoptUserError("the runs have no candidate in common")
    for name in common:
        digests = {index + 1: s["candidate_digests"][name] for index, s in enumerate(summaries)
                   if name in s.get("candidate_digests", {})}
        runs = list(digests)
        other = next((run for run in runs if digests[run] != digests[runs[0]]), None)
        if other is not None:
            raise LoptUserError(
                f"{name!r} is not the same optimizer in run {runs[0]} and run {other} (its "
                "weights, code or configuration changed between them); pool draws of one "
                "optimizer")
    return common


def _grouped(draws: Sequence[list[dict]], record: str, key: tuple,
             keep: set[str]) -> dict:
    groups: dict = {}
    for rows in draws:
        for row in rows:
            if row["record"] == record and row[key[0]] in keep:
                groups.setdefault(tuple(row[k] for k in key), []).append(row)
    incomplete = [k for k, group in groups.items() if len(group) != len(draws)]
    if incomplete:
        raise LoptUserError(f"{' / '.join(map(str, incomplete[0]))} is missing from some runs")
    return groups


def pool_comparison_rows(draws: Sequence[list[dict]], candidates: Sequence[str]) -> list[dict]:
    """One comparison row per candidate, task, comparison and setting (module docstring)."""
    pooled = []
    for group in _grouped(draws, "comparison", COMPARISON_KEY, set(candidates)).values():
        b_final = float(np.mean([r["baseline_final"] for r in group]))
        c_final = float(np.mean([r["candidate_final"] for r in group]))
        first = group[0]
        pooled.append({
            **{k: first[k] for k in ("record", *COMPARISON_KEY, "horizon", "family", "tuned_on",
                                     "compared_on", "baseline", "kind", "trials",
                                     "candidate_trials")},
            "draws": len(group),
            "baseline_finals": [r["baseline_final"] for r in group],
            "candidate_finals": [r["candidate_final"] for r in group],
            "speedups": [r["speedup"] for r in group],
            "baseline_final": b_final, "candidate_final": c_final,
            "improvement": relative_improvement(b_final, c_final),
            "loss_ratio": loss_ratio(b_final, c_final),
            "speedup": float(np.median([r["speedup"] for r in group])),
        })
    return pooled


def pool_horizon_rows(draws: Sequence[list[dict]], optimizers: Sequence[str]) -> list[dict]:
    """One horizon row per optimizer and long task: rises if any draw rises, with the curve of
    the draw that rises most (module docstring)."""
    pooled = []
    for group in _grouped(draws, "horizon", HORIZON_KEY, set(optimizers)).values():
        worst = max(group, key=lambda r: r["rise_ratio"])
        pooled.append({**{k: worst[k] for k in ("record", *HORIZON_KEY, "horizon", "steps",
                                                "train_curve")},
                       "draws": len(group), "rises": any(r["rises"] for r in group),
                       "rise_ratio": worst["rise_ratio"]})
    return pooled


def pooled_summary(summaries: Sequence[dict], draws: Sequence[list[dict]],
                   seeds: Sequence[int]) -> tuple[dict, list[dict]]:
    """``(summary, rows)`` of the pooled leaderboard, in the shape of one run's
    ``summary.json`` (so :func:`~leaderboard_report.markdown_leaderboard` reads it), with
    ``num_seeds`` the seeds of all draws and ``pooled_seeds`` the draws' evaluation seeds."""
    check_draws(summaries, seeds)
    first, candidates = summaries[0], common_candidates(summaries)
    names = [*first["baselines"], *candidates]
    rows = pool_comparison_rows(draws, candidates) + pool_horizon_rows(draws, names)
    reference = first["reference_setting"]
    leaderboard = summarize_rows(rows, reference)
    horizon = horizon_record(rows)
    rise = horizon["rise"]
    diverged = {name: {key: sum(s["diverged"][name][key] for s in summaries)
                       for key in ("diverged", "trials")} for name in names}
    summary = {
        **{key: first[key] for key in SAME_IN_EVERY_DRAW if key in first},
        "candidates": candidates, "num_tasks": first["num_tasks"], "tasks": first["tasks"],
        "num_seeds": first["num_seeds"] * len(summaries), "pooled_seeds": list(seeds),
        "seeds_per_draw": first["num_seeds"], "leaderboard": leaderboard,
        "candidate_digests": {name: digest for s in summaries  # equal where recorded
                              for name, digest in s.get("candidate_digests", {}).items()
                              if name in candidates},
        "per_task": per_task(rows, reference),
        "intervals": headline_intervals(rows, reference),
        "paired": paired_differences(rows, reference, candidates),
        "horizon": horizon,
        "diverged": diverged,
        **{key: {name: headline(leaderboard, rise, name, key) for name in candidates}
           for key in HEADLINE_KEYS},
    }
    return summary, rows
