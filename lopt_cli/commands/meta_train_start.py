"""Where a meta-training run starts and what it trains: ``init_from`` and ``train_only``.

* ``init_from=<path>``: θ of a saved learned optimizer (a ``learned_optimizer.msgpack``, a run
  directory holding one, ``latest`` or a shipped name) instead of a fresh initialisation. Its
  architecture config must equal the configured ``optimizer`` (same ``_target_`` and
  hyperparameters). ``resume`` wins: a resumed run continues from its checkpoint's θ.
* ``train_only=rule|schedule``: which part of θ the outer optimizer moves
  (:mod:`lopt_cli.meta.phases`); the optimizer must have layers of that part.

Celo's two phases are then two runs: ``train_only=rule``, then ``train_only=schedule
init_from=<the first run's directory>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from lopt_cli.errors import LoptUserError
from lopt_cli.meta import phases
from lopt_cli.optimizers.base import LearnedOptimizer, MetaParams

MISSING = "unset"


def config_differences(loaded: dict, configured: dict) -> list[str]:
    """``key=loaded value (configured: value)`` for every key whose values differ."""
    keys = list(dict.fromkeys([*loaded, *configured]))
    return [f"{key}={loaded.get(key, MISSING)!r} (configured: {configured.get(key, MISSING)!r})"
            for key in keys if loaded.get(key, MISSING) != configured.get(key, MISSING)]


def initial_theta(init_from: Any, optimizer_config: dict
                  ) -> tuple[MetaParams | None, Path | None]:
    """``(θ, weights path)`` of the learned optimizer ``init_from`` names (``(None, None)`` when
    it is null); a one-line user error when its architecture is not the configured one."""
    from lopt_cli.optimizers.storage import load_learned_optimizer, resolve_weights_path

    if init_from is None:
        return None, None
    path = resolve_weights_path(init_from, "init_from").resolve()
    _, theta, loaded = load_learned_optimizer(path, "init_from")
    differences = config_differences(loaded, optimizer_config)
    if differences:
        raise LoptUserError(
            f"init_from={init_from}: its optimizer is not the configured one: "
            f"{'; '.join(differences)}; choose the optimizer (and settings) it was trained with")
    return theta, path


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

