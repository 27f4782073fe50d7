"""A benchmark call's runs on one device or split over the local devices (``lopt evaluate devices=``).

``lopt evaluate benchmark=...`` trains every trial × seed of an optimizer on a task in one
vmapped call; with ``devices=auto`` (on a CPU-only machine: one host device per core)
the runs are split over the devices by trial (:mod:`lopt_cli.evaluation.placement`). This times
both ways on ``lopt_bench`` tasks of every kind that runs vmapped, with the benchmark's own
sizes (AdamLR, 10 trials × 3 seeds) over a short horizon, in alternating rounds
(:func:`benchmarks._ab.interleaved`), and reports the largest gap between their final losses.

Run: ``python -m benchmarks.run benchmark_devices`` (``benchmarks.run`` asks for one host
device per core before JAX starts; alone, set
``XLA_FLAGS=--xla_force_host_platform_device_count=2``).
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

HORIZON = 20
NUM_TRIALS = 10
NUM_SEEDS = 3
ROUNDS = 3
TASKS = ("mlp_wide_digits", "mlp_wide_deep_digits", "flow_deep_moons", "char_lstm_long",
         "char_gru_wide", "transformer_wide")


def time_both(task, horizon: int, rounds: int, devices: int) -> dict:
    """Median seconds on one device and on ``devices``, and their largest final gap."""
    from benchmarks._ab import interleaved
    from lopt_cli.evaluation.benchmark import MeasureSettings
    from lopt_cli.evaluation.measured_runs import trial_curves
    from lopt_cli.evaluation.search_spaces import AdamLR

    measure = MeasureSettings(num_seeds=NUM_SEEDS, num_points=4, eval_batches=4,
                              final_fraction=0.25)
    space, hparams = AdamLR(), AdamLR().trials(NUM_TRIALS)
    args = (measure.keys(), measure.eval_keys(), horizon, measure.num_points)

    def runner(n):
        return lambda: lambda _: trial_curves(space, None, hparams, task, *args, num_devices=n)

    results = interleaved({"one": runner(1), "split": runner(devices)}, rounds=rounds)
    finals = [np.asarray(results[k]["last"]["norm_train"])[..., -1] for k in ("one", "split")]
    return {"one_device_s": results["one"]["median_s"], "split_s": results["split"]["median_s"],
            "split_speedup": results["one"]["median_s"] / results["split"]["median_s"],
            "max_final_rel_gap": float(np.max(np.abs(finals[0] - finals[1])
                                              / (np.abs(finals[0]) + 1e-12)))}


def main(out_dir: str | Path = "benchmarks/results", horizon: int = HORIZON, rounds: int = ROUNDS,
         names: tuple[str, ...] = TASKS) -> dict:
    from benchmarks._ab import report
    from benchmarks.benchmark_batching import lopt_bench_task

    devices = jax.local_device_count()
    rows = {name: time_both(lopt_bench_task(name), horizon, rounds, devices) for name in names}
    cells = [[name, f"{row['one_device_s']:.2f}", f"{row['split_s']:.2f}",
              f"{row['split_speedup']:.2f}×", f"{row['max_final_rel_gap']:.1e}"]
             for name, row in rows.items()]
    return report(out_dir, "benchmark_devices",
                  f"benchmark runs on {jax.default_backend()}: AdamLR {NUM_TRIALS} trials × "
                  f"{NUM_SEEDS} seeds, {horizon} steps, one device vs split over {devices}, "
                  f"median of {rounds - 1} rounds",
                  ("task", "one device s", "split s", "split speed-up", "max final gap"),
                  cells, {"backend": jax.default_backend(), "devices": devices,
                          "horizon": horizon, "trials": NUM_TRIALS, "seeds": NUM_SEEDS,
                          "rows": rows})


if __name__ == "__main__":
    main()
