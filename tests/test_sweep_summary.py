"""The summary of a meta-training or self-training sweep: each job's state, losses and time,
from its files."""
from __future__ import annotations

import json

import pytest

from lopt_cli.scripts.sweep_summary import (
    best_job,
    job_record,
    main,
    summarize_sweep,
)


def make_job(sweep, number: int, overrides: list[str], losses: list[float],
             heldout: dict | None = None, finished: bool = True, checkpoint: bool = True):
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rows = []
    for step, loss in enumerate(losses):
        row = {"step": step, "meta_loss": loss, "seconds": 0.5, "inner_steps_per_second": 100.0}
        if heldout and step in heldout:
            row.update(heldout_loss=heldout[step], heldout_seconds=0.25)
        rows.append(json.dumps(row))
    (job / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    if finished:
        tail = losses[-max(1, len(losses) // 10):]
        (job / "summary.json").write_text(json.dumps(
            {"final_meta_loss": sum(tail) / len(tail), "first_meta_loss": losses[0]}))
    if checkpoint:
        (job / "checkpoint.msgpack").write_bytes(b"x")
    return job


def test_states_losses_and_time_of_each_job(tmp_path):
    finished = make_job(tmp_path, 0, ["compute=smoke", "seed=0"], [1.0, 0.8, 0.6],
                        heldout={1: 0.9, 2: 0.95})
    stopped = make_job(tmp_path, 1, ["compute=smoke", "seed=1"], [1.0, 0.9], finished=False)
    failed = make_job(tmp_path, 2, ["compute=smoke", "seed=2"], [], finished=False,
                      checkpoint=False)
    record = job_record(finished, ["seed=0"])
    assert record["state"] == "finished"
    assert record["published_heldout_loss"] == 0.95  # no keep_best: its last check
    assert (record["first_meta_loss"], record["final_meta_loss"]) == (1.0, 0.6)
    assert (record["last_heldout_loss"], record["best_heldout_loss"]) == (0.95, 0.9)
    assert record["seconds"] == pytest.approx(3 * 0.5 + 2 * 0.25)
    assert job_record(stopped, [])["state"] == f"stopped at step 2: lopt meta-train resume={stopped}"
    assert job_record(stopped, [])["final_meta_loss"] == 0.9  # its last tenth, without a summary
    assert job_record(failed, [])["state"] == "failed before its first checkpoint"
    summary = summarize_sweep(tmp_path)
    assert [j["overrides"] for j in summary["jobs"]] == [["seed=0"], ["seed=1"], ["seed=2"]]
    assert summary["best_job"] == "0"  # the only finished job
    assert json.loads((tmp_path / "sweep_summary.json").read_text()) == summary
    table = (tmp_path / "sweep_summary.md").read_text()
    assert "| 0 ★ | seed=0 | finished | 3 | 1 → 0.6 | 0.95 (0.9) | 100 | 2s |" in table
    assert (tmp_path / "meta_loss.png").is_file()


def test_a_line_cut_by_a_kill_is_skipped(tmp_path):
    job = make_job(tmp_path, 0, ["seed=0"], [1.0, 0.5], finished=False)
    with (job / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 2, "meta_lo')
    assert job_record(job, [])["outer_steps"] == 2


def test_best_is_the_lowest_held_out_loss_when_every_finished_job_has_one(tmp_path):
    records = [{"job": "0", "state": "finished", "final_meta_loss": 0.5,
                "published_heldout_loss": 0.9},
               {"job": "1", "state": "finished", "final_meta_loss": 0.7,
                "published_heldout_loss": 0.8},
               {"job": "2", "state": "stopped", "final_meta_loss": 0.1,
                "published_heldout_loss": 0.1}]
    assert best_job(records) == "1"
    records[1]["published_heldout_loss"] = None
    assert best_job(records) == "0"  # then the final meta-loss
    assert best_job([records[2]]) is None


def test_the_script_refuses_a_directory_that_is_no_sweep(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a sweep directory" in err[0]


def test_the_script_prints_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    make_job(tmp_path, 0, ["seed=0"], [1.0, 0.5])
    make_job(tmp_path, 1, ["seed=1"], [1.0, 0.7])
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "meta-training sweep: 2 jobs" in out and "0 ★" in out and "seed=1" in out


@pytest.mark.parametrize(("job_name", "written"), [("meta-train", True), ("tasks", False)])
def test_the_callback_summarises_only_a_meta_training_sweep(tmp_path, job_name, written):
    from omegaconf import OmegaConf

    from lopt_cli.scripts.sweep_summary import SweepSummary

    make_job(tmp_path, 0, ["seed=0"], [1.0, 0.5])
    config = OmegaConf.create({"hydra": {"job": {"name": job_name},
                                         "sweep": {"dir": str(tmp_path)}}})
    SweepSummary().on_multirun_end(config)
    assert (tmp_path / "sweep_summary.json").is_file() is written


def test_the_callback_never_fails_the_sweep(tmp_path, capsys):
    from omegaconf import OmegaConf

    from lopt_cli.scripts.sweep_summary import SweepSummary

    config = OmegaConf.create({"hydra": {"job": {"name": "meta-train"},
                                         "sweep": {"dir": str(tmp_path / "none")}}})
    SweepSummary().on_multirun_end(config)
    assert "lopt: no sweep summary:" in capsys.readouterr().err


def make_self_train_job(sweep, number: int, overrides: list[str], finals: dict | None):
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: self-train\n")
    (job / ".hydra" / "config.yaml").write_text("learned_optimizer: default\n")
    if finals is not None:
        (job / "summary.json").write_text(json.dumps({"final_meta_loss": finals}))
    return job


def test_a_self_training_sweep_counts_the_jobs_the_learned_outer_optimizer_wins(tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    make_self_train_job(tmp_path, 0, ["learned_optimizer=default", "seed=0"],
                        {"learned outer optimizer": 0.133, "AdamW": 0.200})
    make_self_train_job(tmp_path, 1, ["learned_optimizer=default", "seed=1"],
                        {"learned outer optimizer": 0.300, "AdamW": 0.291})
    stopped = make_self_train_job(tmp_path, 2, ["learned_optimizer=default", "seed=2"], None)
    summary = summarize_sweep(tmp_path)
    assert [(j["overrides"], j["lower"]) for j in summary["jobs"]] == [
        (["seed=0"], "learned"), (["seed=1"], "AdamW"), (["seed=2"], None)]
    assert summary["jobs"][2]["state"] == (f"unfinished: lopt self-train resume={stopped} "
                                           "learned_optimizer=default")
    assert (summary["learned_lower"], summary["finished"]) == (1, 2)
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "ends lower in 1 of 2 finished jobs" in text
    assert "| 0 | seed=0 | finished | 0.133 | 0.2 | learned |" in text
    assert not (tmp_path / "meta_loss.png").exists()
    main([str(tmp_path)])
    assert "self-training sweep: 3 jobs" in capsys.readouterr().out


def test_a_sweep_directory_given_as_a_learned_optimizer_names_its_jobs_and_the_best(tmp_path):
    from lopt_cli.errors import LoptUserError
    from lopt_cli.optimizers.storage import WEIGHTS_FILE, resolve_weights_path

    for number, losses in ((0, [1.0, 0.9]), (1, [1.0, 0.4])):
        job = make_job(tmp_path, number, [f"seed={number}"], losses)
        (job / WEIGHTS_FILE).write_bytes(b"w")
    with pytest.raises(LoptUserError, match=r"a sweep directory; give one of its jobs \(0, 1"):
        resolve_weights_path(tmp_path)
    summarize_sweep(tmp_path)
    with pytest.raises(LoptUserError, match=f"the best in its sweep_summary.json: {tmp_path}/1"):
        resolve_weights_path(tmp_path)
    with pytest.raises(LoptUserError, match="the directory holds no learned_optimizer.msgpack"):
        resolve_weights_path(tmp_path / "0" / ".hydra")


def test_a_keep_best_job_is_judged_by_the_check_of_the_theta_it_published(tmp_path):
    job = make_job(tmp_path, 0, ["heldout.keep_best=true"], [1.0, 0.8, 0.6],
                   heldout={1: 0.5, 2: 0.9})
    summary = json.loads((job / "summary.json").read_text())
    (job / "summary.json").write_text(json.dumps({**summary, "best_heldout_loss": 0.5,
                                                  "best_heldout_step": 1}))
    assert job_record(job, [])["published_heldout_loss"] == 0.5
