r"""Weight-rescaling task augmentation (Celo, Moudgil et al. 2025; VeLO's ``ReparamWeights``).

A wrapped task reparameterises each parameter tensor :math:`p_i` of its inner task by a factor
:math:`c_i`, drawn log-uniformly from ``[low, high]`` (by default :math:`[10^{-3}, 10^3]`) per
task and per tensor: the optimizer sees :math:`q_i` with :math:`p_i = c_i\,q_i`, so

.. math:: \tilde{\ell}(q) = \ell(c \odot q), \qquad q_0 = p_0 / c, \qquad
          \nabla_{q_i} \tilde{\ell} = c_i\, \nabla_{p_i} \ell .

The function learned is unchanged; only its coordinates are. An optimizer whose updates scale
with the parameter (the RMS-scaled steps of Celo) sees the same problem at every :math:`c`;
Adam's fixed-size steps move :math:`p_i` by :math:`c_i` times too much or too little. Training a
learned optimizer on such tasks teaches it to take steps relative to each tensor's scale.

The factors are leaves of the task (float32 scalars in the parameters' tree structure), so
re-seeded tasks of one shape still stack and ``vmap``; they are drawn from the config's own
``seed`` with NumPy, the same on every machine.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lopt_cli.errors import LoptUserError
from task_definitions.base import Task, with_seed
from task_definitions.sampling import generator_from_key, task_seed

DEFAULT_SCALE = (1e-3, 1e3)
FACTOR_SALT = 7  # the generator stream of the factors (independent of the inner task's seed use)
SEED_SALT = 8  # the generator stream of a sampled config's own seed


@struct.dataclass
class ReparamTask:
    """``inner`` seen through ``p = factors * q`` (one float32 scalar factor per tensor)."""

    inner: Any
    factors: Any  # the inner parameters' tree structure, a scalar per leaf

    def original(self, params: Any) -> Any:
        """The inner task's parameters :math:`p = c \\odot q` of the wrapped ones ``params``."""
        return jax.tree_util.tree_map(lambda q, c: (q * c).astype(q.dtype), params, self.factors)

    def init(self, key: jax.Array) -> Any:
        return jax.tree_util.tree_map(lambda p, c: (p / c).astype(p.dtype),
                                      self.inner.init(key), self.factors)

    def loss(self, params: Any, batch: Any, key: jax.Array) -> jax.Array:
        return self.inner.loss(self.original(params), batch, key)

    def sample_batch(self, key: jax.Array, split: str) -> Any:
        return self.inner.sample_batch(key, split)

    def normalize(self, loss: jax.Array) -> jax.Array:
        return self.inner.normalize(loss)

    def accuracy(self, params: Any, batch: Any) -> jax.Array:
        """The inner task's accuracy (classifiers only)."""
        return self.inner.accuracy(self.original(params), batch)

    @property
    def convolutional(self) -> bool:
        """The inner task's flag (the benchmark's host-loop rule reads it)."""
        return bool(getattr(self.inner, "convolutional", False))


def check_scale(scale: tuple) -> tuple[float, float]:
    """``(low, high)`` as floats with ``0 < low <= high < inf``, or a one-line error."""
    values = tuple(scale) if isinstance(scale, (list, tuple)) else (scale,)
    ok = len(values) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        for v in values) and values[0] <= values[1]
    if not ok:
        raise LoptUserError(f"param_scale={list(values)}: expected [low, high] with "
                            "0 < low <= high, e.g. [0.001, 1000.0]")
    return float(values[0]), float(values[1])


def draw_factors(params_shape: Any, seed: int, low: float, high: float) -> Any:
    """One factor per leaf of ``params_shape``, log-uniform in ``[low, high]``, from ``seed``."""
    leaves, treedef = jax.tree_util.tree_flatten(params_shape)
    rng = generator_from_key(int(seed), FACTOR_SALT)
    logs = rng.uniform(math.log(low), math.log(high), size=len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(np.exp(v), jnp.float32) for v in logs])


def reparameterize(task: Task, seed: int, param_scale: tuple = DEFAULT_SCALE) -> ReparamTask:
    """``task`` with each parameter tensor rescaled by a factor drawn from ``seed``."""
    low, high = check_scale(param_scale)
    shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    return ReparamTask(task, draw_factors(shapes, seed, low, high))


@dataclasses.dataclass(frozen=True)
class ReparamConfig:
    """An inner family's config, the factor range and the factors' own ``seed``.

    Re-seeding (:func:`~task_definitions.base.with_seed`) moves both this seed and the inner
    config's, so a re-seeded member is another inner task with other factors, of one shape.
    """

    inner: Any
    low: float
    high: float
    seed: int

    def with_seed(self, seed: int) -> ReparamConfig:
        return dataclasses.replace(self, inner=with_seed(self.inner, seed), seed=seed)


@dataclasses.dataclass(frozen=True)
class ReparamFamily:
    """Tasks of ``family``, each reparameterised per tensor (see the module docstring).

    Task ``k`` is task ``k`` of ``family`` (the same key samples it) with factors drawn
    log-uniformly from ``param_scale``; the inner family may be any family, a mixture too.
    """

    family: Any
    param_scale: tuple = DEFAULT_SCALE
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "param_scale", check_scale(self.param_scale))
        if not self.name:
            object.__setattr__(self, "name", f"{getattr(self.family, 'name', 'task')}_reparam")

    def sample(self, key: jax.Array) -> ReparamConfig:
        low, high = self.param_scale
        seed = task_seed(generator_from_key(key, SEED_SALT))
        return ReparamConfig(self.family.sample(key), low, high, seed)

    def build(self, config: ReparamConfig) -> ReparamTask:
        return reparameterize(self.family.build(config.inner), config.seed,
                              (config.low, config.high))
