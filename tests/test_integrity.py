"""Integrity of what lopt writes: checksummed checkpoints, strict JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_storage import flip_middle_bytes

from lopt_cli.errors import LoptUserError
from lopt_cli.io import append_jsonl, read_jsonl, write_json_atomic
from lopt_cli.meta.checkpoint import checkpoint_path, read_raw, save_checkpoint
from lopt_cli.meta.outer import MetaTrainState


def small_checkpoint(directory):
    state = MetaTrainState(3, {"w": np.arange(256, dtype=np.float32)}, {}, {}, ((7, 0), (7, 1)))
    save_checkpoint(directory, state, seed=0, rows=[{"meta_loss": 1.0}] * 3)
    return checkpoint_path(directory)


def test_checkpoint_round_trips_through_its_checksum(tmp_path):
    small_checkpoint(tmp_path)
    raw = read_raw(tmp_path)
    assert raw["step"] == 3
    np.testing.assert_array_equal(raw["theta"]["w"], np.arange(256, dtype=np.float32))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_checkpoints_are_one_line_errors(tmp_path, damage):
    path = small_checkpoint(tmp_path)
    if damage == "flip":  # same length: only the checksum can tell
        flip_middle_bytes(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        path.write_bytes(b"")
    with pytest.raises(LoptUserError) as caught:
        read_raw(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert ("corrupt checkpoint" in message) if damage == "flip" else ("checkpoint" in message)


def test_json_outputs_are_strict(tmp_path):
    value = {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32("-inf"), "d": 2.5}
    write_json_atomic(tmp_path / "x.json", value)
    append_jsonl(tmp_path / "x.jsonl", value)
    for text in ((tmp_path / "x.json").read_text(), (tmp_path / "x.jsonl").read_text()):
        assert "NaN" not in text and "Infinity" not in text
        parsed = json.loads(text, parse_constant=lambda token: pytest.fail(f"bare {token}"))
        assert parsed == {"a": None, "b": [1.0, None], "c": None, "d": 2.5}
    assert read_jsonl(tmp_path / "x.jsonl")[0]["a"] is None


CACHE_WRITER = """
import json, sys, time
from lopt_cli.evaluation.cache import RunCache
cache = RunCache(sys.argv[1])
values = []
for i in range(60):
    def compute(i=i):
        time.sleep(0.002)
        return {"task": i, "curve": [float(i)] * 500}
    values.append(cache.get({"task": i, "optimizer": "adam"}, compute)["task"])
print(json.dumps({"values": values, "hits": cache.hits, "computed": cache.computed}))
"""


def test_evaluation_cache_is_consistent_under_concurrent_writers(tmp_path):
    """Two processes fill the same cache entries at once: every entry ends complete and
    readable, each process sees the right values, and no temporary file is left behind."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", CACHE_WRITER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for result in results:
        assert result["values"] == list(range(60))
        assert result["hits"] + result["computed"] == 60
    from lopt_cli.evaluation.cache import FIRST_CODE_FILE, RunCache

    entries = sorted(tmp_path.glob("*.json"))
    # besides the runs, one file: the measuring code both processes keyed by, written once
    assert len(entries) == 60 and sorted(p.name for p in tmp_path.iterdir()
                                         if p.suffix != ".json") == [FIRST_CODE_FILE]
    assert RunCache(tmp_path).keyed({"task": 0}) == {"task": 0}
    for entry in entries:
        assert len(json.loads(entry.read_text())["curve"]) == 500


def test_non_finite_outer_updates_are_skipped_counted_and_stop_the_run():
    """An infinite outer learning rate: every update is skipped (θ stays the finite initial
    one), each is counted in the metrics, and the run stops after ``max_skipped_updates``."""
    import jax
    import optax
    from test_meta_training import FAMILY, PROBLEM

    from lopt_cli.meta.es import AntitheticES
    from lopt_cli.meta.outer import DivergedMetaTraining, MetaTrainSettings, meta_train

    settings = MetaTrainSettings(num_outer_steps=20, num_tasks=2, max_skipped_updates=3)
    rows, thetas = [], []
    with pytest.raises(DivergedMetaTraining, match="3 consecutive outer updates"):
        meta_train(FAMILY, PROBLEM, AntitheticES(sigma=0.01, truncation_length=10),
                   optax.with_extra_args_support(optax.sgd(float("inf"))), settings,
                   on_step=lambda step, m, theta: (rows.append(m), thetas.append(theta)))
    assert [r["skipped_update"] for r in rows] == [True, True, True]
    initial = PROBLEM.lopt.init(None)
    for theta in thetas:
        jax.tree_util.tree_map(np.testing.assert_array_equal, theta, initial)


def test_every_budget_checkpoints_before_its_end():
    from tests_support import compose_config

    from lopt_cli.commands.meta_train import build_job

    for compute in ("smoke", "cpu", "gpu"):
        job = build_job(compose_config("meta_train", [f"compute={compute}",
                                                      "compute.num_devices=1"]))
        every, total = job.settings.checkpoint_every, job.settings.num_outer_steps
        assert 0 < every < total and every <= 50, (compute, every, total)


def test_population_memory_estimate_accepts_the_default_and_refuses_a_huge_population():
    from tests_support import compose_config

    from lopt_cli.commands.meta_train import build_job
    from lopt_cli.commands.population_memory import check_population_memory, population_bytes

    job = build_job(compose_config("meta_train", ["compute.num_devices=1"]))
    assert 0 < population_bytes(job) < 2**30
    check_population_memory(job)
    huge = build_job(compose_config("meta_train", ["compute.num_devices=1",
                                                   "compute.num_tasks=100000000"]))
    with pytest.raises(LoptUserError, match=r"compute.num_tasks=100000000: .* GiB"):
        check_population_memory(huge)
