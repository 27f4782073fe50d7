"""Runs whose training step calls LAPACK go one at a time, unbatched.

jaxlib 0.10's CPU kernels for batched linear algebra (QR, Cholesky, eigh, SVD, LU, triangular
solves: LAPACK through XLA's FFI) split the batch into tasks on XLA's intra-op thread pool and
block until those tasks finish. When as many such kernels start at once as the pool has threads
(two matrices' QRs in one step on 2 cores, or one on each of two host devices), every thread
waits for tasks that no thread is left to run, and the evaluation hangs with the CPUs idle.
Seen with ``dion`` (a QR per matrix) on ``mlp_wide_digits``: 10 trials × 3 seeds vmapped hung
on two host devices and on one; the same runs one (trial, seed) at a time, where every kernel
gets a batch of one, finished. So on a CPU an optimizer or task whose step holds such a
primitive takes ``lopt evaluate``'s host loop (as convolutions do), said once per optimizer;
``lopt meta-train``, whose population is always vmapped, warns instead.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

# Primitives lowered to batched LAPACK/BLAS kernels on the CPU (jax.lax.linalg).
LAPACK_PRIMITIVES = frozenset({
    "cholesky", "eig", "eigh", "geqrf", "geqp3", "hessenberg", "householder_product", "lu",
    "qr", "schur", "svd", "triangular_solve", "tridiagonal", "tridiagonal_solve",
})

_said: set[str] = set()


def say_once(line: str) -> None:
    """``line`` on stderr, unless this process has said it already."""
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr, flush=True)


def _sub_jaxprs(value: Any) -> Iterator[Any]:
    """The jaxprs held in one equation parameter (a jaxpr, a closed one, or a sequence)."""
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def primitive_names(jaxpr: Any) -> set[str]:
    """Every primitive in ``jaxpr`` and in the jaxprs nested in its equations (scan and
    cond bodies, custom derivatives, inner jits)."""
    names: set[str] = set()
    stack = [jaxpr]
    while stack:
        current = stack.pop()
        for eqn in current.eqns:
            names.add(eqn.primitive.name)
            for value in eqn.params.values():
                stack.extend(_sub_jaxprs(value))
    return names


def lapack_primitives(fn: Callable[[], Any]) -> set[str]:
    """The :data:`LAPACK_PRIMITIVES` that tracing ``fn()`` records (nothing is computed)."""
    return primitive_names(jax.make_jaxpr(fn)().jaxpr) & LAPACK_PRIMITIVES


def runs_one_at_a_time(fn: Callable[[], Any], what: str) -> bool:
    """Whether one run's step ``fn`` (traced, not run) calls LAPACK on a CPU backend (module
    docstring); says so on stderr once."""
    if jax.default_backend() != "cpu":
        return False
    found = lapack_primitives(fn)
    if found:
        say_once(f"lopt: {what} calls LAPACK ({', '.join(sorted(found))}): its runs go one "
                 "(trial, seed) at a time (jaxlib's batched LAPACK kernels can deadlock XLA's "
                 "CPU thread pool)")
    return bool(found)


def one_inner_step(task, lopt, horizon: int):
    """One training step of ``task`` under ``lopt`` at freshly initialised meta-parameters (a
    function of nothing, for :func:`lapack_primitives`)."""
    from lopt_cli.inner.unroll import init_inner_state, train_step

    def step():
        key = jax.random.key(0)
        opt = lopt.transform(lopt.init(key), horizon)
        state = init_inner_state(task, lambda _: opt, key, jnp.asarray(horizon))
        return train_step(task, opt, state, jax.random.split(key))

    return step


def meta_training_warning(task, lopt, horizon: int) -> str | None:
    """On a CPU backend, one line saying that meta-training ``lopt`` on tasks like ``task``
    may hang, when one inner step calls LAPACK (module docstring: the population is vmapped;
    there is no one-at-a-time path there); else ``None``."""
    if jax.default_backend() != "cpu":
        return None
    found = lapack_primitives(one_inner_step(task, lopt, horizon))
    if not found:
        return None
    return (f"lopt: warning: an inner step calls LAPACK ({', '.join(sorted(found))}); "
            "jaxlib 0.10's batched LAPACK kernels can deadlock XLA's CPU thread pool, and the "
            "meta-training population is vmapped: if the run stops advancing with the CPUs idle, "
            "replace the call (lopt's own optimizers use none)")
