r"""``ademamix``: Adam with a slow momentum mixed in (Pagliardini et al. 2024, arXiv 2409.03137).

.. math::
    \theta \leftarrow \theta - \eta\,\frac{\hat m_1 + \alpha_t m_3}{\sqrt{\hat v} + \epsilon},
    \qquad m_3 \leftarrow \beta_3 m_3 + (1 - \beta_3) g,

with :math:`\alpha_t` warmed up linearly from 0 over the first half of the horizon (the paper
warms it over the whole run) and :math:`\beta_3 = 0.999`, the paper's choice for short runs.
optax's implementation (``optax.contrib.ademamix``) with those schedules, its moments in
float32 and each step cast back to its parameter's dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers.base import accepting_extra_args


def _float32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def ademamix(learning_rate: float = 1e-3, num_steps: int = 1000, b3: float = 0.999,
             alpha: float = 5.0) -> optax.GradientTransformationExtraArgs:
    """AdEMAMix at a constant ``learning_rate``, :math:`\\alpha` warmed up over ``num_steps``/2."""
    alpha_schedule = optax.linear_schedule(0.0, alpha, max(num_steps // 2, 1))
    inner = optax.contrib.ademamix(learning_rate, b3=b3, alpha=alpha_schedule)

    def init(params):
        return inner.init(_float32(params))

    def update(grads, state, params=None):
        steps, state = inner.update(_float32(grads), state,
                                    None if params is None else _float32(params))
        return jax.tree.map(lambda s, g: s.astype(jnp.result_type(g)), steps, grads), state

    return accepting_extra_args(optax.GradientTransformation(init, update))
