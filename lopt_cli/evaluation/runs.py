"""Runs of one task: the learned optimizer over seeds, a baseline over trials × seeds.

Each call is one jitted, vmapped computation; the results are reduced on the host to what the
comparison needs — final normalised losses per trial and mean (over seeds) raw loss curves —
and that small summary is what the evaluation cache stores.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import numpy as np

from lopt_cli.evaluation.compare import final_value
from lopt_cli.evaluation.placement import num_trials_of, spread_runs, without_padding
from lopt_cli.inner.curves import learned_curves, train_curve
from task_definitions.task_ids import seed_keys


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How every optimizer trains every task."""

    horizon: int
    valid_every: int
    num_seeds: int
    final_fraction: float
    seed: int = 0

    def keys(self, task_id: int | None = None) -> jax.Array:
        return seed_keys(self.seed, self.num_seeds, task_id)


@functools.partial(jax.jit, static_argnames=("space", "horizon", "valid_every"))
def trial_curves(space, hparams: dict, task, keys: jax.Array, horizon: int, valid_every: int):
    """Curves of every trial of ``space`` (leading axes: trial, seed)."""

    def one(setting, key):
        return train_curve(task, space.make(setting, horizon), key, horizon, valid_every)

    return jax.vmap(lambda setting: jax.vmap(lambda k: one(setting, k))(keys))(hparams)


def mean_over_seeds(values: np.ndarray) -> list:
    """Mean over the seed axis (-2) of raw curves; all-diverged points become None."""
    values = np.where(np.isfinite(values), values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=-2)
    return np.where(np.isfinite(mean), mean, None).tolist()


def summarize_metrics(metrics, settings: RunSettings) -> dict:
    """Final normalised losses and mean raw curves (leading axes kept, seed axis reduced)."""
    metrics = jax.device_get(metrics)
    return {
        "final_valid": final_value(metrics.valid_loss, settings.final_fraction).tolist(),
        "final_train": final_value(metrics.train_loss, settings.final_fraction).tolist(),
        "valid_curve": mean_over_seeds(np.asarray(metrics.raw_valid_loss, float)),
        "train_curve": mean_over_seeds(np.asarray(metrics.raw_train_loss, float)),
    }


def run_learned(lopt, theta, task, settings: RunSettings, task_id: int | None = None) -> dict:
    """The learned optimizer on ``task`` over seeds: finals are scalars, curves 1-D."""
    metrics = learned_curves(lopt, theta, task, settings.keys(task_id), settings.horizon,
                             settings.valid_every)
    return summarize_metrics(metrics, settings)


def run_trials(space, hparams: dict, task, settings: RunSettings,
               task_id: int | None = None, num_devices: int = 1) -> dict:
    """Every trial of a baseline on ``task``: finals ``[trial]``, curves ``[trial, point]``;
    the runs split over ``num_devices`` local devices (:func:`spread_runs`)."""
    num_trials = num_trials_of(hparams)
    hparams, keys, task = spread_runs(hparams, settings.keys(task_id), task, num_devices)
    metrics = trial_curves(space, hparams, task, keys, settings.horizon, settings.valid_every)
    return summarize_metrics(without_padding(metrics, num_trials), settings)
