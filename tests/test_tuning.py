"""Tuning logic on synthetic losses where the right answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from lopt_cli.evaluation.compare import final_value, relative_improvement, summarize
from lopt_cli.evaluation.search_spaces import AdamLR, coarse_to_fine_order
from lopt_cli.evaluation.tuning import (
    Setting,
    choose_global,
    choose_per_task,
    compare_task,
    settings_for,
)


def test_global_choice_minimises_the_mean_not_the_per_task_best():
    # trial 0 wins two tasks narrowly but fails the third; trial 1 is solid everywhere
    tuning = np.array([[0.10, 0.20], [0.10, 0.20], [2.00, 0.25]])
    assert choose_global(tuning) == 1


def test_global_choice_treats_divergence_as_worst():
    tuning = np.array([[np.nan, 0.5], [0.1, 0.5]])
    assert choose_global(tuning) == 1


def test_per_task_choice_only_sees_its_trial_budget():
    finals = np.array([0.5, 0.4, 0.1, 0.3])
    assert choose_per_task(finals, 1) == 0
    assert choose_per_task(finals, 2) == 1
    assert choose_per_task(finals, 4) == 2


def test_settings_list_global_and_each_trial_count():
    settings = settings_for("Adam8p", (1, 10, 100), max_trials=10)
    assert [(s.kind, s.trials) for s in settings] == [("global", 10), ("per-task", 1),
                                                      ("per-task", 10)]
    assert settings[1].label == "Adam8p per-task (1 trial)"


def test_compare_task_uses_the_global_index_for_global_settings():
    finals = [0.9, 0.2, 0.5]
    result = compare_task(0.4, finals, Setting("AdamLR", "global", 3), global_index=2)
    assert result["trial"] == 2 and result["baseline_final"] == 0.5
    assert result["improvement"] == pytest.approx(0.2)
    result = compare_task(0.4, finals, Setting("AdamLR", "per-task", 3), global_index=2)
    assert result["trial"] == 1 and result["improvement"] == pytest.approx(-0.5)


def test_relative_improvement_is_bounded_and_signed():
    assert relative_improvement(1.0, 0.5) == pytest.approx(0.5)
    assert relative_improvement(0.5, 1.0) == pytest.approx(-0.5)
    assert relative_improvement(0.0, 1.0) == pytest.approx(-1.0)
    assert relative_improvement(float("nan"), 1.0) == 1.0
    assert relative_improvement(1.0, float("inf")) == -1.0


def test_final_value_averages_the_tail_then_seeds():
    curves = np.array([[1.0, 1.0, 0.2, 0.4], [1.0, 1.0, 0.6, 0.8]])  # [seed, point]
    assert final_value(curves, 0.5) == pytest.approx(0.5)
    assert final_value(np.full((2, 4), np.nan), 0.5) == np.inf


def test_summary_counts_wins_and_quartiles():
    summary = summarize([0.5, -0.25, 0.1, 0.3])
    assert summary["wins"] == 3 and summary["num_tasks"] == 4
    assert summary["median"] == pytest.approx(0.2)


def test_adam_lr_trials_are_nested_prefixes_covering_the_grid():
    space = AdamLR(1e-4, 1e-1)
    seven = space.trials(7)["learning_rate"]
    assert sorted(seven) == pytest.approx(sorted(np.geomspace(1e-4, 1e-1, 7)), rel=1e-5)
    assert seven[0] == pytest.approx(np.geomspace(1e-4, 1e-1, 7)[3], rel=1e-5)
    assert sorted(coarse_to_fine_order(10)) == list(range(10))


def test_suite_tuning_on_real_bowls_picks_the_known_best_rate():
    """On well-conditioned bowls trained 40 steps, the largest rate of {1e-4, 3e-3, 0.1} is
    best: global tuning must pick it, per-task with 1 trial must use the first (middle) one."""
    import jax.numpy as jnp
    from toy_lopt import LearnedLRSGD

    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.runs import RunSettings
    from lopt_cli.evaluation.suite import SuiteSpec, evaluate_suite
    from task_definitions.quadratic import QuadraticFamily

    family = QuadraticFamily(dims=(4,), condition_number=(1.0, 2.0), noise=(0.0,))
    spec = SuiteSpec(splits={"seen": (0, 1), "unseen": (1000000,)}, tuning_ids=(2000000, 2000001),
                     baselines={"AdamLR": AdamLR(1e-4, 1e-1)}, max_trials=3, trial_counts=(1, 3),
                     run=RunSettings(horizon=40, valid_every=10, num_seeds=2, final_fraction=0.25))
    rates = spec.baselines["AdamLR"].trials(3)["learning_rate"]
    assert rates[2] == pytest.approx(0.1)
    cache = RunCache(None)
    choices, results = evaluate_suite(family, LearnedLRSGD(), {"log_lr": jnp.asarray(-1.0)},
                                      "toy", spec, cache)
    assert choices == {"AdamLR": {"valid": 2, "train": 2}}
    assert cache.computed == 2 + 3 * 2  # tuning: baseline only; test tasks: learned + baseline
    assert [r["split"] for r in results] == ["seen", "seen", "unseen"]
    for result in results:
        by_setting = {(c["setting"], c["metric"]): c for c in result["comparisons"]}
        assert by_setting[("AdamLR per-task (1 trial)", "valid")]["trial"] == 0
        assert by_setting[("AdamLR per-task (3 trials)", "valid")]["trial"] == 2
        assert by_setting[("AdamLR global (3 trials)", "train")]["trial"] == 2
        assert len(result["baselines"]["AdamLR"]["final_valid"]) == 3


def test_tasks_of_a_family_each_get_their_own_seeds():
    """Two task ids whose configs are identical (a family that ignores the sampling key) are
    two different runs, not the same run twice."""
    import jax.numpy as jnp
    from toy_lopt import LearnedLRSGD

    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.runs import RunSettings
    from lopt_cli.evaluation.suite import SuiteSpec, TaskRef, learned_runs
    from task_definitions.quadratic import QuadraticFamily
    from task_definitions.task_ids import task_key

    quadratics = QuadraticFamily(dims=(4,), condition_number=(10.0, 20.0), noise=(0.0,))
    config = quadratics.sample(task_key(0))

    class OneConfig:
        name = "one_config"

        def sample(self, key):
            return config

        def build(self, cfg):
            return quadratics.build(cfg)

    spec = SuiteSpec(splits={}, tuning_ids=(), baselines={}, max_trials=1, trial_counts=(1,),
                     run=RunSettings(horizon=20, valid_every=10, num_seeds=2, final_fraction=0.5))
    cache = RunCache(None)
    theta = {"log_lr": jnp.asarray(-2.0)}
    first, second = (learned_runs(TaskRef(OneConfig(), task_id), LearnedLRSGD(), theta, "toy",
                                  spec, cache) for task_id in (0, 1))
    assert first["final_train"] != pytest.approx(second["final_train"], rel=1e-6)
