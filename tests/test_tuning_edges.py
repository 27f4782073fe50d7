"""The leaderboard names tasks whose tuned choice is the lowest or highest value of its grid."""
from __future__ import annotations

import pytest

from lopt_cli.evaluation.leaderboard_report import markdown_leaderboard
from lopt_cli.evaluation.tuning_edges import edge_line, edge_of, suite_edges, tuned_at_edge

GRID = [1e-3, 1e-4, 1e-2, 3e-4, 3e-3]  # coarse to fine: the middle, then the ends, ...


def runs(valid: list[float], train: list[float], hparams: dict | None = None) -> dict:
    return {"final": {"valid": valid, "train": train, "test": [0.0] * len(valid)},
            "hparams": hparams or {"learning_rate": GRID}}


def results(**tasks) -> dict:
    return {name: {"baselines": {"AdamLR": base}, "candidates": {"cand": cand}}
            for name, (base, cand) in tasks.items()}


@pytest.mark.parametrize("index, side", [(0, None), (1, "low"), (2, "high"), (3, None)])
def test_edge_of_names_the_grid_end_a_choice_sits_on(index, side):
    assert edge_of(GRID, index) == side


def test_choices_at_either_end_are_listed_per_optimizer_and_comparison():
    low_valid = [0.5, 0.1, 0.9, 0.3, 0.6]    # best: 1e-4, the low end
    inside = [0.5, 0.9, 0.9, 0.2, 0.6]       # best: 3e-4, inside
    high_train = [0.5, 0.9, 0.1, 0.3, 0.6]   # best: 1e-2, the high end
    edges = tuned_at_edge(
        results(a=(runs(low_valid, inside), runs(inside, high_train)),
                b=(runs(inside, high_train), runs(inside, inside))),
        {("baselines", "AdamLR"): 5, ("candidates", "cand"): 5})
    assert edges["AdamLR"]["generalisation"] == {"hyperparameter": "learning_rate",
                                                "low": ["a"], "high": []}
    assert edges["AdamLR"]["optimisation"] == {"hyperparameter": "learning_rate",
                                              "low": [], "high": ["b"]}
    assert edges["cand"]["generalisation"]["low"] == edges["cand"]["generalisation"]["high"] == []
    assert edges["cand"]["optimisation"]["high"] == ["a"]
    assert edge_line(edges, 2) == (
        "tuned at the edge of its range (may do better outside it; leaderboard.md lists the "
        "tasks): AdamLR generalisation 1/2, AdamLR optimisation 1/2, cand optimisation 1/2")
    assert "(may do better outside it; report.md lists the tasks)" in edge_line(
        edges, 2, listed_in="report.md")  # the paper-style evaluation's file


def test_only_the_trials_of_the_budget_count():
    # best of the first 3 trials (1e-3, 1e-4, 1e-2) is 1e-2: the high end of those 3,
    # although trial 4 (3e-3) is better and inside the 5-point grid
    finals = [0.5, 0.9, 0.3, 0.6, 0.1]
    edges = tuned_at_edge(results(a=(runs(finals, finals), runs(finals, finals))),
                          {("baselines", "AdamLR"): 3})
    assert edges["AdamLR"]["generalisation"]["high"] == ["a"]
    edges = tuned_at_edge(results(a=(runs(finals, finals), runs(finals, finals))),
                          {("baselines", "AdamLR"): 5})
    assert edges["AdamLR"]["generalisation"]["high"] == []


def test_several_hyperparameters_or_too_few_trials_are_not_checked():
    finals = [0.1, 0.5, 0.9]
    adam8p = runs(finals, finals, {"learning_rate": [1e-3, 1e-2, 1e-4], "b1": [0.9, 0.8, 0.7]})
    edges = tuned_at_edge(results(a=(adam8p, runs(finals[:2], finals[:2]))),
                          {("baselines", "AdamLR"): 3, ("candidates", "cand"): 2})
    assert edges == {} and edge_line(edges, 1) is None


def test_the_leaderboard_has_the_section_and_older_summaries_do_without_it():
    label = "AdamLR per-task (5 trials)"
    values = {"wins": 1, "num_tasks": 1, "win_rate": 1.0, "median": 0.1, "q25": 0.1, "q75": 0.1,
              "iqm_loss_ratio": 1.2, "iqm_speedup": 1.5, "candidate_trials": 5}
    per = {"settings": {label: values}, "faster_than_adamlr": 1.0}
    summary = {"benchmark": "b", "num_tasks": 1, "task_names": ["a"], "horizons": [10],
               "num_seeds": 1, "trials": {"AdamLR": 5, "candidates": 5},
               "lr_multiplier": [0.1, 10.0], "num_points": 2, "eval_batches": 1,
               "final_fraction": 0.5, "reference_setting": label,
               "long_horizon": 10, "diverged": {},
               "leaderboard": {"cand": {"generalisation": per, "optimisation": per}},
               "horizon_rise": {}, "horizon": {"rise": {}, "rising_tasks": {}}}
    assert "Tuned at the edge" not in markdown_leaderboard(summary)
    summary["tuned_at_edge"] = {}
    assert "Not checked: no optimizer was tuned" in markdown_leaderboard(summary)
    summary["tuned_at_edge"] = {"AdamLR": {"generalisation": {
        "hyperparameter": "learning_rate", "low": ["a"], "high": []}}}
    text = markdown_leaderboard(summary)
    assert "## Tuned at the edge of its range" in text
    assert "| AdamLR | generalisation | learning_rate | a | - |" in text
    summary["tuned_at_edge"]["AdamLR"]["generalisation"]["low"] = []
    assert "None: every choice is inside its range." in markdown_leaderboard(summary)


def test_the_paper_style_evaluation_checks_its_baselines_by_task_id():
    def suite_runs(valid, train, hparams=None):
        return {"final_valid": valid, "final_train": train,
                "hparams": hparams or {"learning_rate": GRID}}

    low_valid = [0.5, 0.1, 0.9, 0.3, 0.6]
    inside = [0.5, 0.9, 0.9, 0.2, 0.6]
    adam8p = {"learning_rate": GRID, "b1": GRID}
    results = [{"task_id": 7, "baselines": {"AdamLR": suite_runs(low_valid, inside),
                                            "Adam8p": suite_runs(low_valid, low_valid, adam8p)}},
               {"task_id": 1000000, "baselines": {"AdamLR": suite_runs(inside, inside),
                                                  "Adam8p": suite_runs(inside, inside, adam8p)}}]
    edges = suite_edges(results, 5)
    assert set(edges) == {"AdamLR"}
    assert edges["AdamLR"]["generalisation"]["low"] == ["7"]
    assert edges["AdamLR"]["optimisation"] == {"hyperparameter": "learning_rate",
                                              "low": [], "high": []}
    assert suite_edges([], 5) == {}
