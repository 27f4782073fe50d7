"""The meta-train config as typed, validated dataclasses (the only reader of its ``DictConfig``).

:func:`parse_meta_train` turns the composed config into a :class:`MetaTrainConfig`. Every field
declares its type and rule (:func:`positive`, :func:`non_negative`, ...); a value that breaks
one raises a :class:`~lopt_cli.errors.LoptUserError` of one line naming the dotted key and what
is accepted (``compute.num_tasks=0: expected a positive integer``). Rules that relate fields
(``inner.min_horizon <= inner.max_horizon``, ...) are checked by :func:`check_relations`.
The config groups (``task_family``, ``optimizer``, ``estimator``, ``outer_optimizer``) stay
plain ``_target_`` dicts, instantiated by the command.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lopt_cli.errors import LoptUserError

Rule = Callable[[Any], str | None]  # a value -> None if accepted, else what is accepted


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive(value: Any) -> str | None:
    return None if _is_int(value) and value > 0 else "expected a positive integer"


def non_negative(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else "expected an integer >= 0"


def auto_or_non_negative(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value == "auto" else "expected auto or an integer >= 0"
    return non_negative(value)


def _is_finite_number(value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value)


def positive_finite(value: Any) -> str | None:
    return None if _is_finite_number(value) and value > 0 else "expected a finite number > 0"


def non_negative_finite(value: Any) -> str | None:
    return None if _is_finite_number(value) and value >= 0 else "expected a finite number >= 0"


def integer(value: Any) -> str | None:
    return None if _is_int(value) else "expected an integer"


def optional(rule: Rule) -> Rule:
    """``rule``, or null."""
    return lambda value: None if value is None else rule(value)


def one_of(*accepted: Any) -> Rule:
    """Exactly one of ``accepted`` (``True`` and ``1`` kept apart)."""
    names = [str(a).lower() if isinstance(a, bool) else str(a) for a in accepted]
    words = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    return lambda value: None if any(value is a or (type(value) is type(a) and value == a)
                                     for a in accepted) else f"expected {words}"


def anything(value: Any) -> None:
    return None


def path_text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else \
        "expected a learned_optimizer.msgpack, a run directory holding one, latest or a " \
        "shipped name"


def rule(check: Rule, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field validated by ``check`` when parsed."""
    return dataclasses.field(default=default, metadata={"rule": check})


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """``compute``: the budget (``meta_budget`` group) and the hardware (``hardware`` group)."""

    num_outer_steps: int = rule(positive)
    num_tasks: int = rule(positive)
    resample_every: int = rule(positive)
    num_devices: int | str = rule(anything)  # checked by sharding.resolve_num_devices
    distributed: dict = rule(anything)  # checked by distributed.resolve_settings


@dataclasses.dataclass(frozen=True)
class InnerConfig:
    min_horizon: int = rule(positive)
    max_horizon: int = rule(positive)
    valid_every: int = rule(positive)


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    start_max_horizon: int | None = rule(optional(positive))
    steps: int | None = rule(optional(positive))


@dataclasses.dataclass(frozen=True)
class HeldOutConfig:
    """``heldout``; the counts are only checked when the check is on (``every > 0``)."""

    every: int = rule(non_negative)
    num_tasks: int = rule(anything)
    horizon: int = rule(anything)
    num_seeds: int = rule(anything)
    first_id: int = rule(integer)
    task_family: dict | None = rule(anything)  # None: the meta-training family's tasks
    keep_best: bool = rule(one_of(True, False))  # publish the θ of the lowest heldout_loss
    seed: int = rule(non_negative)  # the check's own seed, the same for every run


@dataclasses.dataclass(frozen=True)
class PopulationConfig:
    mix: bool | str = rule(one_of(True, False, "auto"))
    candidates: int = rule(positive)


@dataclasses.dataclass(frozen=True)
class TaskRangeConfig:
    first_id: int = rule(integer)
    count: int = rule(positive)


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Every key of ``conf/meta_train.yaml`` that ``build_job`` reads, typed."""

    seed: int = rule(non_negative)
    checkpoint_every: int | str = rule(auto_or_non_negative)  # auto: see build_job
    max_skipped_updates: int = rule(positive)
    resume: Any = rule(anything)
    meta_loss: str = rule(one_of("valid", "train", "mean"))  # problem.META_LOSSES
    meta_loss_progress_power: float = rule(non_negative_finite)  # problem.progress_weights
    train_only: str | None = rule(optional(one_of("rule", "schedule")))  # null: all of θ
    init_from: str | None = rule(optional(path_text))  # a saved learned optimizer's θ
    average_theta: float = rule(anything)  # checked by averaging.check_decay (0: last θ)
    compute: ComputeConfig = rule(anything)
    inner: InnerConfig = rule(anything)
    curriculum: CurriculumConfig = rule(anything)
    heldout: HeldOutConfig = rule(anything)
    population: PopulationConfig = rule(anything)
    tasks: TaskRangeConfig = rule(anything)
    task_family: dict = rule(anything)
    optimizer: dict = rule(anything)
    estimator: dict = rule(anything)
    outer_optimizer: dict = rule(anything)


def from_mapping(cls: type, data: Any, prefix: str = "") -> Any:
    """``cls`` (a dataclass of :func:`rule` fields) from a plain mapping; nested dataclasses
    are parsed recursively. The first value that breaks its rule raises, naming its key."""
    if not isinstance(data, dict):
        raise LoptUserError(f"{prefix.rstrip('.') or 'config'}={data!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        key = prefix + field.name
        if field.name not in data:
            raise LoptUserError(f"{key} is not set; give it on the command line ({key}=...)")
        value = data[field.name]
        if dataclasses.is_dataclass(hints[field.name]):
            value = from_mapping(hints[field.name], value, key + ".")
        elif (problem := field.metadata["rule"](value)) is not None:
            raise LoptUserError(f"{key}={value!r}: {problem}")
        values[field.name] = value
    return cls(**values)


def check_relations(config: MetaTrainConfig, truncation_length: int) -> None:
    """The rules between fields (each a LoptUserError naming both keys)."""
    inner, heldout, tasks = config.inner, config.heldout, config.tasks
    if inner.min_horizon > inner.max_horizon:
        raise LoptUserError(f"inner.min_horizon={inner.min_horizon} exceeds "
                            f"inner.max_horizon={inner.max_horizon}")
    if truncation_length % inner.valid_every:
        raise LoptUserError(f"estimator.truncation_length={truncation_length} must be a multiple "
                            f"of inner.valid_every={inner.valid_every}")
    start = config.curriculum.start_max_horizon
    if start is not None and start > inner.max_horizon:
        raise LoptUserError(f"curriculum.start_max_horizon={start} exceeds "
                            f"inner.max_horizon={inner.max_horizon}")
    if not heldout.every:
        if heldout.keep_best:
            raise LoptUserError("heldout.keep_best=true selects θ by the held-out check; "
                                "set heldout.every > 0 (or keep_best=false)")
        return
    for name in ("num_tasks", "horizon", "num_seeds"):
        if (problem := positive(getattr(heldout, name))) is not None:
            raise LoptUserError(f"heldout.{name}={getattr(heldout, name)!r}: {problem}")
    if heldout.horizon % inner.valid_every:
        raise LoptUserError(f"heldout.horizon={heldout.horizon} must be a multiple of "
                            f"inner.valid_every={inner.valid_every}")
    seen_end = tasks.first_id + tasks.count
    overlaps = heldout.first_id < seen_end and heldout.first_id + heldout.num_tasks > tasks.first_id
    if heldout.task_family is None and overlaps:  # another family's tasks are unseen anyway
        raise LoptUserError(f"heldout.first_id={heldout.first_id}: held-out task ids must "
                            f"lie outside the seen ids [{tasks.first_id}, {seen_end})")


def parse_meta_train(cfg: DictConfig) -> MetaTrainConfig:
    """The typed config of a composed meta-train ``cfg`` (unknown top-level keys ignored:
    commands that compose ``meta_train`` add their own)."""
    from omegaconf.errors import MissingMandatoryValue

    names = [f.name for f in dataclasses.fields(MetaTrainConfig)]
    try:
        data = {name: OmegaConf.to_container(cfg[name], resolve=True, throw_on_missing=True)
                if OmegaConf.is_config(cfg[name]) else cfg[name] for name in names if name in cfg}
    except MissingMandatoryValue as error:
        key = getattr(error, "full_key", "") or "a value"
        raise LoptUserError(f"{key} is not set; give it on the command line ({key}=...)") from None
    config = from_mapping(MetaTrainConfig, data)
    truncation = config.estimator.get("truncation_length")
    if (problem := positive(truncation)) is not None:
        raise LoptUserError(f"estimator.truncation_length={truncation!r}: {problem}")
    check_relations(config, truncation)
    for group, key in (("outer_optimizer", "learning_rate"), ("estimator", "sigma")):
        value = getattr(config, group).get(key)
        if value is not None and (problem := positive_finite(value)) is not None:
            raise LoptUserError(f"{group}.{key}={value!r}: {problem}")
    return config
