"""Every optimizer the conformance suite checks, by name.

``OPTIMIZERS`` maps a name to a factory ``() -> optax.GradientTransformationExtraArgs`` that
builds a ready-to-use optimizer (learned ones with freshly initialised, *untrained* weights and a
horizon of ``DEFAULT_NUM_STEPS``). ``LEARNED_OPTIMIZERS`` maps the learned ones' names to
factories of their :class:`~lopt_cli.optimizers.base.LearnedOptimizer`, for the checks that need
meta-parameters (gradients flowing to ``theta``). Registering a new optimizer here enrolls it in
``tests/test_optimizer_conformance.py``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import optax

from lopt_cli.optimizers import baselines
from lopt_cli.optimizers.adam_nominal import AdamNominalLOpt
from lopt_cli.optimizers.ademamix import ademamix
from lopt_cli.optimizers.balanced_nominal import BalancedNominalLOpt
from lopt_cli.optimizers.base import LearnedOptimizer
from lopt_cli.optimizers.cautious import cautious_adam
from lopt_cli.optimizers.celo import CeloLOpt
from lopt_cli.optimizers.dion import dion
from lopt_cli.optimizers.hierarchical import HierarchicalLOpt
from lopt_cli.optimizers.lazy_muon import lazy_muon
from lopt_cli.optimizers.mlp_lopt import MLPLOpt
from lopt_cli.optimizers.muon import muon
from lopt_cli.optimizers.muon_nominal import MuonNominalLOpt
from lopt_cli.optimizers.sinkhorn import sinkhorn
from lopt_cli.optimizers.small_lopt import SmallLOpt

DEFAULT_NUM_STEPS = 1000

LEARNED_OPTIMIZERS: dict[str, Callable[[], LearnedOptimizer]] = {
    "mlp": MLPLOpt,
    "hierarchical": HierarchicalLOpt,
    "small": SmallLOpt,
    "celo": CeloLOpt,
    "adam_nominal": AdamNominalLOpt,
    "adam_nominal_two_moments": functools.partial(AdamNominalLOpt, beta2_fast=0.99),
    "adam_nominal_learned_decay": functools.partial(AdamNominalLOpt, learned_decay=True),
    "adam_nominal_cautious": functools.partial(AdamNominalLOpt, cautious=True),
    "muon_nominal": MuonNominalLOpt,
    "balanced_nominal": BalancedNominalLOpt,
}


def ready_learned(name: str, seed: int = 0, num_steps: int = DEFAULT_NUM_STEPS
                  ) -> optax.GradientTransformationExtraArgs:
    """The learned optimizer ``name`` with meta-parameters from ``init(key(seed))``."""
    lopt = LEARNED_OPTIMIZERS[name]()
    return lopt.transform(lopt.init(jax.random.key(seed)), num_steps)


OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformationExtraArgs]] = {
    "adam": baselines.adam,
    "sgd": baselines.sgd,
    # Adam8p / NAdamW at their defaults (no penalties; NAdamW: Nesterov, cosine decay to zero).
    "adam8p": functools.partial(baselines.adam8p, num_steps=DEFAULT_NUM_STEPS),
    "nadamw": functools.partial(baselines.nadamw, num_steps=DEFAULT_NUM_STEPS),
    "ademamix": ademamix,  # Adam with a slow momentum mixed in (ademamix.py)
    "cautious_adam": cautious_adam,  # Adam skipping entries against the gradient (cautious.py)
    "muon": muon,  # Muon on matrices, NAdam elsewhere, one constant rate (optimizers/muon.py)
    "lazy_muon": lazy_muon,  # muon reusing its Newton-Schulz factor (optimizers/lazy_muon.py)
    "sinkhorn": sinkhorn,  # muon with row/column-balanced momentum (optimizers/sinkhorn.py)
    "dion": dion,  # muon with one warm-started power iteration per step (optimizers/dion.py)
    "dion_low_rank": functools.partial(dion, rank_fraction=0.125),  # dion at an eighth of the rank
    **{name: functools.partial(ready_learned, name) for name in LEARNED_OPTIMIZERS},
}
