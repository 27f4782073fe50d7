"""The outer loop: sample a population, estimate meta-gradients, update the meta-parameters.

``meta_train`` is a plain function of plain objects. It compiles one truncation per task shape
(``AntitheticES.estimate`` is jitted) and one outer update, and leaves logging, progress bars and
files to the caller through ``on_step``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt_cli.meta.problem import TruncatedProblem
from lopt_cli.optimizers.base import MetaParams
from task_definitions.base import TaskFamily, stack_tasks, with_seed


def make_outer_optimizer(
    learning_rate: float = 3e-3,
    warmup_steps: int = 10,
    total_steps: int | None = None,
    weight_decay: float = 0.0,
    clip_norm: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.99,
) -> optax.GradientTransformationExtraArgs:
    """AdamW with linear warm-up, cosine decay (when ``total_steps`` is known) and clipping."""
    if total_steps:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, max(warmup_steps, 1), max(total_steps, warmup_steps + 1),
            end_value=0.1 * learning_rate,
        )
    else:
        schedule = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
    return optax.with_extra_args_support(optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay),
    ))


def task_key(task_id: int) -> jax.Array:
    """The key that samples task ``task_id`` of a family: the same task on every machine."""
    return jax.random.PRNGKey(task_id)


def sample_population(family: TaskFamily, task_id: int, num_tasks: int):
    """``num_tasks`` tasks of one shape: task ``task_id``'s config, re-seeded per member."""
    config = family.sample(task_key(task_id))
    configs = [with_seed(config, config.seed + i) for i in range(num_tasks)]
    return stack_tasks([family.build(c) for c in configs]), config


class OuterState(NamedTuple):
    theta: MetaParams
    opt_state: Any
    step: int


@dataclasses.dataclass(frozen=True)
class MetaTrainSettings:
    """Budget of a meta-training run (plain values; built from the ``compute`` config)."""

    num_outer_steps: int
    num_tasks: int
    resample_every: int = 50
    seed: int = 0
    first_task_id: int = 0  # meta-training draws task ids from [first, first + count)
    num_task_ids: int = 100_000


def outer_update(outer_tx, grad, opt_state, theta, meta_loss):
    """One step of the outer optimizer; non-finite gradients are zeroed before it."""
    grad = jax.tree_util.tree_map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grad)
    updates, opt_state = outer_tx.update(grad, opt_state, theta, loss=meta_loss)
    grad_norm = optax.tree.norm(grad)
    return optax.apply_updates(theta, updates), opt_state, grad_norm


def meta_train(
    family: TaskFamily,
    problem: TruncatedProblem,
    estimator,
    outer_tx: optax.GradientTransformationExtraArgs,
    settings: MetaTrainSettings,
    on_step: Callable[[int, dict, MetaParams], None] = lambda step, metrics, theta: None,
    theta: MetaParams | None = None,
) -> MetaParams:
    """Meta-trains ``problem.lopt`` and returns the final meta-parameters.

    ``on_step(step, metrics, theta)`` is called after every outer step with host-side floats.
    """
    key = jax.random.PRNGKey(settings.seed)
    key, init_key = jax.random.split(key)
    if theta is None:
        theta = problem.lopt.init(init_key)
    opt_state = outer_tx.init(theta)
    update = jax.jit(outer_update, static_argnums=0)
    tasks = states = None
    for step in range(settings.num_outer_steps):
        step_key = jax.random.fold_in(key, step)
        if step % settings.resample_every == 0:
            task_id = settings.first_task_id + int(
                jax.random.randint(jax.random.fold_in(step_key, 1), (), 0, settings.num_task_ids))
            tasks, _ = sample_population(family, task_id, settings.num_tasks)
            states = estimator.init_states(problem, theta, tasks, jax.random.fold_in(step_key, 2))
        grad, states, metrics = estimator.estimate(problem, theta, tasks, states, step_key)
        theta, opt_state, grad_norm = update(outer_tx, grad, opt_state, theta,
                                             metrics["meta_loss"])
        host = {name: float(value) for name, value in metrics.items()}
        host["grad_norm"] = float(grad_norm)
        on_step(step, host, theta)
    return theta
