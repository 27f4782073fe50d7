"""``lopt meta-train``: meta-train a learned optimizer and write its run directory."""
from __future__ import annotations

import dataclasses
from typing import Any

import hydra
from omegaconf import DictConfig

from lopt_cli.commands.common import (
    build,
    build_family,
    configure_jax,
    guarded,
    plain,
    positive_int,
    run_dir,
)
from lopt_cli.errors import LoptUserError

CONFIG_NAME = "meta_train"


@dataclasses.dataclass(frozen=True)
class MetaTrainJob:
    """Everything a meta-training run needs, as plain objects."""

    family: Any
    problem: Any
    estimator: Any
    outer_tx: Any
    settings: Any
    optimizer_config: dict
    checkpoint_every: int

    @property
    def inner_steps_per_outer(self) -> int:
        """Inner task-steps per outer step: tasks × unrolls per task × truncation length."""
        unrolls = getattr(self.estimator, "unrolls_per_task", 1)
        return self.settings.num_tasks * unrolls * self.estimator.truncation_length


def build_job(cfg: DictConfig) -> MetaTrainJob:
    """The only function that reads the meta-train config."""
    from lopt_cli.meta.outer import MetaTrainSettings
    from lopt_cli.meta.problem import TruncatedProblem

    for key in ("compute.num_outer_steps", "compute.num_tasks", "compute.resample_every",
                "inner.min_horizon", "inner.max_horizon", "inner.valid_every",
                "estimator.truncation_length", "tasks.count"):
        positive_int(cfg, key)
    if cfg.inner.min_horizon > cfg.inner.max_horizon:
        raise LoptUserError(f"inner.min_horizon={cfg.inner.min_horizon} exceeds "
                            f"inner.max_horizon={cfg.inner.max_horizon}")
    if cfg.estimator.truncation_length % cfg.inner.valid_every:
        raise LoptUserError(f"estimator.truncation_length={cfg.estimator.truncation_length} must "
                            f"be a multiple of inner.valid_every={cfg.inner.valid_every}")
    lopt = build(cfg.optimizer, "optimizer")
    outer = plain(cfg.outer_optimizer)
    if outer.get("_target_", "").endswith("make_outer_optimizer"):
        outer.setdefault("total_steps", cfg.compute.num_outer_steps)
    from lopt_cli.optimizers.storage import instantiate_plain

    return MetaTrainJob(
        family=build_family(cfg.task_family),
        problem=TruncatedProblem(lopt, cfg.inner.min_horizon, cfg.inner.max_horizon,
                                 cfg.inner.valid_every),
        estimator=build(cfg.estimator, "estimator"),
        outer_tx=instantiate_plain(outer),
        settings=MetaTrainSettings(cfg.compute.num_outer_steps, cfg.compute.num_tasks,
                                   cfg.compute.resample_every, cfg.seed, cfg.tasks.first_id,
                                   cfg.tasks.count),
        optimizer_config=plain(cfg.optimizer),
        checkpoint_every=cfg.checkpoint_every,
    )


def check(cfg: DictConfig) -> None:
    """Builds the job (no compilation) so that bad values fail before any output is written."""
    build_job(cfg)


def run_meta_training(job: MetaTrainJob, out_dir, label: str = "meta-train"):
    """Runs the job into ``out_dir``; returns ``(theta, history)``."""
    from lopt_cli.evaluation.plots import plot_meta_loss
    from lopt_cli.io import write_json_atomic
    from lopt_cli.meta.outer import meta_train
    from lopt_cli.meta.recorder import MetaTrainRecorder

    recorder = MetaTrainRecorder(out_dir, job.settings.num_outer_steps,
                                 job.inner_steps_per_outer, job.optimizer_config,
                                 job.checkpoint_every, label=label)
    with recorder:
        theta = meta_train(job.family, job.problem, job.estimator, job.outer_tx, job.settings,
                           on_step=recorder)
    plot_meta_loss({label: recorder.history}, out_dir / "meta_loss.png", "meta-training")
    tail = recorder.history[-max(1, len(recorder.history) // 10):]
    write_json_atomic(out_dir / "summary.json", {
        "outer_steps": len(recorder.history),
        "first_meta_loss": recorder.history[0]["meta_loss"],
        "final_meta_loss": sum(r["meta_loss"] for r in tail) / len(tail),
        "inner_steps_per_second": sorted(r["inner_steps_per_second"] for r in tail)[len(tail) // 2],
    })
    return theta, recorder.history


@guarded
def run(cfg: DictConfig) -> None:
    configure_jax()
    job = build_job(cfg)
    out_dir = run_dir()
    _, history = run_meta_training(job, out_dir)
    print(f"meta-loss {history[0]['meta_loss']:.4f} -> {history[-1]['meta_loss']:.4f}; "
          f"learned optimizer written to {out_dir}")


@hydra.main(config_path="pkg://conf", config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)
