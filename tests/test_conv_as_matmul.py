"""The conv classifiers compute their convolutions and poolings as matrix products and
reshapes (XLA's CPU convolution inside a scan was 30× slower): the same parameters as flax's
``nn.Conv``, the same outputs and gradients as ``nn.Conv`` with ``nn.max_pool``/``nn.avg_pool``."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from task_definitions.conv import ConvConfig, ConvFamily, ConvNet
from task_definitions.mlp import ACTIVATIONS


class FlaxConvNet(ConvNet):
    """The network as it was written with flax's layers (the reference)."""

    @nn.compact
    def __call__(self, images):
        pool = nn.max_pool if self.pooling == "max" else nn.avg_pool
        hidden = images
        for i, features in enumerate(self.channels):
            hidden = ACTIVATIONS[self.activation](nn.Conv(
                features, (self.kernel_size,) * 2, padding="SAME", name=f"conv_{i}")(hidden))
            if min(hidden.shape[-3:-1]) > 1:
                hidden = pool(hidden, (2, 2), strides=(2, 2), padding="SAME")
        if self.head == "global":
            hidden = jnp.mean(hidden, axis=(-3, -2))
        else:
            hidden = hidden.reshape(*hidden.shape[:-3], -1)
        return nn.Dense(self.num_classes, name="head")(hidden)


@pytest.mark.parametrize("size, kernel, pooling, head", [
    (8, 3, "max", "dense"), (7, 2, "avg", "global"), (5, 5, "max", "global"),
])
def test_same_parameters_outputs_and_gradients_as_flax_layers(size, kernel, pooling, head):
    args = ((6, 5, 4), kernel, pooling, head, "tanh", 10)
    key = jax.random.PRNGKey(size + kernel)
    images = jax.random.normal(key, (3, size, size, 2))
    params = jax.jit(FlaxConvNet(*args).init)(key, images)["params"]
    ours = jax.jit(ConvNet(*args).init)(key, images)["params"]
    assert jax.tree.structure(ours) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)  # same names, shapes, initialisers and keys

    def outputs_and_gradients(net):
        def loss(p):
            return jnp.sum(jnp.sin(net.apply({"params": p}, images)))
        return jax.jit(lambda p: (net.apply({"params": p}, images), jax.grad(loss)(p)))(params)

    for a, b in zip(jax.tree.leaves(outputs_and_gradients(ConvNet(*args))),
                    jax.tree.leaves(outputs_and_gradients(FlaxConvNet(*args)))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_classifier_traces_no_xla_convolution():
    task = ConvFamily().build(ConvConfig(
        dataset="digits", image_size=0, channels=(8, 8), kernel_size=3, pooling="max",
        head="dense", activation="relu", batch_size=8, init_scale=1.0, seed=0))
    key = jax.random.PRNGKey(0)
    jaxpr = str(jax.make_jaxpr(jax.grad(task.loss))(task.init(key),
                                                    task.sample_batch(key, "train"), key))
    assert "conv_general_dilated" not in jaxpr and "reduce_window" not in jaxpr
    assert task.convolutional  # the benchmark's host-loop rule still sees a conv net
