r"""The per-tensor learned-optimizer base: what every learned architecture shares.

A learned optimizer built on :class:`PerTensorLOpt` is three things:

* **a state** — ``State``, the optax state (a NamedTuple): the fields of ``TensorState``, each a
  tree mirroring the parameters (one entry per tensor; ``grad_mean_sq`` is required: the
  clipping RMS), any shared fields (one value for the whole model), and ``count``;
* **a flax module** (``network``) whose methods compute the update. Its fast paths (fused or
  feature-major products) read the module's variables by the layer names it declares, and
  :meth:`PerTensorLOpt.network_paths` pairs each with a plain reference evaluation, which the
  conformance suite checks equal on the same :math:`\theta`;
* **a per-tensor step** :meth:`PerTensorLOpt.step_tensor` ``(theta, x, state) -> (step,
  state)`` for one tensor (an architecture with a stage across tensors, such as the
  hierarchical one's LSTM, overrides :meth:`PerTensorLOpt.step_tensors` instead).

The base owns the rest: argument validation (``FIELD_RULES``), ``init``/``transform``, the loop
over the parameter tree, gradient clipping against a running RMS (:data:`CLIP_DECAY`,
``clip_mult``), dtypes (state and maths in float32, steps returned in each parameter's dtype),
tensors with no entries (zero step, state untouched), and the block size of per-parameter
networks (``chunk_size``, :mod:`~lopt_cli.optimizers.cpu_tuning`).

A subclass is a frozen dataclass (hashable: a static ``jit`` argument) whose fields are the
architecture's hyperparameters, including ``clip_mult`` (and ``chunk_size`` if its network
runs in blocks of parameters).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import cpu_tuning
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers.base import MetaParams

CLIP_DECAY = 0.99  # decay of the per-tensor running mean square used for gradient clipping


class TensorInput(NamedTuple):
    """One tensor as a per-tensor step sees it (float32; ``(n,)`` if the optimizer sets
    ``FLAT_TENSORS``, else the tensor's shape)."""

    grad: jax.Array  # clipped against the tensor's running RMS
    param: jax.Array
    count: jax.Array  # int32 scalar: updates taken before this one
    num_steps: jax.Array | int  # the horizon (may be traced)


class NetworkPath(NamedTuple):
    """A fast path of a learned optimizer's module and the plain evaluation it must equal:
    ``network.apply(theta, *args, method=fast)`` == ``... method=reference`` (to float
    rounding), both returning the same pytree of arrays."""

    name: str
    fast: Callable
    reference: Callable
    args: tuple


class FieldRule(NamedTuple):
    """How a hyperparameter is checked: ``normalise(value)`` returns the stored value or raises
    ``TypeError``/``ValueError``; ``accepts`` says what is accepted, for the error."""

    normalise: Callable[[Any], Any]
    accepts: str


def _ints(value: Any, allow_empty: bool) -> tuple[int, ...]:
    ints = tuple(int(v) for v in value)
    if any(v <= 0 for v in ints) or not (ints or allow_empty):
        raise ValueError(value)
    return ints


def _decay(value: Any) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(value)
    return value


def _positive_int(value: Any) -> int:
    if int(value) != value or value <= 0:
        raise ValueError(value)
    return int(value)


def _positive_finite(value: Any) -> float:
    value = float(value)
    if not (value > 0 and value < float("inf")):
        raise ValueError(value)
    return value


def _non_negative_finite(value: Any) -> float:
    value = float(value)
    if not (value >= 0 and value < float("inf")):
        raise ValueError(value)
    return value


def _non_negative_int(value: Any) -> int:
    if int(value) != value or value < 0:
        raise ValueError(value)
    return int(value)


def _decays(value: Any) -> tuple[float, ...]:
    decays = tuple(_decay(v) for v in value)
    if not decays:
        raise ValueError(value)
    return decays


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _chunk_size(value: Any) -> int | None:
    return None if value is None else _non_negative_int(value)


HIDDEN_SIZES = FieldRule(functools.partial(_ints, allow_empty=False), "a non-empty list of "
                         "positive ints")
HIDDEN_SIZES_MAY_BE_EMPTY = FieldRule(functools.partial(_ints, allow_empty=True),
                                 "a list of positive ints")
POSITIVE_INT = FieldRule(_positive_int, "a positive int")
NON_NEGATIVE_INT = FieldRule(_non_negative_int, "an int >= 0")
POSITIVE_FINITE = FieldRule(_positive_finite, "a finite number > 0")
NON_NEGATIVE_FINITE = FieldRule(_non_negative_finite, "a finite number >= 0")
DECAY = FieldRule(_decay, "a number in [0, 1)")
DECAYS = FieldRule(_decays, "a non-empty list of numbers in [0, 1)")
BOOL = FieldRule(_bool, "true or false")
CHUNK_SIZE = FieldRule(_chunk_size, "null (automatic), 0 (one block) or a positive int")


def _member_of(choices: tuple[str, ...], value: Any) -> str:
    if value not in choices:
        raise ValueError(value)
    return str(value)


def one_of(choices: tuple[str, ...]) -> FieldRule:
    """The rule of a field that names one of ``choices``."""
    return FieldRule(functools.partial(_member_of, choices), "one of " + ", ".join(choices))


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def float32_zeros(shape: Sequence[int]) -> jax.Array:
    """Optimizer state is float32 whatever the parameters' dtype."""
    return jnp.zeros(tuple(shape), jnp.float32)


def exp_step(direction: jax.Array, magnitude: jax.Array, step_mult: float,
             exp_mult: float) -> jax.Array:
    r"""The learned optimizers' step :math:`-\lambda_1\, d \exp(\lambda_2 a)`."""
    return -step_mult * direction * jnp.exp(exp_mult * magnitude)


class PerTensorLOpt:
    """Base of the learned optimizers that update each tensor with one flax module (see the
    module docstring). Subclasses set ``State``, ``TensorState``, ``FIELD_RULES`` and
    implement ``network``, ``network_init_args``, ``init_tensor_state``, ``step_tensor`` (or
    ``step_tensors``) and ``network_paths``."""

    State: ClassVar[type]
    TensorState: ClassVar[type]
    FIELD_RULES: ClassVar[Mapping[str, FieldRule]] = {}
    FLAT_TENSORS: ClassVar[bool] = True  # per-tensor steps see (n,) views, else the shape
    clip_mult: float

    def __post_init__(self):
        for name, rule in self.FIELD_RULES.items():
            value = getattr(self, name)
            try:
                normalised = rule.normalise(value)
            except (TypeError, ValueError):
                raise LoptUserError(f"{type(self).__name__}: {name}={_shown(value)} must be "
                                    f"{rule.accepts}") from None
            object.__setattr__(self, name, normalised)

    # ------------------------------------------------------------------ architecture

    @property
    def network(self) -> nn.Module:
        """The flax module whose methods compute the update."""
        raise NotImplementedError

    def network_init_args(self) -> tuple:
        """Example inputs of ``network.__call__``, for ``init``."""
        raise NotImplementedError

    def network_paths(self, key: jax.Array) -> list[NetworkPath]:
        """Every fast path the optimizer runs, with its plain reference and random inputs."""
        raise NotImplementedError

    def init(self, key: jax.Array) -> MetaParams:
        """Meta-parameters: the module's flax variables ``{"params": {...}}``."""
        return self.network.init(key, *self.network_init_args())

    def transform(
        self, theta: MetaParams, num_steps: int | jax.Array
    ) -> optax.GradientTransformationExtraArgs:
        """The optimizer of ``theta`` for a horizon of ``num_steps`` (may be traced)."""
        return optax.GradientTransformationExtraArgs(
            init=self.init_state, update=functools.partial(self.update, theta, num_steps))

    def resolved_chunk_size(self) -> int:
        """Parameters per block of the per-parameter network: ``chunk_size``, or when it is
        None (or absent) :func:`cpu_tuning.default_chunk_size`."""
        return cpu_tuning.resolve_chunk_size(getattr(self, "chunk_size", None))

    # ------------------------------------------------------------------ state

    def init_tensor_state(self, param: jax.Array) -> Any:
        """``TensorState`` of one tensor before the first step (float32 zeros)."""
        raise NotImplementedError

    def init_shared_state(self, num_tensors: int) -> dict[str, Any]:
        """The ``State`` fields that are not per tensor (besides ``count``)."""
        del num_tensors
        return {}

    def init_state(self, params: optax.Params) -> Any:
        """Every tensor's initial ``TensorState``, the shared fields, ``count = 0``."""
        leaves, treedef = jax.tree.flatten(params)
        states = [self.init_tensor_state(p) for p in leaves]
        return self.State(**self._per_tensor_trees(treedef, states),
                          **self.init_shared_state(len(leaves)),
                          count=jnp.zeros((), jnp.int32))

    def _per_tensor_trees(self, treedef, states: list) -> dict[str, Any]:
        return {name: treedef.unflatten([getattr(s, name) for s in states])
                for name in self.TensorState._fields}

    # ------------------------------------------------------------------ update

    def step_tensor(self, theta: MetaParams, x: TensorInput, state: Any) -> tuple[jax.Array, Any]:
        """Step (float32, any shape of ``n`` entries) and new ``TensorState`` of one tensor."""
        raise NotImplementedError

    def step_tensors(
        self, theta: MetaParams, inputs: list[TensorInput | None], states: list,
        shared: dict[str, Any], extra_args: dict[str, Any],
    ) -> tuple[list[jax.Array | None], list, dict[str, Any]]:
        """Steps and states of all tensors (``None`` input: a tensor with no entries, whose
        step is ``None``), and the new shared fields. By default :meth:`step_tensor` on each
        tensor in turn; ``extra_args`` (``loss=``, ``valid_loss=``) unread."""
        del extra_args
        steps = []
        for i, x in enumerate(inputs):
            if x is None:
                steps.append(None)
            else:
                step, states[i] = self.step_tensor(theta, x, states[i])
                steps.append(step)
        return steps, states, shared

    def update(
        self,
        theta: MetaParams,
        num_steps: int | jax.Array,
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        """One step: ``updates`` are gradients in, parameter deltas (param dtype) out."""
        if params is None:
            raise ValueError(f"{type(self).__name__}.update needs params (the parameter value "
                             "is a feature)")
        leaves, treedef = jax.tree.flatten(updates)
        count = optax.safe_int32_increment(state.count)
        if not leaves:
            return updates, state._replace(count=count)
        param_leaves = treedef.flatten_up_to(params)
        fields = [treedef.flatten_up_to(getattr(state, f)) for f in self.TensorState._fields]
        inputs, states = [], []
        for grad, param, *tensor_state in zip(leaves, param_leaves, *fields):
            x, s = self._tensor_input(grad, param, self.TensorState(*tensor_state),
                                      state.count, num_steps)
            inputs.append(x)
            states.append(s)
        shared = {f: getattr(state, f) for f in state._fields
                  if f not in self.TensorState._fields and f != "count"}
        steps, states, shared = self.step_tensors(theta, inputs, states, shared, extra_args)
        steps = [jnp.zeros_like(p) if s is None else
                 s.reshape(jnp.shape(p)).astype(jnp.result_type(p))
                 for s, p in zip(steps, param_leaves)]
        return treedef.unflatten(steps), self.State(
            **self._per_tensor_trees(treedef, states), **shared, count=count)

    def _tensor_input(self, grad, param, state, count, num_steps):
        """The clipped float32 view of one tensor and its state with the clipping RMS
        updated; ``(None, state)`` for a tensor with no entries."""
        if jnp.size(param) == 0:
            return None, state
        shape = (jnp.size(param),) if self.FLAT_TENSORS else jnp.shape(param)
        g = jnp.asarray(grad, jnp.float32).reshape(shape)
        p = jnp.asarray(param, jnp.float32).reshape(shape)
        g, mean_sq = feats.clip_by_running_rms(g, state.grad_mean_sq, count, self.clip_mult,
                                               CLIP_DECAY)
        return TensorInput(g, p, count, num_steps), state._replace(grad_mean_sq=mean_sq)
