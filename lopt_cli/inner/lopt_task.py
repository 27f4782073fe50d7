r"""Meta-training a small learned optimizer, posed as a task of its own ("train themselves").

The parameters of this task are the meta-parameters :math:`\theta` of a small learned optimizer
(by default the registry's ``mlp``, a per-parameter MLP with one hidden layer of 4-8 units; the
family takes any factory ``(hidden_sizes=, step_mult=, exp_mult=) -> LearnedOptimizer`` as
``learned_optimizer``, so this module imports no concrete optimizer). Its loss is the truncated
meta-loss of that optimizer on a fixed inner task :math:`\tau`:
starting from a fresh initialisation :math:`w_0 \sim \tau.\mathrm{init}`, train :math:`K` inner
steps :math:`w_{k+1} = w_k + U_\theta(\nabla \ell_\tau(w_k), \dots)` and average the normalised
inner validation losses recorded every ``valid_every`` steps,

.. math:: L(\theta) = \frac{1}{C}\sum_{c=1}^{C}
          \mathrm{normalize}_\tau\big(\ell^{\text{valid}}_\tau(w_{c \cdot \text{valid\_every}})\big),
          \qquad C = K / \text{valid\_every}.

The unroll is the meta-trainer's own (:func:`lopt_cli.inner.unroll.unroll`), so
:math:`\nabla_\theta L` is exact truncated backprop through the :math:`K` inner steps and any
optimizer, Adam or a learned one, can train :math:`\theta`.

Each config fixes three inner tasks of one shape (inner seeds derived from the config's
``seed``): one per split. ``sample_batch(key, split)`` returns the split's inner-task index and a
random inner seed; the inner initialisation and data order come from that seed and the ``key``
of ``loss``. Meta-generalisation is measured on the ``valid``/``test`` inner tasks.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from lopt_cli.inner.unroll import init_inner_state, unroll
from lopt_cli.optimizers.base import LearnedOptimizer
from task_definitions.base import SPLITS, normalize_by_ceiling, stack_tasks, with_seed
from task_definitions.quadratic import QuadraticFamily
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed

# The default inner family: small, noisy-free bowls (a few hundred FLOPs per inner step).
DEFAULT_INNER = (("quadratic", QuadraticFamily(dims=(4, 8, 16), noise=(0.0,))),)
META_LOSS_CEILING = 2.0  # inner normalised losses are ~1 at init; twice that is a failure


@dataclasses.dataclass(frozen=True)
class LoptMetaConfig:
    """One sampled meta-training problem: learned-optimizer architecture, inner task, unroll.

    ``inner`` is the inner family's config; its own seed is ignored: the three inner tasks
    (train/valid/test) take seeds derived from ``seed``, so re-seeding keeps all shapes.
    """

    inner_family: str
    inner: Any
    hidden_size: int
    step_mult: float
    exp_mult: float
    unroll_length: int
    valid_every: int
    seed: int


def inner_seed(seed: int, split_index: int) -> int:
    """The seed of the inner task of split ``split_index`` of the config of ``seed``."""
    return (3 * int(seed) + split_index) % (2**31 - 1)


@struct.dataclass
class LoptMetaTask:
    """The meta-loss of a learned optimizer; the three inner tasks are stacked leaves."""

    inner_tasks: Any  # one inner task per split, stacked along a leading axis of size 3
    lopt: LearnedOptimizer = struct.field(pytree_node=False)
    unroll_length: int = struct.field(pytree_node=False)
    valid_every: int = struct.field(pytree_node=False)

    def init(self, key: jax.Array) -> dict:
        """Fresh meta-parameters of the learned optimizer."""
        return self.lopt.init(key)

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        """``{"task": int32 index of the split's inner task, "seed": uint32 inner seed}``."""
        seed = jax.random.bits(key, (), jnp.uint32)
        return {"task": jnp.asarray(SPLITS.index(split), jnp.int32), "seed": seed}

    def inner_task(self, index: jax.Array) -> Any:
        """The inner task of split number ``index`` (may be traced)."""
        return jax.tree_util.tree_map(
            lambda x: jax.lax.dynamic_index_in_dim(x, index, keepdims=False), self.inner_tasks)

    def meta_metrics(self, theta: dict, batch: dict, key: jax.Array):
        """Unrolls ``unroll_length`` inner steps from a fresh start; returns the metrics."""
        task = self.inner_task(batch["task"])
        opt = self.lopt.transform(theta, self.unroll_length)
        inner_key = jax.random.fold_in(key, batch["seed"])
        state = init_inner_state(task, lambda _: opt, inner_key, self.unroll_length)
        _, metrics = unroll(task, opt, state, self.unroll_length // self.valid_every,
                            self.valid_every)
        return metrics

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        """Mean normalised inner validation loss over the unroll (differentiable in theta)."""
        return jnp.mean(self.meta_metrics(params, batch, key).valid_loss)

    def normalize(self, loss: jax.Array) -> jax.Array:
        return normalize_by_ceiling(loss, 1.0, ceiling=META_LOSS_CEILING)


@dataclasses.dataclass(frozen=True)
class LoptMetaFamily:
    """Meta-training problems: sampled optimizer width and step scales, inner task, unroll.

    Attributes:
      inner_families: ``{name: family}`` of cheap inner families (a dict in YAML; stored as a
        sorted tuple of pairs so that the family stays hashable).
      hidden_sizes: widths of the learned optimizer's single hidden layer.
      step_mult: log-uniform range of :math:`\\lambda_1` (the untrained step size).
      exp_mult: log-uniform range of :math:`\\lambda_2` (the scale of the log-magnitude).
      unroll_lengths: inner steps per meta-loss evaluation (multiples of ``valid_every``).
      valid_every: inner steps between the validation losses that make the meta-loss.
      learned_optimizer: factory ``(hidden_sizes=, step_mult=, exp_mult=) -> LearnedOptimizer``
        of the optimizer being meta-trained (None: the registry's ``mlp``).
    """

    inner_families: Any = DEFAULT_INNER
    hidden_sizes: tuple = (4, 8)
    step_mult: tuple = (3e-3, 3e-2)
    exp_mult: tuple = (0.01, 0.1)
    unroll_lengths: tuple = (10, 20)
    valid_every: int = 5
    name: str = "lopt_meta"
    learned_optimizer: Callable[..., LearnedOptimizer] | None = None

    def __post_init__(self):
        families = self.inner_families
        pairs = tuple(sorted(dict(families).items())) if isinstance(families, dict) else families
        object.__setattr__(self, "inner_families", tuple(pairs))
        bad = [n for n in self.unroll_lengths if n <= 0 or n % self.valid_every]
        if bad:
            raise ValueError(f"unroll_lengths {bad} are not positive multiples of "
                             f"valid_every={self.valid_every}")

    def make_learned_optimizer(self) -> Callable[..., LearnedOptimizer]:
        """The factory of the meta-trained optimizer (the registry's ``mlp`` by default)."""
        if self.learned_optimizer is not None:
            return self.learned_optimizer
        from lopt_cli.optimizers.registry import LEARNED_OPTIMIZERS

        return LEARNED_OPTIMIZERS["mlp"]

    def inner_family(self, name: str):
        families = dict(self.inner_families)
        if name not in families:
            raise ValueError(f"inner_family={name!r}: expected one of {sorted(families)}")
        return families[name]

    def sample(self, key: jax.Array) -> LoptMetaConfig:
        rng = generator_from_key(key)
        name, family = self.inner_families[int(rng.integers(len(self.inner_families)))]
        inner = with_seed(family.sample(int(rng.integers(2**31 - 1))), 0)  # seed unused
        return LoptMetaConfig(
            inner_family=name,
            inner=inner,
            hidden_size=int(choice(rng, self.hidden_sizes)),
            step_mult=log_uniform(rng, *self.step_mult),
            exp_mult=log_uniform(rng, *self.exp_mult),
            unroll_length=int(choice(rng, self.unroll_lengths)),
            valid_every=int(self.valid_every),
            seed=task_seed(rng),
        )

    def build(self, config: LoptMetaConfig) -> LoptMetaTask:
        family = self.inner_family(config.inner_family)
        inner_tasks = [family.build(with_seed(config.inner, inner_seed(config.seed, i)))
                       for i in range(len(SPLITS))]
        lopt = self.make_learned_optimizer()(hidden_sizes=(config.hidden_size,),
                                             step_mult=config.step_mult,
                                             exp_mult=config.exp_mult)
        return LoptMetaTask(
            inner_tasks=stack_tasks(inner_tasks),
            lopt=lopt,
            unroll_length=config.unroll_length,
            valid_every=config.valid_every,
        )
