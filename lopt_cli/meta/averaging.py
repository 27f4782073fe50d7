r"""An exponential moving average of the meta-parameters, kept in the outer optimizer's state.

PES meta-gradients are noisy, so the last θ of a run is one draw from the region the outer
optimizer wanders in: a held-out check of consecutive checkpoints of one run moves by as much as
two runs' seeds apart. ``average_theta=β`` (``0 < β < 1``) keeps, beside the outer optimizer,

.. math:: \bar\theta_0 = \theta_0, \qquad
          \bar\theta_{t+1} = \beta\,\bar\theta_t + (1 - \beta)\,\theta_{t+1},

a Polyak-style average over roughly the last :math:`1/(1-\beta)` outer steps, and the run
publishes :math:`\bar\theta` (saved, held-out-checked, returned); the raw last θ is saved too
(``last/`` of the run directory). Because the average lives in the optimizer's state it is
checkpointed, restored and skipped with it (an outer update skipped as non-finite leaves it
as it was), so a resumed run reaches the same average as one that never stopped.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax


class AveragedState(NamedTuple):
    """The wrapped outer optimizer's state and the running average of θ."""

    inner: Any
    average: Any


def check_decay(decay: Any) -> float:
    """``decay`` if it is a number in ``[0, 1)``, else a ValueError naming ``average_theta``."""
    number = isinstance(decay, (int, float)) and not isinstance(decay, bool)
    if not (number and 0 <= decay < 1):
        raise ValueError(f"average_theta={decay!r}: expected a number in [0, 1)")
    return float(decay)


def with_parameter_average(outer_tx: optax.GradientTransformationExtraArgs,
                           decay: float) -> optax.GradientTransformationExtraArgs:
    """``outer_tx`` that also tracks :math:`\\bar\\theta` with ``decay`` β; ``outer_tx`` itself
    when β is 0. The updates are ``outer_tx``'s, unchanged."""
    if check_decay(decay) == 0.0:
        return outer_tx

    def init(params):
        return AveragedState(outer_tx.init(params), params)  # θ̄_0 = θ_0

    def update(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("average_theta needs the parameters in the outer update")
        updates, inner = outer_tx.update(updates, state.inner, params, **extra_args)
        new_params = optax.apply_updates(params, updates)
        average = jax.tree_util.tree_map(lambda a, p: decay * a + (1.0 - decay) * p,
                                         state.average, new_params)
        return updates, AveragedState(inner, average)

    return optax.GradientTransformationExtraArgs(init, update)


def published_theta(opt_state: Any, theta: Any) -> Any:
    """The θ a run publishes: the average when ``opt_state`` keeps one, else ``theta``."""
    return opt_state.average if isinstance(opt_state, AveragedState) else theta
