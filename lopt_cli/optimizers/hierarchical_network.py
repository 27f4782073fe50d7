r"""The hierarchical learned optimizer's flax module: a per-tensor LSTM with three heads, and a
per-parameter MLP (:class:`~lopt_cli.optimizers.hierarchical.HierarchicalLOpt`).

:class:`HierarchicalNetwork` defines both halves plainly (``per_tensor``: flax's
``nn.LSTMCell`` and ``Dense`` heads; ``per_param``: ``Dense`` layers on row-major features)
and computes the update with its fast paths, on the same variables read by the layer names it
declares (:meth:`HierarchicalNetwork.layer_names`; a missing or extra layer is an error):

* :meth:`~HierarchicalNetwork.per_tensor_fused`. flax's ``nn.LSTMCell`` applies eight
  ``Dense`` layers per step (``ii, if, ig, io`` on the input, ``hi, hf, hg, ho`` with biases
  on the hidden state), and the three heads are three more. Here the same variables are two
  products:

  .. math::
      (z_i, z_f, z_g, z_o) &= [x, h] \begin{bmatrix} W_{ii} & W_{if} & W_{ig} & W_{io} \\
          W_{hi} & W_{hf} & W_{hg} & W_{ho} \end{bmatrix} + (b_{hi}, b_{hf}, b_{hg}, b_{ho}) \\
      c' &= \sigma(z_f)\, c + \sigma(z_i) \tanh(z_g), \qquad h' = \sigma(z_o) \tanh(c') \\
      (z, s, r) &= h' \,[W_z \; W_s \; W_r] + (b_z, b_s, b_r)

  (the weight concatenations depend only on :math:`\theta`, so inside an unroll XLA computes
  them once, outside the loop). On 2 CPU cores, an interleaved A/B of a hierarchical
  meta-training truncation measured it as fast as the flax cell (within 1%); it is kept for
  its shorter program (fewer small kernels between the per-tensor statistics and the MLP).
* :meth:`~HierarchicalNetwork.per_param_feature_major`: the MLP feature-major
  (:mod:`~lopt_cli.optimizers.feature_major`), with the output and extra heads as one
  ``(2 + E, H) @ (H, b)`` product: on 2 CPU cores it takes the time of the 2-row output
  product alone, while summing the ``(H, b)`` hidden layer instead was a further pass over it.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_cli.optimizers import feature_major as fm

# Layer names: flax names each submodule after the attribute ``setup`` assigns it to, and the
# hidden layers (a list attribute) ``hidden_0``, ``hidden_1``, ...
LSTM, TO_MLP, TO_STEP_SCALE, TO_CROSS = "lstm", "to_mlp", "to_step_scale", "to_cross"
PARAM_IN, TENSOR_IN, HIDDEN, OUT, EXTRA = "param_in", "tensor_in", "hidden", "out", "extra"
GATES = ("i", "f", "g", "o")  # flax LSTMCell's gate order and variable suffixes


def _init(scale: float):
    """LeCun-normal-like (truncated) init with variance ``scale / fan_in``."""
    return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


def lstm_cell(lstm: dict, carry: tuple[jax.Array, jax.Array], x: jax.Array):
    """``nn.LSTMCell`` with variables ``lstm`` on inputs ``x`` ``(T, F)`` and carry ``(c, h)``
    ``(T, H)`` each, as one matrix product: returns ``((c', h'), h')``."""
    c, h = carry
    kernel = jnp.concatenate([
        jnp.concatenate([lstm[f"i{g}"]["kernel"] for g in GATES], axis=1),
        jnp.concatenate([lstm[f"h{g}"]["kernel"] for g in GATES], axis=1)], axis=0)
    bias = jnp.concatenate([lstm[f"h{g}"]["bias"] for g in GATES])
    gates = jnp.concatenate([x, h], axis=-1) @ kernel + bias
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    return (new_c, new_h), new_h


def dense_heads(layers: list[dict], x: jax.Array) -> list[jax.Array]:
    """Several flax ``Dense`` layers applied to the same ``x`` as one product; their outputs
    in order."""
    merged = fm.concat_dense(layers)
    out = x @ merged["kernel"] + merged["bias"]
    bounds = [0]
    for layer in layers:
        bounds.append(bounds[-1] + layer["bias"].shape[0])
    return [out[..., a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class HierarchicalNetwork(nn.Module):
    """The per-tensor LSTM with its projections, and the per-parameter MLP (one flax module;
    ``init`` via ``__call__``; the optimizer runs :meth:`per_tensor_fused` and
    :meth:`per_param_feature_major`, equal to the plain :meth:`per_tensor` and
    :meth:`per_param_reference`)."""

    hidden_sizes: tuple[int, ...] = (32, 32)
    lstm_hidden: int = 64
    lstm_to_mlp: int = 16
    num_extra_outputs: int = 2
    cross_size: int = 8
    output_init_scale: float = 1.0
    param_share: float = 0.5  # F_p / (F_p + F_t + lstm_to_mlp), for the split first layer

    def setup(self):
        self.lstm = nn.LSTMCell(self.lstm_hidden)
        self.to_mlp = nn.Dense(self.lstm_to_mlp)
        self.to_step_scale = nn.Dense(1)
        self.to_cross = nn.Dense(self.cross_size)
        # First layer split over per-parameter / per-tensor inputs, initialised as one Dense.
        self.param_in = nn.Dense(self.hidden_sizes[0], kernel_init=_init(self.param_share))
        self.tensor_in = nn.Dense(self.hidden_sizes[0], use_bias=False,
                                  kernel_init=_init(1.0 - self.param_share))
        self.hidden = [nn.Dense(w) for w in self.hidden_sizes[1:]]
        self.out = nn.Dense(2, kernel_init=_init(self.output_init_scale**2))
        self.extra = nn.Dense(self.num_extra_outputs)

    def hidden_names(self) -> tuple[str, ...]:
        """Names of the MLP's layers between the first and the output layer."""
        return tuple(f"{HIDDEN}_{i}" for i in range(len(self.hidden_sizes) - 1))

    def layer_names(self) -> tuple[str, ...]:
        """Every layer's name (the keys of ``theta["params"]``)."""
        return (LSTM, TO_MLP, TO_STEP_SCALE, TO_CROSS, PARAM_IN, TENSOR_IN,
                *self.hidden_names(), OUT, EXTRA)

    def per_param_chain(self) -> tuple[str, ...]:
        """The layers of the per-parameter product chain, in order (first layer's per-parameter
        half, hidden layers, output layer)."""
        return (PARAM_IN, *self.hidden_names(), OUT)

    def _layers(self) -> dict:
        return fm.declared_layers(self.variables["params"], self.layer_names(),
                                  "HierarchicalNetwork")

    # ------------------------------------------------------------------ per tensor

    def per_tensor(self, carry, lstm_inputs: jax.Array):
        """``(T, F_l)`` → carry, ``z (T, lstm_to_mlp)``, ``s (T,)``, cross vector ``(C,)``."""
        carry, h = self.lstm(carry, lstm_inputs)
        cross = jnp.mean(self.to_cross(h), axis=0)
        return carry, self.to_mlp(h), self.to_step_scale(h)[:, 0], cross

    def per_tensor_fused(self, carry, lstm_inputs: jax.Array):
        """:meth:`per_tensor` as two products (module docstring)."""
        layers = self._layers()
        carry, h = lstm_cell(layers[LSTM], carry, lstm_inputs)
        z, scale, cross = dense_heads([layers[TO_MLP], layers[TO_STEP_SCALE], layers[TO_CROSS]],
                                      h)
        return carry, z, scale[:, 0], jnp.mean(cross, axis=0)

    # ------------------------------------------------------------------ per parameter

    def per_param(self, param_x: jax.Array, tensor_x: jax.Array):
        """``(N, F_p)``, ``(F_t + lstm_to_mlp,)`` → ``d, a (N,)``, last hidden ``(N, H)``."""
        h = self.param_in(param_x) + self.tensor_in(tensor_x)
        for layer in self.hidden:
            h = layer(nn.relu(h))
        h = nn.relu(h)
        out = self.out(h)
        return out[..., 0], out[..., 1], h

    def per_param_feature_major(self, x: jax.Array, scales: jax.Array, tensor_x: jax.Array):
        """The MLP on the raw feature-major block ``x`` ``(F_p, b)`` normalised by ``scales``:
        ``d, a (b,)`` and the extra head (before its ``tanh``) on every parameter's last
        hidden layer, ``(E, b)``."""
        layers = self._layers()
        h = fm.split_input_layer(layers[PARAM_IN], layers[TENSOR_IN], x, scales, tensor_x)
        hidden = nn.relu(fm.hidden_stack([layers[n] for n in self.hidden_names()], h))
        out = fm.dense(fm.concat_dense([layers[OUT], layers[EXTRA]]), hidden)
        return out[0], out[1], out[2:]

    def per_param_reference(self, x: jax.Array, scales: jax.Array, tensor_x: jax.Array):
        """:meth:`per_param_feature_major` by the plain definition (:meth:`per_param` on the
        normalised row-major features, then the extra head)."""
        d, a, h = self.per_param((x * scales[:, None]).T, tensor_x)
        return d, a, self.extra_preactivation(h).T

    def extra_preactivation(self, hidden: jax.Array) -> jax.Array:
        """The extra head (linear) on last hidden layers ``(..., H)``: ``(..., E)``."""
        return self.extra(hidden)

    def extra_outputs(self, mean_hidden: jax.Array) -> jax.Array:
        """Per-tensor mean of the extra outputs, from the mean hidden layer, squashed."""
        return jnp.tanh(self.extra(mean_hidden))

    def __call__(self, carry, lstm_inputs, param_x, tensor_x):
        carry, z, s, cross = self.per_tensor(carry, lstm_inputs)
        d, a, h = self.per_param(param_x, jnp.concatenate([tensor_x, z[0]]))
        return d, a, self.extra_outputs(jnp.mean(h, axis=0)), cross, s
