"""From evaluated tasks to the contents of a run: result rows and the summary."""
from __future__ import annotations

from collections import defaultdict

from lopt_cli.evaluation.compare import summarize
from lopt_cli.evaluation.tuning import METRICS


def steps_of(curve: list, valid_every: int) -> list[int]:
    return [valid_every * (i + 1) for i in range(len(curve))]


def result_rows(results: list[dict], valid_every: int) -> list[dict]:
    """``results.jsonl``: per task, one row for the learned optimizer and one per baseline
    setting and metric, with the chosen trial's hyperparameters, final loss and curves."""
    rows = []
    for result in results:
        base = {"split": result["split"], "task_id": result["task_id"], "task": result["task"]}
        learned = result["learned"]
        rows.append({**base, "optimizer": "learned", "final_valid": learned["final_valid"],
                     "final_train": learned["final_train"],
                     "steps": steps_of(learned["valid_curve"], valid_every),
                     "valid_curve": learned["valid_curve"], "train_curve": learned["train_curve"]})
        for comparison in result["comparisons"]:
            runs = result["baselines"][comparison["baseline"]]
            trial = comparison["trial"]
            rows.append({
                **base, "optimizer": comparison["setting"], "baseline": comparison["baseline"],
                "kind": comparison["kind"], "trials": comparison["trials"],
                "tuned_on": comparison["metric"], "compared_on": comparison["metric"],
                "trial": trial,
                "hyperparameters": {k: v[trial] for k, v in runs["hparams"].items()},
                f"final_{comparison['metric']}": comparison["baseline_final"],
                "learned_final": comparison["learned_final"],
                "improvement": comparison["improvement"],
                "steps": steps_of(runs["valid_curve"][trial], valid_every),
                "valid_curve": runs["valid_curve"][trial],
                "train_curve": runs["train_curve"][trial],
            })
    return rows


def improvements(results: list[dict]) -> dict:
    """``{(metric, setting label, split): [improvement per task]}`` in task order."""
    grouped = defaultdict(list)
    for result in results:
        for comparison in result["comparisons"]:
            grouped[(comparison["metric"], comparison["setting"], result["split"])].append(
                comparison["improvement"])
    return dict(grouped)


def summary_rows(results: list[dict]) -> list[dict]:
    """Per metric, baseline setting and split: tasks, wins, win rate, median and quartiles."""
    kinds = {}
    for result in results:
        for c in result["comparisons"]:
            kinds[c["setting"]] = (c["baseline"], c["kind"], c["trials"])
    rows = []
    for (metric, setting, split), values in improvements(results).items():
        baseline, kind, trials = kinds[setting]
        rows.append({"comparison": METRICS[metric], "tuned_on": metric, "compared_on": metric,
                     "baseline": baseline, "setting": setting, "kind": kind, "trials": trials,
                     "split": split, **summarize(values)})
    return rows
