"""Sampling tasks from the default suite: speed and determinism.

Samples 1000 task configs from ``task_family=suite`` twice (two fresh passes over the same ids),
checks that both passes agree exactly, and reports the time per pass and per config, plus the
time to *build* a subset (building loads datasets on first use, so it is reported separately).

Run: ``python -m benchmarks.task_sampling`` (or ``make bench``).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import jax

NUM_TASKS = 1000
NUM_BUILT = 50


def suite_family():
    from hydra import compose, initialize_config_module

    from lopt_cli.commands.common import build_family

    with initialize_config_module("conf", version_base="1.3"):
        cfg = compose("meta_train", overrides=["task_family=suite"])
        return build_family(cfg.task_family)


def sample_pass(family, num: int) -> tuple[list, float]:
    start = time.perf_counter()
    configs = [family.sample(jax.random.PRNGKey(task_id)) for task_id in range(num)]
    return configs, time.perf_counter() - start


def main(out_dir: str | Path = "benchmarks/results") -> dict:
    from rich.console import Console

    family = suite_family()
    first, first_seconds = sample_pass(family, NUM_TASKS)
    second, second_seconds = sample_pass(family, NUM_TASKS)
    digest = hashlib.sha256(repr(first).encode()).hexdigest()[:16]
    start = time.perf_counter()
    for config in first[:NUM_BUILT]:
        family.build(config)
    build_seconds = time.perf_counter() - start
    result = {
        "benchmark": "task_sampling", "num_tasks": NUM_TASKS,
        "deterministic": first == second, "configs_sha256": digest,
        "seconds_per_pass": [first_seconds, second_seconds],
        "microseconds_per_config": 1e6 * min(first_seconds, second_seconds) / NUM_TASKS,
        "families": dict(Counter(c.family for c in first)),
        "build_seconds_first_50": build_seconds,
    }
    Console().print(
        f"sampled {NUM_TASKS} suite tasks in {min(first_seconds, second_seconds):.2f} s "
        f"({result['microseconds_per_config']:.0f} µs each); identical on a second pass: "
        f"{result['deterministic']}; built the first {NUM_BUILT} in {build_seconds:.1f} s")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "task_sampling.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
