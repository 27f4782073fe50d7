"""Resumable meta-training: a run killed with SIGKILL, or stopped with Ctrl-C (SIGINT), and
resumed ends exactly where an uninterrupted run with the same seed ends (same learned-optimizer
bytes, same metrics rows)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import serialization
from toy_lopt import LearnedLRSGD

from lopt_cli.errors import LoptUserError
from lopt_cli.meta.checkpoint import encode, load_checkpoint, save_checkpoint
from lopt_cli.meta.es import AntitheticES
from lopt_cli.meta.outer import MetaTrainSettings, make_outer_optimizer, meta_train
from lopt_cli.meta.pes import PersistentES
from lopt_cli.meta.problem import TruncatedProblem
from task_definitions.quadratic import QuadraticFamily

NUM_STEPS = 300
RESUME_ARGS = (
    "compute=smoke", f"compute.num_outer_steps={NUM_STEPS}", "compute.num_tasks=2",
    "compute.resample_every=8", "checkpoint_every=7", "task_family=quadratic",
    "task_family.dims=[8]", "heldout.every=50", "heldout.num_tasks=1", "heldout.num_seeds=1",
    "curriculum.start_max_horizon=30", "curriculum.steps=200",
)
TIMING_KEYS = {"seconds", "inner_steps_per_second", "heldout_seconds"}
FAMILY = QuadraticFamily(dims=(8,), condition_number=(1.0, 10.0), noise=(0.0,))
PROBLEM = TruncatedProblem(LearnedLRSGD(), min_horizon=20, max_horizon=60, valid_every=5)


def lopt_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lopt_cli", "meta-train", *args]


def rows_of(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def in_foreground(command: list[str]) -> list[str]:
    """``command`` run with SIGINT as in a foreground process: tests started in a shell's
    background job would otherwise pass on its ignored SIGINT (a Python launcher resets it and
    execs the command; no ``preexec_fn``, which forks a multithreaded JAX process)."""
    launcher = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", launcher, *command]


def signal_midway(args: list[str], run_dir, env, cwd, min_rows: int,
                  signum: int = signal.SIGKILL) -> tuple[int, str]:
    """Starts ``lopt meta-train``, sends it ``signum`` once ``metrics.jsonl`` has ``min_rows``
    rows; ``(exit status, stderr)`` (SIGKILL: when it has not finished by then)."""
    process = subprocess.Popen(in_foreground(lopt_command(*args)), cwd=cwd, env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.exists() and metrics.read_text().count("\n") >= min_rows:
                os.kill(process.pid, signum)
                break
            time.sleep(0.002)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    return process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted(lopt_env, tmp_path_factory):
    """The run every interrupted one must end as."""
    full = tmp_path_factory.mktemp("uninterrupted") / "full"
    subprocess.run(lopt_command(*RESUME_ARGS, f"hydra.run.dir={full}"), cwd=full.parent,
                   env=lopt_env, check=True, capture_output=True, timeout=600)
    return full


def test_killed_run_resumes_to_the_uninterrupted_result(lopt_env, tmp_path, uninterrupted):
    full, resumed = uninterrupted, tmp_path / "outputs" / "meta-train" / "killed"
    code, _ = signal_midway([*RESUME_ARGS, f"hydra.run.dir={resumed}"], resumed, lopt_env,
                            tmp_path, min_rows=40)
    assert code == -signal.SIGKILL, "the run finished before it could be killed"
    partial = rows_of(resumed)
    assert 40 <= len(partial) < NUM_STEPS
    conflict = subprocess.run(lopt_command(f"resume={resumed}", "compute.num_tasks=4"),
                              cwd=tmp_path, env=lopt_env, capture_output=True, text=True)
    assert conflict.returncode == 2 and "compute.num_tasks=2, not 4" in conflict.stderr
    assert rows_of(resumed) == partial  # the refused resume touched nothing
    # resume=true: this command's newest resumable run under ./outputs, i.e. the killed one
    result = subprocess.run(lopt_command("resume=true"), cwd=tmp_path, env=lopt_env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((resumed / "summary.json").read_text())
    assert 0 < summary["resumed_at_step"] <= len(partial)
    assert summary["resumed_at_step"] % 7 == 0
    assert (resumed / "learned_optimizer.msgpack").read_bytes() == \
        (full / "learned_optimizer.msgpack").read_bytes()
    rows = rows_of(resumed)
    assert [r["step"] for r in rows] == list(range(NUM_STEPS))  # no duplicates, no gaps
    assert rows == rows_of(full)
    assert sum("heldout_loss" in r for r in rows) == NUM_STEPS // 50
    assert not list(resumed.glob(".*.tmp"))


@pytest.mark.slow  # ~25 s; the fast suite resumes a killed run (above) and stops on Ctrl-C
def test_ctrl_c_stops_after_a_step_with_a_checkpoint_and_resumes_to_the_same_result(
        lopt_env, tmp_path, uninterrupted):
    """SIGINT: the run finishes its outer step, checkpoints the state after it (not the last
    periodic checkpoint, up to 6 steps older), writes its θ and plot, and says in one line how
    to continue; exit status 130, no traceback. The resume loses no step."""
    stopped = tmp_path / "stopped"
    code, stderr = signal_midway([*RESUME_ARGS, f"hydra.run.dir={stopped}"], stopped, lopt_env,
                                 tmp_path, min_rows=40, signum=signal.SIGINT)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "SIGINT: meta-train stops after its current step" in stderr
    last = [line for line in stderr.splitlines() if line.startswith("lopt: stopped")]
    assert len(last) == 1 and f"continue with: lopt meta-train resume={stopped}" in last[0]
    rows = rows_of(stopped)
    assert 40 <= len(rows) < NUM_STEPS and f"after outer step {len(rows)} of" in last[0]
    assert (stopped / "learned_optimizer.msgpack").is_file()
    assert (stopped / "meta_loss.png").is_file()
    result = subprocess.run(lopt_command(f"resume={stopped}"), cwd=tmp_path, env=lopt_env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["resumed_at_step"] == len(rows)  # the step it stopped after
    assert (stopped / "learned_optimizer.msgpack").read_bytes() == \
        (uninterrupted / "learned_optimizer.msgpack").read_bytes()
    assert rows_of(stopped) == rows_of(uninterrupted)


def test_resume_without_checkpoint_is_one_line(run_lopt, tmp_path):
    run = tmp_path / "outputs" / "meta-train" / "empty"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    result = run_lopt("meta-train", f"resume={run}", check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no checkpoint.msgpack" in lines[0], result.stderr
    result = run_lopt("meta-train", f"resume={tmp_path / 'nowhere'}", check=False)
    assert result.returncode == 2 and "not a run directory" in result.stderr


@pytest.mark.parametrize("estimator", [AntitheticES(sigma=0.05, truncation_length=10),
                                       PersistentES(sigma=0.05, truncation_length=10)])
def test_checkpoint_round_trip_continues_bitwise(tmp_path, estimator):
    settings = MetaTrainSettings(num_outer_steps=9, num_tasks=3, resample_every=4, seed=5,
                                 checkpoint_every=3)
    outer_tx = make_outer_optimizer(learning_rate=0.1, warmup_steps=1, total_steps=9)
    saved = {}
    full = meta_train(FAMILY, PROBLEM, estimator, outer_tx, settings,
                      on_checkpoint=lambda state: saved.setdefault(state.step, state))
    assert sorted(saved) == [3, 6, 9]
    rows = [{"step": i, "meta_loss": float(i)} for i in range(6)]
    save_checkpoint(tmp_path, saved[6], settings.seed, rows)
    start, restored_rows = load_checkpoint(tmp_path, FAMILY, PROBLEM, estimator, outer_tx,
                                           settings)
    assert start.step == 6 and restored_rows == rows and start.members == saved[6].members
    for a, b in zip(jax.tree_util.tree_leaves(saved[6]), jax.tree_util.tree_leaves(start)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    resumed = meta_train(FAMILY, PROBLEM, estimator, outer_tx, settings, start=start)
    assert serialization.to_bytes(resumed) == serialization.to_bytes(full)


@pytest.mark.parametrize("stop_at, checkpointed", [(5, [3, 5]), (6, [3, 6])])
def test_a_stop_request_checkpoints_the_state_after_that_step_and_resumes_bitwise(
        stop_at, checkpointed):
    """Asked to stop after outer step 5 (6 is a periodic checkpoint: it is not written twice),
    meta_train checkpoints the state after it and raises RunStopped; resuming from that state
    gives the uninterrupted θ to the bit."""
    import itertools

    from lopt_cli.interrupt import RunStopped

    estimator = PersistentES(sigma=0.05, truncation_length=10)
    settings = MetaTrainSettings(num_outer_steps=9, num_tasks=3, resample_every=4, seed=5,
                                 checkpoint_every=3)
    outer_tx = make_outer_optimizer(learning_rate=0.1, warmup_steps=1, total_steps=9)
    full = meta_train(FAMILY, PROBLEM, estimator, outer_tx, settings)
    polls, saved = itertools.count(1), []
    with pytest.raises(RunStopped, match=f"stopped after outer step {stop_at} of 9"):
        meta_train(FAMILY, PROBLEM, estimator, outer_tx, settings, on_checkpoint=saved.append,
                   stop_requested=lambda: next(polls) >= stop_at)
    assert [state.step for state in saved] == checkpointed
    resumed = meta_train(FAMILY, PROBLEM, estimator, outer_tx, settings, start=saved[-1])
    assert serialization.to_bytes(resumed) == serialization.to_bytes(full)


def test_incompatible_checkpoint_is_a_user_error(tmp_path):
    estimator = AntitheticES(sigma=0.05, truncation_length=10)
    settings = MetaTrainSettings(num_outer_steps=2, num_tasks=2, seed=1, checkpoint_every=1)
    outer_tx = make_outer_optimizer(total_steps=2)
    saved = []
    meta_train(FAMILY, PROBLEM, estimator, outer_tx, settings, on_checkpoint=saved.append)
    (tmp_path / "checkpoint.msgpack").write_bytes(encode(saved[0], settings.seed, []))
    other_dims = QuadraticFamily(dims=(4,), noise=(0.0,))
    with pytest.raises(LoptUserError, match="incompatible checkpoint"):
        load_checkpoint(tmp_path, other_dims, PROBLEM, estimator, outer_tx, settings)
    with pytest.raises(LoptUserError, match="another seed"):
        load_checkpoint(tmp_path, FAMILY, PROBLEM, estimator, outer_tx,
                        MetaTrainSettings(num_outer_steps=2, num_tasks=2, seed=2))
    (tmp_path / "checkpoint.msgpack").write_bytes(b"garbage")
    with pytest.raises(LoptUserError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path, FAMILY, PROBLEM, estimator, outer_tx, settings)


def test_a_resume_may_move_to_another_device_count_and_nothing_else(tmp_path, monkeypatch):
    """``compute.num_devices`` (or ``hardware=...``) given with a resume replaces the saved
    value (where the run runs, not what it computes); without one the saved value stays, and
    any other differing key is still refused."""
    from omegaconf import OmegaConf
    from tests_support import compose_config

    from lopt_cli.commands import meta_train_resume

    (tmp_path / ".hydra").mkdir()
    saved = compose_config("meta_train", ["compute=smoke", "compute.num_devices=2"])
    OmegaConf.save(saved, tmp_path / ".hydra" / "config.yaml")

    def resumed(*overrides: str):
        monkeypatch.setattr(meta_train_resume, "_hydra_overrides",
                            lambda: ["resume=true", *overrides])
        cfg = compose_config("meta_train", ["compute=smoke", "resume=true", *overrides])
        return meta_train_resume.resumed_config(cfg, tmp_path)

    assert resumed("compute.num_devices=1").compute.num_devices == 1
    assert resumed("hardware=one_device").compute.num_devices == 1
    assert resumed().compute.num_devices == 2
    with pytest.raises(LoptUserError, match="compute.num_tasks"):
        resumed("compute.num_devices=1", "compute.num_tasks=5")
