r"""Learns the shipped ``opt_list`` (``python -m lopt_cli.scripts.build_opt_list``).

The script side of :mod:`lopt_cli.optimizers.opt_list`: it samples NAdamW settings, trains all
of them on tasks of a family (ids from the reserved ``opt_list`` range,
:data:`task_definitions.task_ids.OPT_LIST_FIRST_ID`) through the inner-training layer, and runs
the library's greedy selection. The tasks come from the ``task_family`` config group, composed
with Hydra.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt_cli.config import instantiate_plain
from lopt_cli.errors import LoptUserError
from lopt_cli.inner.curves import train_curve
from lopt_cli.optimizers.opt_list import (
    DATA_FILE,
    FORMAT,
    NORMALISED_CEILING,
    learn_opt_list,
    normalise_final_losses,
    prefix_objective,
    random_search_objective,
)
from task_definitions.task_ids import OPT_LIST_FIRST_ID, task_key

# ------------------------------------------------------------------ tuning runs


@dataclasses.dataclass
class TuningResult:
    """Raw results of the tuning runs: candidates × tasks."""

    hparams: dict[str, np.ndarray]  # each [num_candidates]
    final: np.ndarray  # raw final validation losses [num_candidates, num_tasks]
    initial: np.ndarray  # raw initial validation losses [num_tasks]
    task_ids: list[int]
    task_configs: list[dict]


@functools.partial(jax.jit, static_argnames=("horizon", "valid_every"))
def candidate_curves(task, hparams: dict, key, horizon: int, valid_every: int):
    """Raw validation curves ``[num_candidates, horizon // valid_every]`` of NAdamW settings
    (leading axis of every ``hparams`` array) trained on ``task`` from one initialisation."""
    from lopt_cli.optimizers.baselines import nadamw

    def one(h):
        opt = nadamw(**h, num_steps=horizon)
        return train_curve(task, opt, key, horizon, valid_every).raw_valid_loss

    return jax.vmap(one)(hparams)


def initial_loss(task, key, num_batches: int = 8) -> float:
    """Mean validation loss of the initial parameters of ``train_curve(task, ..., key)``."""
    init_key, _ = jax.random.split(key)
    params = task.init(init_key)
    keys = jax.random.split(jax.random.fold_in(key, 1), num_batches)
    losses = [task.loss(params, task.sample_batch(k, "valid"), k) for k in keys]
    return float(jnp.mean(jnp.stack(losses)))


def run_tuning(family, num_tasks: int, num_candidates: int, horizon: int, seed: int = 0,
               valid_every: int = 10, final_fraction: float = 0.2,
               first_task_id: int = OPT_LIST_FIRST_ID, log=print) -> TuningResult:
    """Trains ``num_candidates`` sampled NAdamW settings on ``num_tasks`` tasks of ``family``.

    Task ``i`` is ``family.sample(task_key(first_task_id + i))``; on each, all candidates run
    vmapped in one jitted call from the same initialisation and data order. The final loss of a
    run is the mean of its last ``final_fraction`` of validation points.
    """
    from lopt_cli.optimizers.baselines import sample_nadamw
    from task_definitions.base import config_to_dict

    hparams = sample_nadamw(np.random.default_rng(seed), num_candidates)
    device_hparams = {k: jnp.asarray(v) for k, v in hparams.items()}
    count = max(1, round(horizon // valid_every * final_fraction))
    finals, initials, ids, configs = [], [], [], []
    for i in range(num_tasks):
        task_id = first_task_id + i
        config = family.sample(task_key(task_id))
        task = family.build(config)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), task_id)
        start = time.perf_counter()
        curves = np.asarray(candidate_curves(task, device_hparams, key, horizon, valid_every))
        with np.errstate(all="ignore"):
            tail = curves[:, -count:]
            final = np.where(np.all(np.isfinite(tail), axis=1), np.mean(tail, axis=1), np.inf)
        finals.append(final)
        initials.append(initial_loss(task, key))
        ids.append(task_id)
        configs.append(config_to_dict(config, getattr(family, "name", None)))
        log(f"task {i + 1}/{num_tasks} (id {task_id}, {configs[-1].get('family')}): "
            f"{time.perf_counter() - start:.1f}s, best {np.min(final):.4g}, "
            f"initial {initials[-1]:.4g}, diverged {int(np.sum(~np.isfinite(final)))}")
    return TuningResult(hparams, np.stack(finals, axis=1), np.asarray(initials), ids, configs)


# ------------------------------------------------------------------ script


BUILTIN_FAMILY = "quadratic+mlp_digits"


def family_from_config(name: str):
    """The task family to tune on: :data:`BUILTIN_FAMILY` (quadratic bowls and MLPs on digits,
    weights 1 : 2), or any option ``name`` of the ``task_family`` config group (composed with
    Hydra, so e.g. ``suite`` brings all its member families)."""
    if name == BUILTIN_FAMILY:
        from task_definitions.mlp import MLPFamily
        from task_definitions.quadratic import QuadraticFamily
        from task_definitions.suite import MixtureFamily

        return MixtureFamily({"quadratic": QuadraticFamily(), "mlp_digits": MLPFamily()},
                             weights={"quadratic": 1.0, "mlp_digits": 2.0})
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf


    with initialize_config_module("conf", version_base="1.3"):
        try:
            node = compose("meta_train", overrides=[f"task_family={name}"]).task_family
        except Exception as error:  # noqa: BLE001 - Hydra's many error types: one line
            raise LoptUserError(f"task family {name!r}: {str(error).splitlines()[0]}") from None
        return instantiate_plain(OmegaConf.to_container(node, resolve=True))


def build_opt_list(args: argparse.Namespace, command: str) -> dict:
    """Runs the tuning and the greedy selection; returns the JSON document."""
    start = time.perf_counter()
    family = family_from_config(args.task_family)
    result = run_tuning(family, args.num_tasks + args.held_out_tasks, args.num_candidates,
                        args.horizon, args.seed, args.valid_every, args.final_fraction)
    normalised = normalise_final_losses(result.final, result.initial)
    losses, held_out = normalised[:, :args.num_tasks], normalised[:, args.num_tasks:]
    length = min(args.length, args.num_candidates)
    order = learn_opt_list(losses, length)
    held_out_report = {}
    if args.held_out_tasks:
        held_out_report = {
            "task_ids": result.task_ids[args.num_tasks:],
            "tasks": result.task_configs[args.num_tasks:],
            "mean_normalised_loss_by_length":
                prefix_objective(held_out, order).round(4).tolist(),
            "random_search_by_length": random_search_objective(held_out, length).round(4).tolist(),
        }
    settings = [{k: float(v[i]) for k, v in result.hparams.items()} for i in order]
    return {
        "format": FORMAT,
        "optimizer": "lopt_cli.optimizers.baselines.nadamw",
        "settings": settings,
        "metadata": {
            "command": command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "how": ("greedy ordered list (TaskSet, Metz et al. 2020): first the candidate with "
                    "the lowest mean normalised final validation loss over the tasks, then "
                    "repeatedly the one that most lowers the mean over tasks of the best "
                    "normalised loss among the list so far"),
            "normalisation": ("per task: (final - best candidate) / (initial - best "
                              f"candidate), clipped to [0, {NORMALISED_CEILING}], diverged = "
                              f"{NORMALISED_CEILING}"),
            "search_space": "lopt_cli.optimizers.baselines.sample_nadamw (TaskSet nadamw_grid)",
            "task_family": args.task_family, "num_tasks": args.num_tasks,
            "num_candidates": args.num_candidates, "horizon": args.horizon,
            "valid_every": args.valid_every, "final_fraction": args.final_fraction,
            "seed": args.seed, "task_ids": result.task_ids[:args.num_tasks],
            "tasks": result.task_configs[:args.num_tasks],
            "candidate_indices": order,
            "mean_normalised_loss_by_length": prefix_objective(losses, order).round(4).tolist(),
            "random_search_by_length": random_search_objective(losses, length).round(4).tolist(),
            "held_out": held_out_report,
            "diverged_fraction": float(np.mean(~np.isfinite(result.final))),
            "seconds": round(time.perf_counter() - start, 1),
            "jax_version": jax.__version__, "device": str(jax.devices()[0]),
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lopt_cli.scripts.build_opt_list",
        description="Learn an ordered list of NAdamW settings from tuning runs on a task suite.")
    parser.add_argument("--out", default=str(DATA_FILE), help="JSON file to write")
    parser.add_argument("--task-family", default=BUILTIN_FAMILY,
                        help=f"{BUILTIN_FAMILY} or an option of conf/task_family/")
    parser.add_argument("--num-tasks", type=int, default=24, help="tasks the list learns from")
    parser.add_argument("--held-out-tasks", type=int, default=8,
                        help="further tasks, only to report how the list generalises")
    parser.add_argument("--num-candidates", type=int, default=128)
    parser.add_argument("--horizon", type=int, default=300)
    parser.add_argument("--valid-every", type=int, default=10)
    parser.add_argument("--final-fraction", type=float, default=0.2)
    parser.add_argument("--length", type=int, default=32, help="entries in the list")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("num_tasks", "num_candidates", "horizon", "valid_every", "length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.held_out_tasks < 0:
        parser.error("--held-out-tasks must be >= 0")
    if args.horizon < args.valid_every:
        parser.error("--horizon must be >= --valid-every")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from lopt_cli.io import write_json_atomic

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = " ".join(["python -m lopt_cli.scripts.build_opt_list", *argv])
    try:
        document = build_opt_list(args, command)
    except LoptUserError as error:
        print(f"opt_list: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    write_json_atomic(args.out, document)
    Path(args.out).chmod(0o644)  # a shipped data file, readable by all
    meta = document["metadata"]
    print(f"wrote {len(document['settings'])} settings to {args.out} in {meta['seconds']}s; "
          f"mean normalised loss by length: {meta['mean_normalised_loss_by_length'][:5]} "
          f"(random search: {meta['random_search_by_length'][:5]})")
    if meta["held_out"]:
        print(f"held-out tasks: {meta['held_out']['mean_normalised_loss_by_length'][:5]} "
              f"(random search: {meta['held_out']['random_search_by_length'][:5]})")
    return document


if __name__ == "__main__":
    main()
