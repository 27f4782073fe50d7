r"""Hand-designed baselines, as ``optax.GradientTransformationExtraArgs`` that accept (and
ignore) ``loss=`` and ``valid_loss=``.

*AdamLR* (Metz et al. 2020): Adam whose learning rate is tuned per task on a log grid,

.. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
    \quad \Delta p_t = -\eta\, \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}.

The evaluator vmaps :func:`adam_with_lr` over :func:`adam_lr_grid` inside one jit::

    rates = jnp.asarray(adam_lr_grid())
    curves = jax.vmap(lambda lr: train(adam_with_lr(lr)))(rates)

*Adam8p* (:func:`adam8p`, sampled by :func:`sample_adam8p`) and *NAdamW* with warm-up and cosine
decay (:func:`nadamw`, sampled by :func:`sample_nadamw`; the family of the learned ``opt_list``,
:mod:`lopt_cli.optimizers.opt_list`) follow the TaskSet paper (Metz et al. 2020, "Using a thousand
optimization tasks to learn hyperparameter search strategies"). All their hyperparameters may be
traced, and their schedules read a step counter kept in the optimizer state, so a search over
sampled settings is one vmapped jit::

    hparams = sample_nadamw(np.random.default_rng(0), 32)
    curves = jax.vmap(lambda h: train(nadamw(**h, num_steps=T)))(hparams)
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.base import accepting_extra_args


def adam(
    learning_rate: float | jax.Array = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    """Adam (``optax.adam``) accepting ``loss=`` / ``valid_loss=``; every argument may be traced."""
    return accepting_extra_args(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


def adam_with_lr(learning_rate: float | jax.Array) -> optax.GradientTransformationExtraArgs:
    """Adam with default betas and a (possibly traced, e.g. vmapped) learning rate."""
    return adam(learning_rate)


def adam_lr_grid(min_lr: float = 1e-4, max_lr: float = 1e-1, num: int = 7) -> np.ndarray:
    """``num`` learning rates spaced evenly in log between ``min_lr`` and ``max_lr`` (float32).

    >>> adam_lr_grid(1e-3, 1e-1, 3)
    array([0.001, 0.01 , 0.1  ], dtype=float32)
    """
    if not 0 < min_lr <= max_lr or num < 1:
        raise LoptUserError(
            f"adam_lr_grid: need 0 < min_lr <= max_lr and num >= 1, got min_lr={min_lr}, "
            f"max_lr={max_lr}, num={num}")
    return np.geomspace(min_lr, max_lr, num).astype(np.float32)


def sgd(learning_rate: float | jax.Array = 1e-2) -> optax.GradientTransformationExtraArgs:
    r"""Plain SGD, :math:`\Delta p = -\eta g`, accepting ``loss=`` / ``valid_loss=``."""
    return accepting_extra_args(optax.sgd(learning_rate))


# ------------------------------------------------------------------ Adam8p

#: Reference horizon of TaskSet's schedules: decay rates are per step of a 10k-step run.
REFERENCE_STEPS = 10_000

#: Log-uniform ranges of Adam8p's "wide grid" (TaskSet, ``adam8p_wide_grid``); β's as 1 − β.
ADAM8P_RANGES = {
    "learning_rate": (1e-8, 1e1),
    "one_minus_b1": (1e-4, 1e0),
    "one_minus_b2": (1e-6, 1e0),
    "eps": (1e-10, 1e3),
    "l1": (1e-8, 1e1),
    "l2": (1e-8, 1e1),
    "linear_decay": (1e-7, 1e-4),
    "exponential_decay": (1e-6, 1e-3),
}


def add_l1_l2(l1: float | jax.Array, l2: float | jax.Array) -> optax.GradientTransformation:
    r"""Adds the gradient of :math:`l_1\|p\|_1 + l_2\|p\|_2^2`: :math:`g + l_1 \mathrm{sign}(p)
    + 2 l_2 p` (the penalty is on the loss, so it also enters Adam's moments)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("add_l1_l2 needs params")
        updates = jax.tree.map(
            lambda g, p: (g + l1 * jnp.sign(p) + 2.0 * l2 * p).astype(jnp.result_type(g)),
            updates, params)
        return updates, state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def adam8p_factor(count: jax.Array, linear_decay, exponential_decay, num_steps) -> jax.Array:
    r"""Learning-rate multiplier at step ``count``: with :math:`s = 10^4\, t / T`,
    :math:`\max(1 - \text{linear\_decay}\cdot s, 0)\cdot \exp(-\text{exponential\_decay}\cdot s)`."""
    s = REFERENCE_STEPS * jnp.asarray(count, jnp.float32) / jnp.asarray(num_steps, jnp.float32)
    return jnp.maximum(1.0 - linear_decay * s, 0.0) * jnp.exp(-exponential_decay * s)


def adam8p(
    learning_rate: float | jax.Array = 1e-3,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    l1: float | jax.Array = 0.0,
    l2: float | jax.Array = 0.0,
    linear_decay: float | jax.Array = 0.0,
    exponential_decay: float | jax.Array = 0.0,
    num_steps: int | jax.Array = REFERENCE_STEPS,
) -> optax.GradientTransformationExtraArgs:
    r"""*Adam8p* (TaskSet, Metz et al. 2020): Adam with L1/L2 penalties and a decaying rate.

    .. math::

        g_t &= \nabla f(p_t) + l_1 \operatorname{sign}(p_t) + 2 l_2 p_t \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        s &= 10^4\, t / T, \qquad
        \eta_t = \eta \cdot \max(1 - \lambda_\text{lin}\, s,\, 0) \cdot e^{-\lambda_\text{exp}\, s} \\
        \Delta p_t &= -\eta_t\, \frac{\hat m_t}{\sqrt{\hat v_t + 10^{-10}} + \epsilon}

    with bias-corrected :math:`\hat m_t, \hat v_t` and :math:`t = 0, 1, \ldots` the step. The
    decay rates are per step of a 10k-step run (the paper's meta-training horizon), rescaled to the
    actual horizon ``num_steps`` = :math:`T`. Every argument may be traced, so a vmapped search
    over :func:`sample_adam8p` draws is one jit::

        hp = sample_adam8p(np.random.default_rng(0), 16)
        finals = jax.vmap(lambda h: train(adam8p(**h, num_steps=T)))(hp)
    """
    schedule = functools.partial(adam8p_factor, linear_decay=linear_decay,
                                 exponential_decay=exponential_decay, num_steps=num_steps)
    return accepting_extra_args(optax.chain(
        add_l1_l2(l1, l2),
        optax.scale_by_adam(b1, b2, eps, eps_root=1e-10),
        optax.scale_by_schedule(lambda count: -learning_rate * schedule(count)),
    ))


def sample_adam8p(key_or_rng, num: int) -> dict[str, np.ndarray]:
    """``num`` Adam8p settings (float32 arrays keyed like :func:`adam8p`'s arguments), every
    hyperparameter drawn log-uniformly from :data:`ADAM8P_RANGES` (β's via 1 − β).

    ``key_or_rng``: a ``numpy.random.Generator``, an int seed or a JAX key.
    """
    rng = as_generator(key_or_rng)
    draw = {name: log_uniform_array(rng, low, high, num)
            for name, (low, high) in ADAM8P_RANGES.items()}
    draw["b1"] = 1.0 - draw.pop("one_minus_b1")
    draw["b2"] = 1.0 - draw.pop("one_minus_b2")
    order = ("learning_rate", "b1", "b2", "eps", "l1", "l2", "linear_decay", "exponential_decay")
    return {name: draw[name].astype(np.float32) for name in order}


# ------------------------------------------------------------------ NAdamW (opt_list)


class NAdamWState(NamedTuple):
    """``count``: int32 steps taken; ``mu``, ``nu``: float32 moments shaped like the params."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def nadamw_learning_rate(count, num_steps, learning_rate, warmup_fraction, constant_fraction,
                         min_learning_rate_mult) -> jax.Array:
    r"""TaskSet's warm-up + constant + cosine schedule at step ``count`` (all may be traced).

    With :math:`s = \min(t, T)`, :math:`C = cT` (``constant_fraction``),
    :math:`W = T\min(w, c)` (``warmup_fraction``) and :math:`\eta_\min = r\eta`:

    .. math::

        \eta_t = \begin{cases} \eta\, s / W & s < W \\
        \eta_\min + (\eta - \eta_\min)\, \tfrac12\big(1 + \cos\frac{\pi\,(\max(s, C) - C)}{T - C}
        \big) & \text{otherwise.} \end{cases}
    """
    total = jnp.asarray(num_steps, jnp.float32)
    s = jnp.minimum(jnp.asarray(count, jnp.float32), total)
    constant = total * constant_fraction
    warmup = total * jnp.minimum(warmup_fraction, constant_fraction)
    min_lr = learning_rate * min_learning_rate_mult
    phase = (jnp.maximum(s, constant) - constant) / jnp.maximum(total - constant, 1.0)
    decayed = min_lr + (learning_rate - min_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * phase))
    warming = learning_rate * s / jnp.maximum(warmup, 1e-12)
    return jnp.where(s < warmup, warming, decayed)


def nadamw(
    learning_rate: float | jax.Array = 1e-3,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    weight_decay: float | jax.Array = 0.0,
    l2_weight_decay: float | jax.Array = 0.0,
    nesterov: float | jax.Array = 1.0,
    warmup_fraction: float | jax.Array = 0.0,
    constant_fraction: float | jax.Array = 0.0,
    min_learning_rate_mult: float | jax.Array = 0.0,
    num_steps: int | jax.Array = REFERENCE_STEPS,
) -> optax.GradientTransformationExtraArgs:
    r"""*NAdamW* with warm-up and cosine decay: the optimizer family of TaskSet's ``opt_list``.

    .. math::

        g_t &= \nabla f(p_t) + \lambda_2 p_t \qquad (\text{L2, enters the moments}) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2\\
        \tilde m_t &= m_t + \nu\,\big(\beta_1 m_t + (1-\beta_1) g_t - m_t\big)
            \qquad (\nu = \text{nesterov} \in \{0, 1\}) \\
        \alpha_t &= \eta_t \sqrt{1 - \beta_2^{t+1}} / (1 - \beta_1^{t+1}) \\
        \Delta p_t &= -\alpha_t \big(\tilde m_t / (\sqrt{v_t} + \hat\epsilon) + \lambda_w p_t\big)
            \qquad (\lambda_w = \text{weight\_decay, AdamW style})

    with :math:`\eta_t` from :func:`nadamw_learning_rate` over the horizon ``num_steps`` and
    :math:`\hat\epsilon` the "epsilon hat" of Kingma & Ba (added to the uncorrected
    :math:`\sqrt{v_t}`). ``nesterov`` is a number so that it too can be traced and vmapped.
    Moments are kept in float32 whatever the parameter dtype; every argument may be traced.
    """

    def init(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
        return NAdamWState(jnp.zeros((), jnp.int32), zeros, zeros)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("nadamw needs params (for weight decay)")
        t = jnp.asarray(state.count + 1, jnp.float32)
        rate = nadamw_learning_rate(state.count, num_steps, learning_rate, warmup_fraction,
                                    constant_fraction, min_learning_rate_mult)
        alpha = rate * jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)

        def regularised(g, p):
            return jnp.asarray(g, jnp.float32) + l2_weight_decay * jnp.asarray(p, jnp.float32)

        def step(g, p, mu, nu):
            p32 = jnp.asarray(p, jnp.float32)
            ahead = mu + nesterov * (b1 * mu + (1.0 - b1) * regularised(g, p) - mu)
            delta = -alpha * (ahead / (jnp.sqrt(nu) + eps) + weight_decay * p32)
            return delta.astype(jnp.result_type(p))

        mu = jax.tree.map(lambda g, p, m: b1 * m + (1.0 - b1) * regularised(g, p),
                          updates, params, state.mu)
        nu = jax.tree.map(lambda g, p, v: b2 * v + (1.0 - b2) * jnp.square(regularised(g, p)),
                          updates, params, state.nu)
        steps = jax.tree.map(step, updates, params, mu, nu)
        count = optax.safe_int32_increment(state.count)
        return steps, NAdamWState(count, mu, nu)

    return optax.GradientTransformationExtraArgs(init, update)


def sample_nadamw(key_or_rng, num: int) -> dict[str, np.ndarray]:
    """``num`` NAdamW settings from TaskSet's ``nadamw_grid`` (float32 arrays keyed like
    :func:`nadamw`'s arguments, without ``num_steps``).

    Log-uniform: learning rate in [1e-5, 1], 1 − β1 in [1e-3, 1], 1 − β2 in [1e-5, 1],
    ε̂ in [1e-8, 1e4]; Nesterov with probability ½; weight decay in one of three equally likely
    modes (AdamW only, L2 only, both), each rate in [1e-5, 1e-1]; with probability ½ a warm-up
    fraction in [1e-5, 1e-1] (else none); with probability ½ cosine decay to zero, else to a
    multiple in [1e-5, 1] of the rate; the constant fraction uniform in [0, 1].

    ``key_or_rng``: a ``numpy.random.Generator``, an int seed or a JAX key.
    """
    rng = as_generator(key_or_rng)

    def log_u(low, high):
        return log_uniform_array(rng, low, high, num)

    def sometimes(probability, values):
        return np.where(rng.uniform(size=num) < probability, values, 0.0)

    mode = rng.integers(0, 3, size=num)  # 0: AdamW only, 1: L2 only, 2: both
    out = {
        "learning_rate": log_u(1e-5, 1e0),
        "b1": 1.0 - log_u(1e-3, 1e0),
        "b2": 1.0 - log_u(1e-5, 1e0),
        "eps": log_u(1e-8, 1e4),
        "weight_decay": np.where(mode != 1, log_u(1e-5, 1e-1), 0.0),
        "l2_weight_decay": np.where(mode != 0, log_u(1e-5, 1e-1), 0.0),
        "nesterov": (rng.uniform(size=num) < 0.5).astype(np.float64),
        "warmup_fraction": sometimes(0.5, log_u(1e-5, 1e-1)),
        "min_learning_rate_mult": sometimes(0.5, log_u(1e-5, 1e0)),
        "constant_fraction": rng.uniform(0.0, 1.0, size=num),
    }
    return {name: np.asarray(value, np.float32) for name, value in out.items()}


# ------------------------------------------------------------------ sampling helpers


def as_generator(key_or_rng) -> np.random.Generator:
    """A NumPy generator from a generator (returned as is), an int seed or a JAX key."""
    if isinstance(key_or_rng, np.random.Generator):
        return key_or_rng
    from task_definitions.sampling import generator_from_key

    return generator_from_key(key_or_rng)


def log_uniform_array(rng: np.random.Generator, low: float, high: float, num: int) -> np.ndarray:
    """``num`` float64 values drawn log-uniformly from ``[low, high]``."""
    return np.exp(rng.uniform(np.log(low), np.log(high), size=num))
