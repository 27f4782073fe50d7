"""An evaluation whose optimizer calls LAPACK (``dion``'s QR) runs one (trial, seed) at a time
instead of hanging: jaxlib 0.10's batched LAPACK kernels deadlock XLA's CPU thread pool when as
many start at once as it has threads (``lopt_cli/evaluation/lapack_guard.py``)."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from lopt_cli.evaluation.candidates import ScaledOptimizer
from lopt_cli.evaluation.lapack_guard import lapack_primitives, runs_one_at_a_time
from lopt_cli.evaluation.measured_runs import one_run_segment
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


def run_segment(source: str):
    task = MLPFamily().build(TINY_MLP)
    space = ScaledOptimizer(source)
    hparams = space.trials(2)
    keys = jax.random.split(jax.random.key(0), 2)
    return lambda: one_run_segment(space, None, hparams, task, keys, keys, 8, 2, False)


def test_a_run_segment_of_dion_calls_lapack_and_one_of_adam_does_not():
    assert lapack_primitives(run_segment("dion")) == {"qr"}
    assert lapack_primitives(run_segment("adam")) == set()


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


@pytest.mark.slow  # ~1 min: a CLI evaluation
def test_dion_evaluates_to_the_end(run_lopt, tmp_path):
    """10 trials × 3 seeds of full-rank ``dion`` on ``mlp_wide_digits`` hung for good, vmapped,
    on two host devices (the CLI's default on 2 cores) and on one; the timeout turns a hang into
    a failure."""
    result = run_lopt("evaluate", "benchmark=lopt_bench", "benchmark.select=[mlp_wide_digits]",
                      "benchmark.horizon_override=40", "benchmark.num_points=4",
                      "benchmark.num_seeds=3", "benchmark.long_horizon=40", "~baselines.Adam8p",
                      "~baselines.opt_list", "learned_optimizer=[dion]", "cache=false",
                      timeout=300)
    assert "lopt: optimizer dion calls LAPACK (qr): its runs go one (trial, seed) at a time" \
        in result.stderr
    summary = next((tmp_path / "outputs" / "evaluate").rglob("summary.json"))
    assert "dion" in json.loads(summary.read_text())["win_rate"]
