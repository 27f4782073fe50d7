"""Interleaved A/B timing of compiled variants in one process (a developer tool, not part of
``make bench``).

On a shared machine whole runs swing by 5-10% and more, so comparing two benchmark runs says
little about a change worth 5%. Here every variant is compiled first, then all are timed in
alternating rounds, so slow periods hit them alike; the report is each variant's median round
and its speed relative to the first variant.

Every variant is traced after ``jax.clear_caches()``. A jitted function caches its trace by its
static arguments: two variants whose static arguments compare equal (two equal frozen-dataclass
optimizers, say) would otherwise share the first variant's executable, and a change applied
while tracing the second (a monkeypatch, a module constant) would be silently ignored, making
every variant time the same program.

    python -m benchmarks._ab --optimizer hierarchical chunk_size=0 chunk_size=512

times the meta-training benchmark's truncation (:mod:`benchmarks.meta_training_speed`) for each
``field=value`` of the learned optimizer (``base`` is the unchanged optimizer).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

Runner = Callable[[int], Any]  # round index -> result (blocked on before the clock stops)


def interleaved(builders: dict[str, Callable[[], Runner]], rounds: int = 12) -> dict[str, dict]:
    """Builds every variant (each after clearing JAX's caches), then runs them in ``rounds``
    alternating rounds. Returns per variant ``{"median_s", "speedup", "last"}``: the median
    round time (the first round dropped as warm-up), the first variant's median over it, and
    the last round's result."""
    if rounds < 2:
        raise ValueError(f"rounds={rounds}: at least 2 (the first is warm-up)")
    runners = {}
    for name, build in builders.items():
        jax.clear_caches()
        runners[name] = build()
    times: dict[str, list[float]] = {name: [] for name in runners}
    last: dict[str, Any] = {}
    for index in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            last[name] = jax.block_until_ready(run(index))
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(t[1:])) for name, t in times.items()}
    first = next(iter(medians.values()))
    return {name: {"median_s": m, "speedup": first / m, "last": last[name]}
            for name, m in medians.items()}


def report(out_dir, name: str, title: str, columns: tuple, cells: list, result: dict) -> dict:
    """Prints a table (``cells``: one list of strings per row under ``columns``) and writes
    ``result`` to ``<out_dir>/<name>.json``; returns ``result``."""
    import json
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in cells:
        table.add_row(*row)
    Console().print(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    return result


def truncation_builder(lopt, placement, patch: Callable[[], Any] = contextlib.nullcontext):
    """A builder for :func:`interleaved`: compiles the meta-training benchmark's truncation for
    ``lopt`` (:func:`benchmarks.meta_training_speed.compile_truncation`, inside the context
    ``patch()`` so trace-time changes apply) and returns a runner of one truncation with fresh
    keys per round."""
    from benchmarks.meta_training_speed import compile_truncation

    def build() -> Runner:
        with patch():
            compiled, theta, tasks, states = compile_truncation(lopt, placement)[:4]
        return lambda index: compiled(theta, tasks, states, jax.random.PRNGKey(3 + index))[0]

    return build


def parse_override(text: str) -> tuple[str, Any]:
    """``field=value`` with ``value`` a Python literal (``512``, ``None``, ``(32, 32)``)."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise ValueError(f"{text!r}: expected field=value")
    try:
        return field, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise ValueError(f"{text!r}: the value must be a Python literal") from None


def main(argv: list[str] | None = None) -> dict[str, dict]:
    import argparse

    from benchmarks.meta_training_speed import NUM_TASKS, TRUNCATION
    from lopt_cli.errors import LoptUserError
    from lopt_cli.meta.sharding import Placement, resolve_num_devices
    from lopt_cli.optimizers.registry import LEARNED_OPTIMIZERS

    parser = argparse.ArgumentParser(prog="python -m benchmarks._ab", description=__doc__)
    parser.add_argument("overrides", nargs="*", help="field=value variants of the optimizer")
    parser.add_argument("--optimizer", default="hierarchical", choices=sorted(LEARNED_OPTIMIZERS))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="independent A/Bs to print")
    args = parser.parse_args(argv)
    base = LEARNED_OPTIMIZERS[args.optimizer]()
    variants = {"base": base}
    for text in args.overrides:
        try:
            field, value = parse_override(text)
        except ValueError as error:
            parser.error(str(error))
        try:
            variants[text] = dataclasses.replace(base, **{field: value})
        except (TypeError, LoptUserError) as error:  # an unknown field, a bad value
            parser.error(f"{text!r}: {error}")
    # As `make bench`: one host device per core, asked for before JAX starts.
    placement = Placement.create(resolve_num_devices("auto", NUM_TASKS))
    steps = NUM_TASKS * 2 * TRUNCATION
    result = {}
    for _ in range(args.repeats):
        result = interleaved({name: truncation_builder(lopt, placement)
                              for name, lopt in variants.items()}, args.rounds)
        print("  ".join(f"{name}: {steps / r['median_s']:,.0f} task-steps/s "
                        f"(x{r['speedup']:.3f})" for name, r in result.items()), flush=True)
    return result


if __name__ == "__main__":
    main()
