r"""Classic two-dimensional test functions, a toy suite for looking at optimizer trajectories.

Every task minimises :math:`c\,f(x, y)` over ``params = {"xy": [2]}`` (:math:`c` a sampled loss
scale) for one of

* ``rosenbrock``: :math:`(1 - x)^2 + 100 (y - x^2)^2`, minimum at (1, 1);
* ``beale``: :math:`\sum_{i=1}^3 (c_i - x + x y^i)^2`, :math:`c = (1.5, 2.25, 2.625)`, at (3, 0.5);
* ``booth``: :math:`(x + 2y - 7)^2 + (2x + y - 5)^2`, at (1, 3);
* ``himmelblau``: :math:`(x^2 + y - 11)^2 + (x + y^2 - 7)^2`, at (3, 2) and three more points;
* ``styblinski_tang``: :math:`\tfrac12 \sum_{u \in \{x, y\}} (u^4 - 16 u^2 + 5 u) + 78.33`,
  at (-2.9035, -2.9035);
* ``matyas``: :math:`0.26 (x^2 + y^2) - 0.48 x y`, at (0, 0);
* ``diagonal``: :math:`\tfrac12 (x - y)^2` (Metz et al. 2020's implicit-regularisation
  problem), zero on the whole line :math:`x = y`;

each shifted so that its minimum value is 0. The function is a pytree *leaf* (an index into
:data:`FUNCTION_NAMES`, evaluated with ``lax.switch``), so tasks of different functions share
one shape and can be stacked and vmapped together.

The start point is drawn from the function's usual domain with ``config.seed`` (or given
explicitly as ``config.start``); ``init(key)`` adds ``init_jitter`` Gaussian noise to it. With
``noise > 0`` the *training* gradient is noisy: the loss value is exact, but its gradient is
:math:`\nabla f + \xi` with :math:`\xi \sim \mathcal N(0, (\text{noise}\cdot g_0)^2 I / 2)` and
:math:`g_0 = \lVert\nabla f(\text{start})\rVert` (valid/test batches are noise-free).

Normalisation is logarithmic relative to the loss :math:`f_0` at the start point,

.. math:: \tilde f = \log(1 + 10^3 f / f_0) / \log(1 + 10^3),

so the start scores 1, a thousandfold reduction about 0.1, the minimum 0 (ceiling 2).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed

STYBLINSKI_TANG_MIN = 2 * 39.16616570377142


def rosenbrock(x, y):
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def booth(x, y):
    return (x + 2 * y - 7.0) ** 2 + (2 * x + y - 5.0) ** 2


def himmelblau(x, y):
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


def styblinski_tang(x, y):
    return 0.5 * (x**4 - 16 * x**2 + 5 * x + y**4 - 16 * y**2 + 5 * y) + STYBLINSKI_TANG_MIN


def matyas(x, y):
    return 0.26 * (x**2 + y**2) - 0.48 * x * y


def diagonal(x, y):
    return 0.5 * (x - y) ** 2


# name -> (function of (x, y) that works on floats and arrays, start box ((x0, x1), (y0, y1)))
FUNCTIONS = {
    "rosenbrock": (rosenbrock, ((-2.0, 2.0), (-1.0, 3.0))),
    "beale": (beale, ((-2.0, 2.0), (-2.0, 2.0))),
    "booth": (booth, ((-6.0, 6.0), (-6.0, 6.0))),
    "himmelblau": (himmelblau, ((-5.0, 5.0), (-5.0, 5.0))),
    "styblinski_tang": (styblinski_tang, ((-5.0, 5.0), (-5.0, 5.0))),
    "matyas": (matyas, ((-8.0, 8.0), (-8.0, 8.0))),
    "diagonal": (diagonal, ((-4.0, 4.0), (-4.0, 4.0))),
}
FUNCTION_NAMES: tuple = tuple(FUNCTIONS)
KNOWN_MINIMA = {  # one global minimiser of each function (value 0)
    "rosenbrock": (1.0, 1.0), "beale": (3.0, 0.5), "booth": (1.0, 3.0),
    "himmelblau": (3.0, 2.0), "styblinski_tang": (-2.903534027771, -2.903534027771),
    "matyas": (0.0, 0.0), "diagonal": (0.7, 0.7),
}
LOG_RANGE = 1e3
CEILING = 2.0


def evaluate(index: jax.Array, xy: jax.Array) -> jax.Array:
    """``f_index(x, y)`` for a traced function index (all functions share one signature)."""
    branches = [lambda p, f=f: f(p[0], p[1]) for f, _ in FUNCTIONS.values()]
    return jax.lax.switch(index, branches, xy)


@dataclasses.dataclass(frozen=True)
class Functions2DConfig:
    """One 2-D test problem; ``start=()`` means "draw the start point from ``seed``"."""

    function: str
    scale: float
    noise: float
    init_jitter: float
    seed: int
    start: tuple = ()


@dataclasses.dataclass(frozen=True)
class ImplicitRegularizationConfig(Functions2DConfig):
    """A ½(x−y)² problem started at an explicit point of the fan (its own family name)."""


@struct.dataclass
class Functions2DTask:
    """A 2-D function as a pytree: the function index, start, scales and noise are leaves."""

    function_index: jax.Array
    start: jax.Array
    scale: jax.Array
    init_jitter: jax.Array
    grad_noise: jax.Array
    start_loss: jax.Array

    def init(self, key: jax.Array) -> dict:
        return {"xy": self.start + self.init_jitter * jax.random.normal(key, (2,))}

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        """``{"xi": [2]}``: the additive gradient noise (zero for ``valid`` and ``test``)."""
        if split == "train":
            return {"xi": self.grad_noise * jax.random.normal(key, (2,))}
        return {"xi": jnp.zeros((2,))}

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        del key
        xy = params["xy"]
        value = self.scale * evaluate(self.function_index, xy)
        # Exact value, gradient + xi: the noise term is zero but has gradient xi.
        return value + jnp.dot(batch["xi"], xy - jax.lax.stop_gradient(xy))

    def normalize(self, loss: jax.Array) -> jax.Array:
        ratio = jnp.maximum(loss, 0.0) / self.start_loss
        value = jnp.log1p(LOG_RANGE * ratio) / math.log1p(LOG_RANGE)
        return jnp.where(jnp.isfinite(value), jnp.clip(value, 0.0, CEILING), CEILING)


def start_point(config: Functions2DConfig) -> np.ndarray:
    """The configured start, or one drawn uniformly from the function's box with the seed."""
    if config.start:
        return np.asarray(config.start, np.float64)
    (x0, x1), (y0, y1) = FUNCTIONS[config.function][1]
    rng = np.random.default_rng(config.seed)
    return np.asarray([rng.uniform(x0, x1), rng.uniform(y0, y1)])


def _numeric_gradient(f, xy: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return np.asarray([(f(*(xy + e)) - f(*(xy - e))) / (2 * eps) for e in np.eye(2) * eps])


def build_functions2d(config: Functions2DConfig) -> Functions2DTask:
    """Builds the task of ``config`` (host-side NumPy only; no device computation)."""
    if config.function not in FUNCTIONS:
        raise ValueError(f"function={config.function!r}: expected one of {list(FUNCTIONS)}")
    if len(config.start) not in (0, 2):
        raise ValueError(f"start={config.start!r}: expected () or (x, y)")
    f = FUNCTIONS[config.function][0]
    start = start_point(config)
    start_loss = config.scale * float(f(*start))
    grad_norm = config.scale * float(np.linalg.norm(_numeric_gradient(f, start)))
    floor = 1e-6 * max(config.scale, 1e-12)
    return Functions2DTask(
        function_index=jnp.asarray(FUNCTION_NAMES.index(config.function), jnp.int32),
        start=jnp.asarray(start, jnp.float32),
        scale=jnp.asarray(config.scale, jnp.float32),
        init_jitter=jnp.asarray(config.init_jitter, jnp.float32),
        grad_noise=jnp.asarray(config.noise * grad_norm / math.sqrt(2.0), jnp.float32),
        start_loss=jnp.asarray(max(start_loss, floor), jnp.float32),
    )


@dataclasses.dataclass(frozen=True)
class Functions2DFamily:
    """Test functions with sampled loss scale, gradient noise and start point (from the seed)."""

    functions: tuple = FUNCTION_NAMES
    scale: tuple = (0.1, 10.0)
    noise: tuple = (0.0, 0.0, 0.1, 0.3)
    init_jitter: tuple = (0.0, 0.1)
    name: str = "functions_2d"

    def sample(self, key: jax.Array) -> Functions2DConfig:
        rng = generator_from_key(key)
        return Functions2DConfig(
            function=str(choice(rng, self.functions)),
            scale=log_uniform(rng, *self.scale),
            noise=float(choice(rng, self.noise)),
            init_jitter=float(choice(rng, self.init_jitter)),
            seed=task_seed(rng),
        )

    def build(self, config: Functions2DConfig) -> Functions2DTask:
        return build_functions2d(config)


def fan_points(num: int, angles: tuple = (100.0, 170.0), radius: float = 3.0) -> list:
    """``num`` start points evenly spread on the fan (angles in degrees) at one radius."""
    return [(radius * math.cos(math.radians(a)), radius * math.sin(math.radians(a)))
            for a in np.linspace(angles[0], angles[1], num)]


@dataclasses.dataclass(frozen=True)
class ImplicitRegularizationFamily:
    r"""Only :math:`\tfrac12 (x - y)^2`, started on a fan: angle (degrees) and radius sampled.

    The default fan lies in the quadrant :math:`x < 0 < y`, symmetric about the normal
    :math:`(-1, 1)` of the solution line, so gradient descent and Adam walk straight to the
    line while an implicitly regularising optimizer drifts toward the origin.
    """

    angles: tuple = (100.0, 170.0)
    radius: tuple = (1.0, 4.0)
    scale: tuple = (1.0, 1.0)
    noise: tuple = (0.0,)
    init_jitter: float = 0.0
    name: str = "implicit_regularization"

    def sample(self, key: jax.Array) -> ImplicitRegularizationConfig:
        rng = generator_from_key(key)
        angle = math.radians(rng.uniform(*self.angles))
        radius = float(rng.uniform(*self.radius))
        return ImplicitRegularizationConfig(
            function="diagonal",
            scale=log_uniform(rng, *self.scale),
            noise=float(choice(rng, self.noise)),
            init_jitter=float(self.init_jitter),
            seed=task_seed(rng),
            start=(radius * math.cos(angle), radius * math.sin(angle)),
        )

    def build(self, config: Functions2DConfig) -> Functions2DTask:
        return build_functions2d(config)
