"""Checks a command line against the real configs before Hydra runs it.

Every override (each value of a sweep too) is composed with Hydra's compose API; Hydra's
multi-line errors become one line naming the bad value and what is accepted, and the
command's own ``check(cfg)`` then builds its objects to catch bad values and missing files.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from lopt_cli.errors import LoptUserError

CONFIG_MODULE = "conf"
MAX_CHECKED_COMBINATIONS = 16


def group_options(group: str) -> list[str]:
    loader = GlobalHydra.instance().config_loader()
    return sorted(loader.get_group_options(group))


def command_groups(config_name: str) -> dict[str, list[str]]:
    """The config groups a command's defaults list selects from, with their options (from the
    composed config's ``hydra.runtime.choices``; Hydra's own ``hydra/...`` groups left out)."""
    choices = compose(config_name, return_hydra_config=True).hydra.runtime.choices
    return {group: group_options(group) for group in sorted(choices)
            if "@" not in group and not group.startswith("hydra/")}


def missing_group_message(config_name: str, group: str, value: str,
                          groups: dict[str, list[str]] | None = None) -> str:
    """One line for ``group=value`` given to a command whose config has no such group
    (``groups``: the command's, when already composed)."""
    groups = command_groups(config_name) if groups is None else groups
    command = config_name.replace("_", "-")
    takes = ", ".join(f"{name}={'|'.join(options)}" for name, options in groups.items())
    guesses = [f"{name}={value}" for name, options in groups.items() if value in options]
    hint = f" (did you mean {' or '.join(guesses)}?)" if guesses else ""
    return f"`lopt {command}` does not take {group}{hint}; its config groups: {takes or 'none'}"


def all_group_configs(group: str) -> dict[str, dict]:
    """Every option of a config group, composed alone (no command's primary config: a third
    less time) and resolved, as plain dicts."""
    def compose_all() -> dict[str, dict]:
        return {name: OmegaConf.to_container(
            compose(None, overrides=[f"+{group}={name}"])[group], resolve=True)
            for name in group_options(group)}

    if GlobalHydra.instance().is_initialized():  # inside a running command
        return compose_all()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return compose_all()


def override_key(override_text: str) -> str:
    """``optimizer.bogus`` of ``+optimizer.bogus=1`` (Hydra's ``+``/``~`` prefixes dropped)."""
    return override_text.split("=", 1)[0].lstrip("+~")


def explain(error: Exception, override_text: str, config_name: str,
            context: list[str] | None = None) -> str:
    """One line for a Hydra composition error caused by ``override_text``; an unknown key is
    shown beside the keys its node has under the ``context`` overrides (the command's other
    ones: ``optimizer=adam_nominal optimizer.bogus=1`` lists ``adam_nominal``'s keys)."""
    key = override_key(override_text)
    value = override_text.split("=", 1)[1] if "=" in override_text else ""
    loader = GlobalHydra.instance().config_loader()
    if key in loader.list_groups(""):
        groups = command_groups(config_name)
        if key not in groups:
            return missing_group_message(config_name, key, value, groups)
        options = ", ".join(group_options(key))
        return f"unknown option {value!r} for {key}; choose one of: {options}"
    if isinstance(error, OverrideParseException):
        return f"cannot parse override {override_text!r}; write key=value (e.g. seed=1)"
    cfg = _composed_or_none(config_name, context or []) or compose(config_name)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    known = ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else "none"
    where = f"in {parent}" if parent else "at the top level"
    return f"unknown key {key!r} in override {override_text!r}; keys {where}: {known}"


def expand(overrides: list[str]) -> list[list[str]]:
    """Single-valued override lists covering every value of every sweep (a bounded subset)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            choices.append([text])
    longest = max((len(c) for c in choices), default=1)
    rows = [[c[min(i, len(c) - 1)] for c in choices] for i in range(longest)]
    return rows[:MAX_CHECKED_COMBINATIONS] or [[]]


def compose_checked(config_name: str, overrides: list[str], with_hydra: bool = False
                    ) -> DictConfig:
    """Composes (``with_hydra``: the ``hydra`` node too), turning Hydra's errors into a
    LoptUserError naming the bad override."""
    try:
        return compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as error:
        culprit, others = find_culprit(config_name, overrides)
        raise LoptUserError(explain(error, culprit, config_name, others)) from None


def find_culprit(config_name: str, overrides: list[str]) -> tuple[str, list[str]]:
    """The override that breaks a composition, and the others: the first whose removal lets
    the rest compose (values before group choices: in ``optimizer=adam_nominal
    optimizer.hidden_sizes=[8]`` the key is the culprit, not the choice), else the first that
    fails alone, else the last (``others`` then empty)."""
    groups = set(GlobalHydra.instance().config_loader().list_groups(""))
    is_choice = [override_key(o) in groups for o in overrides]
    for i in sorted(range(len(overrides)), key=lambda i: is_choice[i]):
        others = overrides[:i] + overrides[i + 1:]
        if _composed_or_none(config_name, others) is not None:
            return overrides[i], others
    alone = (o for o in overrides if _composed_or_none(config_name, [o]) is None)
    return next(alone, overrides[-1]), []


def _composed_or_none(config_name: str, overrides: list[str]) -> DictConfig | None:
    try:
        return compose(config_name, overrides=overrides)
    except Exception:  # noqa: BLE001 - any failure: it does not compose
        return None


def validate_overrides(
    config_name: str, argv: list[str], check: Callable[[DictConfig], None]
) -> None:
    """Raises LoptUserError for the first bad flag, override or value in ``argv``, or for a
    run directory that cannot be created."""
    args, unknown = get_args_parser().parse_known_args(argv)
    flags = [arg for arg in unknown if arg.startswith("-")]
    if unknown:
        bad = flags[0] if flags else unknown[0]
        raise LoptUserError(f"unknown flag {bad!r}; lopt takes key=value overrides and the flags "
                            "--multirun (-m), --help (-h), --cfg job, --info")
    overrides = list(args.overrides)
    check_run_directory(overrides, multirun=bool(args.multirun))
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        try:
            combinations = expand(overrides)
        except OverrideParseException:
            bad = next(o for o in overrides if _unparsable(o))
            raise LoptUserError(
                f"cannot parse override {bad!r}; write key=value (e.g. seed=1)"
            ) from None
        for combination in combinations:
            cfg = compose_checked(config_name, combination)
            check_seed(cfg)
            check(cfg)


def check_seed(cfg: DictConfig) -> None:
    """Every command's ``seed``, when it has one, is a non-negative integer."""
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LoptUserError(f"seed={seed!r}: expected a non-negative integer")


def check_run_directory(overrides: list[str], multirun: bool) -> None:
    """A one-line error when the run directory's nearest existing ancestor is not a writable
    directory (a path through a regular file, a read-only file system)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == key]
    target = Path(given[-1] if given and "${" not in given[-1] else "outputs").expanduser()
    ancestor = target.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LoptUserError(f"cannot create the run directory {str(target)!r}: {ancestor} is a "
                            f"file, not a directory; choose another {key}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LoptUserError(f"cannot create the run directory {str(target)!r}: {ancestor} is not "
                            f"writable; choose another {key} (e.g. {key}=/tmp/lopt-run)")


def _unparsable(override: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([override])
        return False
    except OverrideParseException:
        return True


__all__ = ["validate_overrides"]
