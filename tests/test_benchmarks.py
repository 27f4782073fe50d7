"""Smoke test of the optimizer-overhead benchmark: tiny size, few reps, every output field.
No timing is asserted (timings on shared machines are noise)."""
from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

from lopt_cli.optimizers.registry import LEARNED_OPTIMIZERS

REPO = Path(__file__).resolve().parent.parent


def benchmark_module(name: str):
    """``benchmarks.<name>``; ``benchmarks`` is a top-level folder, not an installed package."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"benchmarks.{name}")


def test_an_overhead_row_can_set_an_optimizers_fields():
    cases = benchmark_module("optimizer_overhead").optimizer_cases(
        ["muon_nominal", "muon_nominal:ns_steps=3,muon_rms=0.3"])
    assert [name for name, _, _ in cases] == ["adam", "muon_nominal",
                                              "muon_nominal:ns_steps=3,muon_rms=0.3"]
    assert (cases[1][1].ns_steps, cases[2][1].ns_steps, cases[2][1].muon_rms) == (5, 3, 0.3)
    for bad in ("nonesuch", "muon_nominal:ns_steps"):
        with pytest.raises(SystemExit, match="--optimizers"):
            benchmark_module("optimizer_overhead").optimizer_cases([bad])


@pytest.mark.parametrize("entry, says", [("muon_nominal:nonesuch=1", "nonesuch"),
                                         ("muon_nominal:ns_steps=0", "ns_steps=0")])
def test_a_bad_overhead_entry_is_one_line_and_exit_2(entry, says):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "benchmarks.optimizer_overhead", "--sizes",
                           "1000", "--optimizers", entry], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: --optimizers: {entry}:" in done.stderr and says in done.stderr


FIELDS = {"optimizer", "num_params", "reps", "median_s", "compile_s", "flops", "flops_per_param",
          "analytic_flops_per_param", "state_floats_per_param", "x_adam", "floor_s", "x_floor",
          "bytes", "stream_s", "roofline_s", "x_roofline"}


@pytest.mark.slow  # the benchmark harness (make bench runs it for real): ~20 s on 2 cores
def test_overhead_benchmark_rows_and_json(tmp_path):
    result = benchmark_module("optimizer_overhead").main(tmp_path, sizes=(1000,), reps=3, peak_size=256)
    written = json.loads((tmp_path / "optimizer_overhead.json").read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    assert result["peak_flops_per_s"] > 0
    rows = {r["optimizer"]: r for r in result["rows"]}
    # Every per-parameter MLP optimizer gets a bare-matmul reference row; small has no such MLP.
    assert set(rows) == {"adam", *LEARNED_OPTIMIZERS, "mlp:matmuls", "hierarchical:matmuls"}
    for row in rows.values():
        assert FIELDS <= set(row)
        assert 900 <= row["num_params"] <= 1100 and row["reps"] == 3
        assert row["roofline_s"] >= row["floor_s"] and row["bytes"] > 0
        for key in ("median_s", "flops", "floor_s", "x_floor", "x_adam", "x_roofline"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["optimizer"], key)
    assert rows["adam"]["x_adam"] == 1.0
    assert abs(rows["adam"]["state_floats_per_param"] - 2.0) < 0.01
    if "mlp" in rows:  # MLPLOpt: 2 x 5 accumulators, a ~3.6 kFLOP MLP per parameter
        assert 10.0 <= rows["mlp"]["state_floats_per_param"] < 10.1
        assert 3000 < rows["mlp"]["flops_per_param"] < 5000
        assert abs(rows["mlp"]["analytic_flops_per_param"] / rows["mlp"]["flops_per_param"]
                   - 1) < 0.2
        # The reference row counts exactly the MLP's matmuls: 2 (23·32 + 32·32 + 32·2).
        assert rows["mlp:matmuls"]["flops_per_param"] == 2 * (23 * 32 + 32 * 32 + 32 * 2)
        assert rows["mlp:matmuls"]["flops_per_param"] < rows["mlp"]["flops_per_param"]


@pytest.mark.slow  # the benchmark harness (make bench runs it for real): ~20 s on 2 cores
def test_batching_benchmark_times_both_ways_and_they_agree(tmp_path):
    result = benchmark_module("benchmark_batching").main(tmp_path, horizon=5, rounds=2,
                                                         names=("mlp_wide_digits",))
    row = result["rows"]["mlp_wide_digits"]
    assert json.loads((tmp_path / "benchmark_batching.json").read_text())["rows"] == \
        json.loads(json.dumps(result["rows"]))
    assert row["convolution"] is False and row["max_final_rel_gap"] < 1e-4
    for key in ("vmapped_s", "host_loop_s", "host_loop_speedup"):
        assert math.isfinite(row[key]) and row[key] > 0


@pytest.mark.slow  # the benchmark harness (make bench runs it with two host devices): ~10 s
def test_devices_benchmark_times_both_ways_and_they_agree(tmp_path):
    result = benchmark_module("benchmark_devices").main(tmp_path, horizon=4, rounds=2,
                                                        names=("mlp_wide_digits",))
    row = result["rows"]["mlp_wide_digits"]
    assert json.loads((tmp_path / "benchmark_devices.json").read_text())["rows"] == \
        json.loads(json.dumps(result["rows"]))
    assert result["devices"] >= 1 and row["max_final_rel_gap"] < 1e-4
    for key in ("one_device_s", "split_s", "split_speedup"):
        assert math.isfinite(row[key]) and row[key] > 0


def test_runner_discovers_benchmark_modules():
    names = benchmark_module("run").benchmark_names()
    assert "optimizer_overhead" in names and "run" not in names


def test_every_discovered_benchmark_takes_the_runners_out_dir():
    """`make bench` calls ``main(out_dir=...)`` on every module it finds: a script with
    another ``main`` (one that reads leaderboards, say) belongs in ``lopt_cli/scripts``."""
    import inspect

    for name in benchmark_module("run").benchmark_names():
        main = getattr(benchmark_module(name), "main", None)
        assert main is not None and "out_dir" in inspect.signature(main).parameters, name


def test_meta_training_flops_count_every_product_once():
    """The analytic FLOPs of one inner step, by hand for the MLP 64→32→10 at batch 128: task
    fwd+bwd, amortised validation, the per-parameter MLP on its 2410 parameters, and each
    per-tensor kernel (the MLP's ``tensor_in``; the hierarchical LSTM and heads) once per tensor."""
    from benchmarks.meta_training_speed import analytic_flops_per_step
    from lopt_cli.optimizers.hierarchical import HierarchicalLOpt
    from lopt_cli.optimizers.mlp_lopt import MLPLOpt

    macs, params, tensors = 64 * 32 + 32 * 10, 64 * 32 + 32 + 32 * 10 + 10, 4
    shared = 6 * 128 * macs + 2 * 128 * macs / 10 + 2 * params * (23 * 32 + 32 * 32 + 32 * 2)
    assert analytic_flops_per_step(MLPLOpt()) == shared + 2 * tensors * 15 * 32

    lopt = HierarchicalLOpt()
    f_l, hidden = lopt.num_lstm_features, lopt.lstm_hidden
    per_tensor = (4 * (f_l + hidden) * hidden + hidden * (lopt.lstm_to_mlp + 1 + lopt.cross_size)
                  + (lopt.num_tensor_features) * 32 + 32 * lopt.num_extra_outputs)
    assert analytic_flops_per_step(lopt) == shared + 2 * tensors * per_tensor


def test_interleaved_ab_compiles_every_variant_afresh():
    """Two variants of one jitted function with equal static arguments still get their own
    executables: a value read while tracing differs between them (without clearing JAX's
    caches, the second variant would silently reuse the first one's trace)."""
    import jax
    import jax.numpy as jnp
    import pytest

    ab = benchmark_module("_ab")
    setting = {"scale": 1.0}

    def scaled(static, x):
        return x * setting["scale"]

    jitted = jax.jit(scaled, static_argnums=0)

    def builder(scale):
        def build():
            setting["scale"] = scale
            x = jnp.ones(3)
            compiled = jitted.lower(("same",), x).compile()
            return lambda index: compiled(x)
        return build

    result = ab.interleaved({"one": builder(1.0), "two": builder(2.0)}, rounds=3)
    assert float(result["one"]["last"][0]) == 1.0
    assert float(result["two"]["last"][0]) == 2.0
    assert result["one"]["speedup"] == 1.0 and result["two"]["median_s"] > 0
    with pytest.raises(ValueError, match="rounds"):
        ab.interleaved({"one": builder(1.0)}, rounds=1)


def test_ab_overrides_are_python_literals():
    import pytest

    ab = benchmark_module("_ab")
    assert ab.parse_override("chunk_size=512") == ("chunk_size", 512)
    assert ab.parse_override("chunk_size=None") == ("chunk_size", None)
    assert ab.parse_override("hidden_sizes=(16, 16)") == ("hidden_sizes", (16, 16))
    for bad in ("chunk_size", "=3", "decays=[0.9"):
        with pytest.raises(ValueError):
            ab.parse_override(bad)


def test_ab_command_rejects_a_bad_override_in_one_line(capsys):
    import pytest

    ab = benchmark_module("_ab")
    for bad in ("chunk_size", "no_such_field=1", "hidden_sizes=(-1,)"):
        with pytest.raises(SystemExit) as exit_info:
            ab.main(["--optimizer", "mlp", bad])
        assert exit_info.value.code == 2
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert bad in message or repr(bad) in message


def test_meta_training_speed_writes_each_row_as_measured(tmp_path, monkeypatch):
    """A run killed mid-way (a time limit on a lent GPU) keeps the rows it measured, marked
    incomplete; ratios to ``mlp`` appear once ``mlp`` is measured."""
    speed = benchmark_module("meta_training_speed")
    measured = []

    def fake_measure(lopt, name, placement):
        if len(measured) == 2:
            raise KeyboardInterrupt  # stands in for the kill
        measured.append(name)
        rate = 1000.0 * len(measured)
        return {"optimizer": name, "inner_task_steps_per_second": rate, "compile_seconds": 1.0,
                "achieved_flops_per_second": 1e9}

    monkeypatch.setattr(speed, "measure", fake_measure)
    monkeypatch.setattr(speed, "peak_matmul_flops", lambda size: 1e10)
    try:
        speed.main(tmp_path, devices=1, names=["mlp", "small", "celo"])
    except KeyboardInterrupt:
        pass
    written = json.loads((tmp_path / "meta_training_speed.json").read_text())
    assert written["complete"] is False
    assert [row["optimizer"] for row in written["rows"]] == measured == ["mlp", "small"]
    assert [row["speed_vs_mlp"] for row in written["rows"]] == [1.0, 2.0]
    assert written["rows"][0]["fraction_of_peak"] == 0.1


def test_step_cost_check_times_a_task_beside_its_prediction(tmp_path, capsys):
    check = benchmark_module("step_cost_check")
    assert check.cli(["--tasks", "quadratic_noisy_128", "--runs", "2", "--steps", "2",
                      "--out-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("quadratic_noisy_128        predicted ")
    [row] = json.loads((tmp_path / "step_cost_check.json").read_text())
    assert row["task"] == "quadratic_noisy_128" and row["runs"] == 2
    assert row["measured_step_s"] > 0 and row["predicted_step_s"] > 0
    assert check.cli(["--tasks", "nope", "--out-dir", str(tmp_path)]) == 2
    assert "not a lopt_bench task: nope" in capsys.readouterr().err
