"""``lopt evaluate``: a learned optimizer against tuned baselines on seen and unseen tasks, or
(``benchmark=NAME``) a leaderboard of optimizers on a named benchmark's held-out tasks."""
from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lopt_cli.commands.common import (
    build,
    build_family,
    configure_jax,
    guarded,
    plain,
    positive_int,
    probe_family,
    run_dir,
)
from lopt_cli.commands.evaluate_benchmark import (
    benchmark_candidates,
    build_benchmark_spec,
    list_override,
    run_benchmark_command,
)
from lopt_cli.errors import LoptUserError
from lopt_cli.interrupt import RunStopped

CONFIG_NAME = "evaluate"


def build_spec(cfg: DictConfig):
    """The only function that reads the evaluate config's numbers and baselines."""
    from lopt_cli.evaluation.placement import resolve_devices
    from lopt_cli.evaluation.runs import RunSettings
    from lopt_cli.evaluation.suite import SuiteSpec

    for key in ("horizon", "valid_every", "num_seeds", "max_trials"):
        positive_int(cfg, key)
    if cfg.horizon % cfg.valid_every:
        raise LoptUserError(f"horizon={cfg.horizon} must be a multiple of "
                            f"valid_every={cfg.valid_every}")
    if not 0 < float(cfg.final_fraction) <= 1:
        raise LoptUserError(f"final_fraction={cfg.final_fraction}: expected a value in (0, 1]")
    counts = plain(cfg.trial_counts)
    if not isinstance(counts, list) or not all(isinstance(n, int) and n > 0 for n in counts):
        raise LoptUserError(f"trial_counts={counts}: expected a list of positive integers")
    if max(counts, default=0) > cfg.max_trials:
        raise LoptUserError(f"trial_counts={counts}: {max(counts)} exceeds max_trials="
                            f"{cfg.max_trials} (the trials run per task); raise max_trials or "
                            "lower the count")
    splits = {}
    for name, split in plain(cfg.splits).items():
        count = int(split["count"])
        if count < 0:
            raise LoptUserError(f"splits.{name}.count={count}: expected >= 0")
        splits[name] = tuple(range(int(split["first_id"]), int(split["first_id"]) + count))
        trained = trained_task_ids(cfg, name, split.get("from_run", False))
        if trained is not None:
            splits[name] = trained[:count]
    tuning = plain(cfg.tuning)
    tuning_ids = tuple(range(int(tuning["first_id"]), int(tuning["first_id"]) + int(tuning["count"])))
    _check_disjoint(splits, tuning_ids)
    baselines = {name: build(node, f"baselines.{name}") for name, node in cfg.baselines.items()}
    if not baselines:
        raise LoptUserError("baselines: name at least one baseline")
    if baselines and not tuning_ids:
        raise LoptUserError("tuning.count=0: global tuning needs at least one tuning task")
    run = RunSettings(cfg.horizon, cfg.valid_every, cfg.num_seeds, float(cfg.final_fraction),
                      cfg.seed)
    return SuiteSpec(splits, tuning_ids, baselines, cfg.max_trials, tuple(counts), run,
                     resolve_devices(cfg.get("devices", "auto")))


def trained_task_ids(cfg: DictConfig, split: str, from_run) -> tuple | None:
    """The task ids the learned optimizer's run trained on, in order of first use, when
    ``from_run`` asks for them (``auto``: if its ``metrics.jsonl`` records any)."""
    from lopt_cli.optimizers.storage import resolve_weights_path

    if from_run not in (True, False, "auto"):
        raise LoptUserError(f"splits.{split}.from_run={from_run!r}; choose one of: auto, true, false")
    if from_run is False:
        return None
    try:
        metrics = resolve_weights_path(cfg.learned_optimizer).parent / "metrics.jsonl"
    except LoptUserError:
        if from_run is True:
            raise
        return None  # reported when the learned optimizer is loaded
    ids: list[int] = []
    if metrics.is_file():
        from lopt_cli.io import read_jsonl

        for row in read_jsonl(metrics):
            ids += [t for t in row.get("task_ids", []) if t not in ids]
    if not ids and from_run is True:
        raise LoptUserError(f"splits.{split}.from_run=true: {metrics} records no trained task ids")
    return tuple(ids) or None


def _check_disjoint(splits: dict, tuning_ids: tuple) -> None:
    seen = set(tuning_ids)
    for name, ids in splits.items():
        overlap = seen.intersection(ids)
        if overlap:
            raise LoptUserError(f"splits.{name} shares task ids with another split or the "
                                f"tuning tasks (e.g. {min(overlap)}); use disjoint first_id ranges")
        seen.update(ids)


MODES = ("comparison", "implicit_regularization")


def check(cfg: DictConfig) -> None:
    from lopt_cli.meta.cpu_tuning import request_cpu_devices
    from lopt_cli.optimizers.storage import load_learned_optimizer

    # The first of this command to touch JAX: one host device per core for `devices=auto`
    # (harmless off CPU), XLA's default vector width kept (the numbers of one device).
    request_cpu_devices(os.cpu_count() or 1, wide_vectors=False)
    if cfg.get("benchmark") is not None:
        benchmark_candidates(cfg, build_benchmark_spec(cfg))
        return
    if cfg.get("plan"):
        raise LoptUserError("plan=true lists a benchmark's parts; give benchmark=NAME "
                            "(e.g. benchmark=lopt_bench_small)")
    if cfg.mode not in MODES:
        raise LoptUserError(f"mode={cfg.mode!r}; choose one of: {', '.join(MODES)}")
    if cfg.mode == "implicit_regularization":
        probe_settings(cfg)
    else:
        spec = build_spec(cfg)
        first = min(min(ids, default=spec.tuning_ids[0]) for ids in spec.splits.values())
        probe_family(build_family(cfg.task_family), first)
    load_learned_optimizer(cfg.learned_optimizer)


def probe_settings(cfg: DictConfig) -> dict:
    """The implicit-regularisation probe's settings, checked."""
    settings = plain(cfg.implicit_regularization)
    for key in ("num_points", "steps"):
        positive_int(cfg, f"implicit_regularization.{key}")
    rates = settings["adam_lr"]
    if not isinstance(rates, list) or not rates or not all(float(r) > 0 for r in rates):
        raise LoptUserError(f"implicit_regularization.adam_lr={rates}: expected a list of "
                            "positive learning rates")
    return settings


def run_probe(cfg: DictConfig, lopt, theta, source: str) -> None:
    """``experiment=implicit_regularization``: trajectories.png, summary.json, report.md."""
    from rich.table import Table

    from lopt_cli.console import output_console
    from lopt_cli.evaluation.implicit_regularization import run_probe as probe
    from lopt_cli.evaluation.plots import plot_trajectories
    from lopt_cli.io import write_json_atomic, write_text_atomic

    settings = probe_settings(cfg)
    result = probe(lopt, theta, settings["num_points"], float(settings["radius"]),
                   tuple(settings["angles"]), settings["steps"],
                   [float(r) for r in settings["adam_lr"]])
    out_dir = run_dir()
    plot_trajectories({"learned": result["paths"]["learned"],
                       f"Adam (lr {result['adam_learning_rate']:g})": result["paths"]["adam"]},
                      out_dir / "trajectories.png",
                      f"f(x, y) = ½(x − y)², {settings['steps']} steps")
    summary = {"learned_optimizer": source, "settings": settings,
               **{k: v for k, v in result.items() if k != "paths"}}
    write_json_atomic(out_dir / "summary.json", {**summary, "paths": result["paths"]})
    table = Table(title="implicit regularisation on ½(x − y)²: mean final distance to the origin")
    table.add_column("optimizer")
    table.add_column("distance to origin", justify="right")
    table.add_column("final loss", justify="right")
    lines = ["# Implicit regularisation", "", f"- learned optimizer: `{source}`",
             f"- {settings['num_points']} starts on a fan (radius {settings['radius']}, angles "
             f"{settings['angles']}), {settings['steps']} steps; Adam's rate "
             f"{result['adam_learning_rate']:g} (best final loss of {settings['adam_lr']})", "",
             "| optimizer | mean final distance to origin | mean final loss |", "|---|---|---|"]
    for name, distance in result["mean_final_distance"].items():
        loss = result["mean_final_loss"].get(name)
        loss_text = f"{loss:.3g}" if loss is not None else "0 (by construction)"
        table.add_row(name, f"{distance:.3f}", loss_text)
        lines.append(f"| {name} | {distance:.3f} | {loss_text} |")
    write_text_atomic(out_dir / "report.md", "\n".join([*lines, "",
                                                         "![trajectories](trajectories.png)", ""]))
    output_console().print(table)
    print(f"written to {out_dir}")


def write_outputs(out_dir, summary: dict, results: list[dict], rows: list[dict]) -> None:
    from lopt_cli.evaluation.plots import plot_improvement_boxes, plot_learning_curves
    from lopt_cli.evaluation.report import markdown_report
    from lopt_cli.evaluation.results import improvements
    from lopt_cli.io import write_json_atomic, write_jsonl_atomic, write_text_atomic

    write_jsonl_atomic(out_dir / "results.jsonl", rows)
    write_json_atomic(out_dir / "summary.json", summary)
    grouped = improvements(results)
    for metric, name in (("valid", "improvement.png"), ("train", "improvement_train.png")):
        plot_improvement_boxes(grouped, metric, out_dir / name,
                               f"learned optimizer vs. tuned baselines ({metric} loss)")
    plot_learning_curves(curve_panels(rows)[:8], out_dir / "curves.png")
    write_text_atomic(out_dir / "report.md", markdown_report(summary, rows))


def curve_panels(rows: list[dict]) -> list[dict]:
    """Per task: the learned optimizer and each baseline's best per-task setting (valid)."""
    panels = {}
    for row in rows:
        key = (row["split"], row["task_id"])
        panel = panels.setdefault(key, {"title": f"{row['split']} #{row['task_id']} "
                                                  f"{row['task']['family']}", "curves": {}})
        if row["optimizer"] == "learned" or (row["kind"] == "per-task"
                                             and row["tuned_on"] == "valid"):
            name = row["optimizer"] if row["optimizer"] == "learned" else row["baseline"]
            panel["curves"][name] = {"steps": row["steps"], "valid": row["valid_curve"],
                                     "train": row["train_curve"]}
    return list(panels.values())


@guarded
def run(cfg: DictConfig) -> None:
    configure_jax()
    from rich.console import Console

    from lopt_cli.console import Heartbeat, count_line, output_console, progress_bar
    from lopt_cli.evaluation.cache import RunCache, default_cache_dir, file_digest
    from lopt_cli.evaluation.code_version import code_digest, sources_read_once, task_code
    from lopt_cli.evaluation.report import summary_table
    from lopt_cli.evaluation.results import result_rows, summary_rows
    from lopt_cli.evaluation.suite import evaluate_suite, total_task_runs
    from lopt_cli.evaluation.tuning_edges import edge_line, suite_edges
    from lopt_cli.optimizers.storage import load_learned_optimizer, resolve_weights_path

    if cfg.get("benchmark") is not None:
        run_benchmark_command(cfg)
        return
    weights = resolve_weights_path(cfg.learned_optimizer).resolve()
    lopt, theta, lopt_config = load_learned_optimizer(weights)
    if cfg.mode == "implicit_regularization":
        run_probe(cfg, lopt, theta, str(weights))
        return
    spec = build_spec(cfg)
    family = build_family(cfg.task_family)
    cache = RunCache(default_cache_dir() if cfg.cache else None)
    # The code digests in the cache keys read the sources once, as they are now (code_version).
    with sources_read_once(), progress_bar(console=Console(stderr=True)) as progress:
        task_code(family)
        lopt_id = (f"{file_digest(weights)}:{code_digest(lopt)}:"
                   f"{OmegaConf.to_yaml(OmegaConf.create(lopt_config))}")
        total = total_task_runs(spec)
        bar = progress.add_task("evaluate: task runs", total=total)
        heartbeat = Heartbeat(progress.console)

        def advance() -> None:
            progress.advance(bar)
            done = int(progress.tasks[0].completed)
            if heartbeat.due(final=done >= total):
                heartbeat.emit(count_line("evaluate: task runs", done, total, heartbeat.elapsed))

        try:
            choices, results = evaluate_suite(family, lopt, theta, lopt_id, spec, cache,
                                              advance=advance,
                                              lopt_name=display_name(cfg.learned_optimizer,
                                                                     weights))
        except KeyboardInterrupt:
            raise RunStopped(cache.interrupted()) from None
    rows = result_rows(results, spec.run.valid_every)
    summary = {"learned_optimizer": str(weights), "task_family": getattr(family, "name", "?"),
               "splits": list(spec.splits), "tasks_per_split": {k: len(v) for k, v in
                                                                spec.splits.items()},
               "task_ids": {k: list(v) for k, v in spec.splits.items()},
               "num_tuning_tasks": len(spec.tuning_ids), "horizon": spec.run.horizon,
               "num_seeds": spec.run.num_seeds, "final_fraction": spec.run.final_fraction,
               "baselines": list(spec.baselines), "max_trials": spec.max_trials,
               "trial_counts": list(spec.trial_counts), "global_choices": choices,
               "comparisons": summary_rows(results),
               "tuned_at_edge": suite_edges(results, spec.max_trials),
               "runs": {"computed": cache.computed, "from_cache": cache.hits}}
    out_dir = run_dir()
    write_outputs(out_dir, summary, results, rows)
    console = output_console()
    console.print(summary_table(summary, "valid"))
    edges = edge_line(summary["tuned_at_edge"], len(results), listed_in="report.md")
    if edges:
        console.print(edges)
    console.print(f"results written to {out_dir} (report.md, improvement.png, curves.png)")


def display_name(requested, weights: Path) -> str:
    """What ``lopt cache`` calls the learned optimizer: its name as given (``default``, a
    shipped name, ``latest``), or for a path the run directory holding its weights."""
    text = str(requested)
    return text if "/" not in text and not text.endswith(".msgpack") else weights.parent.name


@hydra.main(config_path="pkg://conf", config_name=CONFIG_NAME, version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    import sys

    sys.argv = [sys.argv[0], *list_override(sys.argv[1:])]
    hydra_main()
