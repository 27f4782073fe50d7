r"""Small variational autoencoders (Kingma & Welling 2014) on images held on the device.

The encoder MLP maps an image :math:`x \in [0, 1]^D` (flattened) to a diagonal Gaussian
:math:`q(z \mid x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))` over a latent
:math:`z \in \mathbb R^K` with prior :math:`p(z) = \mathcal N(0, I)`; the decoder MLP maps
:math:`z` to logits :math:`\eta(z) \in \mathbb R^D` of the likelihood

* ``"bernoulli"``: :math:`p(x \mid z) = \prod_d \mathrm{Bern}(x_d; \mathrm{sigmoid}(\eta_d))`,
  with the data binarised once (pixel intensity >= 0.5), so the likelihood is a proper one;
* ``"gaussian"``: :math:`p(x \mid z) = \prod_d \mathcal N(x_d; \mathrm{sigmoid}(\eta_d), s^2)`
  with a fixed, sampled observation scale :math:`s`.

The loss is the negative ELBO per pixel, with one reparameterised sample
:math:`z = \mu + \sigma \odot \epsilon` drawn with the ``key`` argument of ``loss``:

.. math:: \ell = \frac1D \Big( -\log p(x \mid z) + \mathrm{KL}\big(q(z \mid x)\,\|\,p(z)\big)
          \Big),\qquad \mathrm{KL} = \tfrac12 \sum_k (\mu_k^2 + \sigma_k^2 - 1 - \log\sigma_k^2).

It is normalised as :math:`(\ell - \ell_0) / (\ell_{1/2} - \ell_0)` where :math:`\ell_0` is the
smallest value the reconstruction term can take (0 for Bernoulli, :math:`\tfrac12\log 2\pi s^2`
for Gaussian) and :math:`\ell_{1/2}` is the loss of the trivial model that predicts 0.5 for
every pixel (:math:`\log 2` for Bernoulli), which is also roughly the loss at initialisation.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from task_definitions.autoencoder import mlp_apply, mlp_init, vector_arrays
from task_definitions.base import normalize_by_ceiling, sample_from_arrays
from task_definitions.mlp import ACTIVATIONS
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed

LIKELIHOODS = ("bernoulli", "gaussian")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """One sampled VAE (``obs_scale`` > 0 for the Gaussian likelihood, unused otherwise)."""

    dataset: str
    hidden_sizes: tuple
    latent_size: int
    likelihood: str
    obs_scale: float
    activation: str
    batch_size: int
    init_scale: float
    seed: int


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    r""":math:`\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,e^{v}) \,\|\, \mathcal N(0, I))`, summed
    over the last axis."""
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var, axis=-1)


@struct.dataclass
class VAETask:
    """A VAE; data, observation scale and normaliser are leaves, the architecture static."""

    data: dict
    obs_scale: jax.Array
    loss_offset: jax.Array
    loss_scale: jax.Array
    init_scale: jax.Array
    hidden_sizes: tuple = struct.field(pytree_node=False)
    latent_size: int = struct.field(pytree_node=False)
    likelihood: str = struct.field(pytree_node=False)
    activation: str = struct.field(pytree_node=False)
    batch_size: int = struct.field(pytree_node=False)

    @property
    def input_dim(self) -> int:
        return self.data["train"]["x"].shape[-1]

    def init(self, key: jax.Array) -> dict:
        enc_key, dec_key = jax.random.split(key)
        sizes = (self.input_dim, *self.hidden_sizes)
        return {"encoder": mlp_init(enc_key, (*sizes, 2 * self.latent_size), self.init_scale),
                "decoder": mlp_init(dec_key, (self.latent_size, *sizes[::-1]), self.init_scale)}

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        return sample_from_arrays(key, self.data[split], self.batch_size)

    def encode(self, params: dict, x: jax.Array) -> tuple:
        """The posterior ``(mean, log_var)`` of ``q(z | x)``, each ``[..., latent_size]``."""
        out = mlp_apply(params["encoder"], x, self.activation)
        mean, log_var = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_var, -15.0, 15.0)

    def decode(self, params: dict, z: jax.Array) -> jax.Array:
        """Decoder logits ``eta(z)`` of shape ``[..., input_dim]``."""
        return mlp_apply(params["decoder"], z, self.activation)

    def log_likelihood(self, logits: jax.Array, x: jax.Array) -> jax.Array:
        """``log p(x | z)`` summed over pixels (last axis)."""
        if self.likelihood == "bernoulli":
            return -jnp.sum(jnp.logaddexp(0.0, logits) - x * logits, axis=-1)
        mean = jax.nn.sigmoid(logits)
        log_norm = 0.5 * jnp.log(2 * jnp.pi * jnp.square(self.obs_scale))
        return -jnp.sum(0.5 * jnp.square((x - mean) / self.obs_scale) + log_norm, axis=-1)

    def elbo_terms(self, params: dict, x: jax.Array, key: jax.Array) -> tuple:
        """Per-example ``(reconstruction NLL, KL)``, both summed over dimensions."""
        mean, log_var = self.encode(params, x)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        return -self.log_likelihood(self.decode(params, z), x), gaussian_kl(mean, log_var)

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        reconstruction, kl = self.elbo_terms(params, batch["x"], key)
        return jnp.mean(reconstruction + kl) / self.input_dim

    def normalize(self, loss: jax.Array) -> jax.Array:
        return normalize_by_ceiling(loss - self.loss_offset, self.loss_scale, ceiling=2.0)


@functools.cache
def binarized(dataset: str) -> dict:
    """The dataset's inputs thresholded at 0.5 (binary data for the Bernoulli likelihood)."""
    return {split: {"x": (arrays["x"] >= 0.5).astype(np.float32)}
            for split, arrays in vector_arrays(dataset).items()}


def reference_losses(likelihood: str, obs_scale: float, train_x: np.ndarray) -> tuple:
    """``(lowest reconstruction loss, loss of predicting 0.5)`` per pixel for the normaliser."""
    if likelihood == "bernoulli":
        return 0.0, math.log(2.0)
    offset = 0.5 * math.log(2 * math.pi * obs_scale**2)
    mse_half = float(np.mean(np.square(np.asarray(train_x, np.float64) - 0.5)))
    return offset, offset + 0.5 * mse_half / obs_scale**2


def build_vae(config: VAEConfig) -> VAETask:
    """Builds the VAE of ``config`` over its image dataset (built offline on first use)."""
    if config.likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood={config.likelihood!r}: expected one of {LIKELIHOODS}")
    if config.likelihood == "gaussian" and not config.obs_scale > 0:
        raise ValueError(f"obs_scale={config.obs_scale!r}: a Gaussian likelihood needs > 0")
    if config.activation not in ACTIVATIONS:
        raise ValueError(f"activation={config.activation!r}: expected one of {list(ACTIVATIONS)}")
    arrays = vector_arrays(config.dataset)
    if arrays["train"]["x"].min() < 0 or arrays["train"]["x"].max() > 1:
        raise ValueError(f"dataset={config.dataset!r}: a VAE needs inputs in [0, 1]")
    if config.likelihood == "bernoulli":
        arrays = binarized(config.dataset)
    offset, trivial = reference_losses(config.likelihood, config.obs_scale, arrays["train"]["x"])
    return VAETask(
        data=jax.tree_util.tree_map(jnp.asarray, arrays),
        obs_scale=jnp.asarray(config.obs_scale, jnp.float32),
        loss_offset=jnp.asarray(offset, jnp.float32),
        loss_scale=jnp.asarray(trivial - offset, jnp.float32),
        init_scale=jnp.asarray(config.init_scale, jnp.float32),
        hidden_sizes=tuple(int(h) for h in config.hidden_sizes),
        latent_size=int(config.latent_size),
        likelihood=config.likelihood,
        activation=config.activation,
        batch_size=int(config.batch_size),
    )


@dataclasses.dataclass(frozen=True)
class VAEFamily:
    """VAEs with sampled widths, depth, latent size, likelihood, activation, batch and init."""

    datasets: tuple = ("digits",)
    widths: tuple = (32, 64, 128)
    depths: tuple = (1, 2)
    latent_sizes: tuple = (2, 4, 8, 16)
    likelihoods: tuple = LIKELIHOODS
    obs_scale: tuple = (0.1, 0.3)
    activations: tuple = ("relu", "tanh", "gelu", "swish")
    batch_sizes: tuple = (32, 64, 128)
    init_scale: tuple = (0.5, 1.5)
    name: str = "vae"

    def sample(self, key: jax.Array) -> VAEConfig:
        rng = generator_from_key(key)
        depth = int(choice(rng, self.depths))
        likelihood = str(choice(rng, self.likelihoods))
        obs_scale = log_uniform(rng, *self.obs_scale)
        return VAEConfig(
            dataset=str(choice(rng, self.datasets)),
            hidden_sizes=tuple(sorted((int(choice(rng, self.widths)) for _ in range(depth)),
                                      reverse=True)),
            latent_size=int(choice(rng, self.latent_sizes)),
            likelihood=likelihood,
            obs_scale=obs_scale if likelihood == "gaussian" else 0.0,
            activation=str(choice(rng, self.activations)),
            batch_size=int(choice(rng, self.batch_sizes)),
            init_scale=log_uniform(rng, *self.init_scale),
            seed=task_seed(rng),
        )

    def build(self, config: VAEConfig) -> VAETask:
        return build_vae(config)
