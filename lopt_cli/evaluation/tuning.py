r"""Choosing a baseline's setting, globally or per task, and comparing it with the learned one.

* **Per task with n trials**: on each task, the best of the first ``n`` trials on the metric
  being compared (trials come coarse to fine, see :mod:`search_spaces`).
* **Globally**: the one trial with the lowest mean normalised loss over a *tuning* set of
  tasks disjoint from the test tasks, then used unchanged on every test task.

The metric that tunes is the metric that compares: validation loss for the generalisation
comparison, training loss for the optimisation comparison (tuning on one and comparing on the
other would flatter whichever optimizer the mismatch favours).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lopt_cli.evaluation.compare import relative_improvement

METRICS = {"valid": "generalisation", "train": "optimisation"}


@dataclasses.dataclass(frozen=True)
class Setting:
    """How a baseline is tuned: ``kind`` is ``global`` or ``per-task``; ``trials`` tried."""

    baseline: str
    kind: str
    trials: int

    @property
    def label(self) -> str:
        return f"{self.baseline} {self.kind} ({self.trials} trial{'s' * (self.trials > 1)})"


def finite_or_ceiling(values) -> np.ndarray:
    """Non-finite losses become worse than any finite one (10 × the largest, plus 1)."""
    values = np.asarray(values, float)
    finite = values[np.isfinite(values)]
    ceiling = 10 * np.abs(finite).max() + 1 if finite.size else 1e9
    return np.where(np.isfinite(values), values, ceiling)


def choose_global(tuning_finals) -> int:
    """Index of the trial with the lowest mean loss over tuning tasks (``[task, trial]``)."""
    finals = finite_or_ceiling(np.atleast_2d(tuning_finals))
    return int(np.argmin(finals.mean(axis=0)))


def choose_per_task(finals, num_trials: int) -> int:
    """Index of the best of the first ``num_trials`` trials on one task."""
    return int(np.argmin(finite_or_ceiling(np.asarray(finals)[:num_trials])))


def settings_for(baseline: str, trial_counts: tuple[int, ...], max_trials: int) -> list[Setting]:
    """The global setting (over ``max_trials``) and per-task settings for each trial count."""
    counts = sorted({min(n, max_trials) for n in trial_counts})
    return [Setting(baseline, "global", max_trials),
            *(Setting(baseline, "per-task", n) for n in counts)]


def compare_task(learned_final: float, baseline_finals, setting: Setting,
                 global_index: int) -> dict:
    """Chosen trial, its final loss and the learned optimizer's improvement over it."""
    index = global_index if setting.kind == "global" else choose_per_task(
        baseline_finals, setting.trials)
    value = float(np.asarray(baseline_finals, float)[index])
    return {"trial": index, "baseline_final": value, "learned_final": float(learned_final),
            "improvement": relative_improvement(value, float(learned_final))}
