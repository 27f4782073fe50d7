"""``lopt cache``: what is kept between commands is listed, and removed only as asked."""
from __future__ import annotations

import json
import os
import time

import pytest

from lopt_cli.cli import main
from lopt_cli.evaluation.cache import (
    ABOUT_FILE,
    FIRST_CODE_FILE,
    LABELS_FILE,
    PARTIAL_DIR,
    RunCache,
    cache_key,
)
from lopt_cli.evaluation.cache_contents import (
    clear_compiled,
    clear_runs,
    clear_stopped,
    data_dir,
    run_files,
    run_labels,
    stopped_parts,
)

DAY = 86400.0


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A cache root with two labelled runs (one 40 days old), one unlabelled run, one named
    and one unnamed stopped part, three compiled programs and one built dataset."""
    monkeypatch.setenv("LOPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LOPT_JAX_CACHE", str(tmp_path / "jax"))
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path / "data"))
    eval_dir = tmp_path / "cache" / "eval"
    cache = RunCache(eval_dir)
    cache.store({"run": 1}, {"final": [1.0]}, "mlp_wide_digits: AdamLR")
    cache.store({"run": 2}, {"final": [2.0]}, "mlp_wide_digits: adam_nominal_wsd")
    cache.store({"run": 3}, {"final": [3.0]})  # stored before runs were labelled
    old = eval_dir / f"{cache_key({'run': 1})}.json"
    os.utime(old, (time.time() - 40 * DAY,) * 2)
    named = eval_dir / PARTIAL_DIR / "a"
    named.mkdir(parents=True)
    (named / "state.msgpack").write_bytes(b"x" * 100)
    (named / ABOUT_FILE).write_text(json.dumps(
        {"label": "transformer_wide: AdamLR", "stopped": "stopped after segment 4 of 10"}))
    unnamed = eval_dir / PARTIAL_DIR / "b"
    unnamed.mkdir()
    (unnamed / "state.msgpack").write_bytes(b"y" * 10)
    for index in range(3):
        (tmp_path / "jax").mkdir(exist_ok=True)
        (tmp_path / "jax" / f"program{index}").write_bytes(b"z" * 1000)
    os.utime(tmp_path / "jax" / "program0", (time.time() - 40 * DAY,) * 2)
    (tmp_path / "data" / "digits" / "1.0.0").mkdir(parents=True)
    return eval_dir


def test_a_stored_run_is_labelled_and_a_damaged_label_line_is_skipped(places):
    labels = run_labels(places)
    assert sorted(labels.values()) == ["mlp_wide_digits: AdamLR",
                                       "mlp_wide_digits: adam_nominal_wsd"]
    with open(places / LABELS_FILE, "a") as handle:
        handle.write("{not json\n")
    assert run_labels(places) == labels
    assert len(run_files(places)) == 3


def test_a_run_stored_before_labels_is_labelled_when_it_is_read_back(places):
    unlabelled = cache_key({"run": 3})
    assert unlabelled not in run_labels(places)
    cache = RunCache(places)
    assert cache.lookup({"run": 3}, "quadratic_ill_64: AdamLR") == {"final": [3.0]}
    cache.lookup({"run": 3}, "quadratic_ill_64: AdamLR")  # read again: no second line
    RunCache(places).get({"run": 1}, lambda: {}, "renamed")  # a labelled run keeps its label
    assert run_labels(places)[unlabelled] == "quadratic_ill_64: AdamLR"
    assert run_labels(places)[cache_key({"run": 1})] == "mlp_wide_digits: AdamLR"
    assert len((places / LABELS_FILE).read_text().splitlines()) == 3


def test_stopped_parts_are_named_from_their_about_file(places):
    parts = {p.path.name: p for p in stopped_parts(places)}
    assert (parts["a"].label, parts["a"].stopped) == ("transformer_wide: AdamLR",
                                                      "stopped after segment 4 of 10")
    assert parts["a"].size == 100 + len((places / PARTIAL_DIR / "a" / ABOUT_FILE).read_bytes())
    assert (parts["b"].label, parts["b"].size) == ("", 10)


def test_runs_are_removed_by_label_and_age_and_their_labels_go_with_them(places):
    assert clear_runs(places, match="AdamLR", dry_run=True).entries == 1
    assert len(run_files(places)) == 3  # a dry run removes nothing
    assert clear_runs(places, match="adam_nominal", days=30).entries == 0  # it is new
    assert clear_runs(places, days=30).entries == 1  # the 40-day-old AdamLR run
    assert list(run_labels(places).values()) == ["mlp_wide_digits: adam_nominal_wsd"]
    assert clear_runs(places, match="adam_nominal").entries == 1
    [left] = run_files(places)  # a match never picks an unlabelled run
    assert left.stem == cache_key({"run": 3}) and run_labels(places) == {}
    assert clear_runs(places).entries == 1 and run_files(places) == []


def test_stopped_parts_and_compiled_programs_are_removed_as_asked(places, tmp_path):
    assert clear_stopped(places, match="transformer").entries == 1
    assert [p.path.name for p in stopped_parts(places)] == ["b"]
    assert clear_compiled(tmp_path / "jax", days=30, dry_run=True) == (1, 1000)
    assert clear_compiled(tmp_path / "jax", days=30).entries == 1
    assert sorted(p.name for p in (tmp_path / "jax").iterdir()) == ["program1", "program2"]
    assert clear_compiled(None) == (0, 0)  # the compile cache turned off


def test_the_datasets_directory_is_the_one_the_tasks_use(monkeypatch, tmp_path):
    from task_definitions.datasets import default_data_dir

    monkeypatch.delenv("LOPT_DATA_DIR", raising=False)
    assert data_dir() == default_data_dir()
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
    assert data_dir() == default_data_dir() == tmp_path


def test_lopt_cache_shows_every_place_and_the_stopped_parts(places, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    main(["cache"])
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.startswith("│")}
    assert rows["evaluation runs"][1:3][0] == "3"
    assert rows["stopped benchmark parts"][1] == "2"
    assert rows["compiled programs"][1:3] == ["3", "3.0 kB"]
    assert rows["built datasets"][1] == "1"
    assert rows["transformer_wide: AdamLR"][0] == "stopped after segment 4 of 10"
    assert "(not named: running now, or killed before it could stop)" in rows
    assert ("evaluation runs by optimizer: (unlabelled: stored before labels) 1, AdamLR 1, "
            "adam_nominal_wsd 1") in out
    assert "the code this cache first ran: its runs are read back" in out
    (places / FIRST_CODE_FILE).write_text("0" * 32)
    main(["cache"])
    assert f"not the code this cache first ran ({'0' * 32})" in capsys.readouterr().out
    for unkeyed in ("", None):  # an empty record is read as no record, as the export reads it
        if unkeyed is None:
            (places / FIRST_CODE_FILE).unlink()
        else:
            (places / FIRST_CODE_FILE).write_text(unkeyed)
        main(["cache"])
        assert "(the cache has not keyed a run yet)" in capsys.readouterr().out


def test_lopt_cache_clear_removes_and_says_how_much(places, capsys, tmp_path):
    from lopt_cli.commands.cache import human_size

    run_bytes = {p.stem: p.stat().st_size for p in run_files(places)}
    part_bytes = sum(p.size for p in stopped_parts(places))
    main(["cache", "clear=all", "dry_run=true"])
    assert capsys.readouterr().out.splitlines() == [
        f"would remove 3 evaluation runs ({human_size(sum(run_bytes.values()))})",
        f"would remove 2 stopped benchmark parts ({part_bytes} B)",
        "would remove 3 compiled programs (3.0 kB)"]
    main(["cache", "clear=stopped", "older_than_days=0"])
    assert capsys.readouterr().out == f"removed 2 stopped benchmark parts ({part_bytes} B)\n"
    main(["cache", "clear=all", "match=AdamLR"])  # compiled programs have no label: kept
    assert capsys.readouterr().out.splitlines() == [
        f"removed 1 evaluation runs ({run_bytes[cache_key({'run': 1})]} B)",
        "removed 0 stopped benchmark parts (0 B)"]
    assert len(list((tmp_path / "jax").iterdir())) == 3


@pytest.mark.parametrize("args, message", [
    (["clear=everything"], "clear='everything': choose one of runs, stopped, compile, all"),
    (["older_than_days=-1", "clear=runs"], "older_than_days='-1': expected a number of days"),
    (["clear=runs", "dry_run=maybe"], "dry_run='maybe': expected true or false"),
    (["clear=compile", "match=x"], "match= selects runs or stopped parts"),
    (["match=AdamLR"], "give clear=runs|stopped|compile|all"),
    (["--all"], "'--all': expected one of clear=, match=, older_than_days=, dry_run="),
])
def test_a_bad_option_is_one_line_and_exit_status_2(places, capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        main(["cache", *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("lopt: error: ") and message in err
    assert len(err.splitlines()) == 1 and len(run_files(places)) == 3


def test_lopt_cache_help_lists_its_options(capsys):
    main(["cache", "--help"])
    out = capsys.readouterr().out
    assert "usage: lopt cache" in out and all(
        key in out for key in ("clear", "match", "older_than_days", "dry_run"))
    main(["--help"])
    assert "cache" in capsys.readouterr().out
