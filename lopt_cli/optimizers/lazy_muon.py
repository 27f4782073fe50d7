r"""``lazy_muon``: Muon whose orthogonalising factor is recomputed every ``refresh_every`` steps
and reused in between: ``load_optimizer("lazy_muon", T)``.

For a tall :math:`X \in \mathbb{R}^{A \times B}` (:math:`A \ge B`; a wide matrix is transposed)
Muon's quintic Newton–Schulz iteration :math:`X \leftarrow X\,p(X^\top X)`,
:math:`p(G) = aI + bG + cG^2`, is a right multiplication by a polynomial of the Gram matrix, so
the orthogonalised :math:`O \approx U V^\top` of :math:`X_0 = N / \lVert N \rVert_F` is
:math:`X_0 R` with the :math:`B \times B` factor

.. math::
    R_0 = I, \qquad R_{j+1} = R_j\, p(R_j G_0 R_j), \qquad G_0 = X_0^\top X_0

(``muon_nominal.newton_schulz_factor``: Muon's iterates, computed on the Gram side). Every
``refresh_every`` steps (the first included) the factor is recomputed from the current Nesterov
momentum; in between each step reuses it, :math:`O_t = X_t R`, one :math:`A \times B \times B`
product instead of five iterations of three. The step is :math:`O_t` scaled to an RMS of
:math:`\rho` = 0.2 times the rate (``muon``'s), along Nesterov momentum β = 0.95; every other
parameter steps with NAdam at the same constant rate, as ``muon``'s. With ``refresh_every=1``
it is Muon (up to rounding).

Inside :func:`jax.vmap` over runs the refresh's ``lax.cond`` becomes a select that computes
both branches: the saving is a single run's.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers.matrix_split import on_matrices_nadam_elsewhere
from lopt_cli.optimizers.muon import MUON_RMS
from lopt_cli.optimizers.muon_nominal import NS_EPS, NS_STEPS, refreshed_factor, tall, unit, untall

REFRESH_EVERY = 10


class LazyMuonState(NamedTuple):
    count: jax.Array
    factor: optax.Params  # per matrix, B x B of its tall orientation


def scale_by_stored_factor(refresh_every: int = REFRESH_EVERY) -> optax.GradientTransformation:
    r"""Every 2-D leaf times its stored Gram-side Newton–Schulz factor, refreshed every
    ``refresh_every`` steps (``muon_nominal.refreshed_factor``), scaled to RMS :math:`\rho`
    (module docstring)."""

    def init(params):
        factors = jax.tree.map(lambda p: jnp.eye(tall(p).shape[1], dtype=p.dtype), params)
        return LazyMuonState(jnp.zeros([], jnp.int32), factors)

    def update(updates, state, params=None):
        del params
        refresh = state.count % refresh_every == 0
        unit_talls = jax.tree.map(lambda n: unit(tall(n)), updates)
        factors = jax.tree.map(lambda x, old: refreshed_factor(x, old, refresh, NS_STEPS),
                               unit_talls, state.factor)
        steps = jax.tree.map(lambda x, f, n: rms_matched(untall(x @ f, n)), unit_talls,
                             factors, updates)
        return steps, LazyMuonState(state.count + 1, factors)

    return optax.GradientTransformation(init, update)


def rms_matched(o: jax.Array) -> jax.Array:
    r"""``o`` scaled to an RMS of :math:`\rho`."""
    return MUON_RMS * o / (jnp.sqrt(jnp.mean(jnp.square(o))) + NS_EPS)


def scale_by_lazy_muon(beta: float = 0.95, refresh_every: int = REFRESH_EVERY
                       ) -> optax.GradientTransformation:
    r"""Nesterov momentum :math:`\beta m + g` (:math:`m \leftarrow \beta m + g`) of every 2-D
    leaf through :func:`scale_by_stored_factor`."""
    return optax.chain(optax.trace(decay=beta, nesterov=True),
                       scale_by_stored_factor(refresh_every))


def lazy_muon(learning_rate: float | jax.Array = 1e-3, refresh_every: int = REFRESH_EVERY
              ) -> optax.GradientTransformationExtraArgs:
    """Lazy Muon on matrices and NAdam elsewhere at one constant ``learning_rate`` (module
    docstring), accepting ``loss=`` / ``valid_loss=``."""
    return on_matrices_nadam_elsewhere(scale_by_lazy_muon(refresh_every=refresh_every),
                                       learning_rate)
