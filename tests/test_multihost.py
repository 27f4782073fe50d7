"""Multi-host meta-training: two ``lopt meta-train`` processes on this machine (one CPU device
each, gloo collectives) join through ``jax.distributed``, meta-train one learned optimizer
together, end with the same meta-parameters, and match a single process with 2 local devices."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import only_run_dir, without_host_devices

from lopt_cli.meta.distributed import DistributedSettings, resolve_settings
from lopt_cli.optimizers.storage import load_learned_optimizer

ARGS = ("compute=smoke", "compute.num_outer_steps=3", "compute.num_tasks=2",
        "task_family=quadratic", "task_family.dims=[8]")
TIMEOUT = 300  # a hung collective fails the test instead of hanging it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two lopt processes meta-training together: ~40 s on 2 cores
def test_two_processes_meta_train_one_optimizer(lopt_env, run_lopt, tmp_path):
    port = free_port()
    procs = []
    for pid in range(2):
        env = dict(without_host_devices(lopt_env), LOPT_COORDINATOR=f"127.0.0.1:{port}",
                   LOPT_NUM_PROCESSES="2", LOPT_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lopt_cli", "meta-train", *ARGS,
             f"hydra.run.dir={tmp_path / f'process{pid}'}"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, f"{out}\n{err[-3000:]}"
    digests = [[line.split()[-1] for line in out.splitlines() if "theta sha256" in line]
               for out, _ in outputs]
    assert len(digests[0]) == 1 and digests[0] == digests[1], outputs
    assert outputs[0][0].splitlines()[-1].startswith("meta-loss")  # process 0 reports

    main, other = tmp_path / "process0", tmp_path / "process1"
    for name in ("metrics.jsonl", "learned_optimizer.msgpack", "checkpoint.msgpack",
                 "meta_loss.png", "summary.json"):
        assert (main / name).is_file(), name
    summary = json.loads((main / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["outer_steps"] == 3
    written = {p.name for p in other.iterdir() if p.name != ".hydra"}
    assert written <= {"meta-train.log"}, written  # Hydra's own files only

    run_lopt("meta-train", *ARGS, "compute.num_devices=2")
    single = only_run_dir(tmp_path / "outputs" / "meta-train")
    _, theta_single, _ = load_learned_optimizer(single)
    _, theta_multi, _ = load_learned_optimizer(main)
    for a, b in zip(jax.tree_util.tree_leaves(theta_single),
                    jax.tree_util.tree_leaves(theta_multi), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    losses = [[json.loads(line)["meta_loss"] for line in (run / "metrics.jsonl").open()]
              for run in (single, main)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_distributed_settings_from_config_and_environment():
    assert not resolve_settings(None, {}).enabled
    node = {"coordinator_address": None, "num_processes": 1, "process_id": 0}
    assert resolve_settings(node, {}) == DistributedSettings()
    env = {"LOPT_COORDINATOR": "host0:1234", "LOPT_NUM_PROCESSES": "4", "LOPT_PROCESS_ID": "3"}
    settings = resolve_settings(node, env)
    assert settings.enabled and (settings.coordinator_address, settings.num_processes,
                                 settings.process_id) == ("host0:1234", 4, 3)
    for bad, message in [({"num_processes": 2}, "coordinator_address=null"),
                         ({"num_processes": 2, "process_id": 2, "coordinator_address": "h:1"},
                          "process_id=2"),
                         ({"num_processes": "two"}, "num_processes='two'")]:
        with pytest.raises(ValueError, match=message):
            resolve_settings(bad, {})


def test_bad_distributed_settings_are_one_line(run_lopt):
    result = run_lopt("meta-train", "compute=smoke", "compute.distributed.num_processes=2",
                      check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "compute.distributed.coordinator_address=null" in lines[0], \
        result.stderr
