r"""From benchmark runs to the leaderboard: tuned choices, per-task comparisons, summaries.

Two comparisons, each tuning on one metric and comparing on another:

* **generalisation**: tuned on the validation loss, compared on the **test** loss;
* **optimisation**: tuned on the training loss, compared on the training loss.

Tuning reads only the tuning metric's final values (:func:`tuning_finals`): the test split
never influences a choice. A baseline *setting* is ``global`` (the one trial with the lowest
mean normalised loss over the benchmark's tasks) or ``per-task (n trials)`` (the best of the
first n on each task); the candidate is tuned the same way with the same n (its learning-rate
factor, :mod:`candidates`). Per task and setting: Δ (:mod:`compare`), the final-loss ratio and
the speedup (:mod:`metrics`).
"""
from __future__ import annotations

import numpy as np

from lopt_cli.evaluation.compare import relative_improvement, summarize
from lopt_cli.evaluation.metrics import (
    bootstrap_interval,
    iqm,
    iqm_rows,
    loss_ratio,
    mean_rows,
    paired_bootstrap_interval,
    rise_ratio,
    rises,
    speedup,
)
from lopt_cli.evaluation.tuning import Setting, choose_global, choose_per_task, settings_for

COMPARISONS = {"generalisation": ("valid", "test"), "optimisation": ("train", "train")}
REFERENCE = "AdamLR"  # "faster than tuned AdamLR" compares with its per-task, full-budget setting


def tuning_finals(runs: dict, tuned_on: str) -> list:
    """The only values a tuning choice may read: final losses on the tuning metric."""
    return runs["final"][tuned_on]


def choose(setting: Setting, finals, global_index: int) -> int:
    return global_index if setting.kind == "global" else choose_per_task(finals, setting.trials)


def baseline_settings(spec) -> list[Setting]:
    return [s for name in spec.baselines
            for s in settings_for(name, (*spec.trial_counts, spec.trials[name]), spec.trials[name])]


def global_indices(results: dict, group: str, name: str, tuned_on: str) -> int:
    return choose_global([tuning_finals(entry[group][name], tuned_on)
                          for entry in results.values()])


def comparison_rows(results: dict, spec, candidates: list[str]) -> list[dict]:
    """One row per candidate, comparison, baseline setting and task."""
    rows = []
    settings = baseline_settings(spec)
    budget = spec.trials["candidates"]
    for comparison, (tuned_on, compared_on) in COMPARISONS.items():
        chosen_globally = {
            **{("baselines", b): global_indices(results, "baselines", b, tuned_on)
               for b in spec.baselines},
            **{("candidates", c): global_indices(results, "candidates", c, tuned_on)
               for c in candidates}}
        for candidate in candidates:
            for setting in settings:
                own = Setting(candidate, setting.kind, min(setting.trials, budget))
                for task, entry in results.items():
                    base = entry["baselines"][setting.baseline]
                    mine = entry["candidates"][candidate]
                    b_index = choose(setting, tuning_finals(base, tuned_on),
                                     chosen_globally[("baselines", setting.baseline)])
                    c_index = choose(own, tuning_finals(mine, tuned_on),
                                     chosen_globally[("candidates", candidate)])
                    b_final = float(base["final"][compared_on][b_index])
                    c_final = float(mine["final"][compared_on][c_index])
                    rows.append({
                        "record": "comparison", "candidate": candidate, "task": task,
                        "horizon": entry["task"]["horizon"], "family": entry["task"]["family"],
                        "comparison": comparison, "tuned_on": tuned_on,
                        "compared_on": compared_on, "baseline": setting.baseline,
                        "setting": setting.label, "kind": setting.kind,
                        "trials": setting.trials, "candidate_trials": own.trials,
                        "baseline_trial": b_index, "candidate_trial": c_index,
                        "baseline_hyperparameters": {k: v[b_index] for k, v in
                                                     base["hparams"].items()},
                        "candidate_hyperparameters": {k: v[c_index] for k, v in
                                                      mine["hparams"].items()},
                        "baseline_final": b_final, "candidate_final": c_final,
                        "improvement": relative_improvement(b_final, c_final),
                        "loss_ratio": loss_ratio(b_final, c_final),
                        "speedup": speedup(base["curves"][compared_on][b_index],
                                           mine["curves"][compared_on][c_index],
                                           base["steps"], b_final),
                    })
    return rows


def reference_label(spec) -> str | None:
    """The setting "tuned AdamLR" means: per task, with AdamLR's full trial budget."""
    if REFERENCE not in spec.baselines:
        return None
    return Setting(REFERENCE, "per-task", spec.trials[REFERENCE]).label


def summarize_rows(rows: list[dict], reference: str | None) -> dict:
    """``{candidate: {comparison: {"settings": {label: metrics}, "faster_than_adamlr": f}}}``."""
    grouped: dict = {}
    for row in rows:
        if row["record"] != "comparison":
            continue
        per = grouped.setdefault(row["candidate"], {}).setdefault(row["comparison"], {})
        per.setdefault(row["setting"], []).append(row)
    summary = {}
    for candidate, per_comparison in grouped.items():
        for comparison, per_setting in per_comparison.items():
            settings = {label: {**summarize([r["improvement"] for r in group]),
                                "iqm_loss_ratio": iqm([r["loss_ratio"] for r in group]),
                                "iqm_speedup": iqm([r["speedup"] for r in group]),
                                "num_trials": group[0]["trials"],
                                "candidate_trials": group[0]["candidate_trials"]}
                        for label, group in per_setting.items()}
            ref = per_setting.get(reference, [])
            faster = float(np.mean([r["speedup"] > 1 for r in ref])) if ref else float("nan")
            summary.setdefault(candidate, {})[comparison] = {"settings": settings,
                                                             "faster_than_adamlr": faster}
    return summary


PER_TASK_KEYS = ("loss_ratio", "speedup", "baseline_final", "candidate_final")


def per_task(rows: list[dict], reference: str | None) -> dict:
    """``{candidate: {task: {comparison: {loss_ratio, speedup, baseline_final,
    candidate_final}, "rises": bool, "rise_ratio": float}}}`` against the ``reference``
    setting: the per-task numbers behind the headline's IQMs (``rises`` and ``rise_ratio``
    on long-horizon tasks only)."""
    table: dict = {}
    for row in rows:
        if row["record"] == "comparison" and row["setting"] == reference:
            entry = table.setdefault(row["candidate"], {}).setdefault(row["task"], {})
            entry[row["comparison"]] = {key: row[key] for key in PER_TASK_KEYS}
        elif row["record"] == "horizon" and row["group"] == "candidates":
            entry = table.setdefault(row["optimizer"], {}).setdefault(row["task"], {})
            entry["rises"] = bool(row["rises"])
            entry["rise_ratio"] = row["rise_ratio"]
    return table


INTERVAL_STATISTICS = {"win_rate": ("improvement", mean_rows, lambda v: v > 0),
                       "iqm_loss_ratio": ("loss_ratio", iqm_rows, lambda v: v),
                       "iqm_speedup": ("speedup", iqm_rows, lambda v: v)}


def reference_rows(rows: list[dict], reference: str | None) -> dict:
    """``{candidate: {comparison: {task: row}}}``: the comparison rows against ``reference``."""
    table: dict = {}
    for row in rows:
        if row["record"] == "comparison" and row["setting"] == reference:
            per = table.setdefault(row["candidate"], {}).setdefault(row["comparison"], {})
            per[row["task"]] = row
    return table


def headline_intervals(rows: list[dict], reference: str | None) -> dict:
    """``{candidate: {comparison: {win_rate | iqm_loss_ratio | iqm_speedup: [low, high]}}}``:
    95% bootstrap intervals over tasks (:func:`~metrics.bootstrap_interval`) of the headline's
    numbers against the ``reference`` setting."""
    return {candidate: {comparison: {
        key: bootstrap_interval([transform(r[field]) for r in by_task.values()], statistic)
        for key, (field, statistic, transform) in INTERVAL_STATISTICS.items()}
        for comparison, by_task in per.items()}
        for candidate, per in reference_rows(rows, reference).items()}


PAIRED_STATISTICS = {"iqm_loss_ratio": "loss_ratio", "iqm_speedup": "speedup"}


def paired_differences(rows: list[dict], reference: str | None, candidates: list[str]) -> dict:
    """``{other: {comparison: {iqm_loss_ratio | iqm_speedup: {"difference", "interval"}}}}``:
    the first candidate's IQM minus each other candidate's against the ``reference`` setting,
    with the 95% paired bootstrap interval over the tasks both have
    (:func:`~metrics.paired_bootstrap_interval`)."""
    values, table = reference_rows(rows, reference), {}
    for other in candidates[1:]:
        for comparison in COMPARISONS:
            mine = values.get(candidates[0], {}).get(comparison, {})
            theirs = values.get(other, {}).get(comparison, {})
            tasks = [task for task in mine if task in theirs]
            if not tasks:
                continue
            entry = table.setdefault(other, {}).setdefault(comparison, {})
            for key, field in PAIRED_STATISTICS.items():
                a = [mine[t][field] for t in tasks]
                b = [theirs[t][field] for t in tasks]
                entry[key] = {"difference": iqm(a) - iqm(b),
                              "interval": paired_bootstrap_interval(a, b)}
    return table


def horizon_rows(results: dict, spec, candidates: list[str]) -> list[dict]:
    """Long-horizon tasks: whether each optimizer's training curve rises after its minimum
    (each tuned per task on the training loss with its full budget)."""
    rows = []
    for task, entry in results.items():
        if entry["task"]["horizon"] < spec.long_horizon:
            continue
        groups = [("baselines", b, spec.trials[b]) for b in spec.baselines]
        groups += [("candidates", c, spec.trials["candidates"]) for c in candidates]
        for group, name, budget in groups:
            runs = entry[group][name]
            index = choose_per_task(tuning_finals(runs, "train"), budget)
            curve = runs["curves"]["train"][index]
            rows.append({"record": "horizon", "optimizer": name, "group": group, "task": task,
                         "horizon": entry["task"]["horizon"], "trial": index,
                         "rises": rises(curve), "rise_ratio": rise_ratio(curve),
                         "steps": runs["steps"], "train_curve": curve})
    return rows


def horizon_summary(rows: list[dict]) -> dict:
    """``{optimizer: fraction of long-horizon tasks whose training loss rises}``."""
    flags: dict = {}
    for row in rows:
        if row["record"] == "horizon":
            flags.setdefault(row["optimizer"], []).append(row["rises"])
    return {name: float(np.mean(values)) for name, values in flags.items()}


def horizon_record(rows: list[dict]) -> dict:
    """``summary.json``'s ``horizon``: per optimizer the share of long-horizon tasks whose
    training loss rises (:func:`horizon_summary`), which tasks those are, and every long
    task's rise ratio."""
    rise = horizon_summary(rows)
    long_tasks = [r for r in rows if r["record"] == "horizon"]
    return {"rise": rise,
            "rising_tasks": {name: [r["task"] for r in long_tasks
                                    if r["optimizer"] == name and r["rises"]] for name in rise},
            "rise_ratio": {name: {r["task"]: r["rise_ratio"] for r in long_tasks
                                  if r["optimizer"] == name} for name in rise}}


def divergence_counts(results: dict) -> dict:
    """``{optimizer: {"diverged": trials (summed over tasks), "trials": total}}``."""
    counts: dict = {}
    for entry in results.values():
        for group in ("baselines", "candidates"):
            for name, runs in entry[group].items():
                count = counts.setdefault(name, {"diverged": 0, "trials": 0})
                count["diverged"] += int(np.sum(runs["diverged"]))
                count["trials"] += len(runs["diverged"])
    return counts


def headline(summary: dict, horizon: dict, candidate: str, metric_key: str) -> dict:
    """``{comparison: {setting: value}}`` of one metric for ``summary.json``'s top level."""
    if metric_key == "horizon_rise":
        return horizon.get(candidate, float("nan"))
    return {comparison: {label: values[metric_key]
                         for label, values in per["settings"].items()}
            for comparison, per in summary[candidate].items()}
