"""Config instantiation: a plain ``{"_target_": "pkg.mod.Name", **kwargs}`` dict to an object.

A utility at the bottom of the layers (beside :mod:`lopt_cli.errors` and :mod:`lopt_cli.io`):
the commands build their objects with it and :mod:`lopt_cli.optimizers.storage` rebuilds a saved
learned optimizer from its ``learned_optimizer.yaml``. No ``DictConfig`` here: callers pass
plain containers.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any

from lopt_cli.errors import LoptUserError


def import_object(dotted: str) -> Any:
    """The object at ``package.module.Name`` (LoptUserError, one line, if there is none)."""
    module_name, _, attribute = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LoptUserError(f"cannot import _target_ {dotted!r} ({reason})") from None


def instantiate_plain(config: dict) -> Any:
    """Calls ``config['_target_']`` with the other entries; nested ``_target_`` dicts are
    instantiated first and lists become tuples (hashable configs can be static jit arguments).
    With ``_partial_: true`` the result is the target with those arguments bound (a factory)."""
    kwargs = {k: _instantiate_nested(v) for k, v in config.items()
              if k not in ("_target_", "_partial_")}
    target = import_object(str(config.get("_target_")))
    if config.get("_partial_") is True:
        return functools.partial(target, **kwargs)
    try:
        return target(**kwargs)
    except TypeError as error:
        raise LoptUserError(f"bad arguments for {config['_target_']}: {error}") from None


def _instantiate_nested(value: Any) -> Any:
    if isinstance(value, dict):
        if "_target_" in value:
            return instantiate_plain(value)
        return {k: _instantiate_nested(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_instantiate_nested(v) for v in value)
    return value
