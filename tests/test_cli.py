"""Every subcommand run for real through the CLI, with tiny configs, and its files checked."""
from __future__ import annotations

import json

import pytest

from conftest import only_run_dir

TINY_TASKS = ("task_family=quadratic", "task_family.dims=[8]")  # one shape: one compilation
TINY_META_TRAIN = (
    "compute=smoke", "compute.num_outer_steps=4", "compute.num_tasks=2",
    "compute.resample_every=2", "checkpoint_every=2", *TINY_TASKS,
)
TINY_EVALUATE = ("tasks.count=2", "horizon=40", "valid_every=10", "num_seeds=2", "adam_lr.num=3",
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


def test_meta_train_writes_run_directory(trained):
    rows = read_jsonl(trained / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for row in rows:
        assert {"meta_loss", "grad_norm", "inner_steps_per_second", "resets"} <= set(row)
        assert row["meta_loss"] == row["meta_loss"]  # not NaN
    assert (trained / "learned_optimizer.msgpack").stat().st_size > 1000
    assert "_target_" in (trained / "learned_optimizer.yaml").read_text()
    assert (trained / "meta_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (trained / ".hydra" / "config.yaml").exists()


def test_evaluate_writes_results_and_summary(run_lopt, trained, tmp_path):
    result = run_lopt("evaluate", f"learned_optimizer={trained}", *TINY_EVALUATE)
    run = only_run_dir(tmp_path / "outputs" / "evaluate")
    rows = read_jsonl(run / "results.jsonl")
    assert {r["optimizer"] for r in rows} == {"learned", "adam (valid-tuned)", "adam (train-tuned)"}
    assert len({r["task_id"] for r in rows}) == 2
    assert all(len(r["valid_curve"]) == 4 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    for comparison in summary["comparisons"].values():
        assert comparison["num_tasks"] == 2
        assert 0 <= comparison["wins"] <= 2
        assert comparison["trials_per_task"] == 3
    learned = {r["task_id"]: r["final_valid"] for r in rows if r["optimizer"] == "learned"}
    assert "Evaluation report" in (run / "report.md").read_text()
    assert f"{learned[rows[0]['task_id']]:.4f}" in (run / "report.md").read_text()
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "AdamLR" in result.stdout


def test_evaluate_accepts_the_msgpack_file_itself(run_lopt, trained):
    run_lopt("evaluate", f"learned_optimizer={trained / 'learned_optimizer.msgpack'}",
             "tasks.count=1", "horizon=20", "valid_every=10", "num_seeds=1", "adam_lr.num=2",
             *TINY_TASKS)


def test_self_train_compares_two_outer_optimizers(run_lopt, trained, tmp_path):
    run_lopt("self-train", f"learned_optimizer={trained}", *TINY_META_TRAIN)
    run = only_run_dir(tmp_path / "outputs" / "self-train")
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["final_meta_loss"]) == {"learned outer optimizer", "AdamW"}
    assert (run / "self_train.png").read_bytes()[:4] == b"\x89PNG"
    for folder in ("learned_outer", "adam_outer"):
        assert len(read_jsonl(run / folder / "metrics.jsonl")) == 4


def test_multirun_sweeps_into_separate_directories(run_lopt, tmp_path):
    run_lopt("meta-train", "--multirun", "seed=0,1", *TINY_META_TRAIN, "compute.num_outer_steps=2")
    sweep = only_run_dir(tmp_path / "outputs" / "multirun" / "meta-train")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    losses = [read_jsonl(sweep / j / "metrics.jsonl")[0]["meta_loss"] for j in jobs]
    assert losses[0] != losses[1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("meta-train", "optimizer=nope"), "unknown option 'nope' for optimizer; choose one of:"),
        (("meta-train", "bogus=1"), "unknown key 'bogus'"),
        (("meta-train", "compute.num_tasks=0"), "compute.num_tasks=0: expected a positive integer"),
        (("meta-train", "seed=["), "cannot parse override"),
        (("meta-train", "--multirun", "compute=smoke,nope"), "unknown option 'nope' for compute"),
        (("evaluate", "learned_optimizer=/no/such/file.msgpack"), "no such file"),
        (("evaluate", "horizon=45", "valid_every=10"), "must be a multiple of"),
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
