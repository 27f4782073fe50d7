r"""Per-step cost of every registered learned optimizer against Adam, at 1e4 / 1e5 / 1e6 params.

For each parameter pytree (a two-layer MLP of width :math:`w`, :math:`P = 2(w^2 + w)`
parameters) and each optimizer (``optax.adam`` and every entry of
``registry.LEARNED_OPTIMIZERS``, freshly initialised), one jitted ``update`` is compiled; then
all the rows of that size are timed together, ``reps`` rounds (half as many at 1e6
parameters) each calling every row once, so that the machine's load drifts alike for all of
them (:func:`time_interleaved`); as in a training loop, each update's new state is the next
call's state. Reported per row:

* ``median_s`` and ``x_adam``, the ratio to Adam's median in the same run;
* ``flops``: FLOPs of one update counted by XLA (``jax.jit(update).lower(...).cost_analysis()``,
  the pre-optimisation HLO: every matmul as :math:`2mnk`, every elementwise op as one FLOP per
  element; transcendentals are counted separately and not included). Learned optimizers that
  run their MLP in blocks (``chunk_size``) are lowered with ``chunk_size=0`` for the count,
  since XLA counts a loop body once;
* ``analytic_flops_per_param`` as a cross-check, where known: the optimizer's own
  ``flops_per_param`` if it defines one, else the per-parameter MLP matmuls
  :math:`2\sum_l h_{l-1} h_l` read from the kernel shapes of ``theta`` plus an estimate of the
  elementwise feature work (:func:`analytic_flops_per_param`); Adam: 13;
* ``peak_flops_per_s``: best rate of a jitted 2048×2048 f32 matmul in the same run;
  ``floor_s = flops / peak`` (the time the update would take at matmul peak) and
  ``x_floor = median_s / floor_s``;
* ``state_floats_per_param``: floating-point elements of the optimizer state over :math:`P`;
* ``bytes``: the least memory traffic of an update (read gradients, parameters and state; write
  state and updates); ``stream_s``: the median time, in the same run, of a jitted elementwise
  pass (``x * 2``) that reads and writes that many bytes (so the same level of the cache
  hierarchy is exercised); ``roofline_s = max(floor_s, stream_s)`` and ``x_roofline``: for
  memory-bound updates (Adam, ``small``) the FLOP floor is unreachable and this is the bar;
* a reference row per learned optimizer, ``<name>:matmuls``: only its per-parameter MLP's
  matrix products (and biases, ReLUs), feature-major and in the same blocks of parameters, on
  precomputed features. Its ``x_floor`` is what XLA's own matmuls reach on these shapes: no
  implementation of the update built from them can beat it.

Run: ``python -m benchmarks.optimizer_overhead [--sizes 1e4 1e5 1e6] [--reps 20]`` or
``make bench``; results go to ``benchmarks/results/optimizer_overhead.json``. Timings on a
shared machine are noisy; compare ratios within one run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt_cli.evaluation.benchmark_cost import tree_bytes

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
LARGE = 500_000  # at and above this many parameters, time fewer repetitions (reps // 2)
ADAM_FLOPS_PER_PARAM = 13  # m: 3, v: 4, bias corrections 2, sqrt, +eps, divide, scale


def mlp_params(num_params: int, key: jax.Array) -> dict:
    """A two-layer MLP ``w → w → w`` with about ``num_params`` parameters."""
    width = max(1, round(math.sqrt(num_params / 2)))
    keys = jax.random.split(key, 4)
    return {f"layer_{i}": {"w": jax.random.normal(keys[2 * i], (width, width)) / width**0.5,
                           "b": 0.1 * jax.random.normal(keys[2 * i + 1], (width,))}
            for i in range(2)}


def peak_matmul_flops(size: int = 2048, reps: int = 10) -> float:
    """Peak FLOP/s of a jitted ``size × size`` f32 matmul on the default device: the best of
    ``reps`` timed calls (a peak is the best rate the machine reaches; on a shared machine the
    median drifts with other load, which would make every floor more lenient)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.min(times))


def stream_call(num_bytes: int) -> Call:
    """A jitted in-place ``x * 2`` (donated) over f32 ``x`` of ``num_bytes / 8`` elements: it
    reads and writes ``num_bytes`` in all."""
    x = jnp.ones((max(1, num_bytes // 8),), jnp.float32)
    return Call(jax.jit(lambda a: a * 2.0, donate_argnums=0), (x,), lambda args, out: (out,))


def analytic_flops_per_param(lopt, theta) -> float | None:
    """Per-parameter FLOPs of a learned optimizer's update, or None if unknown (see module).

    Elementwise estimate for optimizers with ``decays`` (D timescales) and F_p per-parameter
    features: accumulators 7D, rsqrt and m·rsqrt features 3D, feature normalisation 3F_p
    (square, sum, scale), log|p| 2, clipping 3, hidden biases and ReLUs 2·Σh, output 6.
    """
    if hasattr(lopt, "flops_per_param"):
        return float(lopt.flops_per_param)
    layers = per_param_layers(lopt, theta) or []
    kernels = [layer["kernel"].shape for layer in layers]
    decays = getattr(lopt, "decays", None)
    if not kernels or decays is None:
        return None
    matmuls = sum(2 * a * b for a, b in kernels)
    first_in = kernels[0][0]
    hidden = sum(getattr(lopt, "hidden_sizes", ()))
    elementwise = 10 * len(decays) + 3 * first_in + 2 + 3 + 2 * hidden + 6
    return float(matmuls + elementwise)


def count_float_elements(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)
               if jnp.issubdtype(jnp.result_type(x), jnp.floating))


def optimizer_cases(names: list[str] | None = None) -> list[tuple]:
    """``(name, lopt, theta)`` for Adam (``lopt = theta = None``) and every learned optimizer, or
    those in ``names``: a registered name, or one with fields set, ``muon_nominal:ns_steps=3``
    (several joined by ``,``; values read as YAML)."""
    from lopt_cli.errors import LoptUserError
    from lopt_cli.optimizers.registry import LEARNED_OPTIMIZERS

    entries = list(LEARNED_OPTIMIZERS) if names is None else [n for n in names if n != "adam"]
    cases = [("adam", None, None)]
    for entry in entries:
        name, _, settings = entry.partition(":")
        if name not in LEARNED_OPTIMIZERS:
            raise SystemExit(f"--optimizers: {name!r} is not a learned optimizer; one of "
                             f"{', '.join(LEARNED_OPTIMIZERS)}")
        try:
            lopt = LEARNED_OPTIMIZERS[name](**field_settings(settings))
        except (TypeError, LoptUserError) as error:  # an unknown field, a bad value
            raise SystemExit(f"--optimizers: {entry}: {error}") from None
        cases.append((entry, lopt, lopt.init(jax.random.PRNGKey(0))))
    return cases


def field_settings(text: str) -> dict:
    """``"a=1,b=null"`` → ``{"a": 1, "b": None}`` (values read as YAML).

    >>> field_settings("ns_steps=3,muon_rms=0.2")
    {'ns_steps': 3, 'muon_rms': 0.2}
    """
    import yaml

    pairs = [item.partition("=") for item in text.split(",") if item]
    if any(not sep or not key for key, sep, _ in pairs):
        raise SystemExit(f"--optimizers: {text!r} must be field=value pairs joined by ','")
    return {key: yaml.safe_load(value) for key, _, value in pairs}


def unchunked(lopt):
    """``lopt`` with ``chunk_size=0`` if it has that field (one MLP block: countable FLOPs)."""
    from lopt_cli.optimizers.cpu_tuning import has_chunk_size

    if has_chunk_size(lopt):
        return dataclasses.replace(lopt, chunk_size=0)
    return lopt


def update_step(lopt):
    """``step(theta, grads, state, params) -> (updates, state)``; theta is an argument (as in
    meta-training), not a baked-in constant."""
    from lopt_cli.optimizers.registry import DEFAULT_NUM_STEPS

    def step(theta, grads, state, params):
        opt = optax.adam(1e-3) if lopt is None else lopt.transform(theta, DEFAULT_NUM_STEPS)
        loss = jnp.float32(1.0)
        return opt.update(grads, state, params, loss=loss, valid_loss=loss)

    return step


def prepare(name: str, lopt, theta, params) -> tuple[dict, Call]:
    """One row of ``name`` on ``params`` without its timing (FLOPs, bytes, state size), and the
    jitted update to time."""
    from lopt_cli.optimizers.registry import DEFAULT_NUM_STEPS

    num_params = count_float_elements(params)
    grads = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), params)
    opt = optax.adam(1e-3) if lopt is None else lopt.transform(theta, DEFAULT_NUM_STEPS)
    state = opt.init(params)
    args = (theta, grads, state, params)
    counting = None if lopt is None else unchunked(lopt)
    cost = jax.jit(update_step(counting)).lower(*args).cost_analysis() or {}
    flops = float(cost.get("flops", float("nan")))
    analytic = ADAM_FLOPS_PER_PARAM if lopt is None else analytic_flops_per_param(lopt, theta)
    traffic = 2 * tree_bytes(state) + 2 * tree_bytes(params) + tree_bytes(grads)
    row = {"optimizer": name, "num_params": num_params, "flops": flops,
           "flops_per_param": flops / num_params, "analytic_flops_per_param": analytic,
           "bytes": traffic, "state_floats_per_param": count_float_elements(state) / num_params}
    # As in a training loop, each call's new state is the next call's state.
    return row, Call(jax.jit(update_step(lopt)), args,
                     lambda args, out: (*args[:2], out[1], args[3]))


def prepare_matmuls(name: str, lopt, theta, params) -> tuple[dict, Call] | None:
    """The reference row ``<name>:matmuls`` (see module docstring) as :func:`prepare` does, or
    None for optimizers without a feature-major per-parameter MLP (``param_in`` + ``Dense``s)."""
    from lopt_cli.optimizers import feature_major as fm

    layers = per_param_layers(lopt, theta)
    if layers is None:
        return None
    num_params = count_float_elements(params)
    sizes = [int(np.prod(p.shape)) for p in jax.tree.leaves(params)]
    in_width = layers[0]["kernel"].shape[0]
    features = [jax.random.normal(jax.random.PRNGKey(i), (in_width, n)) for i, n in
                enumerate(sizes)]
    chunk = lopt.resolved_chunk_size()

    def mlp(layers, features):
        def block(x):
            h = fm.dense(layers[0], x)
            return fm.hidden_stack(layers[1:], h)[0]
        return [fm.map_blocks(block, x, chunk) for x in features]

    flops = float(sum(2 * n * sum(np.prod(layer["kernel"].shape) for layer in layers)
                      for n in sizes))
    row = {"optimizer": f"{name}:matmuls", "num_params": num_params, "flops": flops,
           "flops_per_param": flops / num_params, "analytic_flops_per_param": None,
           "bytes": tree_bytes(features) + 4 * num_params, "state_floats_per_param": 0.0}
    return row, Call(jax.jit(mlp), (layers, features))


@dataclasses.dataclass
class Call:
    """A jitted function, its arguments, and how the arguments of the next call follow from
    this call's (``thread(args, out)``; None: the same arguments again)."""

    fn: Callable
    args: tuple
    thread: Callable | None = None

    def __call__(self) -> None:
        out = jax.block_until_ready(self.fn(*self.args))
        if self.thread is not None:
            self.args = self.thread(self.args, out)


def time_interleaved(calls: list[Call], reps: int) -> list[tuple[float, float]]:
    """``(compile + first call seconds, median seconds)`` of each call, timed in ``reps``
    rounds that call each one once in turn: a change in the machine's load during the
    measurement then affects every call alike, so ratios within one round stay meaningful."""
    compile_s = []
    for call in calls:
        start = time.perf_counter()
        call()
        compile_s.append(time.perf_counter() - start)
    times = [[] for _ in calls]
    for _ in range(reps):
        for call, record in zip(calls, times):
            start = time.perf_counter()
            call()
            record.append(time.perf_counter() - start)
    return [(c, float(np.median(t))) for c, t in zip(compile_s, times)]


def per_param_layers(lopt, theta) -> list[dict] | None:
    """The feature-major per-parameter MLP's ``Dense`` variables in product order (its
    module's ``per_param_chain``), or None for an optimizer whose network does not run in
    blocks of parameters (no ``chunk_size``)."""
    from lopt_cli.optimizers.cpu_tuning import has_chunk_size

    if not has_chunk_size(lopt):
        return None
    return [theta["params"][name] for name in lopt.network.per_param_chain()]


def run(sizes=DEFAULT_SIZES, reps: int = 20, names: list[str] | None = None,
        peak_size: int = 2048) -> dict:
    """All rows (see module docstring) for the given parameter counts."""
    cases = optimizer_cases(names)  # a bad --optimizers entry fails before any timing
    peak = peak_matmul_flops(peak_size)
    rows = []
    for size in sizes:
        params = mlp_params(int(size), jax.random.PRNGKey(1))
        count = reps if int(size) < LARGE else max(3, reps // 2)
        prepared = []
        for case in cases:
            prepared.append(prepare(*case, params))
            if case[1] is not None:
                reference = prepare_matmuls(*case, params)
                prepared += [reference] if reference is not None else []
        size_rows = [row for row, _ in prepared]
        streams = sorted({int(row["bytes"]) for row in size_rows})
        calls = [call for _, call in prepared] + [stream_call(b) for b in streams]
        timed = time_interleaved(calls, count)
        stream_s = dict(zip(streams, (median for _, median in timed[len(prepared):])))
        for row, (compile_s, median) in zip(size_rows, timed):
            row.update(reps=count, median_s=median, compile_s=compile_s)
        adam = next(r for r in size_rows if r["optimizer"] == "adam")["median_s"]
        for row in size_rows:
            row["x_adam"] = row["median_s"] / adam
            row["floor_s"] = row["flops"] / peak
            row["x_floor"] = row["median_s"] / row["floor_s"]
            row["stream_s"] = stream_s[int(row["bytes"])]
            row["roofline_s"] = max(row["floor_s"], row["stream_s"])
            row["x_roofline"] = row["median_s"] / row["roofline_s"]
        rows += size_rows
    return {"benchmark": "optimizer_overhead", "peak_flops_per_s": peak,
            "peak_matmul_size": peak_size, "devices": [str(d) for d in jax.devices()],
            "flops_source": "XLA cost_analysis of the lowered update (chunking off); "
                            "analytic_flops_per_param as cross-check",
            "rows": rows}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"optimizer update overhead; peak {result['peak_flops_per_s'] / 1e9:.1f} "
                        "GFLOP/s (f32 matmul)")
    for column in ("params", "optimizer", "median ms", "× adam", "FLOPs/param (xla)",
                   "analytic", "floor ms", "× floor", "× roofline", "state/param"):
        table.add_column(column, justify="right")
    for r in result["rows"]:
        analytic = r["analytic_flops_per_param"]
        table.add_row(f"{r['num_params']:,}", r["optimizer"], f"{1e3 * r['median_s']:.3f}",
                      f"{r['x_adam']:.1f}", f"{r['flops_per_param']:,.0f}",
                      "-" if analytic is None else f"{analytic:,.0f}",
                      f"{1e3 * r['floor_s']:.4f}", f"{r['x_floor']:.1f}",
                      f"{r['x_roofline']:.1f}", f"{r['state_floats_per_param']:.2f}")
    Console(width=150).print(table)


def main(out_dir: str | Path = "benchmarks/results", sizes=DEFAULT_SIZES, reps: int = 20,
         names: list[str] | None = None, peak_size: int = 2048) -> dict:
    result = run(sizes, reps, names, peak_size)
    print_table(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "optimizer_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--optimizers", nargs="+", default=None,
                        help="learned ones to include; fields as in muon_nominal:ns_steps=3")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    try:
        main(args.out_dir, [int(s) for s in args.sizes], args.reps, args.optimizers)
    except SystemExit as bad_entry:
        if not isinstance(bad_entry.code, str):
            raise
        parser.error(bad_entry.code)  # one line, exit status 2
