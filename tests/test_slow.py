"""Slow end-to-end runs of the shipped default configs (`make test-slow`)."""
from __future__ import annotations

import json

import pytest
from conftest import only_run_dir

pytestmark = pytest.mark.slow


def test_default_configs_meta_train_then_evaluate(run_lopt, tmp_path):
    run_lopt("meta-train", "compute=smoke")
    trained = only_run_dir(tmp_path / "outputs" / "meta-train")
    run_lopt("evaluate", f"learned_optimizer={trained}", "budget=smoke")
    summary = json.loads((only_run_dir(tmp_path / "outputs" / "evaluate") / "summary.json")
                         .read_text())
    assert {row["baseline"] for row in summary["comparisons"]} == {"AdamLR", "Adam8p", "opt_list"}


@pytest.mark.parametrize("optimizer", ["hierarchical", "small"])
@pytest.mark.parametrize("estimator", ["pes", "tbptt"])
def test_every_architecture_with_every_estimator_on_the_suite(run_lopt, tmp_path, optimizer,
                                                               estimator):
    run_lopt("meta-train", f"optimizer={optimizer}", f"estimator={estimator}",
             "task_family=suite", "compute=smoke", "compute.num_outer_steps=3")
    rows = (only_run_dir(tmp_path / "outputs" / "meta-train") / "metrics.jsonl").read_text()
    assert len(rows.splitlines()) == 3


def test_a_parallel_sweep_stopped_by_sigterm_checkpoints_every_running_job(lopt_env, tmp_path):
    """``kill <pid>`` on a joblib sweep of meta-trainings (two jobs at a time, three jobs):
    both running jobs finish their outer step and checkpoint, the third never starts, the
    sweep exits 130 with one line, and a job continues with resume=."""
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "lopt_cli", "meta-train", "compute=smoke",
               "compute.num_outer_steps=2000", "seed=0,1,2", "--multirun",
               "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep"]
    sweep = subprocess.Popen(command, cwd=tmp_path, env=lopt_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    metrics = [tmp_path / "sweep" / job / "metrics.jsonl" for job in ("0", "1")]
    deadline = time.time() + 300
    while not all(m.is_file() and m.read_text().count("\n") >= 3 for m in metrics):
        assert time.time() < deadline and sweep.poll() is None
        time.sleep(1)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "checkpoint.msgpack").is_file(), err
        assert f"continue with: lopt meta-train resume={tmp_path / 'sweep' / job}" in err
    assert "not started, the sweep was asked to stop" in err
    assert not (tmp_path / "sweep" / "2" / "checkpoint.msgpack").exists()
    assert err.strip().splitlines()[-1].startswith("lopt: the sweep stopped on request")
