"""The population: split over local devices (2 CPU host devices here) it gives the same
meta-training as on one device, ``compute.num_devices`` reaches it from the command line, and a
mixture family fills it with tasks of one shape signature."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import REPO, only_run_dir, with_host_devices
from tests_support import compose_config

from lopt_cli.commands.meta_train import build_job
from lopt_cli.meta.outer import MetaTrainSettings, build_members, draw_population
from lopt_cli.meta.sharding import largest_divisor_at_most
from task_definitions.base import shape_signature
from task_definitions.quadratic import QuadraticFamily
from task_definitions.suite import MixtureFamily

SCRIPT = textwrap.dedent("""
    import jax
    import numpy as np

    from lopt_cli.meta.outer import MetaTrainSettings, make_outer_optimizer, meta_train
    from lopt_cli.meta.es import AntitheticES
    from lopt_cli.meta.problem import TruncatedProblem
    from lopt_cli.meta.sharding import Placement
    from lopt_cli.optimizers.mlp_lopt import MLPLOpt
    from task_definitions.quadratic import QuadraticFamily

    assert jax.local_device_count() == 2, jax.devices()
    family = QuadraticFamily(dims=(8,))
    problem = TruncatedProblem(MLPLOpt(), min_horizon=20, max_horizon=60, valid_every=5)
    settings = MetaTrainSettings(num_outer_steps=6, num_tasks=4, resample_every=4, seed=3,
                                 checkpoint_every=3)
    results = {}
    for n in (1, 2):
        saved, losses = [], []
        theta = meta_train(family, problem, AntitheticES(truncation_length=10),
                           make_outer_optimizer(total_steps=6), settings,
                           on_step=lambda step, m, theta: losses.append(m["meta_loss"]),
                           on_checkpoint=saved.append, placement=Placement.create(n))
        results[n] = theta, losses
        if n == 2:
            states = jax.tree_util.tree_leaves(saved[-1].states)[0]
            assert len(states.sharding.device_set) == 2, states.sharding
            assert states.sharding.spec == jax.sharding.PartitionSpec("tasks")
            assert jax.tree_util.tree_leaves(theta)[0].sharding.is_fully_replicated
    (one, one_losses), (two, two_losses) = results[1], results[2]
    np.testing.assert_allclose(one_losses, two_losses, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(two)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    print("sharded run matches")
""")


@pytest.mark.slow  # two full meta-training runs through the CLI: ~30 s on 2 cores
def test_sharded_meta_training_matches_single_device(lopt_env):
    env = dict(with_host_devices(lopt_env, 2),
               PYTHONPATH=os.pathsep.join([str(REPO), lopt_env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded run matches" in result.stdout


def test_num_devices_from_the_command_line(run_lopt, tmp_path):
    run_lopt("meta-train", "compute=smoke", "compute.num_outer_steps=3", "compute.num_tasks=2",
             "compute.num_devices=2", "task_family=quadratic", "task_family.dims=[8]",
             "heldout.every=3", "heldout.num_tasks=1")
    run = only_run_dir(tmp_path / "outputs" / "meta-train")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_devices"] == 2 and summary["outer_steps"] == 3
    assert "final_heldout_loss" in summary


# a CLI meta-training on host devices, ~20 s on 2 cores (the rule: test_largest_divisor_at_most)
@pytest.mark.slow
def test_auto_devices_on_cpu_split_the_population_over_the_cores(run_lopt, tmp_path):
    """compute=cpu's num_devices=auto: one host device per core, the most dividing num_tasks."""
    run_lopt("meta-train", "compute=smoke", "compute.num_outer_steps=2", "compute.num_tasks=4",
             "compute.num_devices=auto", "task_family=quadratic", "task_family.dims=[8]",
             "heldout.every=0")
    run = only_run_dir(tmp_path / "outputs" / "meta-train")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_devices"] == largest_divisor_at_most(4, os.cpu_count() or 1)


def test_largest_divisor_at_most():
    assert [largest_divisor_at_most(8, k) for k in (1, 2, 3, 4, 16)] == [1, 2, 2, 4, 8]
    assert largest_divisor_at_most(3, 2) == 1 and largest_divisor_at_most(5, 0) == 1


@pytest.mark.parametrize(("args", "expected"), [
    (("compute.num_tasks=3", "compute.num_devices=2"), "must be a multiple of the 2 devices"),
    (("compute.num_devices=4096",), "compute.num_devices=4096: only"),
    (("compute.num_devices=zero",), "expected a positive integer or 'auto'"),
])
def test_bad_device_counts_are_one_line(run_lopt, args, expected):
    result = run_lopt("meta-train", "compute=smoke", *args, check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_mixed_population_shares_one_shape_and_rebuilds_from_its_ids():
    family = MixtureFamily({"small": QuadraticFamily(dims=(4,)),
                            "large": QuadraticFamily(dims=(8, 16))})
    settings = MetaTrainSettings(num_outer_steps=1, num_tasks=6, mix_population=True)
    for seed in range(3):
        members, tasks = draw_population(family, settings, jax.random.PRNGKey(seed))
        assert len(set(members)) == 6
        assert len({task_id for task_id, _ in members}) > 3  # mostly distinct tasks
        rebuilt = build_members(family, members)
        assert shape_signature(rebuilt) == shape_signature(tasks)
        for a, b in zip(jax.tree_util.tree_leaves(tasks), jax.tree_util.tree_leaves(rebuilt)):
            np.testing.assert_array_equal(a, b)
    plain = MetaTrainSettings(num_outer_steps=1, num_tasks=3)
    members, _ = draw_population(family, plain, jax.random.PRNGKey(0))
    assert [offset for _, offset in members] == [0, 1, 2] and len({i for i, _ in members}) == 1


def test_population_mixing_is_on_for_mixtures_by_default():
    assert build_job(compose_config("meta_train", ["task_family=suite"])).settings.mix_population
    assert not build_job(compose_config("meta_train")).settings.mix_population
    job = build_job(compose_config("meta_train", ["population.mix=true"]))
    assert job.settings.mix_population and job.settings.mix_candidates == 16


def test_wide_vectors_are_requested_only_on_avx512_before_jax_starts(monkeypatch):
    from lopt_cli.meta import cpu_tuning

    monkeypatch.setattr(cpu_tuning, "backends_initialized", lambda: False)
    monkeypatch.setattr(cpu_tuning, "cpu_has_avx512", lambda: True)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    cpu_tuning.prefer_wide_vectors()
    assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                       + cpu_tuning.WIDE_VECTOR_FLAG)
    cpu_tuning.prefer_wide_vectors()  # idempotent
    assert os.environ["XLA_FLAGS"].count("prefer_vector_width") == 1

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")  # the user's choice
    cpu_tuning.prefer_wide_vectors()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=256"

    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(cpu_tuning, "cpu_has_avx512", lambda: False)
    cpu_tuning.prefer_wide_vectors()
    assert "XLA_FLAGS" not in os.environ
    monkeypatch.setattr(cpu_tuning, "cpu_has_avx512", lambda: True)
    monkeypatch.setattr(cpu_tuning, "backends_initialized", lambda: True)  # too late: no-op
    cpu_tuning.prefer_wide_vectors()
    assert "XLA_FLAGS" not in os.environ
