"""The layer-ablation script: a θ, the θ with a layer zeroed and θ₀ on one benchmark task."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from lopt_cli.optimizers import storage
from lopt_cli.optimizers.adam_nominal import AdamNominalLOpt
from lopt_cli.scripts import layer_ablation

TARGET = {"_target_": "lopt_cli.optimizers.adam_nominal.AdamNominalLOpt",
          "schedule": "constant", "schedule_hidden": 0}


@pytest.fixture(scope="module")
def biased_source(tmp_path_factory):
    """An additive adam_nominal whose correction is a constant push (output bias 1)."""
    lopt = AdamNominalLOpt(schedule="constant", schedule_hidden=0)
    theta = lopt.init(jax.random.key(0))
    theta["params"]["correction_out"]["bias"] = jnp.ones((1,))
    source = tmp_path_factory.mktemp("biased")
    storage.save_learned_optimizer(source, TARGET, theta)
    return source


def test_zeroing_the_correction_removes_its_floor(biased_source, tmp_path, capsys):
    out = tmp_path / "ablation.json"
    code = layer_ablation.cli([str(biased_source), "--horizon", "400", "--factors", "10",
                               "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["task"] == "rosenbrock_long" and result["horizon"] == 400
    (row,) = result["rows"]
    assert set(row) == {"source", "factor", "theta", "zero correction_out", "theta0"}
    # θ₀ is Adam, and zeroing the only non-zero layer of this θ gives θ₀ back exactly.
    assert row["zero correction_out"] == row["theta0"]
    assert row["theta"] != row["theta0"]
    assert "| zero correction_out |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--zero", "no_such_layer"], "no such layer"),
    (["--task", "no_such_task"], "not a task of benchmark"),
    (["--out", "{tmp}"], "is a directory"),
    (["--out", "{tmp}/a_file/out.json"], "not a directory"),
])
def test_bad_inputs_are_one_line_with_exit_2(biased_source, argv, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert layer_ablation.cli([str(biased_source), "--horizon", "50", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.lower() and "\n" not in err, err
