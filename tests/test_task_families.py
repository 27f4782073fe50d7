"""Conformance suite for every task family: sampling, building, jit, finiteness, learnability."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tests_support import compose_config, group_options

from lopt_cli.commands.common import build
from task_definitions.base import config_to_dict, shape_signature, stack_tasks, with_seed


@pytest.fixture(scope="module", params=group_options("task_family"))
def family(request):
    """Every option of the real ``task_family`` config group, instantiated."""
    cfg = compose_config("meta_train", [f"task_family={request.param}"])
    return build(cfg.task_family, request.param)


def test_sampling_is_deterministic_and_varied(family):
    first = [family.sample(jax.random.PRNGKey(i)) for i in range(20)]
    again = [family.sample(jax.random.PRNGKey(i)) for i in range(20)]
    assert first == again
    assert len({c for c in first}) > 10
    for config in first:
        assert config_to_dict(config)["family"]


def test_task_runs_under_jit_and_is_finite(family):
    task = family.build(family.sample(jax.random.PRNGKey(3)))
    params = jax.jit(task.init)(jax.random.PRNGKey(0))
    for split in ("train", "valid", "test"):
        batch = jax.jit(task.sample_batch, static_argnums=1)(jax.random.PRNGKey(1), split)
        loss = jax.jit(task.loss)(params, batch, jax.random.PRNGKey(2))
        assert loss.shape == () and jnp.isfinite(loss)
        assert jnp.isfinite(task.normalize(loss))
    assert task.normalize(jnp.nan) == task.normalize(jnp.inf)  # mapped to the ceiling


# The sequence models' and lopt_meta's 150 Adam steps compile for 10-30 s each: with the slow
# tests (make test-slow); the fast suite still builds, jits and stacks them (above).
SLOW_TO_TRAIN = {"transformer_lm", "char_rnn_lm", "lopt_meta"}


@pytest.mark.parametrize("family", [pytest.param(name, marks=pytest.mark.slow)
                                    if name in SLOW_TO_TRAIN else name
                                    for name in group_options("task_family")], indirect=True)
def test_adam_lowers_the_loss(family):
    """With the best of three learning rates, Adam reduces the loss within 150 steps."""
    task = family.build(family.sample(jax.random.PRNGKey(5)))

    @jax.jit
    def train(key, learning_rate):
        opt = optax.adam(learning_rate)
        params = task.init(key)

        def step(carry, key):
            params, state = carry
            loss, grads = jax.value_and_grad(task.loss)(params, task.sample_batch(key, "train"), key)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        _, losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 150))
        return losses

    losses = np.asarray(jax.vmap(train, (None, 0))(jax.random.PRNGKey(0),
                                                    jnp.asarray([1e-3, 1e-2, 3e-2])))
    ratios = losses[:, -10:].mean(1) / losses[:, :10].mean(1)
    assert np.nanmin(ratios) < 0.7


def test_reseeded_configs_share_shapes_and_stack(family):
    config = family.sample(jax.random.PRNGKey(7))
    tasks = [family.build(with_seed(config, config.seed + i)) for i in range(3)]
    assert len({shape_signature(t) for t in tasks}) == 1
    stacked = stack_tasks(tasks)
    params = jax.vmap(lambda t, k: t.init(k))(stacked, jax.random.split(jax.random.PRNGKey(0), 3))
    assert jax.tree_util.tree_leaves(params)[0].shape[0] == 3
