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

import lopt_cli.commands.resolvers  # noqa: F401  (registers the configs' resolvers)
from lopt_cli.commands import meta_train_config as rules
from lopt_cli.config import instantiate_plain
from lopt_cli.errors import LoptUserError, one_line
from lopt_cli.interrupt import RunStopped, in_parallel_sweep, sweep_stopped


def configure_jax() -> None:
    """Persistent compilation cache under the user's cache directory (opt out: LOPT_JAX_CACHE=),
    for every program (``LOPT_JAX_CACHE_MIN_SECONDS``, default 0: a lopt run compiles dozens of
    programs of 0.01-1 s, JAX's default floor of 1 s caches hardly any of them)."""
    import logging

    import jax

    for noisy in ("jax._src.xla_bridge", "absl", "tensorflow_datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from lopt_cli.evaluation.cache_contents import compile_cache_dir

    cache = compile_cache_dir()
    if cache is not None:
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          cache_min_seconds(os.environ.get("LOPT_JAX_CACHE_MIN_SECONDS", "0")))


def cache_min_seconds(text: str) -> float:
    """``LOPT_JAX_CACHE_MIN_SECONDS`` as a number of seconds ≥ 0 (a one-line error if not)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0.0:
        raise LoptUserError(f"LOPT_JAX_CACHE_MIN_SECONDS={text!r}: expected a number of "
                            "seconds >= 0 (programs compiled faster are not cached)")
    return seconds


def plain(node: Any) -> Any:
    """A config node as plain Python containers, interpolations resolved."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    return node


def build(node: DictConfig | dict, what: str) -> Any:
    """Instantiates a config-group node or plain dict (``_target_`` + arguments); any
    exception raised by the target (a user's own factory included) becomes one line."""
    try:
        return instantiate_plain(plain(node))
    except LoptUserError as error:
        raise LoptUserError(f"{what}: {error}") from None
    except MissingMandatoryValue as error:
        key = getattr(error, "full_key", "") or what
        raise LoptUserError(f"{key} is not set; give it on the command line ({key}=...)") from None
    except Exception as error:  # noqa: BLE001 - code behind a _target_, often the user's
        target = plain(node).get("_target_", "?") if isinstance(node, (DictConfig, dict)) \
            else "?"
        raise LoptUserError(f"{what}: _target_ {target} raised {one_line(error)}") from None


def build_family(node: DictConfig) -> Any:
    """The ``task_family`` node as a TaskFamily; a single user Task is wrapped into one."""
    from task_definitions.base import as_family

    try:
        return as_family(build(node, "task_family"))
    except TypeError as error:
        raise LoptUserError(f"task_family: {error}") from None


def probe_family(family: Any, task_id: int) -> Any:
    """Builds task ``task_id`` (and, for a mixture, one task of every member) so that a task
    that cannot be built — a missing dataset, a bad argument — fails before any output;
    returns the family's task ``task_id``."""
    from task_definitions.task_ids import task_key

    members = [family, *(member for _, member in getattr(family, "families", ()))]
    built = []
    for member in members:
        try:
            built.append(member.build(member.sample(task_key(task_id))))
        except LoptUserError:
            raise
        except Exception as error:  # noqa: BLE001 - a user's task code may raise anything
            name = getattr(member, "name", type(member).__name__)
            raise LoptUserError(f"task_family {name}: cannot build task #{task_id}: "
                                f"{one_line(error)}") from None
    return built[0]


def checked(cfg: DictConfig, key: str, rule) -> Any:
    """``cfg[key]`` if ``rule`` (a :mod:`~lopt_cli.commands.meta_train_config` rule) accepts it,
    else a LoptUserError naming the key and what is accepted."""
    value = OmegaConf.select(cfg, key)
    problem = rule(value)
    if problem:
        raise LoptUserError(f"{key}={value!r}: {problem}")
    return value


def positive_int(cfg: DictConfig, key: str) -> int:
    """``cfg[key]`` as an int > 0, or a LoptUserError naming the key."""
    return checked(cfg, key, rules.positive)


def positive_finite(cfg: DictConfig, key: str) -> float:
    """``cfg[key]`` as a finite float > 0, or a LoptUserError naming the key."""
    return float(checked(cfg, key, rules.positive_finite))


def run_dir() -> Path:
    """The Hydra run (or sweep job) directory of the current command."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def job_dir_suffix() -> str:
    """``": <this job's run directory>"`` inside a Hydra job, else ``""``."""
    from hydra.core.hydra_config import HydraConfig

    return f": {run_dir()}" if HydraConfig.initialized() else ""


def guarded(run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turns a LoptUserError raised while running into one line on stderr and exit status 2,
    and a stop on request (:class:`~lopt_cli.interrupt.RunStopped`) or a Ctrl-C into one line
    and exit status 130, without a traceback. In a job of a parallel sweep a stop returns
    instead (the sweep's process exits 130 once every job has stopped), and a job the stopped
    sweep had not started yet does not start."""

    @functools.wraps(run)
    def wrapper(cfg: DictConfig) -> Any:
        if sweep_stopped():  # a job of a parallel sweep asked to stop before it started
            print(f"lopt: not started, the sweep was asked to stop{job_dir_suffix()}",
                  file=sys.stderr)
            return None
        try:
            return run(cfg)
        except LoptUserError as error:
            print(f"lopt: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        except RunStopped as stop:
            print(f"lopt: {stop}", file=sys.stderr)
            if in_parallel_sweep():  # returns, so the sweep waits for its other jobs' stops
                return None
            raise SystemExit(RunStopped.exit_code) from None
        except KeyboardInterrupt:
            print("lopt: interrupted", file=sys.stderr)
            raise SystemExit(RunStopped.exit_code) from None

    return wrapper
