"""Unit tests of the inner problem, the ES estimator and the outer loop (toy learned optimizer)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from toy_lopt import LearnedLRSGD

from lopt_cli.meta.es import AntitheticES
from lopt_cli.meta.outer import (
    MetaTrainSettings,
    make_outer_optimizer,
    meta_train,
    sample_population,
)
from lopt_cli.meta.problem import TruncatedProblem, initial_states
from task_definitions.quadratic import QuadraticFamily

FAMILY = QuadraticFamily(dims=(8,), condition_number=(1.0, 10.0), noise=(0.0,))
PROBLEM = TruncatedProblem(LearnedLRSGD(), min_horizon=200, max_horizon=400, valid_every=5)


def population(num_tasks: int, theta):
    tasks, _ = sample_population(FAMILY, 3, num_tasks)
    states = initial_states(PROBLEM, theta, tasks, jax.random.PRNGKey(1))
    return tasks, states._replace(horizon=jnp.full_like(states.horizon, 400))


def mean_meta_loss(theta, tasks, states, length):
    _, metrics = jax.vmap(PROBLEM.unroll, in_axes=(None, 0, 0, None))(theta, tasks, states, length)
    return jnp.mean(metrics.valid_loss)


def test_es_estimate_matches_finite_differences():
    theta = LearnedLRSGD().init(None)
    tasks, states = population(256, theta)
    es = AntitheticES(sigma=0.01, truncation_length=20)
    grad, _, metrics = es.estimate(PROBLEM, theta, tasks, states, jax.random.PRNGKey(2))
    h = 1e-2
    plus = mean_meta_loss({"log_lr": theta["log_lr"] + h}, tasks, states, 20)
    minus = mean_meta_loss({"log_lr": theta["log_lr"] - h}, tasks, states, 20)
    finite_difference = (plus - minus) / (2 * h)
    assert finite_difference < 0  # a larger step size trains faster here
    np.testing.assert_allclose(grad["log_lr"], finite_difference, rtol=0.25)
    assert np.isfinite(metrics.meta_loss)


def test_finished_and_diverged_tasks_are_reset():
    theta = {"log_lr": jnp.asarray(3.0)}  # step size e^3: every bowl diverges
    tasks, states = population(4, theta)
    es = AntitheticES(sigma=0.01, truncation_length=20)
    _, states, _ = es.estimate(PROBLEM, theta, tasks, states, jax.random.PRNGKey(0))
    _, states, metrics = es.estimate(PROBLEM, theta, tasks, states, jax.random.PRNGKey(1))
    assert metrics.diverged == 4 and metrics.resets == 4
    assert np.all(np.asarray(states.step) == 20)  # restarted, then trained one truncation
    grad, _, metrics = es.estimate(PROBLEM, theta, tasks, states, jax.random.PRNGKey(2))
    assert np.isfinite(metrics.meta_loss) and np.isfinite(grad["log_lr"])


def test_population_starts_out_of_lock_step():
    theta = LearnedLRSGD().init(None)
    tasks, _ = sample_population(FAMILY, 3, 16)
    states = initial_states(PROBLEM, theta, tasks, jax.random.PRNGKey(1))
    assert len(set(np.asarray(states.horizon).tolist())) > 8


def test_meta_training_lowers_the_meta_loss():
    history = []
    theta = meta_train(
        FAMILY, PROBLEM, AntitheticES(sigma=0.05, truncation_length=20),
        make_outer_optimizer(learning_rate=0.1, warmup_steps=1, total_steps=60),
        MetaTrainSettings(num_outer_steps=60, num_tasks=8, resample_every=20),
        on_step=lambda step, metrics, theta: history.append(metrics["meta_loss"]),
    )
    assert float(theta["log_lr"]) > -2.5  # learned to take larger steps than e^-3
    assert np.mean(history[-10:]) < 0.5 * np.mean(history[:10])


def test_meta_training_is_deterministic():
    def run():
        return meta_train(
            FAMILY, PROBLEM, AntitheticES(sigma=0.05, truncation_length=10),
            make_outer_optimizer(learning_rate=0.1, warmup_steps=1, total_steps=5),
            MetaTrainSettings(num_outer_steps=5, num_tasks=4, resample_every=3, seed=7),
        )

    assert float(run()["log_lr"]) == float(run()["log_lr"])


def test_truncation_keys_are_distinct_and_the_next_key_is_fresh():
    """One split gives every step of a truncation its own batch and loss keys."""
    from lopt_cli.inner.unroll import truncation_keys

    next_key, keys = truncation_keys(jax.random.PRNGKey(0), 3, 4)
    assert keys.shape == (3, 5, 2, 2)
    rows = {tuple(k) for k in np.asarray(keys).reshape(-1, 2).tolist()}
    assert len(rows) == 3 * 5 * 2
    assert tuple(np.asarray(next_key).tolist()) not in rows


def test_batches_draw_every_row_roughly_uniformly():
    """``sample_from_arrays`` keeps rows aligned across arrays and covers them evenly."""
    from task_definitions.base import sample_from_arrays

    arrays = {"x": jnp.arange(7.0)[:, None] * jnp.ones((1, 3)), "y": jnp.arange(7)}
    batch = jax.jit(lambda k: sample_from_arrays(k, arrays, 7000))(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(batch["x"][:, 0]), np.asarray(batch["y"]))
    counts = np.bincount(np.asarray(batch["y"]), minlength=7)
    assert counts.min() > 850 and counts.max() < 1150, counts


def test_population_blocks_split_a_per_core_budget_over_the_particles():
    from lopt_cli.optimizers import cpu_tuning

    budget = cpu_tuning.CPU_POPULATION_PARAMS_PER_CORE
    assert cpu_tuning.population_chunk_size(8, 1) == budget // 8
    assert cpu_tuning.population_chunk_size(8, 2) == 2 * budget // 8
    assert cpu_tuning.population_chunk_size(1, 1) == budget
    assert cpu_tuning.population_chunk_size(10**6, 1) == cpu_tuning.MIN_CHUNK_SIZE
    assert cpu_tuning.population_chunk_size(0, 0) == budget  # degenerate counts read as 1


def test_for_population_sets_only_an_unset_chunk_size_of_a_chunked_optimizer():
    from lopt_cli.meta.cpu_tuning import for_population
    from lopt_cli.optimizers import cpu_tuning
    from lopt_cli.optimizers.hierarchical import HierarchicalLOpt
    from lopt_cli.optimizers.mlp_lopt import MLPLOpt

    for lopt in (MLPLOpt(), HierarchicalLOpt()):
        tuned = for_population(lopt, 16, 1)
        assert tuned.chunk_size == cpu_tuning.population_chunk_size(16, 1)
        assert tuned.resolved_chunk_size() == tuned.chunk_size
        assert tuned.init(jax.random.key(0)).keys() == lopt.init(jax.random.key(0)).keys()
    assert for_population(MLPLOpt(chunk_size=0), 16, 1).chunk_size == 0  # the user's choice
    toy = LearnedLRSGD()  # no chunk_size field: returned as is
    assert for_population(toy, 16, 1) is toy


def test_meta_train_job_sizes_inner_blocks_for_its_population():
    """``lopt meta-train`` hands the truncations an optimizer whose MLP blocks are sized for
    the particles each device vmaps (PES: two per task); the saved config keeps ``None``."""
    from tests_support import compose_config

    from lopt_cli.commands.meta_train import build_job
    from lopt_cli.meta.cpu_tuning import cpu_cores_per_device
    from lopt_cli.optimizers import cpu_tuning

    cfg = compose_config("meta_train", ["compute=cpu", "compute.num_devices=1",
                                        "estimator=pes"])
    job = build_job(cfg)
    particles = cfg.compute.num_tasks * 2
    assert job.problem.lopt.chunk_size == cpu_tuning.population_chunk_size(
        particles, cpu_cores_per_device(1))
    assert job.optimizer_config.get("chunk_size") is None
