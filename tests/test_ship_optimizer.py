"""``python -m lopt_cli.scripts.ship_optimizer``: a tiny meta-train run shipped with its model
card (facts from the run's records, embedded leaderboard and drop-in results), the default
pointer switched, and every refusal one line with nothing written."""
from __future__ import annotations

import json

import pytest
from test_cli import trained  # noqa: F401 - the tiny meta-train run, a module fixture

import lopt_cli
from lopt_cli.optimizers import storage
from lopt_cli.scripts import ship_optimizer


@pytest.fixture
def run_dir(trained):  # noqa: F811 - the imported fixture
    return trained


@pytest.fixture
def pretrained(tmp_path, monkeypatch):
    """An empty shipped-optimizer folder in place of lopt_cli/pretrained/."""
    folder = tmp_path / "pretrained"
    folder.mkdir()
    monkeypatch.setattr(storage, "PRETRAINED_DIR", folder)
    return folder


def dropin_result(tmp_path):
    summary = {"train": {"win": 3, "tie": 1, "loss": 2}, "test": {"win": 2, "tie": 0, "loss": 4},
               "problems": 6, "candidate_nonfinite": 0, "candidate_rose_late": 1,
               "adam_rose_late": 0}
    path = tmp_path / "dropin.json"
    path.write_text(json.dumps({"optimizer": "new", "steps": [1000], "rows": [],
                                "candidate_tuned_over_lr_grid": False,
                                "summary": {"1000": summary}}))
    return path


def test_ships_weights_card_and_default(run_dir, pretrained, tmp_path, capsys):
    leaderboard = tmp_path / "leaderboard.md"
    leaderboard.write_text("# Leaderboard\n\n| optimizer | IQM |\n|---|---|\n| new | 1.23 |\n")
    dropin = dropin_result(tmp_path)
    code = ship_optimizer.main([str(run_dir), "--name", "new", "--default",
                                "--leaderboard", str(leaderboard), "--dropin", str(dropin)])
    assert code == 0, capsys.readouterr()
    shipped = pretrained / "new"
    for file in (storage.WEIGHTS_FILE, storage.CONFIG_FILE, "meta_loss.png"):
        assert (shipped / file).read_bytes() == (run_dir / file).read_bytes()
    assert storage.default_shipped_name() == "new"
    lopt_cli.load_optimizer("default", 10)
    card = (shipped / "README.md").read_text()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for fact in ("lopt meta-train compute=smoke compute.num_outer_steps=4",  # the command
                 "task_definitions.quadratic.QuadraticFamily", "task ids 0 – 99,999",
                 "- outer steps: 4", f"{rows[0]['meta_loss']:.4g} at the first step",
                 "min in outer steps", "recorded by the run (`summary.json`)",
                 "usable of", 'load_optimizer("default", num_steps)', "It takes no learning rate",
                 "`lopt_cli/pretrained/DEFAULT` names the current default",
                 "### Leaderboard", "| new | 1.23 |",  # embedded, heading nested
                 "training loss 3 wins / 1 ties / 2 losses", "truncation_length: 10"):
        assert fact in card, fact
    assert "${" not in card and "?" not in card.replace("?)", "")


@pytest.mark.parametrize("case, message", [
    ("no weights", "no learned_optimizer.msgpack"),
    ("corrupt", "SHA-256 does not match"),
    ("exists", "exists; pass --force"),
    ("reserved", "--name 'default'"),
    ("missing dropin", "--dropin"),
    ("malformed dropin", "cannot be read (JSONDecodeError"),
    ("missing summary", "--summary"),
    ("malformed machine record", "cannot be read (JSONDecodeError"),
    ("hand-designed name", "--name 'adam'"),
])
def test_refusals_are_one_line_and_write_nothing(case, message, run_dir, pretrained, tmp_path,
                                                 capsys):
    source, args = run_dir, ["--name", "new"]
    if case == "no weights":
        source = tmp_path / "empty_run"
        source.mkdir()
    elif case == "corrupt":
        source = tmp_path / "corrupt_run"
        source.mkdir()
        for file in (storage.WEIGHTS_FILE, storage.CONFIG_FILE):
            (source / file).write_bytes((run_dir / file).read_bytes())
        weights = bytearray((source / storage.WEIGHTS_FILE).read_bytes())
        weights[-1] ^= 1
        (source / storage.WEIGHTS_FILE).write_bytes(bytes(weights))
    elif case == "exists":
        (pretrained / "new").mkdir()
    elif case == "reserved":
        args = ["--name", "default"]
    elif case == "missing dropin":
        args += ["--dropin", str(tmp_path / "nope.json")]
    elif case == "malformed dropin":
        (tmp_path / "bad.json").write_text("{not json")
        args += ["--dropin", str(tmp_path / "bad.json")]
    elif case == "missing summary":
        args += ["--summary", str(tmp_path / "nope.md")]
    elif case == "hand-designed name":
        args = ["--name", "adam"]
    elif case == "malformed machine record":
        import shutil

        source = tmp_path / "bad_machine_run"
        shutil.copytree(run_dir, source)
        (source / "summary.json").unlink()
        (source / "machine.json").write_text("{not json")
    before = sorted(p.name for p in pretrained.iterdir())
    assert ship_optimizer.main([str(source), *args, "--default"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert sorted(p.name for p in pretrained.iterdir()) == before


def test_force_replaces(run_dir, pretrained, capsys):
    assert ship_optimizer.main([str(run_dir), "--name", "new"]) == 0
    (pretrained / "new" / "stale.txt").write_text("old")
    assert ship_optimizer.main([str(run_dir), "--name", "new", "--force"]) == 0
    assert not (pretrained / "new" / "stale.txt").exists()
    assert not (pretrained / storage.DEFAULT_POINTER).exists()  # no --default: untouched


def test_hand_written_summary_sits_under_the_title_and_survives_a_reship(run_dir, pretrained,
                                                                         tmp_path, capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("**In short.** Measured with `lopt evaluate ...`: wins 3 of 4.\n")
    for force in ([], ["--force"]):  # the second ship regenerates the card from the run
        assert ship_optimizer.main([str(run_dir), "--name", "new", "--summary", str(summary),
                                    *force]) == 0, capsys.readouterr()
        lines = (pretrained / "new" / "README.md").read_text().splitlines()
        assert lines[:3] == ["# Model card: `new`", "", summary.read_text().strip()]
        assert lines[4].startswith("A learned optimizer")


def test_card_says_how_to_choose_the_learning_rate():
    config = {"_target_": "lopt_cli.optimizers.celo.CeloLOpt", "learning_rate": 0.002}
    rows = [{"candidate": {"by_train": {"learning_rate": lr}}} for lr in (1e-3, 3e-3, 1e-2)]
    text = " ".join(ship_optimizer.learning_rate_lines(
        "new", config, {"candidate_tuned_over_lr_grid": True, "rows": rows}))
    assert "takes a base learning rate, 0.002 as meta-trained" in text
    assert 'load_optimizer("new", num_steps, learning_rate=...)' in text
    assert "ranged 0.001 … 0.01 (median 0.003)" in text


def test_card_names_the_kept_best_heldout_theta(tmp_path):
    record = {"rows": [{"meta_loss": 1.0, "step": 0, "heldout_loss": 0.7,
                        "inner_steps_per_second": 10.0},
                       {"meta_loss": 0.5, "step": 1, "heldout_loss": 0.6,
                        "inner_steps_per_second": 10.0}],
              "summary": {"best_heldout_loss": 0.6, "best_heldout_step": 1}}
    lines = ship_optimizer.record_lines(tmp_path, record)
    assert "- shipped weights: the θ of the lowest held-out loss (0.6 at step 1, " \
           "`heldout.keep_best=true`), not the last one" in lines
    record["summary"] = {}
    assert not any("shipped weights" in line for line in ship_optimizer.record_lines(tmp_path,
                                                                                   record))


def test_a_run_stopped_before_its_summary_is_shipped_with_what_it_recorded(run_dir, pretrained,
                                                                           tmp_path):
    """A run killed by a time limit: no summary.json nor plot, machine.json from its start."""
    import shutil

    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir, stopped)
    (stopped / "summary.json").unlink()
    (stopped / "meta_loss.png").unlink()
    assert (stopped / "machine.json").is_file()  # meta-train wrote it when it started
    facts = json.loads((stopped / "machine.json").read_text())
    facts["cpu"] = "Recorded CPU 9000"
    (stopped / "machine.json").write_text(json.dumps(facts))
    assert ship_optimizer.main([str(stopped), "--name", "stopped"]) == 0
    card = (pretrained / "stopped" / "README.md").read_text()
    assert "recorded by the run at its start (`machine.json`): Recorded CPU 9000" in card
    assert (pretrained / "stopped" / "meta_loss.png").stat().st_size > 0  # drawn from its rows


def test_card_of_a_stopped_run_names_its_progress_and_kept_theta(tmp_path):
    rows = [{"meta_loss": 1.0, "step": 0, "heldout_loss": 0.7, "inner_steps_per_second": 10.0},
            {"meta_loss": 0.5, "step": 1, "heldout_loss": 0.6, "inner_steps_per_second": 10.0},
            {"meta_loss": 0.4, "step": 2, "heldout_loss": 0.65, "inner_steps_per_second": 10.0}]
    record = {"rows": rows, "summary": {},
              "config": {"compute": {"num_outer_steps": 40000}, "heldout": {"keep_best": True}}}
    lines = ship_optimizer.record_lines(tmp_path, record)
    assert "- the run stopped before its end (no `summary.json`): 3 of its 40,000 outer steps" \
        in lines
    assert any("the θ of the lowest held-out loss (0.6 at step 1" in line for line in lines)
