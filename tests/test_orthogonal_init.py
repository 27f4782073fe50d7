"""The RNN tasks' orthogonal recurrent init without LAPACK (``task_definitions.orthogonal``).

Batched LAPACK QR on CPU can hang a meta-training run for good (the kernel waits for XLA's
intra-op pool from inside it); the RNN tasks' init must not contain it, and must still be
flax's default init up to rounding.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from task_definitions.char_rnn import CharRNNFamily
from task_definitions.orthogonal import orthogonal


@pytest.mark.parametrize("shape", [(8, 8), (64, 64), (16, 48), (48, 16), (3, 4, 5)])
def test_same_matrices_as_jax_orthogonal_up_to_rounding(shape):
    key = jax.random.PRNGKey(7)
    ours = orthogonal(scale=2.0)(key, shape, jnp.float32)
    theirs = jax.nn.initializers.orthogonal(scale=2.0)(key, shape, jnp.float32)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    flat = np.asarray(ours).reshape(-1, shape[-1]) / 2.0
    small = min(flat.shape)
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-5)


def test_a_one_dimensional_shape_is_refused():
    with pytest.raises(ValueError, match="at least a 2D shape"):
        orthogonal()(jax.random.PRNGKey(0), (4,))


def primitives(jaxpr) -> set[str]:
    return set(re.findall(r"= (\w+)\[", jaxpr.pretty_print()))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_rnn_task_init_needs_no_qr_even_batched(cell):
    family = CharRNNFamily(cells=(cell,), hidden_sizes=(16,), embed_sizes=(8,), seq_lens=(8,),
                           batch_sizes=(4,))
    task = family.build(family.sample(jax.random.PRNGKey(0)))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batched = jax.make_jaxpr(jax.vmap(task.init))(keys)
    assert "qr" not in primitives(batched) and "dot_general" in primitives(batched)
    assert "qr" in primitives(jax.make_jaxpr(  # the check can see a QR where there is one
        lambda k: jax.nn.initializers.orthogonal()(k, (4, 4)))(keys[0]))
    recurrent = [leaf for leaf in jax.tree_util.tree_leaves(task.init(keys[0]))
                 if leaf.shape == (16, 16)]  # hidden to hidden (the input is 8 wide)
    assert recurrent  # orthogonal times the task's init scale
    for kernel in recurrent:
        gram = np.asarray(kernel.T @ kernel)
        np.testing.assert_allclose(gram / gram[0, 0], np.eye(16), atol=1e-4)
