r"""Meta-training throughput: inner task-steps per second of one jitted truncation.

Fixed configuration (issue "meta-training engine"): a learned optimizer, PES, 8 tasks, truncation
50, antithetic pairs, an MLP 64→32→10 at batch 128 on digits-sized data. One inner task-step is
one task forward+backward plus one learned-optimizer update; each ± particle counts.

The population is placed as ``lopt meta-train compute=cpu`` places it (``compute.num_devices:
auto``): on a CPU-only machine, one XLA host device per core, the tasks split over them
(:func:`lopt_cli.meta.sharding.resolve_num_devices`); ``--devices 1`` measures one device that
uses every core per op instead. The inner optimizers run their per-parameter MLP in blocks sized
for that population, as ``lopt meta-train`` runs them (:func:`lopt_cli.meta.cpu_tuning.for_population`).

Reported after compilation: task-steps/s, compile time, peak memory (process max RSS and XLA's
temporary buffer size), and achieved FLOP/s as a fraction of the machine's peak, measured in the
same run by a large jitted f32 matmul. FLOPs are counted analytically:

.. math::
    F_\text{step} = \underbrace{3 \cdot 2 B \textstyle\sum_l n_{l-1} n_l}_{\text{task fwd+bwd}}
      + \underbrace{2 P \big(F_p h_1 + \textstyle\sum_k h_k h_{k+1}\big)}_{\text{optimizer MLP}}
      + \underbrace{2 T K_\text{tensor}}_{\text{per-tensor}}
      + \underbrace{2 B_v \textstyle\sum_l n_{l-1} n_l / v}_{\text{validation}}

with :math:`P` the task's parameter count, :math:`T` its number of tensors, :math:`v` the
validation interval and :math:`K_\text{tensor}` the number of meta-parameter kernel entries
outside the per-parameter MLP: each of those kernels is applied once per tensor and step (the
first layer's per-tensor half; for the hierarchical optimizer also its LSTM and heads).
Elementwise feature work is not counted, so the fraction is a lower bound on the hardware's
utilisation.

Run: ``python -m benchmarks.meta_training_speed`` (or ``make bench``).
"""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.optimizer_overhead import peak_matmul_flops

NUM_TASKS = 8
TRUNCATION = 50
VALID_EVERY = 10
BATCH = 128
LAYERS = (64, 32, 10)


def digits_sized_task():
    """An MLP 64→32→10 classifier on random digits-sized data (1797 × 64)."""
    from task_definitions.mlp import MLPClassifierTask

    rng = np.random.default_rng(0)

    def split(n):
        return {"x": jnp.asarray(rng.random((n, LAYERS[0]), np.float32)),
                "y": jnp.asarray(rng.integers(0, LAYERS[-1], n), jnp.int32)}

    return MLPClassifierTask(
        data={"train": split(1078), "valid": split(359), "test": split(360)},
        init_scale=jnp.asarray(1.0), hidden_sizes=LAYERS[1:-1], activation="relu",
        batch_size=BATCH, num_classes=LAYERS[-1])


def analytic_flops_per_step(lopt) -> float:
    """Task fwd+bwd, learned-optimizer and amortised validation FLOPs of one inner step."""
    from lopt_cli.optimizers import features

    macs = sum(a * b for a, b in zip(LAYERS[:-1], LAYERS[1:]))
    params = macs + sum(LAYERS[1:])
    num_tensors = 2 * (len(LAYERS) - 1)  # a kernel and a bias per layer
    task = 3 * 2 * BATCH * macs
    validation = 2 * BATCH * macs / VALID_EVERY
    if not hasattr(lopt, "decays"):  # the channel-fused designs count their own FLOPs
        return float(task + validation + params * getattr(lopt, "flops_per_param", 0))
    widths = (features.num_param_features(lopt.decays), *lopt.hidden_sizes, 2)
    per_param_macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    optimizer = 2 * params * per_param_macs
    per_tensor = 2 * num_tensors * (kernel_entries(lopt) - per_param_macs)
    return float(task + validation + optimizer + per_tensor)


def kernel_entries(lopt) -> int:
    """Entries of every ``kernel`` among the optimizer's meta-parameters."""
    shapes = jax.eval_shape(lopt.init, jax.random.PRNGKey(0))
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    return sum(int(np.prod(leaf.shape)) for path, leaf in leaves
               if getattr(path[-1], "key", None) == "kernel")


class Truncation(NamedTuple):
    """The benchmark's truncation compiled for one learned optimizer."""

    compiled: Any  # (theta, tasks, states, key) -> (grad, states, summary)
    theta: Any
    tasks: Any
    states: Any
    inner_lopt: Any  # the optimizer the truncation runs (MLP blocks sized for the population)
    compile_seconds: float


def compile_truncation(lopt, placement) -> Truncation:
    """PES over the fixed population, placed on ``placement``, with the inner optimizers sized
    for it as ``lopt meta-train`` sizes them; lowered and compiled once."""
    from lopt_cli.meta.cpu_tuning import cpu_cores_per_device, for_population
    from lopt_cli.meta.pes import PersistentES
    from lopt_cli.meta.problem import TruncatedProblem
    from task_definitions.base import stack_tasks

    estimator = PersistentES(sigma=0.01, truncation_length=TRUNCATION)
    particles = NUM_TASKS * estimator.unrolls_per_task // placement.num_devices
    inner_lopt = for_population(lopt, particles, cpu_cores_per_device(placement.num_devices))
    problem = TruncatedProblem(inner_lopt, min_horizon=1000, max_horizon=2000,
                               valid_every=VALID_EVERY)
    theta = placement.replicate(lopt.init(jax.random.PRNGKey(0)))
    tasks = placement.shard(stack_tasks([digits_sized_task()] * NUM_TASKS))
    states = placement.shard(estimator.init_states(problem, theta, tasks, jax.random.PRNGKey(1)))
    start = time.perf_counter()
    compiled = estimator.estimate.lower(estimator, problem, theta, tasks, states,
                                        jax.random.PRNGKey(2)).compile()
    return Truncation(compiled, theta, tasks, states, inner_lopt, time.perf_counter() - start)


def measure(lopt, name: str, placement, reps: int = 10) -> dict:
    truncation = compile_truncation(lopt, placement)
    compiled, theta, tasks, states = truncation[:4]
    memory = compiled.memory_analysis()
    temp_bytes = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
    jax.block_until_ready(compiled(theta, tasks, states, jax.random.PRNGKey(2)))
    times = []
    for rep in range(reps):
        start = time.perf_counter()
        grad, states, _ = compiled(theta, tasks, states, jax.random.PRNGKey(3 + rep))
        jax.block_until_ready(grad)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    steps = NUM_TASKS * 2 * TRUNCATION
    flops = analytic_flops_per_step(lopt) * steps
    return {"optimizer": name, "chunk_size": getattr(truncation.inner_lopt, "chunk_size", None),
            "inner_task_steps_per_second": steps / seconds,
            "seconds_per_truncation": seconds, "compile_seconds": truncation.compile_seconds,
            "xla_temp_bytes": temp_bytes, "analytic_flops_per_truncation": flops,
            "achieved_flops_per_second": flops / seconds}


def main(out_dir: str | Path = "benchmarks/results", devices: int | str = "auto",
         names: list[str] | None = None) -> dict:
    """Throughput of every registered learned optimizer (or ``names``), and each one's ratio
    to ``mlp`` measured in the same run."""
    from rich.console import Console
    from rich.table import Table

    from lopt_cli.meta.sharding import Placement, resolve_num_devices
    from lopt_cli.optimizers.registry import LEARNED_OPTIMIZERS

    placement = Placement.create(resolve_num_devices(devices, NUM_TASKS))
    peak = peak_matmul_flops(size=1024)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [(name, factory) for name, factory in LEARNED_OPTIMIZERS.items()
              if names is None or name in names]
    rows, result = [], {}
    for name, factory in chosen:  # each row printed and written as measured: a killed run keeps them
        rows.append(measure(factory(), name, placement))
        result = throughput_result(rows, peak, placement.num_devices,
                                   complete=len(rows) == len(chosen))
        row = rows[-1]
        print(f"{name}: {row['inner_task_steps_per_second']:,.0f} task-steps/s, compile "
              f"{row['compile_seconds']:.1f} s ({len(rows)}/{len(chosen)})", flush=True)
        (out / "meta_training_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"meta-training throughput (PES, {NUM_TASKS} tasks × 2, truncation "
                        f"{TRUNCATION}, MLP {LAYERS} batch {BATCH}, {placement.num_devices} "
                        f"device(s)); peak {peak / 1e9:.1f} GFLOP/s")
    for column in ("optimizer", "task-steps/s", "vs mlp", "compile s", "GFLOP/s", "of peak"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["optimizer"], f"{row['inner_task_steps_per_second']:,.0f}",
                      f"{row['speed_vs_mlp']:.2f}x" if "speed_vs_mlp" in row else "-",
                      f"{row['compile_seconds']:.1f}",
                      f"{row['achieved_flops_per_second'] / 1e9:.1f}",
                      f"{100 * row['fraction_of_peak']:.0f}%")
    Console().print(table)
    return result


def throughput_result(rows: list[dict], peak: float, num_devices: int, complete: bool) -> dict:
    """The JSON record of the rows measured so far, each with its share of the matmul peak and
    its speed relative to ``mlp`` (when ``mlp`` was measured)."""
    reference = next((r for r in rows if r["optimizer"] == "mlp"), None)
    for row in rows:
        row["fraction_of_peak"] = row["achieved_flops_per_second"] / peak
        if reference is not None:
            row["speed_vs_mlp"] = (row["inner_task_steps_per_second"]
                                   / reference["inner_task_steps_per_second"])
    return {"benchmark": "meta_training_speed", "complete": complete,
            "peak_matmul_flops_per_second": peak, "devices": [str(d) for d in jax.devices()],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "config": {"num_tasks": NUM_TASKS, "truncation": TRUNCATION, "batch": BATCH,
                       "layers": LAYERS, "estimator": "pes", "valid_every": VALID_EVERY,
                       "num_devices": num_devices},
            "rows": rows}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="auto", help="'auto' (as compute=cpu) or a count")
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--optimizers", default=None, help="comma list (default: all)")
    args = parser.parse_args()
    from lopt_cli.meta.sharding import request_cpu_devices

    request_cpu_devices(os.cpu_count() or 1)  # as benchmarks.run: before JAX starts
    main(args.out_dir, args.devices if args.devices == "auto" else int(args.devices),
         args.optimizers.split(",") if args.optimizers else None)
