"""Where a meta-training run starts and what it trains: ``init_from`` and ``train_only``.

* ``init_from=<path>``: θ of a saved learned optimizer (a ``learned_optimizer.msgpack``, a run
  directory holding one, ``latest`` or a shipped name) instead of a fresh initialisation. Its
  architecture config must equal the configured ``optimizer`` (same ``_target_`` and
  hyperparameters). ``resume`` wins: a resumed run continues from its checkpoint's θ and
  neither reloads nor re-resolves ``init_from`` (its summary records the value as configured).
  The one difference allowed is ``optimizer.schedule_modulation=true`` on a θ saved without it:
  the schedule's layers are added at their initialisation (:func:`with_added_layers`; its
  output layer is zero), so the run starts from exactly the loaded optimizer. With
  ``train_only=schedule`` this meta-trains a modulation on top of a shipped optimizer.
* ``train_only=rule|schedule``: which part of θ the outer optimizer moves
  (:mod:`lopt_cli.meta.phases`); the optimizer must have layers of that part.

Celo's two phases are then two runs: ``train_only=rule``, then ``train_only=schedule
init_from=<the first run's directory>``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax

from lopt_cli.errors import LoptUserError
from lopt_cli.meta import phases
from lopt_cli.optimizers.base import LearnedOptimizer, MetaParams


def architecture_differences(loaded: LearnedOptimizer, configured: LearnedOptimizer
                             ) -> list[str]:
    """What differs between two learned optimizers: the class, else ``field=loaded value
    (configured: value)`` for each differing field of a dataclass architecture (defaults
    included, so a saved config that leaves a field to its default still matches)."""
    if type(loaded) is not type(configured):
        return [f"{type(loaded).__name__} (configured: {type(configured).__name__})"]
    if not dataclasses.is_dataclass(configured):
        return [] if loaded == configured else ["its settings"]
    return [f"{field.name}={getattr(loaded, field.name)!r} "
            f"(configured: {getattr(configured, field.name)!r})"
            for field in dataclasses.fields(configured)
            if getattr(loaded, field.name) != getattr(configured, field.name)]


def initial_theta(init_from: Any, configured: LearnedOptimizer
                  ) -> tuple[MetaParams | None, Path | None]:
    """``(θ, weights path)`` of the learned optimizer ``init_from`` names (``(None, None)`` when
    it is null); a one-line user error when its architecture is not ``configured``."""
    from lopt_cli.optimizers.storage import load_learned_optimizer, resolve_weights_path

    if init_from is None:
        return None, None
    path = resolve_weights_path(init_from, "init_from").resolve()
    loaded, theta, _ = load_learned_optimizer(path, "init_from")
    if adds_modulation(loaded, configured):
        loaded = dataclasses.replace(loaded, schedule_modulation=True)
        theta = with_added_layers(theta, configured.init(jax.random.PRNGKey(0)))
    differences = architecture_differences(loaded, configured)
    if differences:
        raise LoptUserError(
            f"init_from={init_from}: its optimizer is not the configured one: "
            f"{'; '.join(differences)}; choose the optimizer (and settings) it was trained with")
    return theta, path


def adds_modulation(loaded: LearnedOptimizer, configured: LearnedOptimizer) -> bool:
    """Whether ``configured`` is ``loaded`` with ``schedule_modulation`` switched on."""
    if type(loaded) is not type(configured) or not hasattr(loaded, "schedule_modulation"):
        return False
    return (configured.schedule_modulation and not loaded.schedule_modulation
            and dataclasses.replace(loaded, schedule_modulation=True) == configured)


def with_added_layers(theta: MetaParams, fresh: MetaParams) -> MetaParams:
    """``fresh`` with every layer that ``theta`` has taken from ``theta``: the layers
    ``theta`` lacks keep their initial values. (Called only when :func:`adds_modulation`
    holds, so the shared layers have the same shapes: the loaded θ was checked against its
    own config, which equals the configured one but for the added layers.)"""
    return {**fresh, "params": {**fresh["params"], **theta["params"]}}


def optimizer_name(optimizer_config: dict) -> str:
    """The class name of a configured optimizer (``...SmallLOpt`` -> ``SmallLOpt``)."""
    return str(optimizer_config.get("_target_", "?")).rsplit(".", 1)[-1]


def check_train_only(train_only: str | None, lopt: LearnedOptimizer,
                     optimizer_config: dict) -> None:
    """A one-line user error when ``train_only`` would train nothing of ``lopt``'s θ."""
    if train_only is None:
        return
    theta = jax.eval_shape(lopt.init, jax.random.PRNGKey(0))
    if phases.count_trainable(theta, train_only) == 0:
        prefix = phases.SCHEDULE_PREFIX
        has = "only schedule layers" if train_only == "rule" else "no schedule layers"
        raise LoptUserError(
            f"train_only={train_only}: optimizer {optimizer_name(optimizer_config)} has {has} "
            f"(layers named {prefix}*), so there is nothing to train; use an optimizer with a "
            "learned schedule (and an update rule), or drop train_only")

