"""Evaluating one learned optimizer against per-task tuned Adam on a set of tasks."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import jax
import numpy as np

from lopt_cli.evaluation.compare import best_index, final_value, relative_improvement
from lopt_cli.evaluation.training import adam_grid_curves, learned_curves
from lopt_cli.meta.outer import task_key
from task_definitions.base import config_to_dict


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """What to train and how long (plain values; built from the evaluate config)."""

    first_task_id: int
    num_tasks: int
    horizon: int
    valid_every: int
    num_seeds: int
    final_fraction: float
    learning_rates: tuple
    seed: int = 0


def _mean_curve(values) -> list[float | None]:
    """Mean over seeds of a curve; points where every seed diverged become None."""
    values = np.asarray(values, float)
    values = np.where(np.isfinite(values), values, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
    return [float(v) if np.isfinite(v) else None for v in mean]


def _comparison(learned: float, finals: np.ndarray, rates: tuple) -> dict:
    index = best_index(finals)
    return {"learned": float(learned), "baseline": float(finals[index]),
            "learning_rate": float(rates[index]),
            "improvement": relative_improvement(float(finals[index]), float(learned))}


def evaluate_task(family, lopt, theta, task_id: int, settings: EvaluationSettings) -> dict:
    """Trains task ``task_id`` with the learned optimizer and with Adam over the rate grid."""
    config = family.sample(task_key(task_id))
    task = family.build(config)
    keys = jax.random.split(jax.random.PRNGKey(settings.seed), settings.num_seeds)
    rates = np.asarray(settings.learning_rates, np.float32)
    learned = learned_curves(lopt, theta, task, keys, settings.horizon, settings.valid_every)
    adam = adam_grid_curves(task, rates, keys, settings.horizon, settings.valid_every)
    learned, adam = jax.device_get((learned, adam))
    fraction = settings.final_fraction
    valid_tuned = _comparison(final_value(learned.valid_loss, fraction),
                              final_value(adam.valid_loss, fraction), settings.learning_rates)
    train_tuned = _comparison(final_value(learned.train_loss, fraction),
                              final_value(adam.train_loss, fraction), settings.learning_rates)
    steps = [settings.valid_every * (i + 1) for i in range(learned.valid_loss.shape[-1])]

    def curves(metrics, index=None):
        pick = (lambda x: x) if index is None else (lambda x: x[index])
        return {"steps": steps, "train": _mean_curve(pick(metrics.raw_train_loss)),
                "valid": _mean_curve(pick(metrics.raw_valid_loss))}

    valid_index = settings.learning_rates.index(valid_tuned["learning_rate"])
    train_index = settings.learning_rates.index(train_tuned["learning_rate"])
    description = config_to_dict(config, getattr(family, "name", None))
    return {
        "task_id": task_id,
        "task": description,
        "title": f"#{task_id} {description['family']}: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in description.items() if k not in ("seed", "family"))[:70],
        "generalisation": valid_tuned,
        "optimisation": train_tuned,
        "curves": {"learned": curves(learned),
                   "adam (valid-tuned)": curves(adam, valid_index),
                   "adam (train-tuned)": curves(adam, train_index)},
    }


def evaluate_suite(family, lopt, theta, settings: EvaluationSettings,
                   on_task: Callable[[dict], Any] = lambda row: None) -> list[dict]:
    """Every task of the settings, in order; ``on_task`` sees each finished result."""
    results = []
    for offset in range(settings.num_tasks):
        row = evaluate_task(family, lopt, theta, settings.first_task_id + offset, settings)
        results.append(row)
        on_task(row)
    return results
