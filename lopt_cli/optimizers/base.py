"""The optimizer contracts.

Every optimizer, hand-designed or learned, is an ``optax.GradientTransformationExtraArgs``
whose ``update(updates, state, params, **extra)`` accepts the keyword arguments
``loss=`` (the current training loss) and ``valid_loss=`` (the latest validation loss) and may
ignore them. Any optax training loop can therefore drive a learned optimizer, and the
meta-trainer can drive any optimizer.

A :class:`LearnedOptimizer` holds the architecture (static hyperparameters) and turns
meta-parameters ``theta`` into such a transformation::

    theta = lopt.init(jax.random.key(0))
    opt = lopt.transform(theta, num_steps=1000)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params, loss=loss)
    params = optax.apply_updates(params, updates)
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import optax

MetaParams = Any


@runtime_checkable
class LearnedOptimizer(Protocol):
    """A parametric optimizer: ``init`` its meta-parameters, ``transform`` them into optax."""

    def init(self, key: jax.Array) -> MetaParams: ...

    def transform(
        self, theta: MetaParams, num_steps: int | jax.Array
    ) -> optax.GradientTransformationExtraArgs: ...


def accepting_extra_args(
    transform: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """Wraps a plain optax transformation so that ``update`` accepts (and ignores) ``loss=``."""
    return optax.with_extra_args_support(transform)
