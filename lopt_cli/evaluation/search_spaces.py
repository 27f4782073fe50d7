"""The baselines' hyperparameter search spaces: where tuning trials come from.

A search space yields ``trials(num, seed)`` — ``num`` hyperparameter settings as arrays with a
leading trial axis — and ``make(hparams, num_steps)``, the optimizer of one setting with every
hyperparameter possibly traced, so that all trials of a task run vmapped in one jitted call.
Trials come coarse to fine, so the first ``n`` of ``trials(N)`` already spread over the whole
range, and "tuned with n trials" for every ``n <= N`` is the best of that prefix, from one run
of ``N`` (a prefix, not ``trials(n)``: a grid's points depend on its size).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import optax

from lopt_cli.errors import LoptUserError


@dataclasses.dataclass(frozen=True)
class AdamLR:
    """Adam with its learning rate on a log grid (the paper's *AdamLR*).

    ``trials(num)`` is the grid of ``num`` points from ``min_lr`` to ``max_lr`` ordered
    coarse-to-fine (endpoints, middle, …) so that every prefix spans the range.
    """

    min_lr: float = 1e-4
    max_lr: float = 1e-1
    name: str = "AdamLR"

    def trials(self, num: int, seed: int = 0) -> dict[str, np.ndarray]:
        del seed
        grid = np.geomspace(self.min_lr, self.max_lr, num).astype(np.float32)
        return {"learning_rate": grid[coarse_to_fine_order(num)]}

    def make(self, hparams: dict, num_steps) -> optax.GradientTransformationExtraArgs:
        from lopt_cli.optimizers.baselines import adam_with_lr

        del num_steps
        return adam_with_lr(hparams["learning_rate"])


def coarse_to_fine_order(num: int) -> np.ndarray:
    """Indices of a grid of ``num`` points, middle first, then spreading out evenly."""
    if num <= 2:
        return np.arange(num)
    order, seen = [], set()
    for depth in range(1, num + 1):
        for index in np.linspace(0, num - 1, 2**depth + 1).round().astype(int):
            if index not in seen:
                seen.add(int(index))
                order.append(int(index))
        if len(order) == num:
            break
    middle = num // 2
    order.remove(middle)
    return np.asarray([middle, *order])


@dataclasses.dataclass(frozen=True)
class Adam8p:
    """Adam with 8 sampled hyperparameters (learning rate, β1, β2, ε, L1, L2, linear and
    exponential learning-rate decay), drawn log-uniformly as in the paper (*Adam8p*)."""

    name: str = "Adam8p"

    def trials(self, num: int, seed: int = 0) -> dict[str, np.ndarray]:
        from lopt_cli.optimizers.baselines import sample_adam8p

        return {k: np.asarray(v, np.float32)
                for k, v in sample_adam8p(np.random.default_rng(seed), num).items()}

    def make(self, hparams: dict, num_steps) -> optax.GradientTransformationExtraArgs:
        from lopt_cli.optimizers.baselines import adam8p

        return adam8p(**hparams, num_steps=num_steps)


@dataclasses.dataclass(frozen=True)
class OptList:
    """The first ``num`` NAdamW settings of lopt's learned, ordered ``opt_list``."""

    name: str = "opt_list"

    def trials(self, num: int, seed: int = 0) -> dict[str, np.ndarray]:
        from lopt_cli.optimizers.opt_list import load_opt_list

        del seed
        settings = load_opt_list()
        if num > len(settings):
            raise LoptUserError(f"opt_list has {len(settings)} entries; asked for {num} trials")
        keys = settings[0].keys()
        return {k: np.asarray([s[k] for s in settings[:num]], np.float32) for k in keys}

    def make(self, hparams: dict, num_steps) -> optax.GradientTransformationExtraArgs:
        from lopt_cli.optimizers.baselines import nadamw

        return nadamw(**hparams, num_steps=num_steps)
