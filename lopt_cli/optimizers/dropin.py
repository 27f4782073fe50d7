"""``load_optimizer(source, num_steps)``: any lopt optimizer as a drop-in optax optimizer.

The result is an ``optax.GradientTransformationExtraArgs``: use it like ``optax.adam`` in an
ordinary training loop, and pass the current training loss (learned optimizers may read it)::

    import lopt_cli

    opt = lopt_cli.load_optimizer("outputs/meta-train/2025-01-01_12-00-00_000000", 1000)
    state = opt.init(params)
    for step in range(1000):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = opt.update(grads, state, params, loss=loss)
        params = optax.apply_updates(params, updates)

``num_steps`` is the training horizon: learned optimizers see their progress through it, and
the schedules of hand-designed ones (Adam8p, NAdamW, opt_list entries) decay over it.
``load_optimizer("default", num_steps)`` is the recommended shipped learned optimizer
(``lopt_cli/pretrained/DEFAULT`` names it). ``learning_rate=`` overrides the base learning rate
of an optimizer that has one (a learned architecture with a ``learning_rate`` field, Adam, SGD,
Adam8p, NAdamW); for any other it is a one-line error.

A learned optimizer loaded here is guarded (:func:`skip_nonfinite_steps`): a step whose update
has a non-finite entry (a NaN or infinite gradient, or one whose square overflows float32,
|g| or |p| above about 1e19) is skipped, the parameters and the optimizer's state left as they
were, and counted in ``state.skipped``; complex parameters are refused in one line.
"""
from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt_cli.errors import LoptUserError

OPT_LIST_PREFIX = "opt_list:"
LEARNING_RATE_FIELD = "learning_rate"  # the base-lr hyperparameter of a learned architecture


def hand_designed_names() -> list[str]:
    """Names of the registered hand-designed optimizers (``adam``, ``adam8p``, ``nadamw``, ...)."""
    from lopt_cli.optimizers.registry import LEARNED_OPTIMIZERS, OPTIMIZERS

    return sorted(name for name in OPTIMIZERS if name not in LEARNED_OPTIMIZERS)


def shipped_names() -> list[str]:
    """Names of the learned optimizers shipped in ``lopt_cli/pretrained/``."""
    from lopt_cli.optimizers.storage import shipped_names as names

    return names()


def load_optimizer(
    source: str | os.PathLike, num_steps: int, learning_rate: float | None = None,
    schedule: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """An optimizer for a training run of ``num_steps`` steps, from ``source``.

    Args:
      source: one of
        * a learned optimizer: a ``learned_optimizer.msgpack`` file (with its
          ``learned_optimizer.yaml`` beside it), a run directory holding one, ``"latest"`` (the
          newest under ``outputs/``), the name of a shipped one (``lopt_cli/pretrained/``),
          or ``"default"``, the recommended shipped one;
        * a hand-designed optimizer by name, at its defaults: ``"adam"``, ``"sgd"``,
          ``"adam8p"``, ``"nadamw"``, ``"muon"`` (Muon on matrices, NAdam elsewhere);
        * ``"opt_list:K"``: the K-th NAdamW setting of the learned ``opt_list``.
        An existing path wins over a name.
      num_steps: the horizon, a positive int (Python's or numpy's).
      learning_rate: ``None`` (the optimizer's own), or a positive number (Python's, numpy's or
        a concrete 0-d array) replacing the base learning rate of an optimizer that has one;
        not a schedule function (``schedule`` picks a supplied schedule).
      schedule: ``None`` (the optimizer's own), or another supplied learning-rate schedule
        (``"constant"``, ``"cosine"``, ``"warmup_cosine"``, ``"warmup_stable_decay"``,
        ``"warmup_stable_sqrt_decay"``) for a
        learned optimizer meta-trained with a supplied one (such as the default): the schedule
        is outside θ, so it can be swapped; a learned schedule cannot.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` accepts ``loss=`` and
      ``valid_loss=``.

    Raises:
      LoptUserError: an unknown source, a broken or incompatible file, a bad ``num_steps`` or
        ``learning_rate``, a ``learning_rate`` for an optimizer without one.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise LoptUserError(f"load_optimizer: num_steps={num_steps!r} must be a positive int")
    num_steps = int(num_steps)  # numpy's integers too
    learning_rate = _checked_learning_rate(learning_rate)
    text = os.fspath(source)
    kind = source_kind(text)
    if kind != "learned" and schedule is not None:
        raise LoptUserError(f"load_optimizer: {text!r} takes no schedule (only a learned "
                            "optimizer with a supplied schedule does); leave schedule=None")
    if kind == "hand-designed":
        return _hand_designed(text, num_steps, learning_rate)
    if kind == "opt_list":
        _refuse_learning_rate(repr(text), learning_rate)
        return _from_opt_list(text, num_steps)
    return _learned(text, num_steps, learning_rate, schedule)


def source_kind(source: str | os.PathLike) -> str:
    """What ``source`` names: ``"learned"`` (an existing path, ``latest``, ``default`` or a
    shipped name; an existing path wins over a name), ``"hand-designed"`` or ``"opt_list"``;
    a one-line user error for anything else."""
    from lopt_cli.optimizers.storage import DEFAULT_SOURCE

    text = os.fspath(source)
    if text in ("latest", DEFAULT_SOURCE) or Path(text).expanduser().exists():
        return "learned"
    if text in hand_designed_names():
        return "hand-designed"
    if text.startswith(OPT_LIST_PREFIX):
        return "opt_list"
    if text in shipped_names():
        return "learned"
    raise LoptUserError(
        f"load_optimizer: unknown optimizer source {text!r}: no such file or directory. Give a "
        f"learned_optimizer.msgpack file, a run directory holding one, 'latest', "
        f"'{DEFAULT_SOURCE}', a shipped name ({', '.join(shipped_names()) or 'none shipped'}), "
        f"a hand-designed optimizer ({', '.join(hand_designed_names())}) or opt_list:<index>")


def takes_learning_rate(source: str | os.PathLike) -> bool:
    """Whether ``load_optimizer(source, n, learning_rate=...)`` accepts a learning rate."""
    from lopt_cli.optimizers.registry import OPTIMIZERS
    from lopt_cli.optimizers.storage import load_learned_optimizer

    text = os.fspath(source)
    kind = source_kind(text)
    if kind == "hand-designed":
        return _accepts(OPTIMIZERS[text], "learning_rate")
    if kind == "opt_list":
        return False
    return has_learning_rate(load_learned_optimizer(text)[0])


def has_learning_rate(lopt) -> bool:
    """Whether a learned architecture (a dataclass) has a base-learning-rate field."""
    return dataclasses.is_dataclass(lopt) and any(
        f.name == LEARNING_RATE_FIELD for f in dataclasses.fields(lopt))


def _checked_learning_rate(learning_rate) -> float | None:
    """``learning_rate`` as a float (a Python or numpy number, or a concrete 0-d array), or
    ``None``; a one-line user error for anything else."""
    if learning_rate is None:
        return None
    if callable(learning_rate):
        raise LoptUserError("load_optimizer: learning_rate is a function; give a number, the "
                            "base rate (a learned optimizer applies its own schedule to it: "
                            "schedule=... picks another supplied one)")
    is_scalar_array = (isinstance(learning_rate, (jax.Array, np.ndarray))
                       and learning_rate.ndim == 0
                       and (jnp.issubdtype(learning_rate.dtype, jnp.floating)
                            or jnp.issubdtype(learning_rate.dtype, jnp.integer))
                       and not isinstance(learning_rate, jax.core.Tracer))
    if isinstance(learning_rate, bool) or not (
            isinstance(learning_rate, numbers.Real) or is_scalar_array) or not (
            0 < float(learning_rate) < float("inf")):
        raise LoptUserError(f"load_optimizer: learning_rate={learning_rate!r} must be a "
                            "positive finite number or None")
    return float(learning_rate)


def _refuse_learning_rate(what: str, learning_rate) -> None:
    if learning_rate is not None:
        raise LoptUserError(f"load_optimizer: {what} takes no learning_rate (it has no base "
                            "learning rate); leave learning_rate=None")


def _learned(source: str, num_steps: int, learning_rate: float | None = None,
             schedule: str | None = None) -> optax.GradientTransformationExtraArgs:
    from lopt_cli.optimizers.storage import load_learned_optimizer

    lopt, theta, _ = load_learned_optimizer(source)
    if learning_rate is not None:
        if not has_learning_rate(lopt):
            _refuse_learning_rate(f"{source!r} ({type(lopt).__name__})", learning_rate)
        lopt = dataclasses.replace(lopt, **{LEARNING_RATE_FIELD: float(learning_rate)})
    if schedule is not None:
        lopt = with_supplied_schedule(lopt, schedule, f"{source!r} ({type(lopt).__name__})")
    return skip_nonfinite_steps(lopt.transform(theta, num_steps))


def with_supplied_schedule(lopt, schedule, what: str):
    """``lopt`` with its supplied schedule replaced by ``schedule`` (another supplied one).
    θ does not change: a supplied schedule has no layers. A one-line user error when ``lopt``
    has no schedule, learns its own (its layers are part of θ) or ``schedule`` is unknown."""
    from lopt_cli.optimizers.schedule import SCHEDULES

    supplied = [name for name in SCHEDULES if name != "learned"]
    if schedule not in supplied:
        raise LoptUserError(f"load_optimizer: schedule={schedule!r} is not a supplied schedule; "
                            f"choose one of {', '.join(supplied)}")
    own = getattr(lopt, "schedule", None) if dataclasses.is_dataclass(lopt) else None
    if own is None:
        raise LoptUserError(f"load_optimizer: {what} has no learning-rate schedule; leave "
                            "schedule=None")
    if own == "learned":
        raise LoptUserError(f"load_optimizer: {what} learns its schedule (part of its weights); "
                            "it cannot be replaced, leave schedule=None")
    return dataclasses.replace(lopt, schedule=schedule)


class GuardedState(NamedTuple):
    """State of :func:`skip_nonfinite_steps`: the wrapped optimizer's and the skip count."""

    inner: Any
    skipped: jax.Array  # int32: steps skipped for a non-finite update


def skip_nonfinite_steps(
    opt: optax.GradientTransformationExtraArgs,
) -> optax.GradientTransformationExtraArgs:
    """``opt`` with a step whose update has a NaN or infinite entry replaced by a zero update
    that leaves ``opt``'s state unchanged (its step count included). A finite step is exactly
    ``opt``'s. ``init`` refuses complex parameters (learned optimizers read real features)."""

    def init(params: optax.Params) -> GuardedState:
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            if jnp.iscomplexobj(leaf):
                raise LoptUserError(
                    f"load_optimizer: parameter {jax.tree_util.keystr(path) or 'root'} is "
                    f"{jnp.result_type(leaf)}; learned optimizers take real parameters (split "
                    "real and imaginary parts into two tensors)")
        return GuardedState(opt.init(params), jnp.zeros((), jnp.int32))

    def update(updates, state: GuardedState, params=None, **extra_args):
        new_updates, inner = opt.update(updates, state.inner, params, **extra_args)
        checks = [jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(new_updates)
                  if jnp.issubdtype(jnp.result_type(u), jnp.inexact)]
        finite = jnp.all(jnp.stack(checks)) if checks else jnp.array(True)
        new_updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
        inner = optax.tree.where(finite, inner, state.inner)
        return new_updates, GuardedState(inner, state.skipped + (~finite).astype(jnp.int32))

    return optax.GradientTransformationExtraArgs(init, update)


def _accepts(factory, argument: str) -> bool:
    try:
        return argument in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _hand_designed(name: str, num_steps: int,
                   learning_rate: float | None = None) -> optax.GradientTransformationExtraArgs:
    from lopt_cli.optimizers.registry import OPTIMIZERS

    factory = OPTIMIZERS[name]
    kwargs = {"num_steps": num_steps} if _accepts(factory, "num_steps") else {}
    if learning_rate is not None:
        if not _accepts(factory, "learning_rate"):
            _refuse_learning_rate(repr(name), learning_rate)
        kwargs["learning_rate"] = float(learning_rate)
    return factory(**kwargs)


def _from_opt_list(text: str, num_steps: int) -> optax.GradientTransformationExtraArgs:
    from lopt_cli.optimizers.opt_list import opt_list

    index = text.removeprefix(OPT_LIST_PREFIX)
    if not index.isdigit():
        raise LoptUserError(f"load_optimizer: {text!r}: expected opt_list:<index>, e.g. opt_list:0")
    return opt_list(int(index), num_steps)
