"""How long a benchmark's runs will take, for an ETA that is not a count of parts.

A benchmark's parts differ by four orders of magnitude: a cached part takes no time, Beale's
runs a few seconds, a transformer's half an hour on 2 cores. Counting parts gives an ETA that
is wrong by hours. Each part to compute is given a predicted cost instead. With ``runs`` =
trials × seeds vmapped in one program, one training step (the loss's gradient on one batch
and the update) of all runs takes about

    max(runs · (flops / FLOPS_PER_SECOND + scanned / SCANNED_FLOPS_PER_SECOND),
        runs · bytes / BYTES_PER_SECOND) + SECONDS_PER_STEP

where ``scanned`` are the flops inside a ``scan`` (a recurrent net's steps over its sequence:
small products, run at half the rate), ``flops`` the others and ``bytes`` the memory XLA
expects the step to touch (:func:`step_cost`; traced and lowered, not compiled). A part is
``horizon`` such steps plus ``COMPILE_SECONDS``; on the host loop (the conv nets on a CPU) each
run is a program of its own at ``HOST_LOOP_FLOPS_PER_SECOND``. The rates were measured on the
2-core CPU (``lopt_bench``'s tasks, 30 runs of Adam, nothing else running): the measured step
was 0.55-1.95× the predicted one on the eight tasks ``python -m benchmarks.step_cost_check``
times, and the progress display rescales it by the pace measured so far. A task another
optimizer has already run on this machine is predicted from that run's recorded time instead
(``timing`` in the cached value), which is the common case of a new candidate against cached
baselines.

The optimizer's update is counted too (:func:`update_cost`, traced the same way, all its matrix
products at the full rate): Muon's Newton–Schulz iterations cost a wide MLP's step several times
its gradient, and a recorded time of Adam on the same task says nothing of them. A recorded
time is turned into the task's own rate by taking out the update of the optimizer that recorded
it, then the new optimizer's update is added (:func:`task_rate`).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

# Measured on the 2-core CPU, 30 vmapped runs of Adam per step, the sweep paused: big matrix
# products (transformer_wide 6.6e10 flop/s, mlp_wide_deep_digits 7.5e10), recurrent scans
# (char_gru_wide 3.4e10, char_lstm_long 3.1e10), memory-bound steps (transformer_deep, whose
# step touches 1.9e8 bytes for 2.2e8 flops, 3.0e10 B/s; flow_long_rings 3.0e10 B/s).
FLOPS_PER_SECOND = 6.5e10
SCANNED_FLOPS_PER_SECOND = 3.2e10
BYTES_PER_SECOND = 3e10
# One run at a time from the host (the conv nets on a CPU) uses the cores less well: a part of
# conv_deep_digits16 (30 runs of 2,000 steps) took 6.4 min, 6.4 ms per step of 1.2e8 flops.
HOST_LOOP_FLOPS_PER_SECOND = 2e10
SECONDS_PER_STEP = 2e-5  # what a step costs however small the task (loop, dispatch)
COMPILE_SECONDS = 5.0  # a part's programs compiled once


class StepCost(NamedTuple):
    """One training step of a task: flops outside scans, flops inside them, bytes touched."""

    flops: float = 0.0
    scanned: float = 0.0
    bytes: float = 0.0


def step_cost(task: Any) -> StepCost:
    """The :class:`StepCost` of one training step of ``task`` (the loss's gradient on one
    training batch). XLA's cost analysis counts a ``scan``'s body once, so the matrix products
    are also counted from the jaxpr (:func:`matmul_flops`, a scan's body once per step); the
    flops outside scans are the larger of XLA's whole count and the jaxpr's, less the scanned
    ones. An all-zero cost when the task cannot be traced."""
    import jax

    key = jax.random.PRNGKey(0)

    def gradient(params, key):
        return jax.grad(lambda p: task.loss(p, task.sample_batch(key, "train"), key))(params)

    try:
        traced = jax.jit(gradient).trace(jax.eval_shape(task.init, key), key)  # traced once
        xla_flops, xla_bytes = xla_counts(traced)
        outside, scanned = matmul_flops(traced.jaxpr.jaxpr)
    except Exception:  # noqa: BLE001 - an estimate only: a task that cannot say costs its steps
        return StepCost()
    return StepCost(max(xla_flops, outside + scanned) - scanned, scanned, xla_bytes)


def xla_counts(traced: Any) -> tuple[float, float]:
    """``(flops, bytes accessed)`` of a traced function by XLA's cost analysis (zeros for what
    the backend does not report)."""
    analysis = traced.lower().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return (float(analysis.get("flops", 0.0) or 0.0),
            float(analysis.get("bytes accessed", 0.0) or 0.0))


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays (or shapes and dtypes) of a pytree; leaves without a dtype count 0.

    >>> import numpy as np
    >>> tree_bytes({"w": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int64), "s": "x"})
    32
    """
    import jax
    import numpy as np

    return sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree) if hasattr(leaf, "dtype"))


def update_cost(optimizer: Any, task: Any, horizon: int) -> StepCost:
    """The :class:`StepCost` of one update of one run of ``optimizer`` (a benchmark
    ``Optimizer``, at its first trial) on ``task``'s parameters, every matrix product counted
    as ``flops`` (Newton–Schulz's are large ones, not a recurrent net's small ones). Its
    ``bytes`` are what the update reads and writes (gradients, parameters and state in; updates
    and state out): the compiler fuses an update's elementwise chain, and XLA's count before
    fusion was 5× (Adam) to 11× (a learned optimizer's per-parameter MLP) its count of the
    compiled update, which predicted the default's parts of ``lopt_bench`` up to 4× too long
    and one of ``celo_mix`` 11× on a 2-core Zen 4. All zero when it cannot be traced."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lopt_cli.evaluation.candidates import make_optimizer

    try:
        first = {name: np.asarray(values)[0] for name, values in optimizer.space.trials(1).items()}
        opt = make_optimizer(optimizer.space, first, horizon, optimizer.shared)
        params = jax.eval_shape(task.init, jax.random.PRNGKey(0))
        state = jax.eval_shape(opt.init, params)

        def update(grads, state, params):
            zero = jnp.zeros((), jnp.float32)
            return opt.update(grads, state, params, loss=zero, valid_loss=zero)

        traced = jax.jit(update).trace(params, state, params)
        xla_flops, _ = xla_counts(traced)
        outside, scanned = matmul_flops(traced.jaxpr.jaxpr)
        touched = tree_bytes((traced.in_avals, traced.out_avals))
    except Exception:  # noqa: BLE001 - an estimate only, like step_cost
        return StepCost()
    return StepCost(max(xla_flops, outside + scanned), 0.0, float(touched))


def update_seconds(cost: StepCost, host_loop: bool) -> float:
    """Predicted seconds of one run's update (:func:`update_cost`), per step.

    >>> update_seconds(StepCost(6.5e10, 0.0, 0.0), host_loop=False)
    1.0
    >>> update_seconds(StepCost(0.0, 0.0, 6e10), host_loop=False)
    2.0
    """
    rate = HOST_LOOP_FLOPS_PER_SECOND if host_loop else FLOPS_PER_SECOND
    return max(cost.flops / rate, cost.bytes / BYTES_PER_SECOND)


def task_rate(timed: list[tuple[float, float]]) -> float | None:
    """Seconds per run and step of a task without the update: the median over recorded
    ``(rate, update seconds of the optimizer that recorded it)`` of their difference (never
    below zero), or ``None`` when nothing was recorded.

    >>> task_rate([(0.05, 0.04), (0.02, 0.0), (0.03, 0.0)])
    0.02
    >>> task_rate([]) is None
    True
    """
    rates = sorted(max(rate - update, 0.0) for rate, update in timed)
    return rates[len(rates) // 2] if rates else None


def matmul_flops(jaxpr: Any, repeats: int = 1, in_scan: bool = False) -> tuple[float, float]:
    """``(outside, inside)``: 2·M·N·K of every ``dot_general`` in ``jaxpr`` and the jaxprs
    inside it, outside any ``scan`` and inside one; a scan's body counted ``length`` times (a
    ``while`` body once, every branch of a ``cond``)."""
    outside = inside = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contracted, _), _ = eqn.params["dimension_numbers"]
            depth = math.prod(eqn.invars[0].aval.shape[i] for i in contracted)
            flops = 2.0 * math.prod(eqn.outvars[0].aval.shape) * depth * repeats
            outside, inside = (outside, inside + flops) if in_scan else (outside + flops, inside)
        is_scan = eqn.primitive.name == "scan"
        times = repeats * (eqn.params["length"] if is_scan else 1)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's jaxpr
                if hasattr(sub, "eqns"):
                    more_out, more_in = matmul_flops(sub, times, in_scan or is_scan)
                    outside, inside = outside + more_out, inside + more_in
    return outside, inside


def predicted_seconds(cost: StepCost, horizon: int, runs: int, host_loop: bool) -> float:
    """The predicted seconds of one part (see the module's docstring).

    >>> predicted_seconds(StepCost(6.5e10, 0.0, 0.0), 10, 2, host_loop=False) == 10 * (2 + 2e-5) + 5
    True
    >>> predicted_seconds(StepCost(0.0, 0.0, 3e10), 10, 2, host_loop=False) == 10 * (2 + 2e-5) + 5
    True
    >>> predicted_seconds(StepCost(), 1000, 30, host_loop=True) == 30 * 1000 * 2e-5 + 5
    True
    """
    if host_loop:
        per_run = (cost.flops + cost.scanned) / HOST_LOOP_FLOPS_PER_SECOND
        return horizon * runs * (per_run + SECONDS_PER_STEP) + COMPILE_SECONDS
    compute = runs * (cost.flops / FLOPS_PER_SECOND + cost.scanned / SCANNED_FLOPS_PER_SECOND)
    memory = runs * cost.bytes / BYTES_PER_SECOND
    return horizon * (max(compute, memory) + SECONDS_PER_STEP) + COMPILE_SECONDS


class PacedEstimate:
    """The remaining time of a benchmark: the predicted seconds of what is left, times the
    pace so far (seconds taken per predicted second of the parts, or the fractions of parts,
    done). Before anything is done the prediction stands as it is."""

    def __init__(self, predicted: dict[str, float]):
        self.predicted = dict(predicted)
        self.total = sum(self.predicted.values())
        self.done = 0.0  # predicted seconds of the work done here (the pace's)
        self.skipped = 0.0  # ... of the work read back from a stopped part (took no time)

    def finish(self, label: str, fraction_counted: float = 0.0) -> float:
        """Counts part ``label`` done, of which ``fraction_counted`` was counted already by
        :meth:`advance`; returns the predicted seconds it adds."""
        added = self.predicted.get(label, 0.0) * (1.0 - fraction_counted)
        self.done += added
        return added

    def advance(self, label: str, fraction: float) -> float:
        """Counts ``fraction`` of part ``label`` done; returns the predicted seconds it adds."""
        added = self.predicted.get(label, 0.0) * fraction
        self.done += added
        return added

    def skip(self, label: str, fraction: float) -> float:
        """Counts ``fraction`` of part ``label`` read back, not run (no time taken); returns
        the predicted seconds it covers."""
        skipped = self.predicted.get(label, 0.0) * fraction
        self.skipped += skipped
        return skipped

    def remaining_seconds(self, elapsed: float) -> float:
        """The predicted seconds left, at the pace of the ``elapsed`` seconds so far."""
        pace = elapsed / self.done if self.done > 0 else 1.0
        return max(self.total - self.done - self.skipped, 0.0) * pace


def measured_rate(values: list[dict | None]) -> float | None:
    """Seconds per run and step, the median over cached runs of one task that recorded how
    long they took (``timing``, stored since December 2026), or ``None``.

    >>> measured_rate([{"timing": {"seconds": 20.0, "runs": 10, "horizon": 100}}, None, {}])
    0.02
    """
    rates = sorted(v["timing"]["seconds"] / (v["timing"]["runs"] * v["timing"]["horizon"])
                   for v in values if v and isinstance(v.get("timing"), dict))
    return rates[len(rates) // 2] if rates else None


def peek_parts(spec: Any, optimizers: list, cache: Any) -> dict[tuple[str, str], Any]:
    """``{(task, optimizer): cached value or None}`` for every part of ``spec``, each read
    once."""
    from lopt_cli.evaluation.benchmark import run_description

    return {(task.name, o.name): cache.peek(run_description(task, o, spec))
            for task in spec.tasks for o in optimizers}


def predicted_parts(spec: Any, candidates: list, cache: Any,
                    peeked: dict[tuple[str, str], Any] | None = None) -> dict[str, float]:
    """``{"task: optimizer": predicted seconds}`` of the parts :func:`run_benchmark` will
    compute (cached parts are left out: they take no time). A task that cached runs have timed
    on this machine is predicted from their time (:func:`task_rate`), any other from the cost
    of its step (:func:`predicted_seconds`); either way plus the optimizer's own update.
    ``peeked``: :func:`peek_parts` already read (else read here)."""
    from lopt_cli.evaluation.benchmark import loops_on_host, optimizers_of

    optimizers = optimizers_of(spec, candidates)
    if peeked is None:
        peeked = peek_parts(spec, optimizers, cache)
    predicted = {}
    for task in spec.tasks:
        cached = {o.name: peeked[(task.name, o.name)] for o in optimizers}
        to_compute = [o for o in optimizers if cached[o.name] is None]
        if not to_compute:
            continue
        looped = loops_on_host(task.task, spec.host_loop)
        recorded = {o.name: measured_rate([cached[o.name]]) for o in optimizers}
        rate = task_rate([(recorded[o.name], _update_seconds_of(o, task, looped))
                          for o in optimizers if recorded[o.name] is not None])
        if rate is None:
            cost = step_cost(task.task)
        for optimizer in to_compute:
            runs = optimizer.num_trials * spec.measure.num_seeds
            update = _update_seconds_of(optimizer, task, looped)
            predicted[f"{task.name}: {optimizer.name}"] = (
                (rate + update) * runs * task.horizon if rate is not None
                else predicted_seconds(cost, task.horizon, runs, looped)
                + update * runs * task.horizon)
    return predicted


def _update_seconds_of(optimizer: Any, task: Any, looped: bool) -> float:
    """Predicted seconds of one run's update of ``optimizer`` on benchmark ``task``, per step."""
    return update_seconds(update_cost(optimizer, task.task, task.horizon), looped)
