"""The OmegaConf resolvers lopt's configs use, registered once on import.

* ``${lopt_run_dir:<resume>,<fresh dir>}`` (``hydra.run.dir``, conf/hydra/output/lopt.yaml): the
  run ``resume`` names (``true``/``latest``: this command's newest resumable run), else the fresh
  directory. Commands without ``resume`` always get the fresh one.
* ``${lopt_hydra_subdir:<resume>}``: a resumed run keeps the ``.hydra/`` of its first start.
* ``${lopt_task_ids:<range>}``: the first id of a reserved task-id range
  (:data:`task_definitions.task_ids.TASK_ID_RANGES`: seen, unseen, tuning, opt_list).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from task_definitions.task_ids import first_task_id


def latest_resumable(root: Path) -> Path | None:
    """The run directory under ``root`` with the newest checkpoint, if any."""
    checkpoints = [(c.stat().st_mtime, run) for run in root.glob("*")
                   if (run / ".hydra" / "config.yaml").is_file()
                   for c in run.glob("**/checkpoint.msgpack")]
    return max(checkpoints)[1] if checkpoints else None


def run_dir_resolver(resume: Any, fresh: str) -> str:
    """``hydra.run.dir``: the run ``resume`` names (``true``: this command's newest resumable
    run), else the ``fresh`` directory."""
    if resume is True or resume == "latest":
        return str(latest_resumable(Path(fresh).parent) or fresh)
    return fresh if resume is None or resume is False else str(resume)


def hydra_subdir_resolver(resume: Any) -> str | None:
    """A resumed run keeps the ``.hydra/`` of its first start (its config of record)."""
    return None if resume else ".hydra"


OmegaConf.register_new_resolver("lopt_run_dir", run_dir_resolver, replace=True)
OmegaConf.register_new_resolver("lopt_hydra_subdir", hydra_subdir_resolver, replace=True)
OmegaConf.register_new_resolver("lopt_task_ids", first_task_id, replace=True)
