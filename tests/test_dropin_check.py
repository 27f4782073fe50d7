"""``python -m benchmarks.dropin_check``: the quick run's structure, that tuned Adam trains, the
outcome rules, and that a learned optimizer's learning rate tuned in one vmapped run equals
one ``load_optimizer(..., learning_rate=lr)`` run per rate."""
from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest
from test_benchmarks import benchmark_module

from lopt_cli.optimizers import storage


@pytest.fixture(scope="module")
def check():
    return benchmark_module("dropin_check")


@pytest.mark.slow  # ~15 s: the benchmark script end to end
def test_quick_run_structure_and_adam_trains(check, tmp_path):
    result = check.main(tmp_path, optimizer="mlp_digits", steps=(30,), quick=True)
    written = json.loads((tmp_path / "dropin_check.json").read_text())
    assert written["optimizer"] == "mlp_digits" and written["steps"] == [30]
    assert not written["candidate_tuned_over_lr_grid"] and len(written["lr_grid"]) == 7
    assert [r["problem"] for r in result["rows"]] == ["clf", "reg"]
    for row in result["rows"]:
        assert row["train"] in ("win", "tie", "loss") and row["test"] in ("win", "tie", "loss")
        adam = row["adam"]["by_train"]
        assert adam["train_loss"] < 0.5 * row["initial_train_loss"]  # tuned Adam trains
        assert adam["learning_rate"] in written["lr_grid"]
        assert row["candidate"]["by_train"]["learning_rate"] is None
        assert math.isfinite(row["candidate"]["by_train"]["train_loss"])
    summary = written["summary"]["30"]
    assert summary["problems"] == 2 and sum(summary["train"].values()) == 2
    markdown = (tmp_path / "dropin_check.md").read_text()
    assert markdown.startswith("# Drop-in check: `mlp_digits`") and "| clf | 30 |" in markdown


def test_outcome_and_late_rise_rules(check):
    assert check.outcome(0.5, 1.0, 1.0) == "win" and check.outcome(1.0, 0.5, 1.0) == "loss"
    assert check.outcome(1.0, 1.005, 1.0) == "tie"
    assert check.outcome(1e-9, 1e-7, 1.0) == "tie"  # below 1e-6 of the initial loss
    assert check.outcome(float("nan"), 1.0, 1.0) == "loss"
    assert check.outcome(1.0, float("inf"), 1.0) == "win"
    assert check.rose_late(np.array([3.0, 1.0, 1.2]), 3.0)
    assert not check.rose_late(np.array([3.0, 1.0, 1.04]), 3.0)
    assert check.rose_late(np.array([3.0, np.nan, 1.0]), 3.0)


def test_rates_at_an_end_of_the_grid_are_starred_and_counted(check):
    def run(rate):
        return {"learning_rate": rate, "train_loss": 0.1, "test_loss": 0.2, "rose_late": False}

    low, middle, high = check.LR_GRID[0], check.LR_GRID[3], check.LR_GRID[-1]
    rows = [{"problem": "p", "num_steps": 10, "train": "win", "test": "tie",
             "adam": {"by_train": run(high), "by_test": run(low)},
             "candidate": {"by_train": run(middle), "by_test": run(low)}},
            {"problem": "q", "num_steps": 10, "train": "win", "test": "tie",
             "adam": {"by_train": run(middle), "by_test": run(middle)},
             "candidate": {"by_train": run(None), "by_test": run(None)}}]
    counts = check.tally(rows)
    assert (counts["adam_at_edge"], counts["candidate_at_edge"]) == (2, 1)
    cells = check.table_rows({"rows": rows})[0]
    assert cells[2] == "0.1 (0.1*)" and cells[3] == "0.1 (0.0032)" and cells[4] == "0.2 (0.0001*)"
    line = check.summary_lines({"summary": {"10": counts}})[0]
    assert "rates tuned at an end of the grid (*): optimizer 1, Adam 2 of 4 choices" in line


@pytest.mark.slow  # one compile per rate: ~20 s on 2 cores
def test_traced_learning_rate_matches_one_load_optimizer_per_rate(check, tmp_path, monkeypatch):
    from lopt_cli.optimizers.adam_nominal import AdamNominalLOpt

    monkeypatch.setattr(check, "LR_GRID", (1e-3, 1e-1))  # one compilation per rate: keep 2

    problems = check.problems_lib
    source = tmp_path / "run"
    lopt = AdamNominalLOpt()
    storage.save_learned_optimizer(
        source, {"_target_": "lopt_cli.optimizers.adam_nominal.AdamNominalLOpt"},
        lopt.init(jax.random.key(0)))
    problem = problems.quick_problems()[1]
    data = problems.make_data(problem)
    args = (str(source), problem, data, 20, 1.0, True)
    traced = check.candidate_runs(*args, traced=True)
    sequential = check.candidate_runs(*args, traced=False)
    assert traced["rates_vmapped"] and not sequential["rates_vmapped"]
    for metric in ("by_train", "by_test"):
        assert traced[metric]["learning_rate"] == sequential[metric]["learning_rate"]
        for key in ("train_loss", "test_loss"):
            assert traced[metric][key] == pytest.approx(sequential[metric][key], rel=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--optimizer", "no_such_optimizer", "--quick"], "unknown optimizer source 'no_such_optimizer'"),
    (["--optimizer", "adam", "--quick", "--out", "{tmp}"], "Is a directory"),
    (["--optimizer", "adam", "--quick", "--out", "{tmp}/a_file/x.json"], "Not a directory"),
])
def test_bad_inputs_are_one_line_with_exit_2(check, argv, message, tmp_path, capsys,
                                             monkeypatch):
    if "--out" in argv:  # an output that cannot be written fails before any training
        monkeypatch.setattr(check, "check", lambda *a: pytest.fail("trained before the --out check"))
    (tmp_path / "a_file").write_text("")
    assert check.cli([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err


@pytest.mark.slow  # one compile per rate: ~11 s on 2 cores (the grid's parsing: below)
def test_another_rate_grid_is_used_by_adam_and_recorded(check, tmp_path):
    grid = check.parse_rates("1e-5,1,6")
    assert grid[0] == pytest.approx(1e-5) and grid[-1] == pytest.approx(1.0) and len(grid) == 6
    result = check.main(tmp_path, optimizer="mlp_digits", steps=(10,), quick=True, grid=grid)
    assert result["lr_grid"] == list(grid)
    for row in result["rows"]:
        for key in ("by_train", "by_test"):
            assert row["adam"][key]["learning_rate"] in grid
    edges = sum(row["adam"][key]["learning_rate"] in (grid[0], grid[-1])
                for row in result["rows"] for key in ("by_train", "by_test"))
    assert result["summary"]["10"]["adam_at_edge"] == edges


@pytest.mark.parametrize("rates", ["0.1,1e-4,7", "1e-4,0.1", "1e-4,0.1,2", "a,b,c"])
def test_a_bad_rate_grid_is_refused_before_any_training(check, rates, capsys, monkeypatch):
    monkeypatch.setattr(check, "check", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_info:
        check.cli(["--rates", rates])
    assert exit_info.value.code == 2
    assert "expected LOW,HIGH,N with 0 < LOW < HIGH and N >= 3" in capsys.readouterr().err
