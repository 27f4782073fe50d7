"""The optimizers a benchmark ranks: learned ones and hand-designed ones, each with its
learning rate tuned by the same trial budget as the baselines.

A candidate's trials multiply its step by factors on a log grid, middle first (factor 1 for a
range symmetric in log, e.g. [0.1, 10]): trial 0 is the optimizer as shipped, and "tuned with n
trials" is the best of the first n, exactly as for the baselines (:mod:`search_spaces`). For
Adam, NAdamW and the ``opt_list`` entries the factor is exactly a learning-rate factor; for a
learned optimizer it scales the update it proposes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np
import optax

from lopt_cli.errors import LoptUserError
from lopt_cli.evaluation.search_spaces import coarse_to_fine_order


def multiplier_grid(num: int, low: float, high: float) -> np.ndarray:
    """``num`` factors of a log grid on ``[low, high]``, its middle first (coarse to fine)."""
    size = max(3, num if num % 2 else num + 1)  # odd, so that the middle is a grid point
    grid = np.geomspace(low, high, size).astype(np.float32)
    return grid[coarse_to_fine_order(size)][:num]


def first_multiplier(low: float, high: float) -> float:
    """Trial 0's factor: the grid's middle, :math:`\\sqrt{low \\cdot high}` (1 on [0.1, 10])."""
    return float(np.sqrt(low * high))


@dataclasses.dataclass(frozen=True)
class ScaledOptimizer:
    """A candidate's search space: its step times a tuned factor.

    ``source`` names a hand-designed optimizer (``adam``, ``nadamw``, ``opt_list:0``, …) made
    by :func:`lopt_cli.optimizers.dropin.load_optimizer`; with ``lopt`` set it is a learned
    optimizer whose meta-parameters arrive as the traced ``shared`` argument of :meth:`make`.
    """

    source: str
    lopt: Any = None
    min_multiplier: float = 0.1
    max_multiplier: float = 10.0

    def trials(self, num: int, seed: int = 0) -> dict[str, np.ndarray]:
        del seed
        return {"lr_multiplier": multiplier_grid(num, self.min_multiplier, self.max_multiplier)}

    def make(self, hparams: dict, num_steps: int, shared=None):
        if self.lopt is not None:
            base = self.lopt.transform(shared, num_steps)
        else:
            from lopt_cli.optimizers.dropin import load_optimizer

            base = load_optimizer(self.source, int(num_steps))
        return optax.chain(base, optax.scale(hparams["lr_multiplier"]))


class Candidate(NamedTuple):
    """An optimizer on the leaderboard: display name, search space, traced meta-parameters
    (``None`` for hand-designed ones) and an identity that keys its cached runs."""

    name: str
    space: Any
    shared: Any
    identity: str


def make_optimizer(space, hparams: dict, num_steps: int, shared):
    """The optimizer of one trial of a baseline's or a candidate's search space."""
    if isinstance(space, ScaledOptimizer):
        return space.make(hparams, num_steps, shared)
    return space.make(hparams, num_steps)


def resolve_candidate(text: str, min_multiplier: float, max_multiplier: float) -> Candidate:
    """A leaderboard entry from its name: a hand-designed optimizer (``adam``, ``opt_list:3``)
    or a learned one (a shipped name, a run directory, a ``.msgpack`` file, ``latest``)."""
    from pathlib import Path

    from lopt_cli.optimizers.dropin import OPT_LIST_PREFIX, hand_designed_names, load_optimizer

    text = str(text)
    hand_designed = not Path(text).expanduser().exists() and (
        text in hand_designed_names() or text.startswith(OPT_LIST_PREFIX))
    if hand_designed:
        load_optimizer(text, 10)  # a bad opt_list index fails here, in one line
        return Candidate(text, ScaledOptimizer(text, None, min_multiplier, max_multiplier),
                         None, hand_designed_identity(text))
    from omegaconf import OmegaConf

    from lopt_cli.evaluation.cache import file_digest
    from lopt_cli.evaluation.code_version import code_digest
    from lopt_cli.optimizers.storage import load_learned_optimizer, resolve_weights_path

    weights = resolve_weights_path(text).resolve()
    lopt, theta, config = load_learned_optimizer(weights)
    identity = (f"{file_digest(weights)}:{code_digest(lopt)}:"
                f"{OmegaConf.to_yaml(OmegaConf.create(config))}")
    return Candidate(text, ScaledOptimizer(text, lopt, min_multiplier, max_multiplier),
                     theta, identity)


def hand_designed_identity(name: str) -> str:
    """The key of a hand-designed candidate's cached runs: its name and the digest of the code
    that builds it (its factory's module and what that imports), so that an edit to, say,
    ``optimizers/muon.py`` computes ``muon``'s runs again instead of reading the old ones;
    an ``opt_list:K`` entry's also holds the digest of the list's settings."""
    import functools

    from lopt_cli.evaluation.code_version import code_digest
    from lopt_cli.optimizers import opt_list
    from lopt_cli.optimizers.dropin import OPT_LIST_PREFIX
    from lopt_cli.optimizers.registry import OPTIMIZERS

    if name.startswith(OPT_LIST_PREFIX):
        code = code_digest(opt_list.opt_list)
        return f"hand-designed:{name}:{code}:settings:{opt_list.settings_digest()}"
    factory = OPTIMIZERS[name]
    while isinstance(factory, functools.partial):
        factory = factory.func
    return f"hand-designed:{name}:{code_digest(factory)}"


def candidate_names(value) -> list[str]:
    """``learned_optimizer`` as a list of names: one name, a list, or ``a,b,c``."""
    names = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise LoptUserError("learned_optimizer: name at least one optimizer")
    if len(set(names)) != len(names):
        raise LoptUserError(f"learned_optimizer={names}: an optimizer is named twice")
    return names
