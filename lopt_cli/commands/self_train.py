"""``lopt self-train``: does a learned optimizer train a new learned optimizer better than AdamW?

Two meta-training runs with the same seeds, tasks and budget: the outer optimizer is the given
learned optimizer in one (``learned_outer/``) and the configured AdamW in the other
(``adam_outer/``). Both meta-loss curves go to ``self_train.png`` and ``summary.json``.
"""
from __future__ import annotations

import dataclasses

import hydra
from omegaconf import DictConfig

from lopt_cli.commands.common import configure_jax, guarded, run_dir
from lopt_cli.commands.meta_train import build_job, check_job, run_meta_training
from lopt_cli.commands.recorder import final_meta_loss
from lopt_cli.interrupt import RunStopped

CONFIG_NAME = "self_train"


def check(cfg: DictConfig) -> None:
    from lopt_cli.optimizers.storage import load_learned_optimizer

    check_job(cfg)  # the job, its tasks and the population's memory, as meta-train (a resume:
    # resume_directory found a checkpoint under it, in learned_outer/ or adam_outer/)
    load_learned_optimizer(cfg.learned_optimizer)


def learned_outer_optimizer(source: str, num_outer_steps: int):
    """The learned optimizer of ``source`` as an optax outer optimizer for ``num_outer_steps``."""
    from lopt_cli.optimizers.storage import load_learned_optimizer

    lopt, theta, _ = load_learned_optimizer(source)
    return lopt.transform(theta, num_outer_steps)


SOURCE_FILE = "outer_learned_optimizer.txt"


def outer_source(requested: str, out_dir) -> str:
    """The learned optimizer's file, resolved once per run and recorded in the run directory,
    so that a resumed run keeps it even when ``requested`` is ``latest``."""
    from lopt_cli.io import write_text_atomic
    from lopt_cli.optimizers.storage import resolve_weights_path

    record = out_dir / SOURCE_FILE
    if record.is_file():
        return record.read_text().strip()
    source = str(resolve_weights_path(requested).resolve())
    write_text_atomic(record, source + "\n")
    return source


@guarded
def run(cfg: DictConfig) -> None:
    configure_jax()
    from lopt_cli.evaluation.plots import plot_meta_loss
    from lopt_cli.io import write_json_atomic

    out_dir = run_dir()
    source = outer_source(cfg.learned_optimizer, out_dir)
    adam_job = build_job(cfg)
    learned_job = dataclasses.replace(  # train_only applies to both when they run
        adam_job, outer_tx=learned_outer_optimizer(source, adam_job.settings.num_outer_steps))
    histories = {}
    for name, job in (("learned outer optimizer", learned_job), ("AdamW", adam_job)):
        folder = out_dir / ("learned_outer" if job is learned_job else "adam_outer")
        try:
            _, histories[name] = run_meta_training(job, folder, label=name)
        except RunStopped as stop:
            raise RunStopped(f"{name}: {stop}; checkpoints in {out_dir}; continue with: lopt "
                             f"self-train resume={out_dir} "
                             f"learned_optimizer={cfg.learned_optimizer}") from None
    plot_meta_loss(histories, out_dir / "self_train.png",
                   "self-training: a fresh learned optimizer meta-trained by ...")
    summary = {
        "learned_optimizer": source,
        "outer_steps": adam_job.settings.num_outer_steps,
        "seed": adam_job.settings.seed,
        "final_meta_loss": {name: final_meta_loss(h) for name, h in histories.items()},
        "first_meta_loss": {name: h[0]["meta_loss"] for name, h in histories.items()},
    }
    write_json_atomic(out_dir / "summary.json", summary)
    for name, value in summary["final_meta_loss"].items():
        print(f"{name:>24}: final meta-loss {value:.4f}")
    print(f"written to {out_dir}")


@hydra.main(config_path="pkg://conf", config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)
