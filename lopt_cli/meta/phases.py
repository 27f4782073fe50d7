r"""Two-phase meta-training: train the update rule, then the learning-rate schedule (or back).

A learned optimizer's meta-parameters are flax variables ``{"params": {layer: ...}}``. By
convention the layers of a learned learning-rate schedule have top-level names that start with
``schedule`` (:data:`lopt_cli.optimizers.schedule.LAYER_PREFIX`: ``schedule_in``,
``schedule_out``, as in ``celo`` and ``adam_nominal``); every other layer is
*the update rule*. ``train_only=rule`` meta-trains the rule with the schedule frozen,
``train_only=schedule`` the schedule with the rule frozen (Celo's two phases), ``None`` all.

Freezing is a mask :math:`m` (true = trained) around the outer optimizer :math:`U`:

.. math::
    u = m \odot U(m \odot g), \qquad \theta \leftarrow \theta + u,

so the frozen leaves get a zero gradient (they add nothing to a clipping norm, an Adam moment
or a learned outer optimizer's features) and a zero update (no weight-decay drift): they stay
exactly what they were. The outer optimizer's state keeps its structure, so checkpoints of a
phase resume like any other.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers.schedule import LAYER_PREFIX as SCHEDULE_PREFIX

PARTS = ("rule", "schedule")


def layer_name(path: tuple) -> str:
    """The top-level layer name of a θ leaf's path (below ``params`` for flax variables)."""
    names = [str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path]
    if len(names) > 1 and names[0] == "params":
        return names[1]
    return names[0] if names else ""


def is_schedule(path: tuple) -> bool:
    """Whether the leaf at ``path`` belongs to the learned schedule (its layer's name starts
    with :data:`SCHEDULE_PREFIX`)."""
    return layer_name(path).startswith(SCHEDULE_PREFIX)


def checked_part(train_only: str | None) -> str | None:
    """``train_only`` if it is ``"rule"``, ``"schedule"`` or ``None``, else a ValueError."""
    if train_only is not None and train_only not in PARTS:
        raise ValueError(f"train_only={train_only!r}: expected rule, schedule or null")
    return train_only


def trainable_mask(theta: Any, train_only: str | None) -> Any:
    """A tree of bools shaped like ``theta``'s structure: true where ``train_only`` trains.

    ``train_only``: ``"rule"``, ``"schedule"`` or ``None`` (everything).
    """
    checked_part(train_only)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: train_only is None or (train_only == "schedule") == is_schedule(path),
        theta)


def count_trainable(theta: Any, train_only: str | None) -> int:
    """How many leaves of ``theta`` ``train_only`` trains."""
    return sum(jax.tree_util.tree_leaves(trainable_mask(theta, train_only)))


def zero_frozen(tree: Any, mask: Any) -> Any:
    """``tree`` with the leaves where ``mask`` is false replaced by zeros."""
    return jax.tree_util.tree_map(lambda x, keep: x if keep else jnp.zeros_like(x), tree, mask)


def train_only_part(
    outer_tx: optax.GradientTransformationExtraArgs, train_only: str | None
) -> optax.GradientTransformationExtraArgs:
    """``outer_tx`` restricted to the ``train_only`` part of θ (see the module docstring);
    ``outer_tx`` itself when ``train_only`` is ``None``. Same state as ``outer_tx``."""
    if checked_part(train_only) is None:
        return outer_tx

    def update(updates, state, params=None, **extra_args):
        mask = trainable_mask(updates, train_only)
        updates, state = outer_tx.update(zero_frozen(updates, mask), state, params, **extra_args)
        return zero_frozen(updates, mask), state

    return optax.GradientTransformationExtraArgs(outer_tx.init, update)
