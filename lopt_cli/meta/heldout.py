"""Held-out evaluation during meta-training: how does the current theta do on unseen tasks?

Every ``every`` outer steps the recorder trains ``num_tasks`` fixed tasks that meta-training
never samples (ids from ``first_id``, by default 1e6, above the seen range; ``family`` may also
be another family than the training one, ``heldout.task_family``) from scratch for
``horizon`` steps with the current learned optimizer, ``num_seeds`` seeds each, and logs

.. math:: \\text{heldout\\_loss} = \\frac{1}{T}\\sum_{t=1}^{T}\\frac{1}{S}\\sum_{s=1}^{S}
    \\mathrm{normalize}(\\ell_{t, s}(\\text{horizon})),

the mean final normalised loss, where :math:`\\ell` is the loss the meta-loss averages
(``meta_loss``: validation, training or their mean; see
:func:`lopt_cli.meta.problem.chunk_meta_loss`), so that it tracks the objective. The tasks are
the same at every evaluation, and :func:`lopt_cli.inner.curves.learned_curves` compiles once
per task shape, so later evaluations only run. The recorder also checks θ₀ before the first
step, and with ``heldout.keep_best`` publishes the θ of the lowest loss
(:class:`lopt_cli.commands.recorder.MetaTrainRecorder`).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from lopt_cli.inner.curves import learned_curves
from lopt_cli.meta.problem import chunk_meta_loss
from lopt_cli.optimizers.base import LearnedOptimizer, MetaParams
from task_definitions.task_ids import UNSEEN_FIRST_ID, seed_keys, task_key


@dataclasses.dataclass(frozen=True)
class HeldOutEvaluator:
    """Trains the held-out tasks with a given theta; ``__call__`` returns ``heldout_loss``."""

    family: object
    lopt: LearnedOptimizer
    every: int = 50  # evaluate after every ``every`` outer steps (and after the last one)
    num_tasks: int = 2
    horizon: int = 100
    valid_every: int = 5
    num_seeds: int = 2
    first_id: int = UNSEEN_FIRST_ID
    seed: int = 0
    meta_loss: str = "valid"  # which normalised loss (lopt_cli.meta.problem.META_LOSSES)

    @functools.cached_property
    def tasks(self) -> tuple:
        """The held-out tasks, built once."""
        return tuple(self.family.build(self.family.sample(task_key(self.first_id + i)))
                     for i in range(self.num_tasks))

    def task_keys(self, index: int) -> jax.Array:
        """The seeds' keys of task ``index``, its own (see ``seed_keys``)."""
        return seed_keys(self.seed, self.num_seeds, index)

    def due(self, step: int, num_outer_steps: int) -> bool:
        """Whether to evaluate after outer step ``step``."""
        done = step + 1
        return bool(self.every) and (done % self.every == 0 or done == num_outer_steps)

    def __call__(self, theta: MetaParams) -> float:
        # A host copy: a θ replicated over several devices (a sharded run) would compile the
        # same maths with another float rounding, which long horizons amplify (0.49 against
        # 0.51 on 2,000 steps), so θ₀, later checks and a re-evaluation of the saved θ agree.
        theta = jax.device_get(theta)
        finals = []
        for index, task in enumerate(self.tasks):
            keys = self.task_keys(index)
            curves = learned_curves(self.lopt, theta, task, keys, self.horizon, self.valid_every)
            finals.append(np.asarray(chunk_meta_loss(curves, self.meta_loss)[:, -1]))
        return float(np.mean(finals))
