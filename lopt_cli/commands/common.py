"""What every command shares: config-to-object builders, the run directory, error guard."""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.storage import instantiate_plain


def configure_jax() -> None:
    """Persistent compilation cache under the user's cache directory (opt out: LOPT_JAX_CACHE=)."""
    import logging

    import jax

    for noisy in ("jax._src.xla_bridge", "absl", "tensorflow_datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cache = os.environ.get("LOPT_JAX_CACHE", str(Path.home() / ".cache" / "lopt" / "jax"))
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def plain(node: Any) -> Any:
    """A config node as plain Python containers, interpolations resolved."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    return node


def build(node: DictConfig, what: str) -> Any:
    """Instantiates a config-group node (``_target_`` + arguments) as a plain object; any
    exception raised by the target (a user's own factory included) becomes one line."""
    try:
        return instantiate_plain(plain(node))
    except LoptUserError as error:
        raise LoptUserError(f"{what}: {error}") from None
    except MissingMandatoryValue as error:
        key = getattr(error, "full_key", "") or what
        raise LoptUserError(f"{key} is not set; give it on the command line ({key}=...)") from None
    except Exception as error:  # noqa: BLE001 - code behind a _target_, often the user's
        target = OmegaConf.select(node, "_target_", default="?") if isinstance(node, DictConfig) \
            else "?"
        raise LoptUserError(f"{what}: _target_ {target} raised {one_line(error)}") from None


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def positive_finite(cfg: DictConfig, key: str) -> float:
    """``cfg[key]`` as a finite float > 0, or a LoptUserError naming the key."""
    import math

    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise LoptUserError(f"{key}={value!r}: expected a finite number > 0")
    return float(value)


def build_family(node: DictConfig) -> Any:
    """The ``task_family`` node as a TaskFamily; a single user Task is wrapped into one."""
    from task_definitions.base import as_family

    try:
        return as_family(build(node, "task_family"))
    except TypeError as error:
        raise LoptUserError(f"task_family: {error}") from None


def probe_family(family: Any, task_id: int) -> None:
    """Builds task ``task_id`` (and, for a mixture, one task of every member) so that a task
    that cannot be built — a missing dataset, a bad argument — fails before any output."""
    import jax

    members = [family, *(member for _, member in getattr(family, "families", ()))]
    for member in members:
        try:
            member.build(member.sample(jax.random.PRNGKey(task_id)))
        except LoptUserError:
            raise
        except Exception as error:  # noqa: BLE001 - a user's task code may raise anything
            name = getattr(member, "name", type(member).__name__)
            raise LoptUserError(f"task_family {name}: cannot build task #{task_id}: "
                                f"{one_line(error)}") from None


def positive_int(cfg: DictConfig, key: str) -> int:
    """``cfg[key]`` as an int > 0, or a LoptUserError naming the key."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LoptUserError(f"{key}={value!r}: expected a positive integer")
    return value


def run_dir() -> Path:
    """The Hydra run (or sweep job) directory of the current command."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def guarded(run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turns a LoptUserError raised while running into one line on stderr and exit status 2."""

    @functools.wraps(run)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return run(cfg)
        except LoptUserError as error:
            print(f"lopt: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
