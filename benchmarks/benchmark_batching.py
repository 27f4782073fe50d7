"""Benchmark runs vmapped or one at a time: which is faster on this backend, per task kind.

``lopt evaluate benchmark=...`` trains every trial and seed of an optimizer on a task in one
vmapped call, except tasks with convolutions on a CPU backend (``benchmark.host_loop=auto``),
which go one (trial, seed) per call. This measures both ways on ``lopt_bench``'s wide conv net
and wide MLP (AdamLR, 4 trials × 2 seeds, a short horizon), compiled first and then timed in
alternating rounds (:func:`benchmarks._ab.interleaved`), and checks that both give the same
curves.

Run: ``python -m benchmarks.benchmark_batching`` (or ``make bench``).
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

HORIZON = 50
NUM_TRIALS = 4
ROUNDS = 3


def lopt_bench_task(name: str):
    """A task of ``conf/benchmark/lopt_bench.yaml``, built from the real config."""
    from hydra import compose, initialize_config_module

    from lopt_cli.commands.evaluate_benchmark import benchmark_task

    with initialize_config_module("conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=["benchmark=lopt_bench"])
        return benchmark_task(cfg, name).task


def time_both(task, horizon: int, rounds: int) -> dict:
    """Median seconds of the vmapped and the host-loop runs, and their largest final gap."""
    from benchmarks._ab import interleaved
    from lopt_cli.evaluation.benchmark import MeasureSettings
    from lopt_cli.evaluation.measured_runs import host_loop_curves, trial_curves
    from lopt_cli.evaluation.search_spaces import AdamLR

    measure = MeasureSettings(num_seeds=2, num_points=5, eval_batches=4, final_fraction=0.2)
    space, hparams = AdamLR(), AdamLR().trials(NUM_TRIALS)
    args = (measure.keys(), measure.eval_keys(), horizon, measure.num_points)
    results = interleaved({
        "vmapped": lambda: lambda _: trial_curves(space, None, hparams, task, *args),
        "host_loop": lambda: lambda _: host_loop_curves(space, None, hparams, task, *args),
    }, rounds=rounds)
    finals = [np.asarray(jax.device_get(results[k]["last"]["norm_train"]))[..., -1]
              for k in ("vmapped", "host_loop")]
    return {"vmapped_s": results["vmapped"]["median_s"],
            "host_loop_s": results["host_loop"]["median_s"],
            "host_loop_speedup": results["vmapped"]["median_s"] / results["host_loop"]["median_s"],
            "max_final_rel_gap": float(np.max(np.abs(finals[0] - finals[1])
                                              / (np.abs(finals[0]) + 1e-12)))}


def main(out_dir: str | Path = "benchmarks/results", horizon: int = HORIZON, rounds: int = ROUNDS,
         names: tuple[str, ...] = ("conv_wide_digits", "mlp_wide_digits")) -> dict:
    from benchmarks._ab import report
    from lopt_cli.evaluation.benchmark import has_convolution

    rows = {}
    for name in names:
        task = lopt_bench_task(name)
        rows[name] = {"convolution": has_convolution(task), **time_both(task, horizon, rounds)}
    cells = [[name, f"{row['vmapped_s']:.2f}", f"{row['host_loop_s']:.2f}",
              f"{row['host_loop_speedup']:.2f}×", f"{row['max_final_rel_gap']:.1e}"]
             for name, row in rows.items()]
    return report(out_dir, "benchmark_batching",
                  f"benchmark runs on {jax.default_backend()}: AdamLR {NUM_TRIALS} trials × 2 "
                  f"seeds, {horizon} steps, median of {rounds - 1} rounds",
                  ("task", "vmapped s", "host loop s", "host loop speed-up", "max final gap"),
                  cells, {"backend": jax.default_backend(), "horizon": horizon,
                          "trials": NUM_TRIALS, "rows": rows})


if __name__ == "__main__":
    main()
