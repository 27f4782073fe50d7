"""Pooling benchmark runs over draws of the evaluation's seeds: the pooled numbers from rows
with known answers, the checks that keep a pooled headline meaningful, and the script on two
real runs of ``lopt evaluate`` that differ only in ``seed``."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from test_benchmark import TINY_BENCHMARK

from lopt_cli.errors import LoptUserError
from lopt_cli.evaluation.pooled import pooled_summary
from lopt_cli.scripts import pool_draws
from lopt_cli.scripts.per_task_oracle import oracle, per_task_entries

REFERENCE = "AdamLR per-task (2 trials)"


def comparison(task: str, baseline: float, candidate: float, speedup: float,
               candidate_name: str = "lopt", comparison_name: str = "generalisation") -> dict:
    return {"record": "comparison", "candidate": candidate_name, "task": task, "horizon": 8,
            "family": "f", "comparison": comparison_name, "tuned_on": "valid",
            "compared_on": "test", "baseline": "AdamLR", "setting": REFERENCE,
            "kind": "per-task", "trials": 2, "candidate_trials": 2,
            "baseline_final": baseline, "candidate_final": candidate, "speedup": speedup,
            "loss_ratio": baseline / candidate, "improvement": 0.0}


def horizon(task: str, rises: bool, ratio: float, name: str = "lopt") -> dict:
    return {"record": "horizon", "optimizer": name, "group": "candidates", "task": task,
            "horizon": 8, "steps": [4, 8], "train_curve": [1.0, ratio], "rises": rises,
            "rise_ratio": ratio}


def summary_of(candidates=("lopt",), tasks=("a", "b"), num_seeds: int = 1) -> dict:
    return {"benchmark": "tiny", "task_names": list(tasks), "horizons": [8] * len(tasks),
            "candidates": list(candidates), "trials": {"AdamLR": 2, "candidates": 2},
            "lr_multiplier": [0.1, 10.0], "baselines": ["AdamLR"],
            "reference_setting": REFERENCE, "num_seeds": num_seeds, "num_points": 2,
            "eval_batches": 2, "final_fraction": 0.1, "long_horizon": 8,
            "num_tasks": len(tasks), "tasks": list(tasks),
            "diverged": {name: {"diverged": 0, "trials": 4} for name in ("AdamLR", *candidates)}}


def test_pooled_ratio_is_of_the_mean_finals_and_the_speedup_the_median():
    draws = [[comparison("a", 1.0, 2.0, 0.0), comparison("b", 3.0, 1.0, 2.0),
              horizon("a", False, 1.0)],
             [comparison("a", 3.0, 2.0, 1.0), comparison("b", 1.0, 1.0, 4.0),
              horizon("a", True, 1.5)],
             [comparison("a", 2.0, 2.0, 3.0), comparison("b", 2.0, 1.0, 0.0),
              horizon("a", False, 1.02)]]
    summary, rows = pooled_summary([summary_of()] * 3, draws, [0, 1, 2])
    by_task = {r["task"]: r for r in rows if r["record"] == "comparison"}
    assert by_task["a"]["loss_ratio"] == pytest.approx(2.0 / 2.0)
    assert by_task["b"]["loss_ratio"] == pytest.approx(2.0 / 1.0)
    assert by_task["a"]["speedup"] == 1.0 and by_task["b"]["speedup"] == 2.0
    assert by_task["b"]["improvement"] == pytest.approx(0.5)  # (2 − 1) / 2
    assert by_task["a"]["improvement"] == 0.0  # a tie is not a win
    assert summary["num_seeds"] == 3 and summary["pooled_seeds"] == [0, 1, 2]
    assert summary["win_rate"]["lopt"]["generalisation"][REFERENCE] == 0.5
    assert summary["iqm_loss_ratio"]["lopt"]["generalisation"][REFERENCE] == pytest.approx(1.5)
    (rise,) = [r for r in rows if r["record"] == "horizon"]
    assert rise["rises"] and rise["rise_ratio"] == 1.5 and rise["train_curve"] == [1.0, 1.5]
    assert summary["horizon"]["rising_tasks"]["lopt"] == ["a"]
    assert summary["diverged"]["lopt"] == {"diverged": 0, "trials": 12}


def test_only_the_candidates_every_draw_has_are_pooled():
    first = [comparison("a", 1.0, 1.0, 1.0), comparison("a", 1.0, 2.0, 1.0, "other")]
    second = [comparison("a", 2.0, 1.0, 1.0)]
    summary, rows = pooled_summary([summary_of(("lopt", "other")), summary_of()],
                                   [first, second], [0, 1])
    assert summary["candidates"] == ["lopt"] and {r["candidate"] for r in rows} == {"lopt"}
    assert summary["per_task"]["lopt"]["a"]["generalisation"]["loss_ratio"] == \
        pytest.approx(1.5)


@pytest.mark.parametrize("summaries, seeds, message", [
    ([summary_of()], [0], "at least two"),
    ([summary_of()] * 2, [3, 3], "share the evaluation seed 3"),
    ([summary_of(), summary_of(tasks=("a", "c"))], [0, 1], "differs from run 1 in 'task_names'"),
    ([summary_of(), summary_of(num_seeds=3)], [0, 1], "'num_seeds'"),
    ([summary_of(), summary_of(candidates=("x",))], [0, 1], "no candidate in common"),
])
def test_draws_that_cannot_be_pooled_are_user_errors(summaries, seeds, message):
    draws = [[comparison("a", 1.0, 1.0, 1.0)] for _ in summaries]
    with pytest.raises(LoptUserError, match=message):
        pooled_summary(summaries, draws, seeds)


def test_a_candidate_whose_weights_changed_between_draws_is_a_user_error():
    draws = [[comparison("a", 1.0, 1.0, 1.0)] for _ in range(3)]
    old, same, retrained = (summary_of(), {**summary_of(), "candidate_digests": {"lopt": "d1"}},
                            {**summary_of(), "candidate_digests": {"lopt": "d2"}})
    summary, _ = pooled_summary([old, same, same], draws, [0, 1, 2])  # an old run: unchecked
    assert summary["candidate_digests"] == {"lopt": "d1"}
    with pytest.raises(LoptUserError, match="'lopt' is not the same optimizer in run 2 and run 3"):
        pooled_summary([old, same, retrained], draws, [0, 1, 2])


def test_a_task_missing_from_one_draw_is_a_user_error():
    draws = [[comparison("a", 1.0, 1.0, 1.0), comparison("b", 1.0, 1.0, 1.0)],
             [comparison("a", 1.0, 1.0, 1.0)]]
    with pytest.raises(LoptUserError, match="b / generalisation .* missing from some runs"):
        pooled_summary([summary_of()] * 2, draws, [0, 1])


@pytest.mark.slow  # ~15 s: the script on a real sweep; its pooling is checked above
def test_the_script_pools_a_real_sweep_of_draws_and_refuses_bad_ones(lopt_env, tmp_path,
                                                                      capsys):
    # its own run cache: test_benchmark counts these runs as computed, not cached, in the
    # session's shared one
    env = {**lopt_env, "LOPT_CACHE_DIR": str(tmp_path / "cache")}
    # --multirun between the overrides, as a user may write it (Hydra alone would refuse)
    sweep = subprocess.run([sys.executable, "-m", "lopt_cli", "evaluate", *TINY_BENCHMARK,
                            "learned_optimizer=[adam]", "seed=0,1", "--multirun",
                            "hydra.sweep.dir=draws"], cwd=tmp_path, env=env, check=True,
                           capture_output=True, timeout=600, text=True)
    runs = [tmp_path / "draws" / job for job in ("0", "1")]
    # the sweep over `seed` alone pooled its draws itself, as the script below does
    assert "pooled over the draws seed=0, 1:" in sweep.stdout
    assert "written: draws/pooled/leaderboard.md" in sweep.stdout
    by_sweep = json.loads((tmp_path / "draws" / "pooled" / "summary.json").read_text())
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    assert [s["seed"] for s in summaries] == [0, 1]
    assert summaries[0]["candidate_digests"] == summaries[1]["candidate_digests"]
    assert set(summaries[0]["candidate_digests"]) == {"adam"}
    out = tmp_path / "pooled"
    assert pool_draws.expand_sweeps([tmp_path / "draws"]) == runs
    (tmp_path / "draws" / "2" / ".hydra").mkdir(parents=True)  # a job killed before its summary
    assert pool_draws.expand_sweeps([tmp_path / "draws"]) == runs
    capsys.readouterr()
    assert pool_draws.cli([str(tmp_path / "draws"), "--out", str(out)]) == 0
    notice = capsys.readouterr().err
    assert "unfinished jobs" in notice and str(tmp_path / "draws" / "2") in notice
    for name in ("leaderboard.md", "leaderboard.png", "summary.json", "results.jsonl",
                 "horizon.png"):
        assert (out / name).is_file(), name
    pooled = json.loads((out / "summary.json").read_text())
    assert by_sweep["pooled_runs"] == ["draws/0", "draws/1"]
    assert {**by_sweep, "pooled_runs": None} == {**pooled, "pooled_runs": None}
    reference = pooled["reference_setting"]
    for comparison_name in ("generalisation", "optimisation"):
        finals = [s["per_task"]["adam"]["beale_noisy"][comparison_name] for s in summaries]
        expected = (np.mean([f["baseline_final"] for f in finals])
                    / max(np.mean([f["candidate_final"] for f in finals]), 1e-8))
        assert pooled["per_task"]["adam"]["beale_noisy"][comparison_name]["loss_ratio"] == \
            pytest.approx(expected)
        assert pooled["iqm_loss_ratio"]["adam"][comparison_name][reference] == \
            pytest.approx(expected)  # one task: the IQM is that task's ratio
    assert pooled["num_seeds"] == 2 and pooled["pooled_seeds"] == [0, 1]
    text = (out / "leaderboard.md").read_text()
    assert text.startswith("# Leaderboard: `lopt_bench_small`\n\n- **pooled over 2 draws")
    assert "2 seeds per run" in text
    capsys.readouterr()
    assert pool_draws.cli([*map(str, runs), "--out", str(out)]) == 2  # already written
    assert "already holds a leaderboard" in capsys.readouterr().err
    assert pool_draws.cli([str(runs[0]), str(runs[0]), "--out", str(tmp_path / "x")]) == 2
    assert "share the evaluation seed 0" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert pool_draws.cli([str(runs[0]), str(tmp_path / "empty"), "--out",
                           str(tmp_path / "x")]) == 2
    assert "is not a benchmark run" in capsys.readouterr().err
    assert pool_draws.cli([str(runs[0]), str(out), "--out", str(tmp_path / "x")]) == 2
    assert "is already pooled" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # the per-task oracle reads the same numbers back from the two leaderboards
    entries = [e for run in runs for e in per_task_entries((run / "leaderboard.md").read_text())]
    assert len(entries) == 2 and all(set(e) == {"beale_noisy"} for e in entries)
    best, iqms, used = oracle(entries)
    for k, (comparison_name, key) in enumerate([("generalisation", "loss_ratio"),
                                                ("generalisation", "speedup"),
                                                ("optimisation", "loss_ratio"),
                                                ("optimisation", "speedup")]):
        expected = max(s["per_task"]["adam"]["beale_noisy"][comparison_name][key]
                       for s in summaries)
        assert best["beale_noisy"][k] == pytest.approx(expected, abs=6e-4)
        assert iqms[list(iqms)[k]] == best["beale_noisy"][k]  # one task
    assert used == 2 and per_task_entries("# Leaderboard\n\nno tables") == []


@pytest.mark.parametrize("text, message", [
    ("[a, b", "is not a readable Hydra config (while parsing a flow sequence)"),
    ("- 1\n", "is not a readable Hydra config"),
    ("seed: one\n", "has no integer top-level seed"),
])
def test_an_old_run_without_a_readable_seed_is_a_one_line_error(tmp_path, text, message):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(text)
    with pytest.raises(LoptUserError, match=re.escape(message)) as error:
        pool_draws.evaluation_seed(tmp_path, {})
    assert "\n" not in str(error.value)
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 4\n")
    assert pool_draws.evaluation_seed(tmp_path, {}) == 4
    assert pool_draws.evaluation_seed(tmp_path, {"seed": 2}) == 2  # the summary's wins


def test_an_out_path_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert pool_draws.cli([str(tmp_path), str(tmp_path), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a directory" in err and err.count("\n") == 1


def test_the_oracle_script_refuses_what_it_cannot_read_in_one_line(tmp_path, capsys):
    from lopt_cli.scripts.per_task_oracle import main

    empty = tmp_path / "empty.md"
    empty.write_text("# Leaderboard\n\nno per-task table\n")
    for argv, message in [([str(tmp_path / "missing.md")], "missing.md"),
                          ([str(empty)], "no per-task entries"),
                          ([str(empty), "--tasks", "3"], "no per-task entries")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("overrides, benchmark, pooled", [
    (["benchmark=lopt_bench", "seed=0,1,2", "learned_optimizer=[a,b]"], True, True),
    (["benchmark=lopt_bench", "seed=range(3)"], True, True),
    (["benchmark=lopt_bench", "seed=0,0"], True, False),  # one draw twice
    (["benchmark=lopt_bench", "seed=0,1", "learned_optimizer=a,b"], True, False),
    (["benchmark=lopt_bench", "benchmark.num_seeds=1,3"], True, False),
    (["seed=0,1,2"], False, False),  # the paper-style evaluation: nothing to pool
])
def test_only_a_benchmark_sweep_over_the_seed_alone_is_pooled(overrides, benchmark, pooled):
    from omegaconf import OmegaConf

    from lopt_cli.commands.pool_callback import pools

    config = OmegaConf.create({"benchmark": {"name": "b"} if benchmark else None,
                               "mode": "comparison", "hydra": {"overrides": {"task": overrides}}})
    assert pools(config) is pooled


def test_a_sweep_with_an_unfinished_job_is_not_pooled_and_says_how_to_later(tmp_path, capsys):
    from lopt_cli.commands.pool_callback import pool_sweep

    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    assert pool_sweep(tmp_path) is None and not (tmp_path / "pooled").exists()
    err = capsys.readouterr().err
    assert err.startswith("lopt: not pooled: jobs without a summary (0); when they are done: "
                          f"python -m lopt_cli.scripts.pool_draws {tmp_path} --out ")
    (tmp_path / "0" / "summary.json").write_text("{}")  # finished, but not a benchmark's
    (tmp_path / "0" / "results.jsonl").write_text("")
    assert pool_sweep(tmp_path) is None
    assert capsys.readouterr().err.startswith("lopt: not pooled: ")
