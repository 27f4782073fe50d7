r"""The paper's implicit-regularisation probe on :math:`f(x, y) = \tfrac12 (x - y)^2`.

Every point of the line :math:`x = y` is a minimum. Gradient descent and Adam move along the
gradient :math:`(x - y)(1, -1)`, perpendicular to the line, and stop where they meet it; an
optimizer that also shrinks the parameters drifts toward the origin, the minimum-norm solution.
We train from a fan of starting points and report each optimizer's mean final distance to the
origin, :math:`\lVert (x_T, y_T) \rVert`, next to the plain projection's
:math:`|x_0 + y_0| / \sqrt 2`.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt_cli.optimizers.baselines import adam_with_lr
from task_definitions.base import stack_tasks
from task_definitions.functions2d import ImplicitRegularizationConfig, build_functions2d, fan_points


def fan_tasks(num_points: int, radius: float, angles: tuple):
    """The stacked ½(x−y)² tasks started at ``num_points`` points of the fan."""
    starts = fan_points(num_points, tuple(angles), radius)
    configs = [ImplicitRegularizationConfig(function="diagonal", scale=1.0, noise=0.0,
                                            init_jitter=0.0, seed=i, start=tuple(p))
               for i, p in enumerate(starts)]
    return stack_tasks([build_functions2d(c) for c in configs]), np.asarray(starts)


def trajectory(task, opt: optax.GradientTransformationExtraArgs, steps: int) -> jax.Array:
    """Parameters ``(x, y)`` after each of ``steps`` updates, the start included: ``[steps+1, 2]``."""
    params = task.init(jax.random.PRNGKey(0))

    def step(carry, key):
        params, state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, task.sample_batch(key, "train"), key)
        updates, state = opt.update(grads, state, params, loss=loss)
        params = optax.apply_updates(params, updates)
        return (params, state), params["xy"]

    keys = jax.random.split(jax.random.PRNGKey(1), steps)
    _, path = jax.lax.scan(step, (params, opt.init(params)), keys)
    return jnp.concatenate([params["xy"][None], path])


@functools.partial(jax.jit, static_argnames=("lopt", "steps"))
def learned_trajectories(lopt, theta, tasks, steps: int) -> jax.Array:
    opt = lopt.transform(theta, steps)
    return jax.vmap(lambda t: trajectory(t, opt, steps))(tasks)


@functools.partial(jax.jit, static_argnames=("steps",))
def adam_trajectories(learning_rates: jax.Array, tasks, steps: int) -> jax.Array:
    """``[rate, point, step, 2]``."""
    return jax.vmap(lambda lr: jax.vmap(lambda t: trajectory(t, adam_with_lr(lr), steps))(
        tasks))(learning_rates)


def final_loss(paths: np.ndarray) -> np.ndarray:
    """½(x−y)² at the end of each path (``[..., steps, 2]`` → ``[...]``)."""
    end = paths[..., -1, :]
    return 0.5 * (end[..., 0] - end[..., 1]) ** 2


def run_probe(lopt, theta, num_points: int, radius: float, angles, steps: int,
              adam_rates) -> dict:
    """Paths and distances for the learned optimizer and Adam (rate chosen by final loss)."""
    tasks, starts = fan_tasks(num_points, radius, angles)
    learned = np.asarray(learned_trajectories(lopt, theta, tasks, steps))
    adam_all = np.asarray(adam_trajectories(jnp.asarray(adam_rates, jnp.float32), tasks, steps))
    losses = np.nan_to_num(final_loss(adam_all).mean(axis=1), nan=np.inf)
    best = int(np.argmin(losses))
    adam = adam_all[best]
    projection = np.abs(starts.sum(axis=1)) / math.sqrt(2.0)

    def distances(paths):
        return np.linalg.norm(paths[:, -1, :], axis=1)

    return {
        "starts": starts.tolist(),
        "adam_learning_rate": float(adam_rates[best]),
        "paths": {"learned": learned.tolist(), "adam": adam.tolist()},
        "mean_final_distance": {"learned": float(np.nanmean(distances(learned))),
                                "adam": float(np.nanmean(distances(adam))),
                                "projection onto x = y": float(projection.mean())},
        "mean_final_loss": {"learned": float(np.nanmean(final_loss(learned))),
                            "adam": float(np.nanmean(final_loss(adam)))},
    }
