"""``lopt tasks``: list families, describe sampled tasks, or train one briefly with Adam."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lopt_cli.commands.common import (
    build_family,
    configure_jax,
    guarded,
    positive_int,
    run_dir,
)
from lopt_cli.errors import LoptUserError

CONFIG_NAME = "tasks"
ACTIONS = ("list", "describe", "run")


def check(cfg: DictConfig) -> None:
    if cfg.action not in ACTIONS:
        raise LoptUserError(f"action={cfg.action!r}; choose one of: {', '.join(ACTIONS)}")
    for key in ("count", "steps"):
        positive_int(cfg, key)
    if not isinstance(cfg.task_id, int) or cfg.task_id < 0:
        raise LoptUserError(f"task_id={cfg.task_id!r}: expected a non-negative integer")
    build_family(cfg.task_family)


def list_families(console) -> None:
    from rich.table import Table

    from lopt_cli.commands.validation import all_group_configs
    from lopt_cli.config import instantiate_plain
    from task_definitions.describe import family_ranges

    table = Table(title="task families (`task_family=NAME`)")
    table.add_column("name")
    table.add_column("sampled ranges")
    for name, node in all_group_configs("task_family").items():
        family = instantiate_plain(node)
        ranges = "; ".join(f"{k}={_short(v)}" for k, v in family_ranges(family).items())
        table.add_row(name, ranges)
    console.print(table)


def _short(value) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) < 60 else text[:57] + "..."


def describe(cfg: DictConfig, family, console) -> None:
    from rich.table import Table

    from lopt_cli.io import write_jsonl_atomic
    from task_definitions.describe import describe_task

    rows = [describe_task(family, cfg.first_id + i) for i in range(cfg.count)]
    table = Table(title=f"{cfg.count} tasks of {getattr(family, 'name', '?')} from id {cfg.first_id}")
    columns = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "seed"]
    for column in columns:
        table.add_column(column, justify="right" if column == "num_parameters" else "left",
                         overflow="fold")
    for row in rows:
        table.add_row(*(_short(row.get(c, "")) for c in columns))
    console.print(table)
    write_jsonl_atomic(run_dir() / "tasks.jsonl", rows)


def run_one(cfg: DictConfig, family, console) -> None:
    import jax
    import numpy as np

    from lopt_cli.evaluation.plots import plot_learning_curves
    from lopt_cli.inner.curves import adam_grid_curves
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
    from rich.console import Console

    console = Console()
    if cfg.action == "list":
        list_families(console)
        return
    configure_jax()
    family = build_family(cfg.task_family)
    (describe if cfg.action == "describe" else run_one)(cfg, family, console)


@hydra.main(config_path="pkg://conf", config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)
