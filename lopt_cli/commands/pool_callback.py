"""After ``lopt evaluate benchmark=... seed=0,1,2 --multirun``: one leaderboard over the draws.

A benchmark sweep whose only swept override is the evaluation ``seed`` measures the same
optimizers on several draws of seeds; when its last job has finished, this Hydra callback pools
them into ``<sweep dir>/pooled/`` (:mod:`lopt_cli.scripts.pool_draws`, the same files as
``python -m lopt_cli.scripts.pool_draws <sweep dir> --out <sweep dir>/pooled``) and prints the
pooled headline. Any other sweep is left alone. A draw that cannot be pooled (a job without
its summary, candidates that changed between draws) leaves one line saying why and the sweep's
own results untouched.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lopt_cli.scripts.pool_draws import POOLED_DIR


def swept_keys(overrides: list[str]) -> dict[str, list]:
    """``{key: values}`` of the overrides that sweep (``seed=0,1,2``, ``range(3)``, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {o.key_or_group: list(o.sweep_iterator()) for o in parsed if o.is_sweep_override()}


def pools(config: DictConfig) -> bool:
    """Whether a finished sweep is one to pool: a benchmark evaluation whose only swept
    override is ``seed``, over two or more values."""
    if config.get("benchmark") is None or config.get("mode", "comparison") != "comparison":
        return False
    swept = swept_keys(config.hydra.overrides.task)
    return list(swept) == ["seed"] and len(set(map(str, swept["seed"]))) >= 2


class PoolSeedDraws(Callback):
    """Pools a finished seed-only benchmark sweep (see the module's docstring)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not pools(config):
            return
        pool_sweep(Path(config.hydra.sweep.dir))


def pool_sweep(sweep: Path) -> Path | None:
    """Writes ``sweep/pooled/`` from the sweep's finished jobs and prints its headline; on a
    sweep that cannot be pooled prints one line instead. Returns the pooled directory."""
    from lopt_cli.console import output_console
    from lopt_cli.errors import LoptUserError
    from lopt_cli.evaluation.leaderboard_report import terminal_table
    from lopt_cli.scripts.pool_draws import LEADERBOARD, unfinished_jobs, write_pooled

    out = sweep / POOLED_DIR
    unfinished = unfinished_jobs([sweep])
    if unfinished:
        print(f"lopt: not pooled: jobs without a summary ({', '.join(p.name for p in unfinished)})"
              f"; when they are done: python -m lopt_cli.scripts.pool_draws {sweep} --out {out}",
              file=sys.stderr)
        return None
    try:
        summary = write_pooled([sweep], out, force=True)
    except (LoptUserError, OSError) as error:
        print(f"lopt: not pooled: {error}", file=sys.stderr)
        return None
    console = output_console()
    seeds = ", ".join(map(str, summary["pooled_seeds"]))
    console.print(f"pooled over the draws seed={seeds}:", markup=False)
    console.print(terminal_table(summary))
    console.print(f"written: {out / LEADERBOARD}", markup=False)
    return out
