"""``lopt evaluate devices=...``: a vmapped call's runs split over local devices give the numbers
of one device (:mod:`lopt_cli.evaluation.placement`)."""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import with_host_devices

from lopt_cli.errors import LoptUserError
from lopt_cli.evaluation.placement import pad_trials, resolve_devices, split_axis

# Two host devices exist only in a fresh process: AdamLR (10 trials: split by trial), opt_list
# (3 trials: padded to 4) and Adam with one trial (2 seeds: split by seed) on an MLP of
# lopt_bench, with devices 1 then 2: the same curves up to float rounding (a batched
# matrix product of another batch size rounds differently; 1e-5 apart after 20 steps here);
# then a suite baseline's runs (`lopt evaluate` without a benchmark) and stacked tasks likewise.
SCRIPT = r"""
import dataclasses
import jax, numpy as np
from hydra import compose, initialize_config_module
from lopt_cli.commands.evaluate_benchmark import benchmark_candidates, build_benchmark_spec
from lopt_cli.evaluation import placement
from lopt_cli.evaluation.benchmark import run_benchmark
from lopt_cli.evaluation.cache import RunCache

assert jax.local_device_count() == 2, jax.devices()
with initialize_config_module("conf", version_base="1.3"):
    cfg = compose("evaluate", overrides=[
        "benchmark=lopt_bench", "benchmark.select=[mlp_wide_digits]",
        "benchmark.horizon_override=20", "benchmark.num_points=4",
        "benchmark.num_seeds=2", "benchmark.eval_batches=2", "~baselines.Adam8p",
        "benchmark.trials.opt_list=3", "benchmark.trials.candidates=1",
        "learned_optimizer=[adam]"])
    built = build_benchmark_spec(cfg)
spec, candidates = built[0], benchmark_candidates(cfg, built)
assert spec.devices == 2  # auto: both host devices
calls = []
spread = placement.spread_runs
def spy(hparams, keys, shared, num_devices):
    out = spread(hparams, keys, shared, num_devices)
    trials, seeds = (getattr(x, "sharding", None)
                     for x in (jax.tree_util.tree_leaves(out[0])[0], out[1]))
    calls.append((len(trials.device_set) if trials else 1,
                  bool(trials) and not trials.is_fully_replicated,
                  bool(seeds) and not seeds.is_fully_replicated))
    return out
import lopt_cli.evaluation.measured_runs as measured_runs
measured_runs.spread_runs = spy
one, two = (run_benchmark(dataclasses.replace(spec, devices=n), candidates, RunCache(None))
            for n in (1, 2))
assert set(calls) == {(1, False, False), (2, True, False), (2, False, True)}, calls
for task in one:
    for group in ("baselines", "candidates"):
        for name, runs in one[task][group].items():
            other = two[task][group][name]
            assert runs["hparams"] == other["hparams"], (task, name)
            for split in ("train", "valid", "test"):
                a = np.asarray(runs["curves"][split], float)
                b = np.asarray(other["curves"][split], float)
                assert a.shape == b.shape, (task, name, a.shape, b.shape)
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7, err_msg=f"{task} {name}")
from lopt_cli.evaluation.runs import RunSettings, run_trials
from lopt_cli.evaluation.search_spaces import AdamLR
settings = RunSettings(horizon=20, valid_every=5, num_seeds=2, final_fraction=0.5)
suite = [run_trials(AdamLR(), AdamLR().trials(3), spec.tasks[0].task, settings, None, n)
         for n in (1, 2, 2)]  # the suite's baselines: 3 trials padded to 4, the copy dropped
assert suite[1] == suite[2]  # split runs are deterministic
for key in ("final_valid", "final_train", "valid_curve", "train_curve"):
    a, b = (np.asarray(run[key], float) for run in suite[:2])
    assert a.shape == b.shape and len(a) == 3, (key, a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7, err_msg=key)
from lopt_cli.evaluation.measured_runs import trial_curves
from task_definitions.base import stack_tasks
from task_definitions.quadratic import QuadraticConfig, QuadraticFamily
quadratics = stack_tasks([QuadraticFamily().build(QuadraticConfig(8, 10.0, 0.0, 1.0, seed))
                          for seed in (1, 2)])  # same-shape tasks stacked, 3 trials padded
stacked = [trial_curves(AdamLR(), None, AdamLR().trials(3), quadratics, spec.measure.keys(),
                        spec.measure.eval_keys(), 8, 4, stacked=True, num_devices=n)
           for n in (1, 2)]
for split in ("train", "test"):
    a, b = (np.asarray(c[split], float) for c in stacked)
    assert a.shape == b.shape == (2, 3, 2, 4), (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=split)
print("ok")
"""


@pytest.mark.slow  # ~40 s; the fast suite keeps test_sharding's device-count checks
def test_split_runs_match_one_device(lopt_env):
    env = with_host_devices(lopt_env, 2)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (
        result.stdout + result.stderr)


def test_runs_split_by_trial_then_seed_then_padded_trials():
    assert split_axis(10, 3, 2) == ("trial", 2, 10)
    assert split_axis(3, 4, 2) == ("seed", 2, 3)
    assert split_axis(5, 3, 2) == ("trial", 2, 6)  # one padded trial
    assert split_axis(50, 3, 4) == ("trial", 4, 52)
    assert split_axis(1, 3, 2) == (None, 1, 1)  # padding would double the work
    assert split_axis(7, 3, 1) == (None, 1, 7)


def test_padded_trials_repeat_the_last_one():
    padded = pad_trials({"lr": jnp.asarray([1.0, 2.0, 3.0])}, 4)
    np.testing.assert_array_equal(padded["lr"], [1.0, 2.0, 3.0, 3.0])
    assert pad_trials({"lr": jnp.asarray([1.0])}, 1)["lr"].shape == (1,)


@pytest.mark.parametrize("setting", [0, -1, "two", True, 1.5])
def test_bad_device_settings_are_one_line(setting):
    with pytest.raises(LoptUserError, match="devices=.*expected 'auto' or a positive"):
        resolve_devices(setting)


def test_auto_is_every_local_device_and_more_is_refused():
    assert resolve_devices("auto") == jax.local_device_count()
    assert resolve_devices(1) == 1
    with pytest.raises(LoptUserError, match="only 1 local cpu device"):
        resolve_devices(jax.local_device_count() + 1)
