"""Train a small MLP on the digits data with a learned optimizer, in a plain Python loop.

    python examples/train_with_learned_optimizer.py [source] [num_steps]

The source defaults to 'default' (the recommended shipped learned optimizer); it may also be a
run directory, a learned_optimizer.msgpack file, 'latest', a shipped name, or a hand-designed
optimizer such as 'adam' (see ``lopt_cli.load_optimizer``).
"""
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import lopt_cli
from task_definitions.datasets import load_arrays

source = sys.argv[1] if len(sys.argv) > 1 else "default"
num_steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
data = load_arrays("digits")["train"]
x, y = jnp.asarray(data["image"]).reshape(len(data["label"]), -1), jnp.asarray(data["label"])
model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(10)])
params = model.init(jax.random.key(0), x[:1])
opt = lopt_cli.load_optimizer(source, num_steps)  # e.g. load_optimizer("default", num_steps)
state = opt.init(params)


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply(params, x), y).mean()


@jax.jit
def train_step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = opt.update(grads, state, params, loss=loss)  # the optimizer sees the loss
    return optax.apply_updates(params, updates), state, loss


for step in range(num_steps):
    batch = jax.random.randint(jax.random.key(step), (128,), 0, len(y))
    params, state, loss = train_step(params, state, x[batch], y[batch])
    if step % 50 == 0 or step == num_steps - 1:
        print(f"step {step:4d}  loss {float(loss):.4f}")
