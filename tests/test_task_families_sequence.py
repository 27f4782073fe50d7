"""Specific checks of the sequence families (char RNN, transformer) and the lopt_meta family.

The generic contract (jit, finiteness, learnability, stacking) is covered for every YAML of the
``task_family`` group by ``test_task_families.py``; here: uniform predictions at init, causality,
and gradients of the meta-loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_cli.inner.lopt_task import LoptMetaConfig, LoptMetaFamily
from task_definitions.char_rnn import CharRNNConfig, build_char_rnn, sample_crops
from task_definitions.quadratic import QuadraticConfig
from task_definitions.transformer import TransformerConfig, build_transformer_lm

LM_CONFIGS = {
    **{f"rnn_{cell}": CharRNNConfig("text", cell, 16, 32, 16, 16, 1.0, 0)
       for cell in ("lstm", "gru", "rnn")},
    "transformer": TransformerConfig("text", 32, 2, 2, 4, 16, 16, 1.0, 0),
}


def build_lm(name: str):
    config = LM_CONFIGS[name]
    return (build_char_rnn if isinstance(config, CharRNNConfig) else build_transformer_lm)(config)


@pytest.mark.parametrize("name", sorted(LM_CONFIGS))
def test_lm_loss_at_init_is_near_log_vocab(name):
    """Near-uniform predictions at init: the loss is about log V, so normalise() is about 1."""
    task = build_lm(name)
    params = task.init(jax.random.PRNGKey(0))
    batch = task.sample_batch(jax.random.PRNGKey(1), "train")
    assert batch["tokens"].shape == (task.batch_size, task.seq_len + 1)
    loss = jax.jit(task.loss)(params, batch, jax.random.PRNGKey(2))
    assert abs(float(loss) / np.log(task.vocab_size) - 1.0) < 0.05
    assert abs(float(task.normalize(loss)) - 1.0) < 0.05


def test_crops_are_consecutive_windows_of_stored_sequences():
    tokens = jnp.arange(40, dtype=jnp.int32).reshape(4, 10)
    crops = np.asarray(sample_crops(jax.random.PRNGKey(0), tokens, 32, 6))
    assert crops.shape == (32, 6)
    assert np.all(np.diff(crops, axis=1) == 1)  # consecutive within one row
    assert np.all(crops[:, 0] // 10 == crops[:, -1] // 10)  # never crosses rows


def test_transformer_is_causal():
    """Changing the token at position t leaves the logits at positions < t unchanged."""
    task = build_lm("transformer")
    params = task.init(jax.random.PRNGKey(0))
    tokens = task.sample_batch(jax.random.PRNGKey(1), "train")["tokens"][:, :-1]
    t = task.seq_len // 2
    changed = tokens.at[:, t].set((tokens[:, t] + 1) % task.vocab_size)
    logits = jax.jit(task.logits)
    before, after = np.asarray(logits(params, tokens)), np.asarray(logits(params, changed))
    np.testing.assert_allclose(before[:, :t], after[:, :t], atol=1e-5)
    assert np.abs(before[:, t:] - after[:, t:]).max() > 1e-4


def test_lopt_meta_loss_has_finite_descent_gradient():
    """Truncated backprop through the unroll: finite, non-zero, and a step against it helps."""
    inner = QuadraticConfig(dim=4, condition_number=10.0, noise=0.0, init_scale=1.0, seed=0)
    config = LoptMetaConfig("quadratic", inner, hidden_size=4, step_mult=0.01, exp_mult=0.03,
                            unroll_length=10, valid_every=5, seed=0)
    task = LoptMetaFamily().build(config)
    theta = task.init(jax.random.PRNGKey(0))
    batch = task.sample_batch(jax.random.PRNGKey(1), "train")
    key = jax.random.PRNGKey(2)
    loss_and_grad = jax.jit(jax.value_and_grad(task.loss))
    loss, grads = loss_and_grad(theta, batch, key)
    leaves = jax.tree_util.tree_leaves(grads)
    assert jnp.isfinite(loss) and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    norm = jnp.sqrt(sum(jnp.sum(g**2) for g in leaves))
    assert norm > 0
    stepped = jax.tree_util.tree_map(lambda p, g: p - 1e-2 * g / norm, theta, grads)
    assert loss_and_grad(stepped, batch, key)[0] < loss


def test_lopt_meta_splits_use_different_inner_tasks():
    family = LoptMetaFamily()
    task = family.build(family.sample(jax.random.PRNGKey(0)))
    minima = np.asarray(task.inner_tasks.minimum)  # default inner family: quadratic bowls
    assert minima.shape[0] == 3 and len({m.tobytes() for m in minima}) == 3
    indices = [int(task.sample_batch(jax.random.PRNGKey(0), s)["task"])
               for s in ("train", "valid", "test")]
    assert indices == [0, 1, 2]
