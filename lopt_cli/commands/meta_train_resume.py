"""Which run ``lopt meta-train resume=...`` continues, and the config it continues with.

``resume=<run dir>`` names the run; ``resume=true`` (or ``latest``) the run in
``hydra.run.dir``, or this command's newest resumable run under ``outputs/``. A resumed run keeps
the config it was started with (``<run dir>/.hydra/config.yaml``): overrides given with it must
agree, and recipe keys added since it started take their defaults. The one exception is where it
runs: ``compute.num_devices`` (or ``hardware=...``) given with a resume replaces the saved value,
so a run can continue on another device count (for example ``compute.num_devices=1`` after a hang
with host devices); the maths is the same, its float rounding may differ.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lopt_cli.commands.common import run_dir
from lopt_cli.commands.meta_train_config import MetaTrainConfig
from lopt_cli.errors import LoptUserError

# Top-level keys build_job reads; a resumed run takes them from the run's saved config.
JOB_KEYS = tuple(field.name for field in dataclasses.fields(MetaTrainConfig))
# Nested keys added since runs were first written; a resumed older run gets their defaults.
ADDED_NESTED_KEYS = ("heldout.task_family", "heldout.keep_best")
# Where the run runs, not what it computes: a resume may change them (given on its command line).
HARDWARE_KEYS = ("compute.num_devices",)
HARDWARE_GROUP = "hardware"
_MISSING = object()


def _hydra_overrides() -> list[str]:
    """The command line's overrides, when running under Hydra (none in the pre-run check)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def resume_directory(cfg: DictConfig) -> Path | None:
    """The run directory a ``resume`` value names (None: fresh run, or not known yet)."""
    value = cfg.get("resume")
    if value is None or value is False:
        return None
    if value is True or value == "latest":  # Hydra's: hydra.run.dir, or the newest resumable
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None  # the pre-run check: known once Hydra has resolved it
        path = run_dir()
        if not (path / ".hydra" / "config.yaml").is_file():
            _discard_if_empty(path)
            raise LoptUserError(f"resume={value}: no resumable run under {path.parent}; pass "
                                "resume=<run dir>")
    else:
        path = Path(str(value)).expanduser()
    if not (path / ".hydra" / "config.yaml").is_file():
        raise LoptUserError(f"resume={value}: not a run directory (no .hydra/config.yaml "
                            "there); give the directory of the run to continue")
    if not any(path.glob("**/checkpoint.msgpack")):
        raise LoptUserError(f"resume={value}: no checkpoint.msgpack in {path}; nothing to resume "
                            "(runs write one every checkpoint_every outer steps)")
    return path


def _discard_if_empty(path: Path) -> None:
    """Removes a directory Hydra just made for nothing (at most empty log files in it)."""
    entries = list(path.iterdir()) if path.is_dir() else []
    if all(e.is_file() and e.suffix == ".log" and e.stat().st_size == 0 for e in entries):
        for entry in entries:
            entry.unlink()
        for folder in (path, path.parent, path.parent.parent):  # outputs/<command>/<run>
            try:
                folder.rmdir()
            except OSError:  # not empty: stop
                break


def _value(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def resumed_config(cfg: DictConfig, directory: Path) -> DictConfig:
    """The config ``directory``'s run was started with; overrides must agree with it."""
    saved = OmegaConf.load(directory / ".hydra" / "config.yaml")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overridden = [o.key_or_group.lstrip("+~") for o in
                  OverridesParser.create().parse_overrides(_hydra_overrides())]
    own_keys = [k for k in cfg if k not in JOB_KEYS]  # read by the command itself
    for key in dict.fromkeys(overridden + own_keys):
        if key in ("resume", HARDWARE_GROUP, *HARDWARE_KEYS) or key.startswith(
                ("hydra", "compute.distributed")):
            continue
        ours, theirs = _value(OmegaConf.select(cfg, key)), _value(OmegaConf.select(saved, key))
        if ours != theirs:
            fix = "drop the override" if key in overridden else f"pass {key}={theirs}"
            raise LoptUserError(f"resume: the run in {directory} has {key}={theirs!r}, not "
                                f"{ours!r}; a resumed run keeps the config it was started with "
                                f"({fix})")
    OmegaConf.set_struct(saved, False)
    saved.resume = cfg.resume
    if HARDWARE_GROUP in overridden or any(key in overridden for key in HARDWARE_KEYS):
        for key in HARDWARE_KEYS:
            OmegaConf.update(saved, key, _value(OmegaConf.select(cfg, key)), force_add=True)
    for key in JOB_KEYS:  # keys added since the run started: their defaults (not overridden)
        if key not in saved and key in cfg:
            saved[key] = cfg[key]
    for key in ADDED_NESTED_KEYS:
        if OmegaConf.select(saved, key, default=_MISSING) is _MISSING:
            OmegaConf.update(saved, key, _value(OmegaConf.select(cfg, key)), force_add=True)
    if OmegaConf.select(saved, "heldout.seed", default=_MISSING) is _MISSING:
        # before heldout.seed existed, the check used the run's seed: keep measuring on those
        OmegaConf.update(saved, "heldout.seed", saved.seed, force_add=True)
    return saved
