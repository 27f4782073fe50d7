"""The horizon curriculum: log-linear growth of the horizon cap, passed as data (no recompiles)."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from tests_support import compose_config
from toy_lopt import LearnedLRSGD

from lopt_cli.commands.meta_train import build_job
from lopt_cli.errors import LoptUserError
from lopt_cli.meta.curriculum import HorizonCurriculum, constant
from lopt_cli.meta.es import AntitheticES
from lopt_cli.meta.outer import (
    MetaTrainSettings,
    make_outer_optimizer,
    meta_train,
    sample_population,
)
from lopt_cli.meta.problem import TruncatedProblem, initial_states, with_horizon_cap
from task_definitions.quadratic import QuadraticFamily

FAMILY = QuadraticFamily(dims=(8,), condition_number=(1.0, 10.0), noise=(0.0,))
TRACES = []


@dataclasses.dataclass(frozen=True)
class CountingProblem(TruncatedProblem):
    """Counts how often the truncation is traced, i.e. compiled."""

    def unroll(self, theta, task, state, truncation_length):
        TRACES.append(truncation_length)
        return super().unroll(theta, task, state, truncation_length)


def test_cap_grows_log_linearly_then_stays():
    curriculum = HorizonCurriculum(start=100, end=1000, steps=10)
    caps = [curriculum.max_horizon(step) for step in range(15)]
    assert caps[0] == 100 and caps[5] == 316 and caps[10:] == [1000] * 5
    assert caps == sorted(caps)
    assert constant(400).max_horizon(0) == constant(400).max_horizon(10**6) == 400
    with pytest.raises(ValueError):
        HorizonCurriculum(start=500, end=100, steps=10)


def test_fresh_horizons_respect_the_traced_cap():
    problem = TruncatedProblem(LearnedLRSGD(), min_horizon=20, max_horizon=400, valid_every=5)
    tasks, _ = sample_population(FAMILY, 1, 64)
    theta = LearnedLRSGD().init(None)
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    fresh = jax.jit(jax.vmap(problem.fresh_state, in_axes=(None, 0, 0)))
    for cap in (10, 50, 400):
        horizons = np.asarray(fresh(theta, with_horizon_cap(tasks, cap), keys).horizon)
        assert horizons.max() <= cap and horizons.min() >= min(20, cap)
    assert fresh._cache_size() == 1  # one compilation for every cap
    uncapped = np.asarray(fresh(theta, tasks, keys).horizon)
    assert uncapped.max() > 50  # without a cap: the problem's static max_horizon
    first = initial_states(problem, theta, with_horizon_cap(tasks, 30), jax.random.PRNGKey(1))
    assert np.asarray(first.horizon).max() <= 30


def test_growing_cap_compiles_the_truncation_once():
    problem = CountingProblem(LearnedLRSGD(), min_horizon=20, max_horizon=200, valid_every=5)
    history = []
    TRACES.clear()
    meta_train(
        FAMILY, problem, AntitheticES(sigma=0.05, truncation_length=10),
        make_outer_optimizer(learning_rate=0.1, warmup_steps=1, total_steps=12),
        MetaTrainSettings(num_outer_steps=12, num_tasks=2, resample_every=4,
                          curriculum=HorizonCurriculum(20, 200, 8)),
        on_step=lambda step, metrics, theta: history.append(metrics["max_horizon"]),
    )
    assert history[0] == 20 and history[-1] == 200 and len(set(history)) > 5
    assert len(TRACES) == 1


def test_curriculum_from_config():
    job = build_job(compose_config("meta_train", ["compute=smoke",
                                                  "curriculum.start_max_horizon=25"]))
    assert job.settings.curriculum == HorizonCurriculum(25, 60, 30)  # smoke: max 60, 30 steps
    job = build_job(compose_config("meta_train", ["curriculum.start_max_horizon=50",
                                                  "curriculum.steps=7"]))
    assert job.settings.curriculum.steps == 7
    assert build_job(compose_config("meta_train")).settings.curriculum is None
    with pytest.raises(LoptUserError, match="exceeds inner.max_horizon"):
        build_job(compose_config("meta_train", ["compute=smoke",
                                                "curriculum.start_max_horizon=1000"]))
