r"""From learning curves to the comparison: final losses, tuning choices, improvements.

The final value of a run is the mean of its last ``final_fraction`` of validation points (or
training chunks), averaged over seeds. The relative improvement of the learned optimizer over a
baseline on a task is

.. math:: \Delta = \frac{\ell_{\text{baseline}} - \ell_{\text{learned}}}
                          {\max(\ell_{\text{baseline}}, \ell_{\text{learned}})} \in [-1, 1],

positive when the learned optimizer reaches a lower (normalised) loss: :math:`\Delta = 0.3`
means the learned optimizer's loss is 30% below the baseline's, :math:`\Delta = -0.3` that the
baseline's is 30% below the learned optimizer's. Unlike dividing by the baseline alone it stays
bounded when a baseline drives a loss to zero.
"""
from __future__ import annotations

import warnings

import numpy as np


def final_value(curves: np.ndarray, final_fraction: float) -> np.ndarray:
    """Mean over the last fraction of the curve axis (-1), then over seeds (axis -2)."""
    curves = np.asarray(curves, float)
    count = max(1, int(round(curves.shape[-1] * final_fraction)))
    tail = curves[..., -count:]
    tail = np.where(np.isfinite(tail), tail, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (diverged) runs
        per_seed = np.nanmean(tail, axis=-1)
        value = np.nanmean(per_seed, axis=-1)
    return np.where(np.isfinite(value), value, np.inf)


def best_index(final_values: np.ndarray) -> int:
    """Index of the best (lowest) setting; ties go to the first, all-diverged to 0."""
    values = np.asarray(final_values, float)
    return int(np.argmin(np.where(np.isfinite(values), values, np.inf)))


def relative_improvement(baseline: float, learned: float) -> float:
    """The bounded relative improvement of the module docstring; diverged runs lose."""
    if not np.isfinite(learned) and not np.isfinite(baseline):
        return 0.0
    if not np.isfinite(learned):
        return -1.0
    if not np.isfinite(baseline):
        return 1.0
    scale = max(baseline, learned)
    return 0.0 if scale <= 0 else float((baseline - learned) / scale)


def summarize(improvements: list[float]) -> dict:
    """Win count, win rate, median and quartiles of per-task improvements."""
    values = np.asarray(improvements, float)
    if values.size == 0:
        return {"num_tasks": 0, "wins": 0, "win_rate": float("nan"), "median": float("nan"),
                "q25": float("nan"), "q75": float("nan")}
    return {
        "num_tasks": int(values.size),
        "wins": int(np.sum(values > 0)),
        "win_rate": float(np.mean(values > 0)),
        "median": float(np.median(values)),
        "q25": float(np.quantile(values, 0.25)),
        "q75": float(np.quantile(values, 0.75)),
    }
