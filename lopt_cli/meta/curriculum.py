r"""Horizon curriculum: the longest inner horizon grows over meta-training.

Early in meta-training the learned optimizer is poor and long inner runs mostly diverge or
plateau, so short horizons give a cleaner signal; later, long horizons teach it not to be greedy.
The cap on the inner horizon grows log-linearly from ``start`` to ``end`` over ``steps`` outer
steps and then stays at ``end``:

.. math::
    H_{\max}(t) = \Big\lfloor \exp\big(\log H_0 + \min(t / T, 1)\,(\log H_1 - \log H_0)\big)
    \Big\rceil .

The cap is a plain function of the outer step (so a resumed run sees the same caps) and reaches
the inner problem as data (:func:`lopt_cli.meta.problem.with_horizon_cap`): growing it never
recompiles the truncation.

Example::

    >>> HorizonCurriculum(start=100, end=1000, steps=10).max_horizon(5)
    316
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class HorizonCurriculum:
    """Log-linear growth of the horizon cap from ``start`` to ``end`` over ``steps`` steps."""

    start: int
    end: int
    steps: int

    def __post_init__(self):
        if not 0 < self.start <= self.end:
            raise ValueError(f"need 0 < start <= end, got start={self.start}, end={self.end}")
        if self.steps <= 0:
            raise ValueError(f"steps={self.steps}: expected a positive integer")

    def max_horizon(self, step: int) -> int:
        """The horizon cap at outer step ``step`` (0-based)."""
        fraction = min(max(step, 0) / self.steps, 1.0)
        log_cap = math.log(self.start) + fraction * (math.log(self.end) - math.log(self.start))
        return max(self.start, min(self.end, round(math.exp(log_cap))))


def constant(max_horizon: int) -> HorizonCurriculum:
    """No curriculum: the cap is ``max_horizon`` throughout."""
    return HorizonCurriculum(max_horizon, max_horizon, 1)
