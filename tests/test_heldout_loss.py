"""``python -m lopt_cli.scripts.heldout_loss``: a saved θ's held-out loss without a run, equal
to what meta-training logs for the same θ under the same config."""
from __future__ import annotations

import json

import pytest
from tests_support import compose_config

from lopt_cli.commands.meta_train import build_job, run_meta_training
from lopt_cli.errors import LoptUserError
from lopt_cli.scripts import heldout_loss

TINY = ["compute=smoke", "compute.num_outer_steps=3", "compute.num_tasks=2",
        "task_family=quadratic", "task_family.dims=[8]",
        "task_family@heldout.task_family=functions_2d", "heldout.num_tasks=2",
        "heldout.num_seeds=1", "heldout.horizon=20", "heldout.every=1"]


@pytest.fixture(scope="module")
def keep_best_run(tmp_path_factory):
    """A tiny run that checks θ₀ and every step's θ and publishes the best one."""
    out = tmp_path_factory.mktemp("run")
    run_meta_training(build_job(compose_config("meta_train", TINY + ["heldout.keep_best=true"])),
                      out)
    return out, json.loads((out / "summary.json").read_text())


def test_it_measures_what_meta_training_logged(keep_best_run):
    """``init`` is θ₀ as the run drew it; the run directory holds the best checked θ."""
    out, summary = keep_best_run
    lines = []
    result = heldout_loss.heldout_losses(["init", str(out)], TINY, report=lines.append)
    assert result["losses"]["init"] == pytest.approx(summary["initial_heldout_loss"], rel=1e-6)
    assert result["losses"][str(out)] == pytest.approx(summary["best_heldout_loss"], rel=1e-6)
    assert result["check"]["task_family"] == "functions_2d"
    assert (result["check"]["num_tasks"], result["check"]["horizon"]) == (2, 20)
    assert lines[0].startswith("held-out check: 2 tasks of functions_2d x 1 seeds, 20 steps")
    assert lines[1].startswith("init: heldout_loss ") and len(lines) == 3


def test_a_runs_check_does_not_depend_on_its_seed(tmp_path):
    """The check has its own seed (``heldout.seed``): a run of another ``seed`` logs what the
    check measures with the default one, so held-out losses compare across seeds."""
    run_meta_training(build_job(compose_config("meta_train", TINY + ["seed=1"])), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    result = heldout_loss.heldout_losses([str(tmp_path)], TINY + ["heldout.keep_best=false"])
    assert result["losses"][str(tmp_path)] == pytest.approx(summary["final_heldout_loss"],
                                                             rel=1e-6)
    other = heldout_loss.heldout_losses([str(tmp_path)], TINY + ["heldout.seed=1"])
    assert (result["check"]["seed"], other["check"]["seed"]) == (0, 1)  # the check's seed
    assert other["losses"][str(tmp_path)] != pytest.approx(summary["final_heldout_loss"],
                                                            rel=1e-6)


def test_the_cli_writes_the_losses_as_json(keep_best_run, tmp_path, capsys):
    out, summary = keep_best_run
    target = tmp_path / "losses.json"
    assert heldout_loss.cli([str(out), *TINY, "--out", str(target)]) == 0
    written = json.loads(target.read_text())
    assert written["losses"][str(out)] == pytest.approx(summary["best_heldout_loss"], rel=1e-6)
    assert written["check"]["overrides"] == TINY
    assert f"{out}: heldout_loss" in capsys.readouterr().out


def test_a_config_without_a_heldout_check_is_refused():
    with pytest.raises(LoptUserError, match=r"no held-out check \(heldout.every=0\)"):
        heldout_loss.heldout_losses(["init"], [*TINY, "heldout.every=0"])


@pytest.mark.parametrize("arguments, message", [
    (["init", "no/such/run", *TINY], "error: source='no/such/run': no such file"),
    (["init", "heldout.no_such_key=1"], "error: unknown key 'heldout.no_such_key'"),
])
def test_bad_sources_and_overrides_are_one_line_errors_before_any_measurement(
        arguments, message, capsys):
    assert heldout_loss.cli(arguments) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and captured.err.count("\n") == 1
    assert captured.out == ""  # nothing measured: every source is loaded first


def test_no_source_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        heldout_loss.cli([*TINY])
    assert exit_info.value.code == 2
    assert "give at least one SOURCE" in capsys.readouterr().err
