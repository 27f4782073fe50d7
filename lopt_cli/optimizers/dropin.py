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
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import optax

from lopt_cli.errors import LoptUserError

OPT_LIST_PREFIX = "opt_list:"


def hand_designed_names() -> list[str]:
    """Names of the registered hand-designed optimizers (``adam``, ``adam8p``, ``nadamw``, ...)."""
    from lopt_cli.optimizers.registry import LEARNED_OPTIMIZERS, OPTIMIZERS

    return sorted(name for name in OPTIMIZERS if name not in LEARNED_OPTIMIZERS)


def shipped_names() -> list[str]:
    """Names of the learned optimizers shipped in ``lopt_cli/pretrained/``."""
    from lopt_cli.optimizers.storage import PRETRAINED_DIR, WEIGHTS_FILE

    return sorted(p.parent.name for p in PRETRAINED_DIR.glob(f"*/{WEIGHTS_FILE}"))


def load_optimizer(
    source: str | os.PathLike, num_steps: int
) -> optax.GradientTransformationExtraArgs:
    """An optimizer for a training run of ``num_steps`` steps, from ``source``.

    Args:
      source: one of
        * a learned optimizer: a ``learned_optimizer.msgpack`` file (with its
          ``learned_optimizer.yaml`` beside it), a run directory holding one, ``"latest"`` (the
          newest under ``outputs/``), or the name of a shipped one (``lopt_cli/pretrained/``);
        * a hand-designed optimizer by name, at its defaults: ``"adam"``, ``"sgd"``,
          ``"adam8p"``, ``"nadamw"``;
        * ``"opt_list:K"``: the K-th NAdamW setting of the learned ``opt_list``.
        An existing path wins over a name.
      num_steps: the horizon, a positive int.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` accepts ``loss=`` and
      ``valid_loss=``.

    Raises:
      LoptUserError: an unknown source, a broken or incompatible file, a bad ``num_steps``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise LoptUserError(f"load_optimizer: num_steps={num_steps!r} must be a positive int")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if text == "latest" or path.exists():
        return _learned(text, num_steps)
    if text in hand_designed_names():
        return _hand_designed(text, num_steps)
    if text.startswith(OPT_LIST_PREFIX):
        return _from_opt_list(text, num_steps)
    if text in shipped_names():
        return _learned(text, num_steps)
    raise LoptUserError(
        f"load_optimizer: unknown optimizer source {text!r}: no such file or directory. Give a "
        "learned_optimizer.msgpack file, a run directory holding one, 'latest', a shipped name "
        f"({', '.join(shipped_names()) or 'none shipped'}), a hand-designed optimizer "
        f"({', '.join(hand_designed_names())}) or opt_list:<index>")


def _learned(source: str, num_steps: int) -> optax.GradientTransformationExtraArgs:
    from lopt_cli.optimizers.storage import load_learned_optimizer

    lopt, theta, _ = load_learned_optimizer(source)
    return lopt.transform(theta, num_steps)


def _hand_designed(name: str, num_steps: int) -> optax.GradientTransformationExtraArgs:
    from lopt_cli.optimizers.registry import OPTIMIZERS

    factory = OPTIMIZERS[name]
    try:
        accepts_horizon = "num_steps" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepts_horizon = False
    return factory(num_steps=num_steps) if accepts_horizon else factory()


def _from_opt_list(text: str, num_steps: int) -> optax.GradientTransformationExtraArgs:
    from lopt_cli.optimizers.opt_list import opt_list

    index = text.removeprefix(OPT_LIST_PREFIX)
    if not index.isdigit():
        raise LoptUserError(f"load_optimizer: {text!r}: expected opt_list:<index>, e.g. opt_list:0")
    return opt_list(int(index), num_steps)
