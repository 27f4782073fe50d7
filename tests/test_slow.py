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
