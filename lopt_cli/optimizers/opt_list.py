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

The shipped list (``data/opt_list.json``) is produced by the script
:mod:`lopt_cli.scripts.build_opt_list`, which samples ``num_candidates`` settings from
:func:`~lopt_cli.optimizers.baselines.sample_nadamw`, trains all of them vmapped in one jit per
task on tasks drawn from a task family, and runs the greedy selection of this module::

    python -m lopt_cli.scripts.build_opt_list --out lopt_cli/optimizers/data/opt_list.json

Use: ``opt_list(0, num_steps)`` is the first optimizer of the list, :func:`load_opt_list` all
settings (dicts of :func:`~lopt_cli.optimizers.baselines.nadamw` keyword arguments).
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from lopt_cli.errors import LoptUserError

DATA_FILE = Path(__file__).resolve().parent / "data" / "opt_list.json"
FORMAT = "lopt.opt_list/1"
NORMALISED_CEILING = 2.0


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


def settings_digest(path: str | Path | None = None) -> str:
    """SHA-256 (16 hex digits) of the list's settings as canonical JSON: part of the key of
    every cached run of ``opt_list`` (an edit to the settings computes them again; one to the
    metadata does not)."""
    text = json.dumps(load_opt_list(path), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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
