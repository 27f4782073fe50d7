r"""``opt_list``: an ordered list of NAdamW settings learned from a task suite (TaskSet §4).

Metz et al. 2020 ("Using a thousand optimization tasks to learn hyperparameter search
strategies") replace random search by a *list* of hyperparameter settings to try in order,
learned greedily from many tuning runs. Given the normalised final losses
:math:`L \in \mathbb{R}^{C \times M}` of :math:`C` candidate settings on :math:`M` tasks, the
list :math:`S_1, S_2, \ldots` is

.. math::

    S_1 &= \arg\min_c \tfrac1M \textstyle\sum_m L_{c,m}, \\
    S_{k+1} &= \arg\min_{c \notin S_{1..k}} \tfrac1M \textstyle\sum_m
        \min\big(L_{c,m},\ \min_{j \le k} L_{S_j,m}\big),

i.e. first the best single setting for the whole suite, then repeatedly the setting that most
improves the suite's mean of the per-task best over the list so far ("try these k in order,
keep the best" is then as good as possible given the first k-1). Each task's final loss is
normalised between its initialisation (1) and the best loss any candidate reached on it (0):

.. math:: L_{c,m} = \mathrm{clip}\Big(\frac{\ell_{c,m} - \min_{c'} \ell_{c',m}}
                                           {\ell^{(0)}_m - \min_{c'} \ell_{c',m}},\ 0,\ 2\Big),

with diverged runs at the ceiling 2, so that every task weighs the same.

The shipped list (``data/opt_list.json``) is produced by this module's script, which samples
``num_candidates`` settings from :func:`~lopt_cli.optimizers.baselines.sample_nadamw`, trains
all of them vmapped in one jit per task on tasks drawn from a task family, and runs the greedy
selection::

    python -m lopt_cli.optimizers.opt_list --out lopt_cli/optimizers/data/opt_list.json

Use: ``opt_list(0, num_steps)`` is the first optimizer of the list, :func:`load_opt_list` all
settings (dicts of :func:`~lopt_cli.optimizers.baselines.nadamw` keyword arguments).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt_cli.errors import LoptUserError

DATA_FILE = Path(__file__).resolve().parent / "data" / "opt_list.json"
FORMAT = "lopt.opt_list/1"
NORMALISED_CEILING = 2.0
#: Task ids of the tuning runs: disjoint from ``lopt evaluate``'s seen (0..), unseen (1e6..)
#: and global-tuning (2e6..) ranges.
FIRST_TASK_ID = 3_000_000


# ------------------------------------------------------------------ greedy selection


def normalise_final_losses(final: np.ndarray, initial: np.ndarray,
                           ceiling: float = NORMALISED_CEILING) -> np.ndarray:
    """Per task (column), 0 = best candidate's final loss, 1 = the initial loss (see module).

    Args:
      final: raw final losses ``[num_candidates, num_tasks]`` (non-finite = diverged).
      initial: raw losses at initialisation ``[num_tasks]``.
    """
    final = np.asarray(final, np.float64)
    finite = np.isfinite(final)
    best = np.min(np.where(finite, final, np.inf), axis=0)
    best = np.where(np.isfinite(best), best, np.asarray(initial, np.float64))
    span = np.maximum(np.asarray(initial, np.float64) - best, 1e-12)
    with np.errstate(invalid="ignore", over="ignore"):
        normalised = (final - best) / span
    return np.where(finite & np.isfinite(normalised), np.clip(normalised, 0.0, ceiling), ceiling)


def learn_opt_list(losses: np.ndarray, length: int, tie_tolerance: float = 1e-9) -> list[int]:
    """Greedy ordered list of ``length`` candidate indices (rows of ``losses``; see module).

    Args:
      losses: normalised final losses ``[num_candidates, num_tasks]``, lower is better;
        non-finite entries count as worst.
      length: number of entries, at most ``num_candidates``.

    Candidates whose objective is within ``tie_tolerance`` of the best tie; a tie goes to the
    lowest mean loss on its own (the better single setting), then to the lowest index. Ties are
    the rule once the list holds every task's best candidate (objective 0): later entries are
    then the best remaining single settings rather than arbitrary ones.

    >>> learn_opt_list(np.array([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]), 3)
    [0, 1, 2]
    """
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 2 or losses.size == 0:
        raise LoptUserError(f"learn_opt_list: need a [candidates, tasks] matrix, got shape "
                            f"{losses.shape}")
    if not 1 <= length <= losses.shape[0]:
        raise LoptUserError(f"learn_opt_list: length={length} must be in [1, {losses.shape[0]}]")
    losses = np.where(np.isfinite(losses), losses, np.inf)
    own = np.mean(losses, axis=1)
    chosen: list[int] = []
    best = np.full(losses.shape[1], np.inf)
    for _ in range(length):
        scores = np.mean(np.minimum(best[None, :], losses), axis=1)
        scores[chosen] = np.nan  # never twice; inf (all diverged) still beats nan
        ties = np.flatnonzero(scores <= np.nanmin(scores) + tie_tolerance)
        if ties.size == 0:  # every remaining candidate at inf
            ties = np.flatnonzero(~np.isnan(scores))
        index = int(ties[np.argmin(own[ties])])
        chosen.append(index)
        best = np.minimum(best, losses[index])
    return chosen


def prefix_objective(losses: np.ndarray, order: list[int]) -> np.ndarray:
    """Mean over tasks of the best loss among the first ``k`` entries, for ``k = 1..len``."""
    losses = np.asarray(losses, np.float64)[np.asarray(order)]
    return np.mean(np.minimum.accumulate(losses, axis=0), axis=1)


def random_search_objective(losses: np.ndarray, length: int, num_orders: int = 1000,
                            seed: int = 0) -> np.ndarray:
    """:func:`prefix_objective` of random orders (random search), averaged over orders."""
    rng = np.random.default_rng(seed)
    num = np.asarray(losses).shape[0]
    return np.mean([prefix_objective(losses, list(rng.permutation(num)[:length]))
                    for _ in range(num_orders)], axis=0)


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
    from lopt_cli.inner.curves import train_curve
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
               first_task_id: int = FIRST_TASK_ID, log=print) -> TuningResult:
    """Trains ``num_candidates`` sampled NAdamW settings on ``num_tasks`` tasks of ``family``.

    Task ``i`` is ``family.sample(task_key(first_task_id + i))``; on each, all candidates run
    vmapped in one jitted call from the same initialisation and data order. The final loss of a
    run is the mean of its last ``final_fraction`` of validation points.
    """
    from lopt_cli.meta.outer import task_key
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


# ------------------------------------------------------------------ the shipped list


@functools.lru_cache(maxsize=4)
def _read(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LoptUserError(f"cannot read opt_list file {path} ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not data.get("settings"):
        raise LoptUserError(f"{path}: not an opt_list file (expected format {FORMAT!r})")
    return data


def load_opt_list(path: str | Path | None = None) -> list[dict[str, float]]:
    """The ordered NAdamW settings (keyword arguments of ``nadamw`` without ``num_steps``)."""
    return [dict(s) for s in _read(str(path or DATA_FILE))["settings"]]


def opt_list_metadata(path: str | Path | None = None) -> dict:
    """How the list was produced: command, task family and ids, candidates, objective."""
    return dict(_read(str(path or DATA_FILE))["metadata"])


def opt_list(index: int, num_steps: int = 10_000, path: str | Path | None = None):
    """The ``index``-th optimizer of the list, as NAdamW for a horizon of ``num_steps``."""
    from lopt_cli.optimizers.baselines import nadamw

    settings = load_opt_list(path)
    if not 0 <= int(index) < len(settings):
        raise LoptUserError(f"opt_list index {index} out of range; the list has "
                            f"{len(settings)} entries (0..{len(settings) - 1})")
    return nadamw(**settings[int(index)], num_steps=num_steps)


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

    from lopt_cli.optimizers.storage import instantiate_plain

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
        prog="python -m lopt_cli.optimizers.opt_list",
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
    command = " ".join(["python -m lopt_cli.optimizers.opt_list", *argv])
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
