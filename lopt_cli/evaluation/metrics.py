r"""The field's summary metrics of an optimizer against a tuned baseline, over tasks.

* **Final-loss ratio** on a task: :math:`r = \ell_{\text{baseline}} / \ell_{\text{candidate}}`
  (final normalised losses; :math:`r > 1`: the candidate ends lower).
* **Speedup** on a task (Celo, Moudgil et al. 2025): with :math:`\ell^*` the baseline's final
  loss and :math:`s_b` the first step at which the baseline's curve reaches :math:`\ell^*`,
  :math:`s_c` the first step at which the candidate's curve reaches it,
  :math:`\text{speedup} = s_b / s_c`; a candidate that never reaches :math:`\ell^*` scores 0.
* **IQM**: the interquartile mean, the mean of the middle 50% of the values (sorted; the
  lowest and highest quarter dropped, as in ``rliable``).
* **Interval** of a statistic over tasks (:func:`bootstrap_interval`): the percentile
  bootstrap over tasks, i.e. the 2.5th and 97.5th percentiles of the statistic recomputed on
  tasks drawn with replacement: how much the headline would move on another draw of tasks
  like these.
* **Rise** of a training curve (horizon generalisation): final value > 1.05 × its minimum
  (and above it by more than 1e-6 of the normalised loss); the **rise ratio** is
  final ÷ minimum, the number behind that flag.
"""
from __future__ import annotations

import numpy as np

RISE_TOLERANCE = 1.05
RISE_FLOOR = 1e-6  # normalised loss: smaller changes are float noise
LOSS_FLOOR = 1e-8  # keeps a ratio finite when a loss reaches exactly 0


def iqm_rows(matrix) -> np.ndarray:
    """Interquartile mean of every row of a 2-D array: the mean after dropping ``floor(n / 4)``
    sorted values at each end (``scipy.stats.trim_mean(row, 0.25)``, the definition of
    ``rliable``).

    >>> iqm_rows([[1, 2, 3, 4], [0, 1, 1, 100]]).tolist()
    [2.5, 1.0]
    """
    rows = np.sort(np.asarray(matrix, float), axis=1)
    cut = rows.shape[1] // 4
    return rows[:, cut:rows.shape[1] - cut].mean(axis=1)


def iqm(values) -> float:
    """Interquartile mean of ``values`` (:func:`iqm_rows` of one row; ``nan`` when empty).

    >>> iqm([1, 2, 3, 4])
    2.5
    >>> iqm([0, 1, 1, 1, 1, 1, 1, 100])
    1.0
    """
    values = np.asarray(values, float).ravel()
    return float(iqm_rows(values[None])[0]) if values.size else float("nan")


def loss_ratio(baseline_final: float, candidate_final: float) -> float:
    """``baseline / candidate`` final loss (> 1: the candidate ends lower); diverged → inf/0."""
    baseline = max(float(baseline_final), LOSS_FLOOR) if np.isfinite(baseline_final) else np.inf
    candidate = max(float(candidate_final), LOSS_FLOOR) if np.isfinite(candidate_final) else np.inf
    if np.isinf(baseline) and np.isinf(candidate):
        return 1.0
    return float(baseline / candidate)


def first_step_reaching(curve, steps, target: float) -> int | None:
    """The first step at which ``curve`` is at or below ``target`` (``None``: never)."""
    values = np.asarray(curve, float)  # None (a diverged point) -> nan
    hits = np.flatnonzero(np.isfinite(values) & (values <= target))
    return int(steps[hits[0]]) if hits.size else None


def speedup(baseline_curve, candidate_curve, steps, baseline_final: float) -> float:
    """Steps the baseline needs to reach its final loss ÷ steps the candidate needs (0: never).

    >>> speedup([4, 3, 2, 1], [3, 1, 1, 1], [10, 20, 30, 40], 1.0)
    2.0
    """
    if not np.isfinite(baseline_final):
        return float("inf") if np.all(np.isfinite(np.asarray(candidate_curve, float))) else 1.0
    baseline_steps = first_step_reaching(baseline_curve, steps, baseline_final)
    candidate_steps = first_step_reaching(candidate_curve, steps, baseline_final)
    if candidate_steps is None:
        return 0.0
    if baseline_steps is None:  # the tail mean lies below every point: the whole horizon
        baseline_steps = int(steps[-1])
    return float(baseline_steps / candidate_steps)


def rises(curve, tolerance: float = RISE_TOLERANCE, floor: float = RISE_FLOOR) -> bool:
    """Whether the curve's last value exceeds ``tolerance`` × its minimum, and by more than
    ``floor`` (a normalised loss going from 1e-13 to 1e-12 is float noise, not a rise);
    a diverged curve rises."""
    values = np.asarray(curve, float)  # None (a diverged point) -> nan
    finite = values[np.isfinite(values)]
    if finite.size == 0 or not np.isfinite(values[-1]):
        return True
    low = finite.min()
    return bool(values[-1] > tolerance * low and values[-1] - low > floor)


def rise_ratio(curve, floor: float = RISE_FLOOR) -> float:
    """The curve's last value over its lowest, both raised to ``floor`` (1: it ends at its
    minimum, or both are below the float noise that :func:`rises` ignores; inf: diverged).

    >>> rise_ratio([1.0, 0.5, 0.25, 0.5])
    2.0
    >>> rise_ratio([1.0, 1e-13, 1e-12])
    1.0
    """
    values = np.asarray(curve, float)  # None (a diverged point) -> nan
    finite = values[np.isfinite(values)]
    if finite.size == 0 or not np.isfinite(values[-1]):
        return float("inf")
    return float(max(values[-1], floor) / max(float(finite.min()), floor))


BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def mean_rows(matrix) -> np.ndarray:
    """The mean of every row (a win rate, from 0/1 values)."""
    return np.asarray(matrix, float).mean(axis=1)


def bootstrap_interval(values, statistic=iqm_rows, confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float]:
    """``[low, high]``: the percentile bootstrap interval of ``statistic`` (a function of the
    rows of a ``(resamples, tasks)`` array, :func:`iqm_rows` or :func:`mean_rows`) over
    ``values`` (one per task), from ``resamples`` draws of as many tasks with replacement
    (seeded: the same values give the same interval). Constant values: zero width.

    >>> bootstrap_interval([1.0, 1.0, 1.0])
    [1.0, 1.0]
    """
    values = np.asarray(values, float).ravel()
    return _percentiles(statistic(values[_draws(values.size, resamples, seed)]), confidence)


def paired_bootstrap_interval(first, second, statistic=iqm_rows,
                              confidence: float = CONFIDENCE,
                              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float]:
    """``[low, high]`` of ``statistic(first) − statistic(second)`` over tasks drawn with
    replacement, the *same* draw for both (``first[i]`` and ``second[i]`` are one task's
    values): whether one candidate's headline is above another's beyond the luck of the tasks.

    >>> paired_bootstrap_interval([1, 2, 3, 4], [0, 1, 2, 3])
    [1.0, 1.0]
    """
    first, second = np.asarray(first, float).ravel(), np.asarray(second, float).ravel()
    if first.shape != second.shape:
        raise ValueError(f"paired values of {first.size} and {second.size} tasks")
    draws = _draws(first.size, resamples, seed)
    with np.errstate(invalid="ignore"):  # inf − inf (two infinite speedups): not counted
        differences = statistic(first[draws]) - statistic(second[draws])
    return _percentiles(differences, confidence)


def _draws(size: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, size)`` task indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, size, (resamples, size))


def _percentiles(stats: np.ndarray, confidence: float) -> list[float]:
    finite = stats[~np.isnan(stats)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [float(low), float(high)]
