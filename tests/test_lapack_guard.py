"""An evaluation whose optimizer calls LAPACK (a QR per matrix, as ``dion`` did) runs one
(trial, seed) at a time instead of hanging: jaxlib 0.10's batched LAPACK kernels deadlock XLA's
CPU thread pool when as many start at once as it has threads
(``lopt_cli/evaluation/lapack_guard.py``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import pytest
from toy_lopt import LearnedLRSGD

from lopt_cli.evaluation.candidates import ScaledOptimizer
from lopt_cli.evaluation.lapack_guard import (
    lapack_primitives,
    meta_training_warning,
    runs_one_at_a_time,
)
from lopt_cli.evaluation.measured_runs import one_run_segment
from lopt_cli.optimizers.registry import OPTIMIZERS
from task_definitions.mlp import MLPConfig, MLPFamily

TINY_MLP = MLPConfig(dataset="digits", hidden_sizes=(16,), activation="relu", batch_size=8,
                     init_scale=1.0, seed=0)


def nested_qr():
    """A QR inside a scan inside a cond inside a jit."""
    def body(carry, _):
        return jax.lax.cond(carry.sum() > 0, lambda c: jnp.linalg.qr(c)[0], lambda c: c,
                            carry), None

    return jax.jit(lambda x: jax.lax.scan(body, x, None, length=2)[0])(jnp.ones((4, 3)))


def test_lapack_calls_are_found_in_nested_programs_and_only_there():
    assert lapack_primitives(nested_qr) == {"qr"}
    assert lapack_primitives(lambda: jnp.linalg.eigh(jnp.eye(3))) == {"eigh"}
    assert lapack_primitives(lambda: jnp.linalg.norm(jnp.ones((3, 3)) @ jnp.ones((3, 3)))) == set()


def qr_sgd(learning_rate: float = 1e-3) -> optax.GradientTransformation:
    """Steps every matrix along the Q of its gradient's QR (a LAPACK call per matrix)."""
    def direction(g):
        if g.ndim != 2:
            return g
        return jnp.linalg.qr(g)[0] if g.shape[0] >= g.shape[1] else jnp.linalg.qr(g.T)[0].T

    return optax.chain(optax.stateless(lambda updates, params=None: jax.tree.map(
        direction, updates)), optax.scale(-learning_rate))


class QRLearnedSGD(LearnedLRSGD):
    """The toy learned optimizer stepping along :func:`qr_sgd`'s directions."""

    def transform(self, theta, num_steps):
        inner = super().transform(theta, num_steps)
        directions = qr_sgd(-1.0)  # the Q factors, unscaled

        def update(grads, state, params=None, **extra):
            steered, _ = directions.update(grads, directions.init(grads))
            return inner.update(steered, state, params, **extra)

        return optax.GradientTransformationExtraArgs(inner.init, update)


def test_meta_training_warns_of_a_learned_optimizer_that_calls_lapack():
    task = MLPFamily().build(TINY_MLP)
    warning = meta_training_warning(task, QRLearnedSGD(), 10)
    if jax.default_backend() != "cpu":
        assert warning is None
        return
    assert warning.startswith("lopt: warning: an inner step calls LAPACK (qr); ")
    assert meta_training_warning(task, LearnedLRSGD(), 10) is None


def run_segment(source: str):
    task = MLPFamily().build(TINY_MLP)
    space = ScaledOptimizer(source)
    hparams = space.trials(2)
    keys = jax.random.split(jax.random.key(0), 2)
    return lambda: one_run_segment(space, None, hparams, task, keys, keys, 8, 2)


def test_a_run_segment_of_a_qr_optimizer_calls_lapack_and_adams_and_dions_do_not(monkeypatch):
    monkeypatch.setitem(OPTIMIZERS, "qr_sgd", qr_sgd)
    assert lapack_primitives(run_segment("qr_sgd")) == {"qr"}
    assert lapack_primitives(run_segment("adam")) == set()
    assert lapack_primitives(run_segment("dion")) == set()  # Gram–Schmidt, not LAPACK's QR


def test_only_lapack_runs_go_one_at_a_time_and_it_is_said_once(capsys):
    if jax.default_backend() != "cpu":
        pytest.skip("the guard is for the CPU backend")
    assert runs_one_at_a_time(nested_qr, "optimizer guarded_test")
    assert runs_one_at_a_time(nested_qr, "optimizer guarded_test")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("lopt: optimizer guarded_test calls LAPACK (qr): its runs go one "
                               "(trial, seed) at a time")
    assert not runs_one_at_a_time(lambda: jnp.ones(3) * 2, "optimizer plain")
    assert capsys.readouterr().err == ""


SCRIPT = """
import sys
from test_lapack_guard import qr_sgd
from lopt_cli.cli import main
from lopt_cli.optimizers.registry import OPTIMIZERS
OPTIMIZERS["qr_sgd"] = qr_sgd
sys.exit(main(["evaluate", "benchmark=lopt_bench", "benchmark.select=[mlp_wide_digits]",
               "benchmark.horizon_override=40", "benchmark.num_points=4", "benchmark.num_seeds=3",
               "benchmark.long_horizon=40", "~baselines.Adam8p", "~baselines.opt_list",
               "learned_optimizer=[qr_sgd]", "cache=false"]))
"""


@pytest.mark.slow  # ~25 s: an evaluation in a subprocess
def test_a_qr_optimizer_evaluates_to_the_end(lopt_env, tmp_path):
    """10 trials × 3 seeds of a QR per matrix on ``mlp_wide_digits`` (as ``dion`` before its
    Gram–Schmidt) hung for good vmapped, on two host devices (the CLI's default on 2 cores) and
    on one; the timeout turns a hang into a failure."""
    env = dict(lopt_env, PYTHONPATH=str(Path(__file__).parent))
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lopt: optimizer qr_sgd calls LAPACK (qr): its runs go one (trial, seed) at a " \
        "time" in result.stderr
    summary = next((tmp_path / "outputs" / "evaluate").rglob("summary.json"))
    assert "qr_sgd" in json.loads(summary.read_text())["win_rate"]
