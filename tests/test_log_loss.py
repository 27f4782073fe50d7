"""The log-scale normalised loss wrapper (``task_definitions.log_loss``) and mixtures of
wrapped families (``task_family=celo_mix_plus``)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests_support import compose_config

from lopt_cli.commands.common import build
from lopt_cli.errors import LoptUserError
from task_definitions.base import shape_signature, stack_tasks, with_seed
from task_definitions.log_loss import LogLossConfig, LogLossFamily, LogLossTask
from task_definitions.quadratic import QuadraticFamily
from task_definitions.reparam import ReparamConfig, ReparamFamily
from task_definitions.suite import MixtureFamily, SuiteConfig

BOWLS = QuadraticFamily(dims=(4,), condition_number=(1.0, 10.0), noise=(0.0,))


def test_the_normalised_loss_counts_decades_below_the_inner_one():
    inner = BOWLS.build(BOWLS.sample(jax.random.PRNGKey(0)))
    task = LogLossTask(inner, decades=12.0)
    scale = float(inner.loss_scale)
    for ratio, expected in ((1.0, 1.0), (1e-6, 0.5), (1e-12, 1.0 / 12 * math.log10(2)), (0, 0)):
        assert float(task.normalize(jnp.asarray(ratio * scale))) == pytest.approx(
            expected, abs=1e-4)
    ceiling = 1 + math.log10(4.0) / 12  # the quadratic's own ceiling, in decades
    for bad in (jnp.inf, jnp.nan, 1e9 * scale):
        assert float(task.normalize(jnp.asarray(bad))) == pytest.approx(ceiling, abs=1e-5)
    losses = jnp.geomspace(1e-14, 1.0, 30) * scale
    assert np.all(np.diff(np.asarray(jax.vmap(task.normalize)(losses))) > 0)


def test_the_wrapped_task_trains_exactly_like_the_inner_one():
    family = LogLossFamily(BOWLS)
    config = family.sample(jax.random.PRNGKey(3))
    task, inner = family.build(config), BOWLS.build(config.inner)
    key = jax.random.PRNGKey(1)
    params = task.init(key)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, inner.init(key))
    batch = task.sample_batch(key, "train")
    assert float(task.loss(params, batch, key)) == float(inner.loss(params, batch, key))


def test_re_seeded_members_move_the_inner_seed_and_still_stack():
    family = LogLossFamily(BOWLS, decades=8)
    config = family.sample(jax.random.PRNGKey(0))
    other = with_seed(config, config.seed + 1)
    assert isinstance(other, LogLossConfig) and other.decades == 8.0
    assert other.seed == other.inner.seed == config.seed + 1
    tasks = [family.build(c) for c in (config, other)]
    assert shape_signature(tasks[0]) == shape_signature(tasks[1])
    stacked = stack_tasks(tasks)
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    inits = jax.vmap(lambda t, k: t.init(k))(stacked, keys)
    assert inits["x"].shape == (2, 4)


@pytest.mark.parametrize("decades", [0, -3, 31, float("nan"), True, "many"])
def test_a_bad_number_of_decades_is_refused_in_one_line(decades):
    with pytest.raises(LoptUserError, match=r"decades=.*expected a number of decades"):
        LogLossFamily(BOWLS, decades=decades)


def test_a_mixture_re_seeds_a_wrapped_member_through_its_own_with_seed():
    """SuiteConfig.with_seed must not replace only the wrapper's field: a reparameterised
    member re-seeded in a mixture is another inner task, not the same one with new factors."""
    mixture = MixtureFamily({"bowls": ReparamFamily(BOWLS)})
    config = mixture.sample(jax.random.PRNGKey(0))
    moved = config.with_seed(12345)
    assert isinstance(moved, SuiteConfig) and isinstance(moved.config, ReparamConfig)
    assert moved.config.seed == moved.config.inner.seed == 12345


def test_celo_mix_plus_leaves_its_small_deterministic_problems_at_natural_scale():
    """``task_family=celo_mix_plus``: celo_mix's classifiers (reparameterised, validation loss
    as usual) beside quadratic bowls and 2-D test functions, not reparameterised and with their
    loss measured in decades."""
    family = build(compose_config("tasks", ["task_family=celo_mix_plus"]).task_family, "plus")
    assert isinstance(family, MixtureFamily)
    members = dict(family.families)
    assert set(members) == {"celo_mix", "quadratic", "functions_2d"}
    assert isinstance(members["celo_mix"], ReparamFamily)
    for name in ("quadratic", "functions_2d"):
        assert isinstance(members[name], LogLossFamily) and members[name].decades == 12.0
        assert not isinstance(members[name].family, ReparamFamily)
    configs = [family.sample(jax.random.PRNGKey(i)) for i in range(40)]
    assert {c.family for c in configs} == set(members)
    task = family.build(next(c for c in configs if c.family == "functions_2d"))
    assert isinstance(task, LogLossTask)
    assert set(task.init(jax.random.PRNGKey(0))) == {"xy"}  # the function's own coordinates
