"""The per-task step-time benchmark: its rows, its conversion of a leaderboard's speedups from
steps to seconds, and its one-line errors. No timing is asserted."""
from __future__ import annotations

import json

import pytest

from tests.test_benchmarks import benchmark_module


@pytest.fixture(scope="module")
def step_time():
    return benchmark_module("task_step_time")


def rows(ratios: dict[str, dict[str, float]]) -> list[dict]:
    return [{"task": task, "ratio": ratio} for task, ratio in ratios.items()]


def summary(speedups: dict[str, dict[str, tuple[float, float]]]) -> dict:
    """A ``summary.json`` whose ``per_task`` holds (test, train) speedups in steps."""
    return {"per_task": {name: {task: {"generalisation": {"speedup": test},
                                       "optimisation": {"speedup": train}}
                                for task, (test, train) in tasks.items()}
                         for name, tasks in speedups.items()}}


def test_a_speedup_in_steps_over_the_time_ratio_is_the_speedup_in_seconds(step_time):
    timed = rows({"a": {"lopt": 2.0}, "b": {"lopt": 0.5}})
    board = summary({"lopt": {"a": (3.0, 1.0), "b": (0.0, 2.0), "c": (9.0, 9.0)},
                     "untimed": {"a": (1.0, 1.0)}})
    assert step_time.seconds_speedups(board, timed) == {
        "lopt": {"a": {"test": 1.5, "train": 0.5}, "b": {"test": 0.0, "train": 4.0}}}
    report = step_time.seconds_report(board, timed)
    # IQM of two values is their mean: steps (3 + 0) / 2, seconds (1.5 + 0) / 2
    assert "| lopt | 2 | 1.500 | 0.750 | 1.500 | 2.250 |" in report
    assert "untimed" not in report


def test_a_leaderboard_with_no_timed_candidate_is_an_error(step_time):
    with pytest.raises(step_time.LoptUserError, match="no candidate of the leaderboard was timed"):
        step_time.seconds_report(summary({"other": {"a": (1.0, 1.0)}}),
                                 rows({"a": {"lopt": 1.0}}))


def test_one_task_is_timed_under_adam_and_each_optimizer(step_time, tmp_path, capsys):
    assert step_time.cli(["--tasks", "quadratic_noisy_128", "--optimizers", "adam_nominal_wsd",
                          "--steps", "2", "--repeats", "1", "--out-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("quadratic_noisy_128")
    [row] = json.loads((tmp_path / "task_step_time.json").read_text())
    assert row["task"] == "quadratic_noisy_128" and row["parameters"] == 128
    assert set(row["seconds"]) == {"adam", "adam_nominal_wsd"}
    assert row["ratio"]["adam_nominal_wsd"] == pytest.approx(
        row["seconds"]["adam_nominal_wsd"] / row["seconds"]["adam"])
    table = (tmp_path / "task_step_time.md").read_text()
    assert "| quadratic_noisy_128 | 128 |" in table and "| **median** |" in table
    board = tmp_path / "summary.json"
    board.write_text(json.dumps(summary({"adam_nominal_wsd": {"quadratic_noisy_128": (2.0, 2.0)}})))
    assert step_time.cli(["--timings", str(tmp_path / "task_step_time.json"),
                          "--leaderboard", str(board)]) == 0
    assert "| adam_nominal_wsd | 1 | 2.000 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["--tasks", "nope"], "not a lopt_bench task: nope"),
    (["--tasks", "beale_noisy", "--optimizers", "nosuch"], "unknown optimizer source 'nosuch'"),
    (["--timings", "/nonexistent/task_step_time.json"], "No such file"),
])
def test_bad_input_is_one_line_and_exit_2(step_time, tmp_path, capsys, argv, says):
    assert step_time.cli([*argv, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1


@pytest.mark.parametrize("text", ["not json", '{"task": "a"}', '[{"task": "a"}]'])
def test_timings_that_are_not_rows_are_one_line_and_exit_2(step_time, tmp_path, capsys, text):
    bad = tmp_path / "timings.json"
    bad.write_text(text)
    assert step_time.cli(["--timings", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: not the rows of a task_step_time.json\n"


def test_steps_must_be_positive(step_time):
    with pytest.raises(SystemExit) as exit_info:
        step_time.cli(["--steps", "0"])
    assert exit_info.value.code == 2


def test_one_run_is_timed_as_a_users_unbatched_run_and_more_runs_under_vmap():
    """Under ``vmap`` a ``lax.cond`` on the optimizer's state runs both branches (``lazy_muon``'s
    refresh): one run must be timed unbatched, as a user runs it."""
    import jax
    import optax

    from benchmarks.step_cost_check import benchmark_tasks, measured_step_seconds

    seen = []

    def init(params):
        return optax.adam(1e-3).init(params)

    def update(grads, state, params=None, **extra):
        seen.append(any("Batch" in type(leaf).__name__ for leaf in jax.tree.leaves(grads)))
        return optax.adam(1e-3).update(grads, state, params)

    task = benchmark_tasks()["quadratic_noisy_128"].task
    for runs in (1, 2):
        assert measured_step_seconds(task, runs, 2, optax.GradientTransformationExtraArgs(
            init, update)) > 0
    assert seen[0] is False and seen[-1] is True
