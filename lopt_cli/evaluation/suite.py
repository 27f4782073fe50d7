"""The paper's comparison: a learned optimizer against tuned baselines on seen and unseen tasks.

1. Tuning tasks (disjoint from every test task) run each baseline's trials; the global setting
   of a baseline is its best trial there, per metric.
2. Every test task (split ``seen`` / ``unseen``) runs the learned optimizer over seeds and each
   baseline's trials over seeds — one jitted, vmapped call per optimizer, cached on disk.
3. Per task, baseline setting and metric: the improvement of the learned optimizer.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from lopt_cli.evaluation.cache import RunCache
from lopt_cli.evaluation.runs import RunSettings, run_learned, run_trials
from lopt_cli.evaluation.tuning import METRICS, choose_global, compare_task, settings_for
from lopt_cli.meta.outer import task_key
from task_definitions.base import config_to_dict


@dataclasses.dataclass(frozen=True)
class SuiteSpec:
    """What to evaluate: task ids per split, tuning ids, baselines and their trial budgets."""

    splits: dict  # split name -> tuple of task ids
    tuning_ids: tuple
    baselines: dict  # name -> search space
    max_trials: int
    trial_counts: tuple
    run: RunSettings


def _task(family, task_id: int):
    config = family.sample(task_key(task_id))
    return config, family.build(config)


def _describe(family, config, task_id: int) -> dict:
    return {"task_id": task_id, **config_to_dict(config, getattr(family, "name", None))}


def baseline_runs(family, task_id, name, space, spec: SuiteSpec, cache: RunCache) -> dict:
    """All trials of baseline ``name`` on task ``task_id`` (cached)."""
    config, task = _task(family, task_id)
    hparams = space.trials(spec.max_trials, seed=spec.run.seed)
    description = {"kind": "baseline", "task": _describe(family, config, task_id),
                   "space": repr(space), "hparams": hparams, "run": dataclasses.asdict(spec.run)}
    return cache.get(description, lambda: {
        **run_trials(space, hparams, task, spec.run),
        "hparams": {k: np.asarray(v).tolist() for k, v in hparams.items()}})


def learned_runs(family, task_id, lopt, theta, lopt_id: str, spec: SuiteSpec, cache: RunCache) -> dict:
    """The learned optimizer on task ``task_id`` (cached by its weights' digest)."""
    config, task = _task(family, task_id)
    description = {"kind": "learned", "task": _describe(family, config, task_id),
                   "optimizer": lopt_id, "run": dataclasses.asdict(spec.run)}
    return cache.get(description, lambda: run_learned(lopt, theta, task, spec.run))


def global_choices(family, spec: SuiteSpec, cache, advance: Callable) -> dict:
    """``{baseline: {metric: trial index}}`` chosen on the tuning tasks."""
    choices = {}
    for name, space in spec.baselines.items():
        runs = []
        for task_id in spec.tuning_ids:
            runs.append(baseline_runs(family, task_id, name, space, spec, cache))
            advance()
        choices[name] = {metric: choose_global([r[f"final_{metric}"] for r in runs])
                         for metric in METRICS}
    return choices


def evaluate_task(family, task_id, split, lopt, theta, lopt_id, spec, choices, cache) -> dict:
    """One test task: every baseline setting against the learned optimizer, both metrics."""
    config, _ = _task(family, task_id)
    learned = learned_runs(family, task_id, lopt, theta, lopt_id, spec, cache)
    baselines, comparisons = {}, []
    for name, space in spec.baselines.items():
        runs = baseline_runs(family, task_id, name, space, spec, cache)
        baselines[name] = runs
        for setting in settings_for(name, spec.trial_counts, spec.max_trials):
            for metric in METRICS:
                result = compare_task(learned[f"final_{metric}"], runs[f"final_{metric}"],
                                      setting, choices[name][metric])
                comparisons.append({"baseline": name, "setting": setting.label,
                                    "kind": setting.kind, "trials": setting.trials,
                                    "metric": metric, **result})
    return {"task_id": task_id, "split": split, "task": _describe(family, config, task_id),
            "learned": learned, "baselines": baselines, "comparisons": comparisons}


def evaluate_suite(family, lopt, theta, lopt_id: str, spec: SuiteSpec, cache,
                   advance: Callable[[], Any] = lambda: None) -> tuple[dict, list[dict]]:
    """Global choices, then every test task; ``advance`` is called after each task run."""
    choices = global_choices(family, spec, cache, advance)
    results = []
    for split, ids in spec.splits.items():
        for task_id in ids:
            results.append(evaluate_task(family, task_id, split, lopt, theta, lopt_id, spec,
                                         choices, cache))
            advance()
    return choices, results


def total_task_runs(spec: SuiteSpec) -> int:
    """Number of ``advance`` calls an evaluation makes (for a progress bar)."""
    return len(spec.tuning_ids) * len(spec.baselines) + sum(map(len, spec.splits.values()))


__all__ = ["SuiteSpec", "evaluate_suite", "total_task_runs"]
