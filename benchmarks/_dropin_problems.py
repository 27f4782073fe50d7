"""Held-out problems for :mod:`benchmarks.dropin_check`, written in plain JAX + optax.

Nothing here uses the project's task code: each problem is its own tiny MLP (a list of
``{"w", "b"}`` layers) on synthetic data made by a random *teacher* MLP, so that the problems
are what a user would bring, not what the learned optimizers were meta-trained on.

* classification: ``x ~ N(0, 1)``, labels ``argmax`` of the teacher's logits (10% of them
  replaced by random labels), softmax cross-entropy;
* regression: targets the teacher's output plus 0.1 noise, standardised, then
  ``y · target_scale + target_offset``; mean squared error (unnormalised: in the targets' units).

The model sees ``x · input_scale``; its layers are LeCun-normal times ``init_scale``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

LABEL_NOISE = 0.1
TEACHER_WIDTH = 32


class Problem(NamedTuple):
    """One held-out problem (``num_classes=0``: regression)."""

    name: str
    num_train: int = 256
    num_test: int = 512
    in_dim: int = 16
    hidden: tuple[int, ...] = (32,)
    num_classes: int = 4
    input_scale: float = 1.0
    target_scale: float = 1.0
    target_offset: float = 0.0
    init_scale: float = 1.0
    activation: str = "relu"
    batch_size: int = 64  # full batch when num_train <= batch_size
    seed: int = 0

    @property
    def kind(self) -> str:
        return "classify" if self.num_classes else "regress"


def default_problems() -> list[Problem]:
    """The problem set: each varies one thing from a plain small classifier or regressor."""
    clf, reg = Problem("clf"), Problem("reg", in_dim=8, num_classes=0)
    return [
        clf,
        clf._replace(name="clf inputs x1e-3", input_scale=1e-3),
        clf._replace(name="clf inputs x1e3", input_scale=1e3),
        clf._replace(name="clf deep 4x8 tanh", hidden=(8, 8, 8, 8), activation="tanh"),
        clf._replace(name="clf wide 256", hidden=(256,)),
        clf._replace(name="clf 32 examples", num_train=32, batch_size=32),
        clf._replace(name="clf init x100", init_scale=100.0),
        clf._replace(name="clf init x0.01", init_scale=0.01, hidden=(32, 32)),
        reg,
        reg._replace(name="reg y~3000+-1000", target_scale=1e3, target_offset=3e3),
        reg._replace(name="reg inputs x1e-3", input_scale=1e-3),
        reg._replace(name="reg inputs x1e3", input_scale=1e3),
        reg._replace(name="reg 32 examples", num_train=32, batch_size=32),
        reg._replace(name="reg init x100", init_scale=100.0),
        reg._replace(name="reg linear y~1e3", hidden=(), target_scale=1e3),
        reg._replace(name="reg deep 3x16 tanh", hidden=(16, 16, 16), activation="tanh"),
    ]


def quick_problems() -> list[Problem]:
    """Two problems for the smoke test."""
    return [Problem("clf", num_train=64, num_test=64),
            Problem("reg", in_dim=8, num_classes=0, num_train=64, num_test=64)]


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"relu": jax.nn.relu,
                                                            "tanh": jnp.tanh}


def init_mlp(key: jax.Array, sizes: list[int], scale: float = 1.0) -> list[dict]:
    """Layers ``sizes[i] → sizes[i+1]``, LeCun-normal weights times ``scale``, zero biases."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": scale * jax.random.normal(k, (a, b)) / jnp.sqrt(a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def apply_mlp(params: list[dict], x: jax.Array, activation: str = "relu") -> jax.Array:
    for layer in params[:-1]:
        x = ACTIVATIONS[activation](x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


class Data(NamedTuple):
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def make_data(problem: Problem) -> Data:
    """Training and test sets of ``problem`` (deterministic in its seed)."""
    key_teacher, key_x, key_noise, key_flip = jax.random.split(jax.random.key(problem.seed), 4)
    total = problem.num_train + problem.num_test
    x = jax.random.normal(key_x, (total, problem.in_dim))
    out_dim = problem.num_classes or 1
    teacher = init_mlp(key_teacher, [problem.in_dim, TEACHER_WIDTH, out_dim])
    out = apply_mlp(teacher, x, "tanh")
    if problem.num_classes:
        random_labels = jax.random.randint(key_flip, (total,), 0, problem.num_classes)
        flip = jax.random.uniform(key_noise, (total,)) < LABEL_NOISE
        y = jnp.where(flip, random_labels, jnp.argmax(out, axis=-1))
    else:
        y = out[:, 0] + 0.1 * jax.random.normal(key_noise, (total,))
        y = (y - y.mean()) / y.std() * problem.target_scale + problem.target_offset
    x = x * problem.input_scale
    n = problem.num_train
    return Data(x[:n], y[:n], x[n:], y[n:])


def loss_fn(problem: Problem) -> Callable:
    """``loss(params, x, y)``: mean cross-entropy or mean squared error."""

    def loss(params, x, y):
        out = apply_mlp(params, x, problem.activation)
        if problem.num_classes:
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        return jnp.mean(jnp.square(out[:, 0] - y))

    return loss


def init_params(problem: Problem) -> list[dict]:
    sizes = [problem.in_dim, *problem.hidden, problem.num_classes or 1]
    return init_mlp(jax.random.key(problem.seed + 1), sizes, problem.init_scale)


def train_curve(problem: Problem, data: Data, make_opt: Callable[..., optax.GradientTransformation],
                num_steps: int) -> Callable:
    """A jitted ``run(*opt_args) -> (train_curve, test_loss)``: ``num_steps`` steps of
    ``make_opt(*opt_args)`` from the problem's initial parameters (minibatches of
    ``batch_size`` unless the training set is smaller); ``train_curve[t]`` is the full
    training-set loss after step ``t``; ``test_loss`` is at the end. The optimizer gets
    ``loss=`` (the minibatch loss) as learned optimizers may read it. ``vmap`` it over a
    traced learning rate to train several at once."""
    loss = loss_fn(problem)
    full_batch = problem.num_train <= problem.batch_size

    def run(*opt_args):
        opt = optax.with_extra_args_support(make_opt(*opt_args))
        params = init_params(problem)

        def step(carry, key):
            params, state = carry
            if full_batch:
                xb, yb = data.x_train, data.y_train
            else:
                idx = jax.random.randint(key, (problem.batch_size,), 0, problem.num_train)
                xb, yb = data.x_train[idx], data.y_train[idx]
            value, grads = jax.value_and_grad(loss)(params, xb, yb)
            updates, state = opt.update(grads, state, params, loss=value)
            params = optax.apply_updates(params, updates)
            return (params, state), loss(params, data.x_train, data.y_train)

        keys = jax.random.split(jax.random.key(problem.seed + 2), num_steps)
        (params, _), curve = jax.lax.scan(step, (params, opt.init(params)), keys)
        return curve, loss(params, data.x_test, data.y_test)

    return jax.jit(run)


def describe(problem: Problem) -> str:
    """One line: kind, data size, architecture and the scales that differ from 1."""
    arch = "-".join(str(v) for v in (problem.in_dim, *problem.hidden,
                                     problem.num_classes or 1))
    parts = [problem.kind, f"n={problem.num_train}", f"mlp {arch} {problem.activation}"]
    for label, value, neutral in (("x scale", problem.input_scale, 1.0),
                                  ("y scale", problem.target_scale, 1.0),
                                  ("y offset", problem.target_offset, 0.0),
                                  ("init scale", problem.init_scale, 1.0)):
        if value != neutral:
            parts.append(f"{label} {value:g}")
    return ", ".join(parts)
