"""``lopt tasks``: list families, describe sampled tasks, or train one briefly with Adam."""
from __future__ import annotations

from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from lopt_cli.commands.common import (
    build_family,
    configure_jax,
    guarded,
    positive_finite,
    positive_int,
    run_dir,
)
from lopt_cli.errors import LoptUserError

if TYPE_CHECKING:
    from rich.table import Table

CONFIG_NAME = "tasks"
ACTIONS = ("list", "describe", "run")


def check(cfg: DictConfig) -> None:
    if cfg.action not in ACTIONS:
        raise LoptUserError(f"action={cfg.action!r}; choose one of: {', '.join(ACTIONS)}")
    for key in ("count", "steps"):
        positive_int(cfg, key)
    positive_finite(cfg, "learning_rate")
    for key in ("task_id", "first_id", "seed"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LoptUserError(f"{key}={value!r}: expected a non-negative integer")
    if cfg.action != "list":
        build_family(cfg.task_family)


USER_TEMPLATE_TEXT = "your own Task/TaskFamily via `task_family._target_=...`"


def is_template(node: dict) -> bool:
    """A family config the user completes on the command line (``_target_: ???``)."""
    return node.get("_target_") == "???"


def list_families(console) -> None:
    from rich.table import Table
    from rich.text import Text

    from lopt_cli.commands.validation import all_group_configs
    from lopt_cli.optimizers.storage import instantiate_plain
    from task_definitions.describe import family_ranges

    table = Table(title="task families (`task_family=NAME`)")
    table.add_column("name", no_wrap=True)
    table.add_column("sampled ranges")
    for name, node in all_group_configs("task_family").items():
        if is_template(node):
            table.add_row(name, Text(USER_TEMPLATE_TEXT))
            continue
        family = instantiate_plain(node)
        ranges = "; ".join(f"{k}={_short(v)}" for k, v in family_ranges(family).items())
        table.add_row(name, Text(ranges))
    console.print(table)


def _short(value) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) < 60 else text[:57] + "..."


def describe_table(family, records: list[dict], first_id: int) -> Table:
    """One row per task: id, family, dataset, parameters, batch size, then the family's own
    fields compactly (``hidden=32,32 act=gelu``); the full records go to ``tasks.jsonl``."""
    from rich.table import Table
    from rich.text import Text

    from task_definitions.describe import COMMON_COLUMNS, task_row

    table = Table(title=f"{len(records)} tasks of {getattr(family, 'name', '?')} from id "
                        f"{first_id} (full records: tasks.jsonl)")
    for header, key in COMMON_COLUMNS:
        table.add_column(header, no_wrap=True,
                         justify="left" if key in ("family", "dataset") else "right")
    table.add_column("family-specific")
    for record in records:
        table.add_row(*map(Text, task_row(record)))
    return table


def describe(cfg: DictConfig, family, console) -> None:
    from lopt_cli.io import write_jsonl_atomic
    from task_definitions.describe import describe_task

    records = [describe_task(family, cfg.first_id + i) for i in range(cfg.count)]
    console.print(describe_table(family, records, cfg.first_id))
    write_jsonl_atomic(run_dir() / "tasks.jsonl", records)


def run_one(cfg: DictConfig, family, console) -> None:
    import jax
    import numpy as np

    from lopt_cli.evaluation.plots import plot_learning_curves
    from lopt_cli.evaluation.training import adam_grid_curves
    from lopt_cli.io import write_json_atomic
    from task_definitions.describe import describe_task

    valid_every = max(1, cfg.steps // 20)
    steps = valid_every * (cfg.steps // valid_every)
    info = describe_task(family, cfg.task_id)
    task = family.build(family.sample(jax.random.PRNGKey(cfg.task_id)))
    curves = adam_grid_curves(task, np.asarray([cfg.learning_rate], np.float32),
                              jax.random.PRNGKey(cfg.seed)[None], steps, valid_every)
    train = np.asarray(curves.raw_train_loss)[0, 0]
    valid = np.asarray(curves.raw_valid_loss)[0, 0]
    points = [valid_every * (i + 1) for i in range(len(train))]
    out = run_dir()
    write_json_atomic(out / "curve.json", {"task": info, "learning_rate": cfg.learning_rate,
                                           "steps": points, "train": train.tolist(),
                                           "valid": valid.tolist()})
    plot_learning_curves([{"title": f"task #{cfg.task_id}", "curves": {
        f"adam {cfg.learning_rate:g}": {"steps": points, "train": train, "valid": valid}}}],
        out / "loss_curve.png", metric="train")
    console.print(info)
    for step, t, v in zip(points, train, valid):
        console.print(f"step {step:>6}  train {t:.4f}  valid {v:.4f}")
    console.print(f"written to {out}")


@guarded
def run(cfg: DictConfig) -> None:
    from lopt_cli.console import output_console

    console = output_console()
    if cfg.action == "list":
        list_families(console)
        return
    configure_jax()
    family = build_family(cfg.task_family)
    (describe if cfg.action == "describe" else run_one)(cfg, family, console)


@hydra.main(config_path="pkg://conf", config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)
