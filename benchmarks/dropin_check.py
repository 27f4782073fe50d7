"""Drop-in check: an optimizer from ``lopt_cli.load_optimizer`` against per-problem-tuned Adam,
on held-out problems written outside the project's task code (:mod:`benchmarks._dropin_problems`:
plain JAX + optax, tiny MLP classifiers and regressors with inputs scaled 1e-3 … 1e3,
unnormalised targets in the thousands, 32-example datasets, initialisations ×100 and ×0.01,
deep-narrow and wide nets).

For every problem and horizon ``T`` (``--steps``):

* Adam (``optax.adam``) at each learning rate of a grid (by default 7 values, log-spaced
  1e-4 … 1e-1; ``--rates LOW,HIGH,N`` for another), tuned per problem and per metric: the
  rate with the lowest final training loss for the training-loss comparison, the one with the
  lowest test loss for the test-loss one;
* the optimizer under test, ``load_optimizer(source, T)``; if it takes a learning rate
  (``takes_learning_rate``), tuned over the same grid the same way;
* reported: final training loss (full training set) and test loss, the outcome of the optimizer
  against Adam on each (win / tie / loss: a tie is within 1% of the larger loss, plus 1e-6 of
  the initial loss), non-finite final losses (always a loss), and whether the training loss
  (of the training-tuned run) rose late: final > 1.05 × its minimum over the run (+ 1e-6 of
  the initial loss);
* a tuned rate at an end of the grid is starred (its best may lie outside the grid), and
  counted per horizon.

    python -m benchmarks.dropin_check --optimizer default --steps 1000,5000 --out dropin.json
    python -m benchmarks.dropin_check --optimizer mlp_digits --quick   # 2 problems, few steps

Writes the JSON (``--out``) and a markdown table beside it (same name, ``.md``); ``make bench``
runs it for ``default`` at 1000 and 5000 steps into ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import copy
import functools
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _dropin_problems as problems_lib
from lopt_cli.io import writable_targets

LR_GRID = tuple(float(v) for v in np.geomspace(1e-4, 1e-1, 7))
QUICK_STEPS = (30,)
TIE_RELATIVE = 0.01
ABSOLUTE_FRACTION = 1e-6  # of the initial training loss: differences below it are ties
ROSE_FACTOR = 1.05


def outcome(candidate: float, adam: float, scale: float) -> str:
    """``win``/``tie``/``loss`` of ``candidate`` against ``adam`` (lower is better)."""
    if not math.isfinite(candidate):
        return "loss"
    if not math.isfinite(adam):
        return "win"
    tol = TIE_RELATIVE * max(abs(candidate), abs(adam)) + ABSOLUTE_FRACTION * scale
    return "win" if candidate < adam - tol else "loss" if candidate > adam + tol else "tie"


def rose_late(curve: np.ndarray, scale: float) -> bool:
    """Training loss ended above ``ROSE_FACTOR`` × its minimum (non-finite: yes)."""
    if not np.all(np.isfinite(curve)):
        return True
    return bool(curve[-1] > ROSE_FACTOR * curve.min() + ABSOLUTE_FRACTION * scale)


def summarise_run(curve, test_loss, learning_rate, scale: float) -> dict:
    curve = np.asarray(curve, np.float64)
    finite = curve[np.isfinite(curve)]
    return {"learning_rate": learning_rate, "train_loss": float(curve[-1]),
            "test_loss": float(test_loss),
            "min_train_loss": float(finite.min()) if finite.size else float("nan"),
            "rose_late": rose_late(curve, scale)}


def tuned(runs: list[dict]) -> dict:
    """The runs with the lowest final training loss (``by_train``) and the lowest test loss
    (``by_test``), non-finite counting as +inf; and how many grid values ended non-finite."""

    def best(metric: str) -> dict:
        values = [r[metric] if math.isfinite(r[metric]) else math.inf for r in runs]
        return runs[int(np.argmin(values))]

    return {"by_train": best("train_loss"), "by_test": best("test_loss"),
            "nonfinite_rates": sum(not math.isfinite(r["train_loss"]) for r in runs)}


def tuned_adam(problem, data, num_steps: int, scale: float, grid: tuple = LR_GRID) -> dict:
    """Adam at every rate of ``grid`` (one vmapped run), tuned per metric."""
    run = problems_lib.train_curve(problem, data, optax.adam, num_steps)
    curves, tests = jax.vmap(run)(jnp.asarray(grid, jnp.float32))
    return tuned([summarise_run(c, t, lr, scale)
                  for c, t, lr in zip(np.asarray(curves), np.asarray(tests), grid)])


@functools.lru_cache(maxsize=8)
def learned(source: str) -> tuple:
    """``(lopt, theta)`` of a learned ``source``, loaded once per process (the check reuses it
    for every problem and horizon)."""
    from lopt_cli.optimizers.storage import load_learned_optimizer

    return load_learned_optimizer(source)[:2]


def traced_rate_runs(source: str, problem, data, num_steps: int, grid: tuple = LR_GRID):
    """A learned optimizer with a ``learning_rate`` field at every rate of ``grid`` in one
    vmapped run (the rate traced; otherwise what ``load_optimizer(source, T, learning_rate=lr)``
    builds); ``None`` if the architecture cannot take a traced rate."""
    from lopt_cli.optimizers.dropin import (
        LEARNING_RATE_FIELD,
        has_learning_rate,
        skip_nonfinite_steps,
        source_kind,
    )

    if source_kind(source) != "learned":  # hand-designed: the sequential path
        return None
    lopt, theta = learned(source)
    if not has_learning_rate(lopt):
        return None

    def make(lr):
        variant = copy.copy(lopt)  # frozen dataclass: set the traced rate past its checks
        object.__setattr__(variant, LEARNING_RATE_FIELD, lr)
        return skip_nonfinite_steps(variant.transform(theta, num_steps))

    run = problems_lib.train_curve(problem, data, make, num_steps)
    try:
        return jax.vmap(run)(jnp.asarray(grid, jnp.float32))
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
        return None


def candidate_runs(source: str, problem, data, num_steps: int, scale: float,
                   with_rates: bool, traced: bool = True, grid: tuple = LR_GRID) -> dict:
    """The optimizer under test, tuned per metric over ``grid`` if it takes a learning
    rate (vmapped over a traced rate when it can be, else one ``load_optimizer`` per rate)."""
    from lopt_cli import load_optimizer

    if with_rates and traced:
        results = traced_rate_runs(source, problem, data, num_steps, grid)
        if results is not None:
            return {**tuned([summarise_run(c, t, lr, scale) for c, t, lr in
                             zip(np.asarray(results[0]), np.asarray(results[1]), grid)]),
                    "rates_vmapped": True}
    runs = []
    for lr in grid if with_rates else (None,):
        opt = load_optimizer(source, num_steps, learning_rate=lr)
        curve, test = problems_lib.train_curve(problem, data, lambda opt=opt: opt, num_steps)()
        runs.append(summarise_run(curve, test, lr, scale))
    return {**tuned(runs), "rates_vmapped": False}


def check(source: str, steps: tuple[int, ...], problems: list, console=None,
          traced: bool = True, grid: tuple = LR_GRID) -> dict:
    """Every (problem, horizon) row, the tallies per horizon, and the settings."""
    from lopt_cli.optimizers.dropin import takes_learning_rate

    with_rates = takes_learning_rate(source)
    start, rows = time.perf_counter(), []
    for problem in problems:
        data = problems_lib.make_data(problem)
        loss = problems_lib.loss_fn(problem)
        scale = float(loss(problems_lib.init_params(problem), data.x_train, data.y_train))
        for num_steps in steps:
            adam = tuned_adam(problem, data, num_steps, scale, grid)
            candidate = candidate_runs(source, problem, data, num_steps, scale, with_rates,
                                       traced, grid)
            rows.append({
                "problem": problem.name, "description": problems_lib.describe(problem),
                "num_steps": num_steps, "initial_train_loss": scale,
                "adam": adam, "candidate": candidate,
                "train": outcome(candidate["by_train"]["train_loss"],
                                 adam["by_train"]["train_loss"], scale),
                "test": outcome(candidate["by_test"]["test_loss"],
                                adam["by_test"]["test_loss"], scale),
            })
            if console is not None:
                console.log(f"{problem.name} T={num_steps}: train {rows[-1]['train']}, "
                            f"test {rows[-1]['test']}")
    return {"optimizer": source, "steps": list(steps), "lr_grid": list(grid),
            "candidate_tuned_over_lr_grid": with_rates, "rows": rows,
            "summary": {str(t): tally([r for r in rows if r["num_steps"] == t], grid)
                        for t in steps},
            "seconds": time.perf_counter() - start, "jax_devices": str(jax.devices())}


def at_edge(run: dict, grid: tuple = LR_GRID) -> bool:
    """The run's rate is the grid's lowest or highest: its optimum may lie outside the grid."""
    return run["learning_rate"] is not None and run["learning_rate"] in (min(grid), max(grid))


def edge_count(rows: list[dict], who: str, grid: tuple = LR_GRID) -> int:
    """How many of ``who``'s tuned choices (per problem: by training and by test loss) sit at
    an end of ``grid``."""
    return sum(at_edge(r[who][key], grid) for r in rows for key in ("by_train", "by_test"))


def tally(rows: list[dict], grid: tuple = LR_GRID) -> dict:
    counts = {m: {o: sum(r[m] == o for r in rows) for o in ("win", "tie", "loss")}
              for m in ("train", "test")}
    nonfinite = sum(not (math.isfinite(r["candidate"]["by_train"]["train_loss"])
                         and math.isfinite(r["candidate"]["by_test"]["test_loss"]))
                    for r in rows)
    return {**counts, "problems": len(rows), "candidate_nonfinite": nonfinite,
            "candidate_rose_late": sum(r["candidate"]["by_train"]["rose_late"] for r in rows),
            "adam_rose_late": sum(r["adam"]["by_train"]["rose_late"] for r in rows),
            "candidate_at_edge": edge_count(rows, "candidate", grid),
            "adam_at_edge": edge_count(rows, "adam", grid)}


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


COLUMNS = ("problem", "T", "Adam train (lr)", "opt train", "Adam test (lr)", "opt test",
           "train", "test", "rose late opt/Adam")


def with_rate(run: dict, key: str, grid: tuple = LR_GRID) -> str:
    rate = run["learning_rate"]
    return fmt(run[key]) + ("" if rate is None else f" ({rate:.2g}{'*' * at_edge(run, grid)})")


def table_rows(result: dict) -> list[list[str]]:
    grid = tuple(result.get("lr_grid", LR_GRID))
    rows = []
    for r in result["rows"]:
        adam, cand = r["adam"], r["candidate"]
        rose = "/".join("yes" if x["by_train"]["rose_late"] else "no" for x in (cand, adam))
        rows.append([r["problem"], str(r["num_steps"]),
                     with_rate(adam["by_train"], "train_loss", grid),
                     with_rate(cand["by_train"], "train_loss", grid),
                     with_rate(adam["by_test"], "test_loss", grid),
                     with_rate(cand["by_test"], "test_loss", grid), r["train"], r["test"], rose])
    return rows


def summary_lines(result: dict) -> list[str]:
    lines = []
    for steps, s in result["summary"].items():
        lines.append(
            f"T={steps}: train loss {s['train']['win']} wins / {s['train']['tie']} ties / "
            f"{s['train']['loss']} losses, test loss {s['test']['win']} / {s['test']['tie']} / "
            f"{s['test']['loss']} of {s['problems']}; non-finite {s['candidate_nonfinite']}; "
            f"training loss rose late: optimizer {s['candidate_rose_late']}, "
            f"Adam {s['adam_rose_late']}; rates tuned at an end of the grid (*): optimizer "
            f"{s.get('candidate_at_edge', '-')}, Adam {s.get('adam_at_edge', '-')} of "
            f"{2 * s['problems']} choices")
    return lines


def markdown(result: dict) -> str:
    tuned = "tuned over the same grid" if result["candidate_tuned_over_lr_grid"] else "as shipped"
    head = [f"# Drop-in check: `{result['optimizer']}` ({tuned}) vs per-problem-tuned Adam",
            "", f"Adam learning rates: {', '.join(f'{v:.3g}' for v in result['lr_grid'])}; "
            f"{result['seconds']:.0f} s on {result['jax_devices']}.", ""]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    return "\n".join(head + [f"- {s}" for s in summary_lines(result)] + [""] + lines) + "\n"


def print_result(result: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"drop-in check: {result['optimizer']} vs tuned Adam")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "problem" else "right")
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)
    for line in summary_lines(result):
        console.print(line)


def write(result: dict, out: Path) -> Path:
    from lopt_cli.io import json_line, write_text_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json_line(result, indent=1) + "\n")
    write_text_atomic(out.with_suffix(".md"), markdown(result))
    return out


def main(out_dir: str | Path, optimizer: str = "default", steps: tuple[int, ...] = (1000, 5000),
         quick: bool = False, out: str | Path | None = None, grid: tuple = LR_GRID) -> dict:
    """Runs the check, prints its table, writes ``out`` (default
    ``<out_dir>/dropin_check.json``) and the markdown beside it."""
    from rich.console import Console

    target = writable_targets(Path(out) if out else Path(out_dir) / "dropin_check.json")
    console = Console()
    problems = problems_lib.quick_problems() if quick else problems_lib.default_problems()
    result = check(optimizer, tuple(steps), problems, console, grid=grid)
    print_result(result, console)
    path = write(result, target)
    console.print(f"written: {path} and {path.with_suffix('.md')}")
    return result


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(v) for v in text.split(","))
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: expected positive ints, e.g. 1000,5000")
    return steps


def parse_rates(text: str) -> tuple[float, ...]:
    """``LOW,HIGH,N``: N learning rates log-spaced from LOW to HIGH."""
    try:
        low, high, num = text.split(",")
        low, high, num = float(low), float(high), int(num)
    except ValueError:
        low = high = num = 0
    if not (0 < low < high and math.isfinite(high) and num >= 3):
        raise argparse.ArgumentTypeError(
            f"--rates {text!r}: expected LOW,HIGH,N with 0 < LOW < HIGH and N >= 3, e.g. 1e-6,1,13")
    return tuple(float(v) for v in np.geomspace(low, high, num))


def cli(argv: list[str] | None = None) -> int:
    from lopt_cli.errors import LoptUserError

    parser = argparse.ArgumentParser(prog="python -m benchmarks.dropin_check",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer", default="default",
                        help="a load_optimizer source: default, a shipped name, a run "
                             "directory, adam, ... (default: default)")
    parser.add_argument("--steps", type=parse_steps, default=None,
                        help="horizons, comma-separated (default 1000,5000; --quick: 30)")
    parser.add_argument("--out", default=None, help="JSON path (markdown beside it); default "
                        "benchmarks/results/dropin_check.json")
    parser.add_argument("--quick", action="store_true", help="2 small problems, 30 steps")
    parser.add_argument("--rates", type=parse_rates, default=LR_GRID,
                        help="the learning-rate grid, LOW,HIGH,N log-spaced (default 1e-4,0.1,7)")
    args = parser.parse_args(argv)
    steps = args.steps or (QUICK_STEPS if args.quick else (1000, 5000))
    try:
        main(Path(__file__).resolve().parent / "results", args.optimizer, steps, args.quick,
             args.out, args.rates)
    except (LoptUserError, OSError) as error:  # OSError: an --out that cannot be written
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
