"""Every subcommand run for real through the CLI, with tiny configs, and its files checked."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import only_run_dir

TINY_TASKS = ("task_family=quadratic", "task_family.dims=[8]")  # one shape: one compilation
TINY_META_TRAIN = (
    "compute=smoke", "compute.num_outer_steps=4", "compute.num_tasks=2",
    "compute.resample_every=2", "checkpoint_every=2", *TINY_TASKS,
)
TINY_EVALUATE = ("budget=smoke", "splits.seen.count=2", "horizon=40", "valid_every=10",
                 *TINY_TASKS)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lopt_env):
    """One tiny meta-training run shared by the tests that need a learned optimizer."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("trained")
    subprocess.run([sys.executable, "-m", "lopt_cli", "meta-train", *TINY_META_TRAIN],
                   cwd=root, env=lopt_env, check=True, capture_output=True, timeout=600)
    return only_run_dir(root / "outputs" / "meta-train")


def test_top_level_help_lists_subcommands(run_lopt):
    out = run_lopt("--help").stdout
    for command in ("meta-train", "evaluate", "self-train"):
        assert command in out


def test_command_help_lists_config_groups(run_lopt):
    out = run_lopt("meta-train", "--help").stdout
    for group in ("task_family", "optimizer", "estimator", "outer_optimizer", "compute"):
        assert f"{group}:" in out


def test_each_command_help_lists_only_its_own_groups_and_the_choice_in_use(capsys):
    from lopt_cli.cli import main

    main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: lopt evaluate [group=option ...]")
    groups = [line.split()[0] for line in out.split("config groups")[1].split("\n\n")[0]
              .splitlines()[1:] if not line.startswith("    ")]
    assert groups == ["benchmark", "budget", "experiment", "task_family"]  # no estimator
    assert "full*, small, smoke" in out and "mlp_digits*" in out
    main(["meta-train", "recipe=adam_nominal_wsd", "-h"])  # the overrides beside it compose
    out = capsys.readouterr().out
    assert "adam_nominal_wsd*" in out and "pes*" in out and "\nestimator:\n" in out
    main(["evaluate", "benchmark=lopt_bench", "seed=0,1", "--help", "--multirun"])
    assert "\nbenchmark:\n  name: lopt_bench\n" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["evaluate", "estimator=pes", "--help"], "`lopt evaluate` does not take estimator"),
    (["tasks", "steps=", "--bogus", "--help"], "unknown flag '--bogus' beside --help"),
    (["tasks", "seed=1", "x=[", "--help"], "cannot parse override 'x=['"),
])
def test_a_bad_override_beside_help_is_one_line(capsys, args, message):
    from lopt_cli.cli import main

    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_help_read_by_a_reader_that_stops_early_is_no_error(lopt_env, tmp_path):
    # `true` reads nothing and exits long before lopt has started: every write meets a
    # closed pipe
    for args in ("evaluate --help", "--help"):
        shown = subprocess.run(f"{sys.executable} -m lopt_cli {args} | true", shell=True,
                               cwd=tmp_path, env=lopt_env, capture_output=True, text=True,
                               timeout=120)
        assert shown.stderr == "", shown.stderr


def test_meta_train_writes_run_directory(trained):
    rows = read_jsonl(trained / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["task_ids"] and rows[2]["task_ids"]  # recorded at each resample
    for row in rows:
        assert {"meta_loss", "grad_norm", "inner_steps_per_second", "resets", "dropped"} <= set(row)
        assert row["meta_loss"] == row["meta_loss"]  # not NaN
    assert (trained / "learned_optimizer.msgpack").stat().st_size > 1000
    assert "_target_" in (trained / "learned_optimizer.yaml").read_text()
    assert (trained / "meta_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (trained / ".hydra" / "config.yaml").exists()


def test_evaluate_writes_results_and_summary(run_lopt, trained, tmp_path):
    result = run_lopt("evaluate", f"learned_optimizer={trained}", *TINY_EVALUATE)
    run = only_run_dir(tmp_path / "outputs" / "evaluate")
    # off a terminal, a plain progress line at least at the end (LOPT_PROGRESS_EVERY)
    assert re.search(r"^evaluate: task runs: (\d+)/\1 \(100%\), elapsed .*, ETA 0s$",
                     result.stderr, re.M), result.stderr
    rows = read_jsonl(run / "results.jsonl")
    learned = [r for r in rows if r["optimizer"] == "learned"]
    trained_ids = [i for row in read_jsonl(trained / "metrics.jsonl") for i in row.get("task_ids", [])]
    seen = [r["task_id"] for r in learned if r["split"] == "seen"]
    assert seen and set(seen) <= set(trained_ids)  # "seen" = tasks the run really trained on
    assert [r["task_id"] for r in learned if r["split"] == "unseen"] == [1000000]
    assert all(len(r["valid_curve"]) == 4 for r in rows)
    settings = {r["optimizer"] for r in rows} - {"learned"}
    for baseline in ("AdamLR", "Adam8p", "opt_list"):
        assert f"{baseline} global (2 trials)" in settings
        assert f"{baseline} per-task (1 trial)" in settings
    summary = json.loads((run / "summary.json").read_text())
    assert summary["splits"] == ["seen", "unseen"]
    assert summary["task_ids"]["seen"] == seen
    for row in summary["comparisons"]:
        assert row["tuned_on"] == row["compared_on"]
        assert row["num_tasks"] == (len(seen) if row["split"] == "seen" else 1)
        assert 0 <= row["wins"] <= row["num_tasks"]
    # the report's numbers are the results' numbers
    report = (run / "report.md").read_text()
    for row in learned:
        assert f"{row['final_valid']:.4f}" in report
    assert summary["tuned_at_edge"] == {} and "Not checked: no optimizer was tuned" in report
    for name in ("improvement.png", "improvement_train.png", "curves.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"
    assert "learned optimizer vs. tuned baselines" in result.stdout


@pytest.mark.slow  # ~25 s; the benchmark's CLI test reads its runs back from the same cache
def test_evaluate_reuses_cached_runs(run_lopt, trained, tmp_path):
    def evaluate_once():
        run_lopt("evaluate", f"learned_optimizer={trained}", *TINY_EVALUATE, "seed=5")
        runs = sorted((tmp_path / "outputs" / "evaluate").iterdir())
        return json.loads((runs[-1] / "summary.json").read_text())

    first, second = evaluate_once(), evaluate_once()
    assert second["runs"]["computed"] == 0
    assert second["runs"]["from_cache"] == first["runs"]["computed"] + first["runs"]["from_cache"]
    assert second["comparisons"] == first["comparisons"]


@pytest.mark.slow  # ~15 s: one experiment's end-to-end run
def test_implicit_regularization_experiment(run_lopt, trained, tmp_path):
    run_lopt("evaluate", f"learned_optimizer={trained}", "experiment=implicit_regularization",
             "implicit_regularization.steps=50", "implicit_regularization.num_points=3")
    run = only_run_dir(tmp_path / "outputs" / "evaluate")
    summary = json.loads((run / "summary.json").read_text())
    distances = summary["mean_final_distance"]
    assert set(distances) == {"learned", "adam", "projection onto x = y"}
    assert len(summary["paths"]["learned"]) == 3
    assert len(summary["paths"]["learned"][0]) == 51
    # Adam goes (nearly) straight to the line: its distance matches the projection's
    assert abs(distances["adam"] - distances["projection onto x = y"]) < 0.1
    assert (run / "trajectories.png").read_bytes()[:4] == b"\x89PNG"


def test_self_train_compares_two_outer_optimizers(run_lopt, trained, tmp_path):
    """(With meta_train's recipe keys: both runs start from ``init_from`` on the training loss.)"""
    run_lopt("self-train", f"learned_optimizer={trained}", *TINY_META_TRAIN,
             f"init_from={trained}", "meta_loss=train")
    run = only_run_dir(tmp_path / "outputs" / "self-train")
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["final_meta_loss"]) == {"learned outer optimizer", "AdamW"}
    assert (run / "self_train.png").read_bytes()[:4] == b"\x89PNG"
    for folder in ("learned_outer", "adam_outer"):
        rows = read_jsonl(run / folder / "metrics.jsonl")
        assert len(rows) == 4 and all(
            row["meta_loss"] == pytest.approx(row["train_loss"], rel=1e-5) for row in rows)
        started = json.loads((run / folder / "summary.json").read_text())["init_from"]
        assert started == str((trained / "learned_optimizer.msgpack").resolve())
    # Stopped before AdamW's run checkpointed: a resume finds the first run's checkpoint in its
    # subdirectory, keeps that run and redoes the second to the same numbers.
    shutil.rmtree(run / "adam_outer")
    (run / "summary.json").unlink()
    run_lopt("self-train", f"resume={run}", f"learned_optimizer={trained}")
    assert json.loads((run / "summary.json").read_text()) == summary


def test_multirun_sweeps_into_separate_directories(run_lopt, tmp_path):
    run_lopt("meta-train", "--multirun", "seed=0,1", *TINY_META_TRAIN, "compute.num_outer_steps=2")
    sweep = only_run_dir(tmp_path / "outputs" / "multirun" / "meta-train")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    losses = [read_jsonl(sweep / j / "metrics.jsonl")[0]["meta_loss"] for j in jobs]
    assert losses[0] != losses[1]
    # the sweep ends with one summary over its jobs, told apart by the override they differ in
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(j["job"], j["overrides"], j["state"], j["outer_steps"]) for j in summary["jobs"]] == [
        ("0", ["seed=0"], "finished", 2), ("1", ["seed=1"], "finished", 2)]
    for job in summary["jobs"]:
        own = json.loads((sweep / job["job"] / "summary.json").read_text())
        assert job["final_meta_loss"] == own["final_meta_loss"]
        assert job["first_meta_loss"] == own["first_meta_loss"]
    key = ("last_heldout_loss" if all(j["last_heldout_loss"] is not None for j in summary["jobs"])
           else "final_meta_loss")
    assert summary["best_job"] == min(summary["jobs"], key=lambda j: j[key])["job"]
    assert "| 0" in (sweep / "sweep_summary.md").read_text()
    assert (sweep / "meta_loss.png").read_bytes()[:4] == b"\x89PNG"


# two meta-trainings in parallel processes, ~20 s on 2 cores (a plain sweep runs in make test)
@pytest.mark.slow
def test_parallel_sweep_with_the_joblib_launcher(run_lopt, tmp_path):
    run_lopt("meta-train", "--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
             "seed=3,4", *TINY_META_TRAIN, "compute.num_outer_steps=2")
    sweep = only_run_dir(tmp_path / "outputs" / "multirun" / "meta-train")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]
    for job in ("0", "1"):
        assert (sweep / job / "learned_optimizer.msgpack").exists()


# Real subprocesses for one bad input of each kind of entry (a group option, a multirun sweep,
# a file, an unknown command); every case here and many more run in-process, through the same
# entry point, in tests/test_bad_inputs.py.
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("meta-train", "optimizer=nope"), "unknown option 'nope' for optimizer; choose one of:"),
        (("meta-train", "--multirun", "compute=smoke,nope"), "unknown option 'nope' for compute"),
        (("evaluate", "learned_optimizer=/no/such/file.msgpack"), "no such file"),
        (("frobnicate",), "unknown command 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_lopt, tmp_path, args, expected):
    result = run_lopt(*args, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # nothing half-written


def test_unreadable_learned_optimizer_file(run_lopt, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "learned_optimizer.msgpack").write_bytes(b"not msgpack")
    (bad / "learned_optimizer.yaml").write_text("_target_: lopt_cli.optimizers.mlp_lopt.MLPLOpt\n")
    result = run_lopt("evaluate", f"learned_optimizer={bad}", check=False)
    assert result.returncode == 2
    assert "not a learned optimizer" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["a=1", "--multirun", "b=2"], ["a=1", "b=2", "--multirun"]),
    (["-m", "a=1"], ["a=1", "-m"]),
    (["a=1", "b=2"], ["a=1", "b=2"]),
    (["a=1", "--multirun", "b=2", "-m"], ["a=1", "b=2", "--multirun"]),
])
def test_the_multirun_flag_may_stand_between_overrides(args, expected):
    from lopt_cli.cli import multirun_flag_last

    assert multirun_flag_last(args) == expected


def test_the_cache_label_names_the_learned_optimizer_as_given(tmp_path):
    from pathlib import Path

    from lopt_cli.commands.evaluate import display_name

    weights = Path("/runs/meta-train/2026-12-06_10-00-00_000001/learned_optimizer.msgpack")
    assert display_name("default", weights) == "default"
    assert display_name("latest", weights) == "latest"
    assert display_name("outputs/meta-train/x", weights) == "2026-12-06_10-00-00_000001"
    assert display_name("x.msgpack", weights) == "2026-12-06_10-00-00_000001"
