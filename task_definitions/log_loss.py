r"""Log-scale normalised loss: a meta-objective that rewards converging precisely.

A task's own ``normalize`` is linear near the minimum (a quadratic bowl's is
:math:`\ell / \ell_0`), so a meta-loss averaging it hardly tells a final loss of
:math:`10^{-4}\ell_0` from one of :math:`10^{-12}\ell_0`. ``lopt_bench`` compares final losses
as ratios, where the two differ by eight decades. A wrapped task keeps its inner task's
parameters, loss and data and measures progress in decades instead:

.. math:: \tilde n(\ell) = 1 + \frac{\log_{10}\big(n(\ell) + 10^{-D}\big)}{D},

where :math:`n` is the inner task's normalised loss (about 1 at initialisation, capped by its
own ceiling, which also maps non-finite losses) and :math:`D` = ``decades``: :math:`\tilde n`
is about 1 where :math:`n = 1`, falls by :math:`1/D` per decade gained, and reaches 0 at
:math:`n = 0`. Meant for small deterministic problems (quadratics, 2-D test functions); a
classifier's validation loss never gets near :math:`10^{-D}`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from lopt_cli.errors import LoptUserError
from task_definitions.base import with_seed

DEFAULT_DECADES = 12.0


@struct.dataclass
class LogLossTask:
    """``inner`` with its normalised loss measured in decades (see the module docstring)."""

    inner: Any
    decades: float = struct.field(pytree_node=False, default=DEFAULT_DECADES)

    def init(self, key: jax.Array) -> Any:
        return self.inner.init(key)

    def loss(self, params: Any, batch: Any, key: jax.Array) -> jax.Array:
        return self.inner.loss(params, batch, key)

    def sample_batch(self, key: jax.Array, split: str) -> Any:
        return self.inner.sample_batch(key, split)

    def normalize(self, loss: jax.Array) -> jax.Array:
        inner = jnp.maximum(self.inner.normalize(loss), 0.0)
        return 1.0 + jnp.log10(inner + 10.0 ** -self.decades) / self.decades


def check_decades(decades: Any) -> float:
    """``decades`` as a float in ``[1, 30]``, or a one-line error."""
    ok = (isinstance(decades, (int, float)) and not isinstance(decades, bool)
          and math.isfinite(decades) and 1 <= decades <= 30)
    if not ok:
        raise LoptUserError(f"decades={decades!r}: expected a number of decades in [1, 30], "
                            "e.g. 12")
    return float(decades)


@dataclasses.dataclass(frozen=True)
class LogLossConfig:
    """An inner family's config and the number of decades; re-seeding moves the inner seed."""

    inner: Any
    decades: float

    @property
    def seed(self) -> int:
        return self.inner.seed

    def with_seed(self, seed: int) -> LogLossConfig:
        return dataclasses.replace(self, inner=with_seed(self.inner, seed))


@dataclasses.dataclass(frozen=True)
class LogLossFamily:
    """Tasks of ``family`` (task ``k`` is its task ``k``) with a log-scale normalised loss."""

    family: Any
    decades: float = DEFAULT_DECADES
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "decades", check_decades(self.decades))
        if not self.name:
            object.__setattr__(self, "name", f"{getattr(self.family, 'name', 'task')}_log")

    def sample(self, key: jax.Array) -> LogLossConfig:
        return LogLossConfig(self.family.sample(key), self.decades)

    def build(self, config: LogLossConfig) -> LogLossTask:
        return LogLossTask(self.family.build(config.inner), config.decades)
