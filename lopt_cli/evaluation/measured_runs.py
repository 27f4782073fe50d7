r"""Measured training runs of the benchmark, computed in segments so that progress shows.

A run trains ``horizon`` steps and, after every ``horizon / num_points`` of them, measures the
loss of the current parameters on a **fixed sample** of each split (the same batches for every
optimizer, trial and seed). The run is one compiled program per piece:

* :func:`start_trials` draws every run's parameters, optimizer state and step keys;
* :func:`advance_trials` trains a segment of ``num_points / segments`` measurements, carrying
  the state into the next call of the same program.

Splitting the horizon costs nothing in the numbers (a segment is the same scan body with the
same keys; with at least two measurements per segment the results match the unsegmented run
bit for bit) and lets a 40-minute conv run report
progress after each segment: the host blocks on a segment's small curves before it starts the
next. All trials and seeds of an optimizer (and, ``stacked``, all same-shape tasks) are vmapped
into each call; :func:`host_loop_curves` runs them one (trial, seed) at a time instead.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt_cli.evaluation.candidates import make_optimizer
from lopt_cli.evaluation.partial_runs import PartStore
from lopt_cli.evaluation.placement import num_trials_of, spread_runs, without_padding
from lopt_cli.inner.unroll import InnerState, init_inner_state, train_step

EVAL_SPLITS = ("train", "valid", "test")
MAX_SEGMENTS = 10


class MeasuredRun(NamedTuple):
    """A run between segments: the inner state and the keys of every step of the horizon."""

    state: InnerState
    step_keys: jax.Array  # (num_points, steps per point, 2, key): batch and loss key per step


def segments_of(num_points: int, max_segments: int = MAX_SEGMENTS) -> int:
    """How many segments a run of ``num_points`` measurements is split into: the largest
    divisor of ``num_points`` that is at most ``max_segments`` and leaves every segment at
    least two measurements. Equal segments share one program; a one-measurement scan would be
    compiled without its loop, which rounds differently (by about one float ulp).

    >>> segments_of(50), segments_of(40), segments_of(64), segments_of(13), segments_of(4)
    (10, 10, 8, 1, 2)
    """
    limit = max(1, min(num_points // 2, max_segments))
    return max(d for d in range(1, limit + 1) if num_points % d == 0)


def fixed_sample(task, eval_keys: jax.Array, split: str) -> tuple:
    """The fixed sample of ``split``: ``(batches, loss keys)``, one batch per key."""
    batch_keys, loss_keys = jnp.moveaxis(jax.vmap(jax.random.split)(eval_keys), 1, 0)
    return jax.vmap(lambda k: task.sample_batch(k, split))(batch_keys), loss_keys


def fixed_sample_loss(task, params, sample: tuple) -> jax.Array:
    """Mean loss of ``params`` over a :func:`fixed_sample`."""
    batches, loss_keys = sample
    return jnp.mean(jax.vmap(lambda b, k: task.loss(params, b, k))(batches, loss_keys))


def start_run(task, opt, key: jax.Array, horizon: int, num_points: int) -> MeasuredRun:
    """A fresh run of ``horizon`` steps: its initial state and all its step keys."""
    every = horizon // num_points
    state = init_inner_state(task, lambda _: opt, key, jnp.asarray(horizon))
    step_keys = jax.random.split(state.key, num_points * every * 2)
    return MeasuredRun(state, step_keys.reshape((num_points, every, 2) + step_keys.shape[1:]))


def advance_run(task, opt, run: MeasuredRun, eval_keys: jax.Array, first_point: jax.Array,
                points: int) -> tuple[MeasuredRun, dict]:
    """Trains the ``points`` measurements from ``first_point`` on; returns the run and, per
    split, the raw and normalised losses on the fixed sample after each (``{split: [point]}``,
    ``{f"norm_{split}": …}``). The validation value is what a learned optimizer reads as
    ``valid_loss``."""
    # The fixed sample is drawn again in each segment (the same keys, so the same batches): it
    # depends on the task alone, so vmapping leaves it unbatched, where carrying it in the run
    # would copy it for every trial and seed.
    samples = {split: fixed_sample(task, eval_keys, split) for split in EVAL_SPLITS}
    keys = jax.lax.dynamic_slice_in_dim(run.step_keys, first_point, points, axis=0)

    def chunk(state, chunk_keys):
        state, _ = jax.lax.scan(lambda s, k: train_step(task, opt, s, k), state, chunk_keys)
        losses = {split: fixed_sample_loss(task, state.params, samples[split])
                  for split in EVAL_SPLITS}
        state = state._replace(valid_loss=losses["valid"])
        return state, {**losses, **{f"norm_{s}": task.normalize(v) for s, v in losses.items()}}

    state, curves = jax.lax.scan(chunk, run.state, keys)
    return run._replace(state=state), curves


def _over_trials(fn, space, shared, hparams, horizon: int, stacked: bool):
    """``fn(task, opt, per_run, *shared_args)`` vmapped over trials and seeds (and tasks,
    ``stacked``): ``per_run`` has leading axes (task,) trial, seed; the optimizer is built per
    trial; ``shared_args`` are the same for every run."""

    def one_task(task, per_run, shared_args):
        def one(setting, run):
            return fn(task, make_optimizer(space, setting, horizon, shared), run, *shared_args)

        return jax.vmap(lambda s, r: jax.vmap(lambda x: one(s, x))(r))(hparams, per_run)

    return jax.vmap(one_task, in_axes=(0, 0, None)) if stacked else one_task


@functools.partial(jax.jit, static_argnames=("space", "horizon", "num_points", "stacked"))
def start_trials(space, shared, hparams: dict, task, keys: jax.Array, horizon: int,
                 num_points: int, stacked: bool = False) -> MeasuredRun:
    """:func:`start_run` of every trial × seed (leading axes (task,) trial, seed)."""
    num_trials = num_trials_of(hparams)
    per_run = jnp.broadcast_to(keys, (num_trials,) + keys.shape)
    if stacked:
        per_run = jnp.broadcast_to(per_run, (len(jax.tree_util.tree_leaves(task)[0]),)
                                   + per_run.shape)
    start = _over_trials(lambda t, opt, key: start_run(t, opt, key, horizon, num_points),
                         space, shared, hparams, horizon, stacked)
    return start(task, per_run, ())


@functools.partial(jax.jit, static_argnames=("space", "horizon", "points", "stacked"))
def advance_trials(space, shared, hparams: dict, task, runs: MeasuredRun, eval_keys: jax.Array,
                   first_point: jax.Array, horizon: int, points: int, stacked: bool = False):
    """:func:`advance_run` of every trial × seed: ``(runs, curves)``."""
    advance = _over_trials(lambda t, opt, run, keys, first: advance_run(
        t, opt, run, keys, first, points), space, shared, hparams, horizon, stacked)
    return advance(task, runs, (eval_keys, first_point))


def one_run_segment(space, shared, hparams: dict, task, keys: jax.Array, eval_keys: jax.Array,
                    horizon: int, num_points: int):
    """The first trial's first run started and advanced one measurement: what
    :func:`~lopt_cli.evaluation.lapack_guard.runs_one_at_a_time` traces."""
    opt = make_optimizer(space, jax.tree_util.tree_map(lambda x: x[0], hparams), horizon, shared)
    run = start_run(task, opt, keys[0], horizon, num_points)
    return advance_run(task, opt, run, eval_keys, jnp.asarray(0, jnp.int32), 1)


def trial_curves(space, shared, hparams: dict, task, keys: jax.Array, eval_keys: jax.Array,
                 horizon: int, num_points: int, stacked: bool = False, segments: int = 1,
                 segment_done: Callable[[], Any] = lambda: None, num_devices: int = 1,
                 store: PartStore | None = None,
                 segments_restored: Callable[[int], Any] = lambda count: None) -> dict:
    """Every trial of ``space`` over every seed (leading axes (task,) trial, seed; host arrays):
    one start and ``segments`` advances of the same compiled program, ``segment_done()``
    after each (when its curves are on the host, i.e. the segment has run). With
    ``num_devices > 1`` the runs are split over that many local devices
    (:func:`~lopt_cli.evaluation.placement.spread_runs`). With a ``store``, a part stopped
    earlier continues from its saved segment, and a stop asked for between two segments saves
    the state there and raises :class:`~lopt_cli.interrupt.RunStopped`
    (:mod:`~lopt_cli.evaluation.partial_runs`); ``segments_restored(count)`` reports the
    segments read back (not ``segment_done``: they took no time)."""
    if num_points % segments:
        raise ValueError(f"{segments} segments do not divide {num_points} points")
    points = num_points // segments
    num_trials = num_trials_of(hparams)
    placed = spread_runs(hparams, keys, (task, eval_keys, shared), num_devices)
    hparams, keys, (task, eval_keys, shared) = placed
    runs = start_trials(space, shared, hparams, task, keys, horizon, num_points, stacked)
    first, pieces = 0, []
    restored = store.restore(runs) if store is not None else None
    if restored is not None:
        first, runs, pieces = restored
        segments_restored(first)
    for segment in range(first, segments):
        runs, curves = advance_trials(space, shared, hparams, task, runs, eval_keys,
                                      jnp.asarray(segment * points, jnp.int32), horizon, points,
                                      stacked)
        pieces.append(jax.device_get(curves))
        segment_done()
        if store is not None:
            store.stop_if_requested(segment + 1, segments, runs, pieces)
    point_axis = 3 if stacked else 2
    curves = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=point_axis), *pieces)
    return without_padding(curves, num_trials, trial_axis=1 if stacked else 0)


def host_loop_curves(space, shared, hparams: dict, task, keys, eval_keys, horizon: int,
                     num_points: int, segments: int = 1,
                     segment_done: Callable[[], Any] = lambda: None,
                     store: PartStore | None = None,
                     segments_restored: Callable[[int], Any] = lambda count: None) -> dict:
    """:func:`trial_curves`, one (trial, seed) at a time (the same programs each time),
    reassembled on the host with leading axes trial, seed; ``segment_done()`` after each
    segment of each. With a ``store``, each finished (trial, seed) keeps its curves there
    until the part is cached, and the one in progress its state when stopped."""
    num_trials = num_trials_of(hparams)
    rows = []
    for i in range(num_trials):
        setting = {k: v[i:i + 1] for k, v in hparams.items()}
        runs = []
        for j in range(len(keys)):
            one = store.child(f"trial{i}_seed{j}") if store is not None else None
            finished = one.finished_curves() if one is not None else None
            if finished is None:
                finished = trial_curves(space, shared, setting, task, keys[j:j + 1], eval_keys,
                                        horizon, num_points, segments=segments,
                                        segment_done=segment_done, store=one,
                                        segments_restored=segments_restored)
                if one is not None:
                    one.keep_finished(finished)
            else:
                segments_restored(segments)
            runs.append(finished)
        rows.append(jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=1), *runs))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *rows)
