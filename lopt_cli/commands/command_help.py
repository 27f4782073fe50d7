"""``lopt <command> --help``: the command's own config groups and its composed config.

Hydra's help lists every group of the ``conf`` package, so ``lopt evaluate --help`` would offer
``estimator`` and ``outer_optimizer``, which only meta-training takes. This help lists the
groups the command's defaults list selects from (the same list its one-line errors name), each
with its options and the one chosen now, then the config composed with the overrides given
beside ``--help`` (``lopt meta-train recipe=adam_nominal_wsd --help`` shows that recipe's
config). ``--hydra-help``, ``--cfg`` and ``--info`` stay Hydra's.
"""
from __future__ import annotations

import textwrap

from omegaconf import OmegaConf, open_dict

from lopt_cli.errors import LoptUserError

WIDTH = 100  # columns of the group list


def command_help(command: str, config_name: str, description: str,
                 overrides: list[str]) -> str:
    """The help text of ``lopt <command>`` with ``overrides`` applied (a LoptUserError names a
    bad override, as when running)."""
    from hydra import initialize_config_module
    from hydra.errors import OverrideParseException

    from lopt_cli.commands.validation import (
        CONFIG_MODULE,
        _unparsable,
        command_groups,
        compose_checked,
        expand,
    )

    flags = [word for word in overrides if word.startswith("-")]
    if flags:
        raise LoptUserError(f"unknown flag {flags[0]!r} beside --help; give key=value overrides "
                            "to see the config they compose")
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        groups = command_groups(config_name)
        try:
            combination = expand(overrides)[0]
        except OverrideParseException:
            bad = next((o for o in overrides if _unparsable(o)), overrides[0])
            raise LoptUserError(f"cannot parse override {bad!r}; write key=value "
                                "(e.g. seed=1)") from None
        cfg = compose_checked(config_name, combination, with_hydra=True)
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
    width = max(map(len, groups), default=0)
    lines = [f"usage: lopt {command} [group=option ...] [key=value ...] [--multirun]", "",
             f"{description}.", "", "config groups (group=option; * marks the one in use):"]
    for group, options in groups.items():
        chosen = choices.get(group)
        listed = ", ".join(f"{o}*" if o == chosen else o for o in options)
        lines += textwrap.wrap(listed, WIDTH, initial_indent=f"  {group:<{width}}  ",
                               subsequent_indent=" " * (width + 4), break_on_hyphens=False)
    lines += ["", "config (override any key: key=value; a sweep: key=a,b --multirun):", "",
              OmegaConf.to_yaml(cfg, resolve=False).rstrip(), "",
              "Hydra's own options: --hydra-help; the config resolved: --cfg job"]
    return "\n".join(lines)
