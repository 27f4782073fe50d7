r"""A suite: a weighted mixture of task families, itself a task family.

``sample(key)`` picks family :math:`k` with probability :math:`w_k / \sum_j w_j`, then samples
that family's config with an independent key; the result records the family's name, so a task
is identified by (suite, task id) and rebuilt identically anywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from task_definitions.base import Task, with_seed
from task_definitions.sampling import generator_from_key


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """A member family's name and its config; ``seed`` forwards to the member config."""

    family: str
    config: Any

    @property
    def seed(self) -> int:
        return self.config.seed

    def with_seed(self, seed: int) -> SuiteConfig:
        """The member config re-seeded its own way (a wrapper's ``with_seed`` moves its inner
        config's seed too)."""
        return SuiteConfig(self.family, with_seed(self.config, seed))


@dataclasses.dataclass(frozen=True)
class MixtureFamily:
    """Families (``{name: family}``) drawn with relative ``weights`` (``{name: weight}``)."""

    families: dict
    weights: dict | None = None
    name: str = "suite"

    def __post_init__(self):
        object.__setattr__(self, "families", tuple(sorted(dict(self.families).items())))
        weights = dict(self.weights or {})
        unknown = set(weights) - {name for name, _ in self.families}
        if unknown:
            raise ValueError(f"weights name unknown families: {sorted(unknown)}")
        object.__setattr__(self, "weights", tuple(
            float(weights.get(name, 1.0)) for name, _ in self.families))

    def member(self, name: str):
        return dict(self.families)[name]

    def sample(self, key: jax.Array) -> SuiteConfig:
        rng = generator_from_key(key)
        probabilities = np.asarray(self.weights) / np.sum(self.weights)
        index = int(rng.choice(len(self.families), p=probabilities))
        name, family = self.families[index]
        member_key = int(rng.integers(2**31 - 1))
        return SuiteConfig(name, family.sample(jax.random.PRNGKey(member_key)))

    def build(self, config: SuiteConfig) -> Task:
        return self.member(config.family).build(config.config)
