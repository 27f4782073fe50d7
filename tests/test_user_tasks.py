"""A user's own Task, pointed at by `_target_`, works in meta-train and evaluate unchanged."""
from __future__ import annotations

import json
import os

from conftest import only_run_dir

USER_DIR = os.path.join(os.path.dirname(__file__), "user_tasks")
USER_TASK = ("task_family=user", "task_family._target_=my_regression.make_task",
             "+task_family.dim=6")


def test_user_task_meta_trains_and_evaluates(run_lopt, lopt_env, tmp_path):
    lopt_env["PYTHONPATH"] = os.pathsep.join(filter(None, [USER_DIR, lopt_env.get("PYTHONPATH")]))
    run_lopt("meta-train", *USER_TASK, "compute=smoke", "compute.num_outer_steps=3",
             "compute.num_tasks=2")
    trained = only_run_dir(tmp_path / "outputs" / "meta-train")
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 3
    run_lopt("evaluate", f"learned_optimizer={trained}", *USER_TASK, "budget=smoke",
             "~baselines.Adam8p", "~baselines.opt_list")
    run = only_run_dir(tmp_path / "outputs" / "evaluate")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task_family"] == "LinearRegression"
    assert summary["comparisons"]


def test_user_task_without_target_is_a_clear_error(run_lopt):
    result = run_lopt("meta-train", "task_family=user", check=False)
    assert result.returncode == 2
    assert "task_family._target_ is not set" in result.stderr
