"""How well the ETA's cost model predicts a benchmark task's training step (`benchmark_cost`).

    python -m benchmarks.step_cost_check [--tasks a,b] [--runs 30] [--steps 20] [--out-dir D]

Times ``--steps`` steps of ``--runs`` vmapped runs of Adam on each task of ``lopt_bench`` (one
``lax.scan``, compiled and run once before timing) and prints the predicted step beside the
measured one (rows also in ``<out-dir>/step_cost_check.json``; ``make bench`` runs it too). Run
it with nothing else on the machine: the rates in ``benchmark_cost`` came from such a run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from lopt_cli.errors import LoptUserError

DEFAULT_TASKS = ("mlp_wide_deep_digits", "char_gru_wide", "char_lstm_long", "transformer_wide",
                 "transformer_deep", "autoencoder_wide_digits", "flow_long_rings",
                 "quadratic_noisy_128")


def benchmark_tasks() -> dict:
    from hydra import compose, initialize_config_module

    from lopt_cli.commands.evaluate_benchmark import build_benchmark_spec

    with initialize_config_module("conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=["benchmark=lopt_bench", "learned_optimizer=[adam]"])
    return {task.name: task for task in build_benchmark_spec(cfg)[0].tasks}


def measured_step_seconds(task, runs: int, steps: int, optimizer=None,
                          repeats: int = 1) -> float:
    """Seconds per step (gradient + update) of ``runs`` vmapped runs of ``optimizer`` (an optax
    transformation taking ``loss=``; default Adam at 1e-3) on ``task``: ``steps`` steps in one
    jitted ``lax.scan``, compiled and run once first, the median of ``repeats`` timings. One run
    is not vmapped, as a user's (under ``vmap`` a ``lax.cond`` on the optimizer's state runs
    both branches)."""
    import jax
    import optax

    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    batched = runs > 1
    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    params = jax.vmap(task.init)(keys) if batched else task.init(keys[0])
    carry = (params, (jax.vmap(optimizer.init) if batched else optimizer.init)(params))

    def one(p, s, key):
        loss, grads = jax.value_and_grad(
            lambda q: task.loss(q, task.sample_batch(key, "train"), key))(p)
        updates, s = optimizer.update(grads, s, p, loss=loss)
        return optax.apply_updates(p, updates), s

    def step(carry, key):
        if not batched:
            return one(*carry, key), None
        return jax.vmap(one)(*carry, jax.random.split(key, runs)), None

    run = jax.jit(lambda c, k: jax.lax.scan(step, c, jax.random.split(k, steps))[0])
    carry = jax.block_until_ready(run(carry, jax.random.PRNGKey(1)))
    timings = []
    for repeat in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(run(carry, jax.random.PRNGKey(2 + repeat)))
        timings.append((time.perf_counter() - started) / steps)
    return statistics.median(timings)


def main(out_dir: str | Path, tasks: tuple[str, ...] = DEFAULT_TASKS, runs: int = 30,
         steps: int = 20) -> list[dict]:
    """Times each task, prints a line per task and writes the rows to
    ``<out_dir>/step_cost_check.json`` (what ``make bench`` calls)."""
    from lopt_cli.evaluation.benchmark_cost import COMPILE_SECONDS, predicted_seconds, step_cost
    from lopt_cli.io import json_line, write_text_atomic

    known = benchmark_tasks()
    unknown = [name for name in tasks if name not in known]
    if unknown:
        raise LoptUserError(f"not a lopt_bench task: {', '.join(unknown)}")
    rows = []
    for name in tasks:
        task = known[name].task
        predicted = predicted_seconds(step_cost(task), 1, runs, False) - COMPILE_SECONDS
        measured = measured_step_seconds(task, runs, steps)
        rows.append({"task": name, "runs": runs, "predicted_step_s": predicted,
                     "measured_step_s": measured, "measured_over_predicted": measured / predicted})
        print(f"{name:26s} predicted {1e3 * predicted:8.1f} ms  measured {1e3 * measured:8.1f} ms"
              f"  measured/predicted {measured / predicted:5.2f}", flush=True)
    write_text_atomic(Path(out_dir) / "step_cost_check.json", json_line(rows, indent=1) + "\n")
    return rows


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_cost_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    try:
        main(args.out_dir, tuple(args.tasks.split(",")), args.runs, args.steps)
    except (LoptUserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
