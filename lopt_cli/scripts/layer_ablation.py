"""Which learned layer costs a benchmark task its precision? Train one task with a learned
optimizer's θ, with θ where named layers are zeroed, and with θ₀, over learning-rate factors.

    python -m lopt_cli.scripts.layer_ablation <θ source>... [--zero correction_out]
        [--task rosenbrock_long] [--benchmark lopt_bench] [--factors 1,10,100] [--horizon N]
        [--out layer_ablation.json]

A θ source is anything ``load_optimizer`` reads (a run directory, its ``last/``, a shipped
name). The task and its horizon are ``benchmark.tasks.<task>`` of the benchmark's config; the
optimizer's ``learning_rate`` is multiplied by each factor, as ``benchmark.lr_multiplier``
does. Per source, variant and factor it reports the final training loss (raw, one seed), in a
table and in ``--out`` (JSON, with a markdown table beside it). Zeroing a layer whose output
enters additively (``adam_nominal``'s ``correction_out``) removes that term; zeroing a layer
that is not there, an unknown task or an ``--out`` that is a directory (or lies under a file)
is a one-line error (exit 2); a bad ``--factors`` is argparse's usage error (exit 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from lopt_cli.errors import LoptUserError
from lopt_cli.io import json_line, writable_targets, write_text_atomic


def parse_factors(text: str) -> tuple[float, ...]:
    try:
        factors = tuple(float(v) for v in text.split(","))
    except ValueError:
        factors = ()
    if not factors or min(factors) <= 0:
        raise argparse.ArgumentTypeError(f"--factors {text!r}: expected positive numbers, "
                                         "e.g. 1,10,100")
    return factors


def benchmark_task(benchmark: str, name: str, horizon: int | None):
    """``benchmark.tasks.<name>`` of ``conf/benchmark/<benchmark>.yaml``, built."""
    from hydra import initialize_config_module

    from lopt_cli.commands.evaluate_benchmark import benchmark_task as build_task
    from lopt_cli.commands.validation import CONFIG_MODULE, compose_checked

    overrides = [f"benchmark={benchmark}"]
    if horizon is not None:
        overrides.append(f"benchmark.horizon_override={horizon}")
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose_checked("evaluate", overrides)
    if name not in cfg.benchmark.tasks:
        raise LoptUserError(f"--task {name!r}: not a task of benchmark {benchmark!r} "
                            f"(choose from {', '.join(cfg.benchmark.tasks)})")
    return build_task(cfg, name)


def zeroed(theta: dict, layers: tuple[str, ...], source: str) -> dict:
    """``theta`` with every weight of ``layers`` set to zero."""
    import jax
    import jax.numpy as jnp

    params = dict(theta["params"])
    for layer in layers:
        if layer not in params:
            raise LoptUserError(f"--zero {layer!r}: {source} has no such layer "
                                f"(its layers: {', '.join(params)})")
        params[layer] = jax.tree.map(jnp.zeros_like, params[layer])
    return {**theta, "params": params}


def final_train_loss(lopt, theta, task, horizon: int) -> float:
    """Raw training loss at the end of ``horizon`` steps, seed 0."""
    import jax
    import numpy as np

    from lopt_cli.inner.curves import learned_curves

    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    curves = learned_curves(lopt, theta, task, keys, horizon, horizon // 100 or 1)
    return float(np.asarray(curves.raw_train_loss)[0, -1])


def ablate(sources: list[str], layers: tuple[str, ...], benchmark: str, task_name: str,
           factors: tuple[float, ...], horizon: int | None = None) -> dict:
    """``{"task", "horizon", "rows": [{source, factor, variant: loss, ...}]}``."""
    import jax

    from lopt_cli.optimizers.storage import load_learned_optimizer

    bench_task = benchmark_task(benchmark, task_name, horizon)
    rows = []
    for source in sources:
        lopt, theta, _ = load_learned_optimizer(source)
        variants = {"theta": theta, **{f"zero {layer}": zeroed(theta, (layer,), source)
                                       for layer in layers},
                    "theta0": lopt.init(jax.random.PRNGKey(0))}
        for factor in factors:
            scaled = dataclasses.replace(lopt, learning_rate=lopt.learning_rate * factor)
            rows.append({"source": source, "factor": factor, **{
                name: final_train_loss(scaled, th, bench_task.task, bench_task.horizon)
                for name, th in variants.items()}})
    return {"benchmark": benchmark, "task": task_name, "horizon": bench_task.horizon,
            "zeroed": list(layers), "rows": rows}


def markdown(result: dict) -> str:
    variants = [k for k in result["rows"][0] if k not in ("source", "factor")]
    lines = [f"# Layer ablation: `{result['task']}` ({result['horizon']} steps), final training "
             "loss", "", "| θ | factor | " + " | ".join(variants) + " |",
             "|---|---|" + "---|" * len(variants)]
    for row in result["rows"]:
        lines.append(f"| {row['source']} | {row['factor']:g} | "
                     + " | ".join(f"{row[v]:.2e}" for v in variants) + " |")
    return "\n".join(lines) + "\n"


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lopt_cli.scripts.layer_ablation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="θ sources (run directories, shipped names)")
    parser.add_argument("--zero", nargs="*", default=["correction_out"],
                        help="layers to zero, one variant each (default: correction_out)")
    parser.add_argument("--task", default="rosenbrock_long")
    parser.add_argument("--benchmark", default="lopt_bench")
    parser.add_argument("--factors", type=parse_factors, default=(1.0, 10.0, 100.0))
    parser.add_argument("--horizon", type=int, default=None, help="override the task's horizon")
    parser.add_argument("--out", default="layer_ablation.json")
    args = parser.parse_args(argv)
    try:
        out = writable_targets(Path(args.out))
        result = ablate(args.sources, tuple(args.zero), args.benchmark, args.task, args.factors,
                        args.horizon)
        text = markdown(result)
        print(text)
        write_text_atomic(out, json_line(result, indent=1) + "\n")
        write_text_atomic(out.with_suffix(".md"), text)
    except (LoptUserError, OSError) as error:  # OSError: an --out that cannot be written
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
