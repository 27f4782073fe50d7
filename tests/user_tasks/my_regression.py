"""A user-defined task, written as a user would, outside lopt: linear regression."""
import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class LinearRegression:
    """y = X w* + noise; the task's leaves are its data, nothing is static."""

    inputs: jax.Array
    targets: jax.Array

    def init(self, key):
        return {"w": 0.01 * jax.random.normal(key, (self.inputs.shape[1],))}

    def sample_batch(self, key, split):
        index = jax.random.randint(key, (16,), 0, self.inputs.shape[0])
        return {"x": self.inputs[index], "y": self.targets[index]}

    def loss(self, params, batch, key):
        return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)

    def normalize(self, loss):
        return jnp.where(jnp.isfinite(loss), jnp.clip(loss, 0.0, 10.0), 10.0)


def make_task(dim: int = 4, seed: int = 0) -> LinearRegression:
    """The factory a config points at: ``_target_: my_regression.make_task``."""
    key_x, key_w = jax.random.split(jax.random.PRNGKey(seed))
    inputs = jax.random.normal(key_x, (256, dim))
    return LinearRegression(inputs, inputs @ jax.random.normal(key_w, (dim,)))
