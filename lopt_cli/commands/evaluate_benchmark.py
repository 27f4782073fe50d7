"""``lopt evaluate benchmark=NAME``: a leaderboard of optimizers on a named benchmark's held-out
tasks (the benchmark config read and checked, the candidates resolved, the outputs written)."""
from __future__ import annotations

import contextlib

from omegaconf import DictConfig

from lopt_cli.commands.common import build, plain, positive_int, run_dir
from lopt_cli.errors import LoptUserError
from lopt_cli.interrupt import RunStopped, stop_requests


def build_benchmark_spec(cfg: DictConfig):
    """The only function that reads ``benchmark``: tasks, trial budgets, measurement."""
    from lopt_cli.evaluation.benchmark import HOST_LOOP_SETTINGS, BenchmarkSpec, MeasureSettings
    from lopt_cli.evaluation.placement import resolve_devices

    node = cfg.benchmark
    for key in ("num_seeds", "num_points", "eval_batches", "long_horizon"):
        positive_int(cfg, f"benchmark.{key}")
    if not 0 < float(node.final_fraction) <= 1:
        raise LoptUserError(f"benchmark.final_fraction={node.final_fraction}: expected a value "
                            "in (0, 1]")
    baselines = {name: build(n, f"baselines.{name}") for name, n in cfg.baselines.items()}
    trials = plain(node.trials)
    for name in [*baselines, "candidates"]:
        if not isinstance(trials.get(name), int) or trials[name] < 1:
            raise LoptUserError(f"benchmark.trials.{name}={trials.get(name)}: expected a "
                                "positive int for every baseline and for candidates")
    counts = plain(node.trial_counts)
    if not isinstance(counts, list) or not all(isinstance(n, int) and n > 0 for n in counts):
        raise LoptUserError(f"benchmark.trial_counts={counts}: expected a list of positive ints")
    bounds = plain(node.lr_multiplier)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(v, (int, float)) for v in bounds)
            or not 0 < bounds[0] <= bounds[1]):
        raise LoptUserError(f"benchmark.lr_multiplier={bounds}: expected [min, max] with "
                            "0 < min <= max")
    low, high = (float(v) for v in bounds)
    host_loop = node.get("host_loop", "auto")
    if host_loop not in HOST_LOOP_SETTINGS:
        raise LoptUserError(f"benchmark.host_loop={host_loop}: expected one of "
                            f"{', '.join(HOST_LOOP_SETTINGS)}")
    if not baselines:
        raise LoptUserError("baselines: name at least one baseline")
    names = list(node.tasks)
    select = plain(node.select)
    if select is not None:
        unknown = [n for n in select if n not in names] if isinstance(select, list) else [select]
        if unknown or not select:
            raise LoptUserError(f"benchmark.select={select}: choose task names among: "
                                f"{', '.join(names)}")
        names = [n for n in names if n in select]
    tasks = tuple(benchmark_task(cfg, name) for name in names)
    measure = MeasureSettings(int(node.num_seeds), int(node.num_points), int(node.eval_batches),
                              float(node.final_fraction), int(cfg.seed))
    spec = BenchmarkSpec(str(node.name), tasks, baselines, trials,
                         tuple(sorted(set(counts))), measure, int(node.long_horizon),
                         str(host_loop), resolve_devices(cfg.get("devices", "auto")))
    return spec, (low, high)


def benchmark_task(cfg: DictConfig, name: str):
    """One task of ``benchmark.tasks``: family, config and horizon, checked."""
    from lopt_cli.evaluation.benchmark import BenchmarkTask

    node = cfg.benchmark.tasks[name]
    override = cfg.benchmark.get("horizon_override")
    horizon = int(override if override is not None else node.horizon)
    points = int(cfg.benchmark.num_points)
    if horizon < points or horizon % points:
        raise LoptUserError(f"benchmark.tasks.{name}.horizon={horizon}: expected a multiple of "
                            f"benchmark.num_points={points}")
    return BenchmarkTask(name, build(node.family, f"benchmark.tasks.{name}.family"),
                         build(node.config, f"benchmark.tasks.{name}.config"), horizon)


def benchmark_candidates(cfg: DictConfig, built) -> list:
    """The leaderboard's optimizers (``learned_optimizer``: one name or a list)."""
    from lopt_cli.evaluation.candidates import candidate_names, resolve_candidate

    _, (low, high) = built
    return [resolve_candidate(name, low, high)
            for name in candidate_names(plain(cfg.learned_optimizer))]


def run_benchmark_command(cfg: DictConfig) -> None:
    """``benchmark=NAME``: every optimizer on the benchmark's tasks, the leaderboard written."""
    from lopt_cli.commands.benchmark_progress import benchmark_progress
    from lopt_cli.console import output_console, progress_bar
    from lopt_cli.evaluation.benchmark import run_benchmark, total_runs
    from lopt_cli.evaluation.benchmark_cost import predicted_parts
    from lopt_cli.evaluation.benchmark_outputs import benchmark_summary, write_benchmark
    from lopt_cli.evaluation.cache import PARTIAL_DIR, RunCache, cache_key, default_cache_dir
    from lopt_cli.evaluation.code_version import sources_read_once
    from lopt_cli.evaluation.leaderboard_report import terminal_interval_table, terminal_table
    from lopt_cli.evaluation.partial_runs import PartStore
    from lopt_cli.evaluation.tuning_edges import edge_line

    built = build_benchmark_spec(cfg)
    spec = built[0]
    cache = RunCache(default_cache_dir() if cfg.cache else None)
    console = output_console(stderr=True)
    # The code digests in the cache keys read the sources once, as they are now (code_version).
    # Ctrl-C / SIGTERM: with a cache, the run in progress stops after its segment and is kept
    # (partial_runs); a second Ctrl-C, or any without a cache, stops at once.
    stops = stop_requests("evaluate", "segment") if cfg.cache else contextlib.nullcontext()
    if cfg.get("plan"):
        with sources_read_once():
            print_plan(spec, benchmark_candidates(cfg, built), cache)
        return
    with sources_read_once(), stops as stop_requested:
        candidates = benchmark_candidates(cfg, built)
        parts = None if stop_requested is None else PartStore(
            cache.directory / PARTIAL_DIR, stop_requested)
        predicted = predicted_parts(spec, candidates, cache)  # the ETA's weights
        try:
            with progress_bar(console=console) as progress:
                results = run_benchmark(spec, candidates, cache,
                                        benchmark_progress(progress, console, spec.name,
                                                           total_runs(spec, len(candidates)),
                                                           predicted),
                                        parts)
        except RunStopped as stop:
            raise RunStopped(f"{stop}; its state is kept in {parts.directory} (`lopt cache` "
                             f"lists it), and {cache.kept()}") from None
        except KeyboardInterrupt:
            raise RunStopped(cache.interrupted()) from None
    names = [c.name for c in candidates]
    summary, rows = benchmark_summary(spec, results, names, built[1])
    summary["runs"] = {"computed": cache.computed, "from_cache": cache.hits}
    summary["candidate_digests"] = {c.name: cache_key(c.identity) for c in candidates}
    out_dir = run_dir()
    write_benchmark(out_dir, summary, rows)
    output_console().print(terminal_table(summary))
    intervals = terminal_interval_table(summary)
    if intervals is not None:
        output_console().print(intervals)
    edges = edge_line(summary["tuned_at_edge"], summary["num_tasks"])
    if edges:
        print(edges)
    print(f"results written to {out_dir} (leaderboard.md, leaderboard.png, summary.json, "
          "results.jsonl, horizon.png)")


def print_plan(spec, candidates: list, cache) -> None:
    """``plan=true``: every part (task × optimizer), cached (with the time it took, when
    recorded) or to compute with its predicted time, and the total, on the terminal and in the
    run directory's ``plan.json``; nothing is computed."""
    from rich.table import Table

    from lopt_cli.console import duration, output_console
    from lopt_cli.io import write_json_atomic

    parts = plan_parts(spec, candidates, cache)
    table = Table(title=f"{spec.name}: what `lopt evaluate` would compute")
    for column in ("task", "horizon", "optimizer", "runs", "predicted"):
        table.add_column(column, justify="right" if column in ("horizon", "runs") else "left")
    for part in parts:
        seconds, took = part["predicted_seconds"], part["recorded_seconds"]
        cell = (f"~{duration(seconds)}" if seconds is not None else
                "cached" if took is None else f"cached (took {duration(took)})")
        table.add_row(part["task"], str(part["horizon"]), part["optimizer"],
                      f"{part['trials']} × {part['seeds']}", cell)
    to_compute = [p["predicted_seconds"] for p in parts if p["predicted_seconds"] is not None]
    step_times = relative_step_times(parts)
    out = write_json_atomic(run_dir() / "plan.json", {
        "benchmark": spec.name, "parts": parts, "cached": len(parts) - len(to_compute),
        "to_compute": len(to_compute), "predicted_seconds": sum(to_compute),
        "relative_step_times": step_times})
    console = output_console()
    console.print(table)
    how = ("" if not to_compute else
           f", predicted ~{duration(sum(to_compute))} (from the times this machine recorded for "
           "the same tasks, else from their flops and bytes at a 2-core CPU's rates; the run's "
           "ETA corrects it by its measured pace)")
    console.print(f"{len(parts) - len(to_compute)} of {len(parts)} parts cached; "
                  f"{len(to_compute)} to compute{how}. Nothing was computed; the plan is written "
                  f"to {out}.", markup=False)
    if step_times:
        reference = parts[0]["optimizer"]
        console.print(f"Recorded time per step of one run, median over tasks, × {reference}'s "
                      "(each part timed when it was computed, under whatever else ran then): "
                      + ", ".join(f"{name} {entry['median_ratio']:.2f}× ({entry['tasks']} tasks)"
                                  for name, entry in step_times.items()), markup=False)


def plan_parts(spec, candidates: list, cache) -> list[dict]:
    """One row per task × optimizer, in the order a run computes them: its horizon, trials and
    seeds, its predicted seconds (``None``: cached) and, for a cached part, the seconds it took
    and per step of one run (``None`` when not recorded)."""
    from lopt_cli.evaluation.benchmark import optimizers_of
    from lopt_cli.evaluation.benchmark_cost import measured_rate, peek_parts, predicted_parts

    optimizers = optimizers_of(spec, candidates)
    peeked = peek_parts(spec, optimizers, cache)  # each cached part read once
    predicted = predicted_parts(spec, candidates, cache, peeked)
    parts = []
    for task in spec.tasks:
        for optimizer in optimizers:
            seconds = predicted.get(f"{task.name}: {optimizer.name}")
            value = None if seconds is not None else peeked[(task.name, optimizer.name)]
            timing = (value or {}).get("timing")
            parts.append({
                "task": task.name, "horizon": task.horizon, "optimizer": optimizer.name,
                "trials": optimizer.num_trials, "seeds": spec.measure.num_seeds,
                "predicted_seconds": seconds,
                "recorded_seconds": timing["seconds"] if isinstance(timing, dict) else None,
                "seconds_per_run_step": measured_rate([value])})
    return parts


def relative_step_times(parts: list[dict]) -> dict:
    """For every optimizer but the first, the median over tasks of its recorded seconds per
    step of one run over the first optimizer's on the same task, and on how many tasks.

    >>> relative_step_times([
    ...     {"task": "a", "optimizer": "AdamLR", "seconds_per_run_step": 1e-4},
    ...     {"task": "a", "optimizer": "muon", "seconds_per_run_step": 4e-4},
    ...     {"task": "b", "optimizer": "AdamLR", "seconds_per_run_step": 2e-4},
    ...     {"task": "b", "optimizer": "muon", "seconds_per_run_step": None}])
    {'muon': {'median_ratio': 4.0, 'tasks': 1}}
    """
    import statistics

    if not parts:
        return {}
    reference = parts[0]["optimizer"]
    per_step = {(p["task"], p["optimizer"]): p["seconds_per_run_step"] for p in parts}
    ratios: dict[str, list[float]] = {}
    for (task, name), seconds in per_step.items():
        base = per_step.get((task, reference))
        if name != reference and seconds and base:
            ratios.setdefault(name, []).append(seconds / base)
    return {name: {"median_ratio": statistics.median(values), "tasks": len(values)}
            for name, values in ratios.items()}


def list_override(argv: list[str]) -> list[str]:
    """With ``benchmark=NAME`` and without ``--multirun``, ``learned_optimizer=a,b`` means the
    list ``[a,b]`` (a leaderboard), not a sweep Hydra would refuse."""
    if {"-m", "--multirun"}.intersection(argv) or not any(
            a.startswith("benchmark=") for a in argv):
        return argv
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "learned_optimizer" and "," in value and not value.startswith(("[", "'", '"')):
            arg = f"learned_optimizer=[{value}]"
        out.append(arg)
    return out
