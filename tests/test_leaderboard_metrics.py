"""The leaderboard's metrics on curves and ratios with known answers: speedup, IQM, loss ratio,
the late-rise flag, and the bootstrap intervals (plain and paired) with their terminal table."""
from __future__ import annotations

import numpy as np
import pytest

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


def test_speedup_is_exactly_two_when_the_candidate_is_twice_as_fast():
    steps = [10, 20, 30, 40]
    baseline = [4.0, 3.0, 2.0, 1.0]  # reaches its final loss 1.0 at step 40
    candidate = [3.0, 1.0, 0.5, 0.4]  # reaches 1.0 at step 20
    assert speedup(baseline, candidate, steps, 1.0) == 2.0


def test_speedup_is_zero_when_the_target_is_never_reached():
    assert speedup([4.0, 3.0, 2.0, 1.0], [4.0, 3.5, 3.0, 2.5], [1, 2, 3, 4], 1.0) == 0.0
    assert speedup([4.0, 3.0], [None, None], [1, 2], 3.0) == 0.0  # diverged


def test_iqm_of_known_ratios_drops_the_outer_quarters():
    assert iqm([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2.5)
    assert iqm([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0]) == pytest.approx(1.0)
    assert iqm([0.5, 0.8, 1.0, 1.2, 1.5, 50.0, 0.0, 2.0]) == pytest.approx(
        np.mean([0.8, 1.0, 1.2, 1.5]))


def test_loss_ratio_is_above_one_when_the_candidate_ends_lower():
    assert loss_ratio(0.4, 0.2) == pytest.approx(2.0)
    assert loss_ratio(0.2, 0.4) == pytest.approx(0.5)
    assert np.isfinite(loss_ratio(0.3, 0.0))


def test_rise_flags_a_curve_that_climbs_back_and_not_one_that_settles():
    assert rises([1.0, 0.5, 0.3, 0.2, 0.3])  # 0.3 > 1.05 * 0.2
    assert not rises([1.0, 0.5, 0.3, 0.2, 0.205])  # within 5% of the minimum
    assert not rises([1.0, 0.8, 0.6, 0.4])
    assert rises([1.0, 0.5, None])  # diverged at the end
    assert not rises([1.0, 1e-13, 1e-12])  # float noise near zero
    assert rise_ratio([1.0, 0.5, 0.3, 0.2, 0.3]) == pytest.approx(1.5)
    assert rise_ratio([1.0, 0.8, 0.6, 0.4]) == 1.0
    assert rise_ratio([1.0, 0.5, None]) == float("inf")
    assert rise_ratio([1.0, 1e-10, 7e-10]) == 1.0  # both below the float-noise floor


def test_bootstrap_interval_brackets_the_iqm_and_narrows_with_more_tasks():
    rng = np.random.default_rng(3)
    few, many = rng.lognormal(0.1, 0.3, 12), rng.lognormal(0.1, 0.3, 400)
    for values in (few, many):
        low, high = bootstrap_interval(values)
        assert low < iqm(values) < high
        assert bootstrap_interval(values) == [low, high]  # seeded: the same every time
    assert np.diff(bootstrap_interval(many)) < 0.5 * np.diff(bootstrap_interval(few))
    assert bootstrap_interval([1.2, 1.2, 1.2]) == [1.2, 1.2]
    assert bootstrap_interval([0, 1, 1, 0], mean_rows) == pytest.approx([0.0, 1.0])
    rows = rng.normal(size=(5, 9))
    assert iqm_rows(rows) == pytest.approx([iqm(row) for row in rows])


def test_the_terminal_shows_the_intervals_when_there_is_more_than_one_task():
    from rich.console import Console

    from lopt_cli.evaluation.leaderboard_report import terminal_interval_table

    summary = {"reference_setting": "AdamLR per-task (10 trials)", "num_tasks": 14,
               "intervals": {"c": {"generalisation": {"win_rate": [0.357, 0.857],
                                                      "iqm_loss_ratio": [0.979, 1.21],
                                                      "iqm_speedup": [0.896, 2.583]}}}}
    console = Console(record=True, width=200)
    console.print(terminal_interval_table(summary))
    text = console.export_text()
    assert "How sure: 95% intervals over tasks" in text
    assert "[36%, 86%]" in text and "[0.979, 1.210]" in text and "[0.896, 2.583]" in text
    assert terminal_interval_table({**summary, "num_tasks": 1}) is None
    assert terminal_interval_table({**summary, "intervals": {}}) is None


def test_paired_interval_sees_a_small_shift_that_separate_intervals_cannot():
    rng = np.random.default_rng(4)
    tasks = rng.lognormal(0.0, 0.5, 20)  # tasks differ far more than the two candidates do
    better = tasks * 1.05
    low, high = paired_bootstrap_interval(better, tasks)
    assert 0 < low <= iqm(better) - iqm(tasks) <= high
    separate = bootstrap_interval(tasks)
    assert separate[0] < iqm(better) < separate[1]  # alone, each interval holds the other's IQM
    assert paired_bootstrap_interval(tasks, tasks) == [0.0, 0.0]
    with pytest.raises(ValueError, match="paired values of 20 and 3 tasks"):
        paired_bootstrap_interval(tasks, tasks[:3])
