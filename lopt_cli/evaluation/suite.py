"""The paper's comparison: a learned optimizer against tuned baselines on seen and unseen tasks.

1. Tuning tasks (disjoint from every test task) run each baseline's trials; the global setting
   of a baseline is its best trial there, per metric.
2. Every test task (split ``seen`` / ``unseen``) runs the learned optimizer over seeds and each
   baseline's trials over seeds — one jitted, vmapped call per optimizer, cached on disk.
3. Per task, baseline setting and metric: the improvement of the learned optimizer.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from lopt_cli.evaluation.cache import RunCache
from lopt_cli.evaluation.code_version import task_code
from lopt_cli.evaluation.runs import RunSettings, run_learned, run_trials
from lopt_cli.evaluation.tuning import METRICS, choose_global, compare_task, settings_for
from task_definitions.base import config_to_dict
from task_definitions.task_ids import task_key

# Runs' keys fold in the task id (``RunSettings.keys``); part of every cached description so
# results cached when all tasks shared one set of keys are not reused.
SEEDING = "per_task"


@dataclasses.dataclass(frozen=True)
class SuiteSpec:
    """What to evaluate: task ids per split, tuning ids, baselines and their trial budgets."""

    splits: dict  # split name -> tuple of task ids
    tuning_ids: tuple
    baselines: dict  # name -> search space
    max_trials: int
    trial_counts: tuple
    run: RunSettings
    devices: int = 1  # local devices a baseline's runs on a task are split over (:mod:`placement`)


class TaskRef:
    """Task ``task_id`` of ``family``: its description at once, the built task (datasets on the
    device) only when a run that is not cached needs it, and then only once."""

    def __init__(self, family, task_id: int):
        self.family, self.task_id = family, task_id
        self.config = family.sample(task_key(task_id))
        self.description = {"task_id": task_id, **config_to_dict(
            self.config, getattr(family, "name", None))}
        self.label = f"{getattr(family, 'name', type(family).__name__)} #{task_id}"

    @functools.cached_property
    def task(self):
        return self.family.build(self.config)


def baseline_runs(ref: TaskRef, space, spec: SuiteSpec, cache: RunCache, name: str = ""
                  ) -> dict:
    """All trials of a baseline's search space on one task (cached; ``name`` labels it)."""
    hparams = space.trials(spec.max_trials, seed=spec.run.seed)
    description = {"kind": "baseline", "task": ref.description, "code": task_code(ref.family),
                   "space": repr(space), "hparams": hparams, "run": dataclasses.asdict(spec.run),
                   "seeding": SEEDING}
    return cache.get(description, lambda: {
        **run_trials(space, hparams, ref.task, spec.run, ref.task_id, spec.devices),
        "hparams": {k: np.asarray(v).tolist() for k, v in hparams.items()}},
        f"{ref.label}: {name or type(space).__name__}")


def learned_runs(ref: TaskRef, lopt, theta, lopt_id: str, spec: SuiteSpec,
                 cache: RunCache, lopt_name: str = "learned") -> dict:
    """The learned optimizer on one task (cached by its weights' digest; labelled by
    ``lopt_name`` and that digest for ``lopt cache``)."""
    description = {"kind": "learned", "task": ref.description, "code": task_code(ref.family),
                   "optimizer": lopt_id, "run": dataclasses.asdict(spec.run), "seeding": SEEDING}
    return cache.get(description, lambda: run_learned(lopt, theta, ref.task, spec.run,
                                                      ref.task_id),
                     f"{ref.label}: {lopt_name} ({lopt_id[:12]})")


def global_choices(family, spec: SuiteSpec, cache, advance: Callable) -> dict:
    """``{baseline: {metric: trial index}}`` chosen on the tuning tasks."""
    refs = [TaskRef(family, task_id) for task_id in spec.tuning_ids]
    choices = {}
    for name, space in spec.baselines.items():
        runs = []
        for ref in refs:
            runs.append(baseline_runs(ref, space, spec, cache, name))
            advance()
        choices[name] = {metric: choose_global([r[f"final_{metric}"] for r in runs])
                         for metric in METRICS}
    return choices


def evaluate_task(family, task_id, split, lopt, theta, lopt_id, spec, choices, cache,
                  lopt_name: str = "learned") -> dict:
    """One test task: every baseline setting against the learned optimizer, both metrics."""
    ref = TaskRef(family, task_id)
    learned = learned_runs(ref, lopt, theta, lopt_id, spec, cache, lopt_name)
    baselines, comparisons = {}, []
    for name, space in spec.baselines.items():
        runs = baseline_runs(ref, space, spec, cache, name)
        baselines[name] = runs
        for setting in settings_for(name, spec.trial_counts, spec.max_trials):
            for metric in METRICS:
                result = compare_task(learned[f"final_{metric}"], runs[f"final_{metric}"],
                                      setting, choices[name][metric])
                comparisons.append({"baseline": name, "setting": setting.label,
                                    "kind": setting.kind, "trials": setting.trials,
                                    "metric": metric, **result})
    return {"task_id": task_id, "split": split, "task": ref.description,
            "learned": learned, "baselines": baselines, "comparisons": comparisons}


def evaluate_suite(family, lopt, theta, lopt_id: str, spec: SuiteSpec, cache,
                   advance: Callable[[], Any] = lambda: None, lopt_name: str = "learned"
                   ) -> tuple[dict, list[dict]]:
    """Global choices, then every test task; ``advance`` is called after each task run."""
    choices = global_choices(family, spec, cache, advance)
    results = []
    for split, ids in spec.splits.items():
        for task_id in ids:
            results.append(evaluate_task(family, task_id, split, lopt, theta, lopt_id, spec,
                                         choices, cache, lopt_name))
            advance()
    return choices, results


def total_task_runs(spec: SuiteSpec) -> int:
    """Number of ``advance`` calls an evaluation makes (for a progress bar)."""
    return len(spec.tuning_ids) * len(spec.baselines) + sum(map(len, spec.splits.values()))


__all__ = ["SuiteSpec", "evaluate_suite", "total_task_runs"]
