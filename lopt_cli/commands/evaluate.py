"""``lopt evaluate``: a learned optimizer against per-task tuned Adam on held-out tasks."""
from __future__ import annotations

import hydra
import numpy as np
from omegaconf import DictConfig

from lopt_cli.commands.common import build, configure_jax, guarded, positive_int, run_dir
from lopt_cli.errors import LoptUserError

CONFIG_NAME = "evaluate"


def build_settings(cfg: DictConfig):
    """The only function that reads the evaluate config's numbers."""
    from lopt_cli.evaluation.suite import EvaluationSettings

    for key in ("tasks.count", "horizon", "valid_every", "num_seeds", "adam_lr.num"):
        positive_int(cfg, key)
    if cfg.horizon % cfg.valid_every:
        raise LoptUserError(f"horizon={cfg.horizon} must be a multiple of "
                            f"valid_every={cfg.valid_every}")
    if not 0 < float(cfg.final_fraction) <= 1:
        raise LoptUserError(f"final_fraction={cfg.final_fraction}: expected a value in (0, 1]")
    low, high = float(cfg.adam_lr.min), float(cfg.adam_lr.max)
    if not 0 < low <= high:
        raise LoptUserError(f"adam_lr.min={low}, adam_lr.max={high}: expected 0 < min <= max")
    rates = tuple(float(r) for r in np.geomspace(low, high, cfg.adam_lr.num))
    return EvaluationSettings(cfg.tasks.first_id, cfg.tasks.count, cfg.horizon, cfg.valid_every,
                              cfg.num_seeds, float(cfg.final_fraction), rates, cfg.seed)


def check(cfg: DictConfig) -> None:
    from lopt_cli.optimizers.storage import load_learned_optimizer

    build_settings(cfg)
    build(cfg.task_family, "task_family")
    load_learned_optimizer(cfg.learned_optimizer)


def summarize_results(results: list[dict], settings, source: str, family_name: str) -> dict:
    from lopt_cli.evaluation.compare import summarize

    comparisons = {}
    for name in ("generalisation", "optimisation"):
        comparisons[name] = {
            "baseline": "AdamLR, per task",
            "tuned_on": "valid" if name == "generalisation" else "train",
            "compared_on": "valid" if name == "generalisation" else "train",
            "trials_per_task": len(settings.learning_rates),
            **summarize([row[name]["improvement"] for row in results]),
        }
    return {"learned_optimizer": source, "task_family": family_name,
            "first_task_id": settings.first_task_id, "num_tasks": len(results),
            "horizon": settings.horizon, "num_seeds": settings.num_seeds,
            "final_fraction": settings.final_fraction,
            "learning_rates": list(settings.learning_rates), "comparisons": comparisons}


@guarded
def run(cfg: DictConfig) -> None:
    configure_jax()
    from rich.console import Console
    from rich.progress import Progress

    from lopt_cli.evaluation.plots import plot_learning_curves
    from lopt_cli.evaluation.report import markdown_report, summary_table
    from lopt_cli.evaluation.suite import evaluate_suite
    from lopt_cli.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
    from lopt_cli.optimizers.storage import load_learned_optimizer, resolve_weights_path

    settings = build_settings(cfg)
    family = build(cfg.task_family, "task_family")
    source = str(resolve_weights_path(cfg.learned_optimizer).resolve())
    lopt, theta, _ = load_learned_optimizer(source)
    out_dir = run_dir()
    console = Console()
    with Progress(console=Console(stderr=True)) as progress:
        bar = progress.add_task("evaluate: tasks", total=settings.num_tasks)
        results = evaluate_suite(family, lopt, theta, settings,
                                 on_task=lambda row: progress.advance(bar))
    rows = [{"task_id": r["task_id"], "task": r["task"], "optimizer": name,
             "steps": curve["steps"], "train_curve": curve["train"], "valid_curve": curve["valid"],
             "final_train": _final(r, name, "optimisation"),
             "final_valid": _final(r, name, "generalisation"),
             "learning_rate": _rate(r, name)}
            for r in results for name, curve in r["curves"].items()]
    summary = summarize_results(results, settings, source, getattr(family, "name", "?"))
    write_jsonl_atomic(out_dir / "results.jsonl", rows)
    write_json_atomic(out_dir / "summary.json", summary)
    plot_learning_curves(results[:12], out_dir / "curves.png")
    write_text_atomic(out_dir / "report.md", markdown_report(summary, results))
    console.print(summary_table(summary))
    console.print(f"results written to {out_dir}")


def _final(result: dict, name: str, comparison: str) -> float | None:
    """Final normalised loss of optimizer ``name`` in ``comparison`` (None if not compared)."""
    row = result[comparison]
    if name == "learned":
        return row["learned"]
    tuned_for = "generalisation" if "valid-tuned" in name else "optimisation"
    return row["baseline"] if tuned_for == comparison else None


def _rate(result: dict, name: str) -> float | None:
    if name == "learned":
        return None
    key = "generalisation" if "valid-tuned" in name else "optimisation"
    return result[key]["learning_rate"]


@hydra.main(config_path="pkg://conf", config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)
