"""``lopt cache export=DIR`` / ``import=DIR``: runs computed on one machine are read back on
another by the same command, and never under keys they were not made for."""
from __future__ import annotations

import json

import pytest

from lopt_cli.cli import main
from lopt_cli.errors import LoptUserError
from lopt_cli.evaluation.cache import (
    ABOUT_FILE,
    FIRST_CODE_FILE,
    PARTIAL_DIR,
    RunCache,
    cache_key,
)
from lopt_cli.evaluation.cache_contents import run_labels, stopped_parts
from lopt_cli.evaluation.cache_transfer import export_runs, first_code, import_runs


def machine(root):
    """An evaluation cache with two labelled runs, one unlabelled, and one stopped part."""
    eval_dir = root / "eval"
    cache = RunCache(eval_dir)
    cache.store({"run": 1}, {"final": [1.0]}, "transformer_wide: AdamLR")
    cache.store({"run": 2}, {"final": [2.0]}, "transformer_wide: adam_nominal_wsd")
    cache.store({"run": 3}, {"final": [3.0]})
    part = eval_dir / PARTIAL_DIR / "p"
    part.mkdir(parents=True)
    (part / "state.msgpack").write_bytes(b"s" * 50)
    (part / ABOUT_FILE).write_text(json.dumps({"label": "char_gru_wide: AdamLR",
                                               "stopped": "stopped after segment 2 of 10"}))
    return eval_dir


def test_exported_runs_are_read_back_by_another_cache_under_the_same_keys(tmp_path):
    source = machine(tmp_path / "a")
    carried = export_runs(source, tmp_path / "export")
    assert (carried.runs, carried.parts, carried.present) == (3, 1, 0)
    target = tmp_path / "b" / "eval"
    assert import_runs(tmp_path / "export", target).runs == 3
    assert first_code(target) == first_code(source)
    cache = RunCache(target)
    assert cache.lookup({"run": 2}) == {"final": [2.0]}
    assert cache.get({"run": 4}, lambda: {"final": [4.0]}) == {"final": [4.0]}  # computed
    assert (cache.hits, cache.computed) == (1, 1)
    assert run_labels(target) == run_labels(source)
    assert [part.label for part in stopped_parts(target)] == ["char_gru_wide: AdamLR"]


def test_match_chooses_what_is_exported_and_dry_run_copies_nothing(tmp_path):
    source = machine(tmp_path / "a")
    assert export_runs(source, tmp_path / "dry", "AdamLR", dry_run=True).runs == 1
    assert not (tmp_path / "dry").exists()
    carried = export_runs(source, tmp_path / "export", "AdamLR")
    assert (carried.runs, carried.parts) == (1, 1)  # transformer_wide's run, char_gru's part
    assert list(run_labels(tmp_path / "export").values()) == ["transformer_wide: AdamLR"]
    assert sorted(p.name for p in (tmp_path / "export").glob("*.json")) == [
        f"{cache_key({'run': 1})}.json"]


def test_runs_already_there_are_kept_and_counted(tmp_path):
    source = machine(tmp_path / "a")
    target = machine(tmp_path / "b")  # the same code: the same keys
    (target / f"{cache_key({'run': 1})}.json").write_text('{"final": [9.0]}')
    carried = import_runs(source, target)
    assert (carried.runs, carried.parts, carried.present) == (0, 0, 3)
    assert RunCache(target).lookup({"run": 1}) == {"final": [9.0]}
    assert len(run_labels(target)) == 2  # no line written twice


def test_a_cache_that_first_ran_other_code_is_refused(tmp_path):
    source = machine(tmp_path / "a")
    target = tmp_path / "b" / "eval"
    target.mkdir(parents=True)
    (target / FIRST_CODE_FILE).write_text("0123456789abcdef\n")
    with pytest.raises(LoptUserError, match="0123456789abcdef.*fresh directory"):
        import_runs(source, target)
    with pytest.raises(LoptUserError, match="0123456789abcdef"):
        export_runs(source, target)
    assert not list(target.glob("*.json"))


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "no such directory"),
    (lambda root: root, "no lopt evaluation cache"),
])
def test_importing_what_is_no_cache_is_refused(tmp_path, make, message):
    with pytest.raises(LoptUserError, match=message):
        import_runs(make(tmp_path), tmp_path / "b" / "eval")


def test_lopt_cache_export_and_import_say_what_they_copied(tmp_path, monkeypatch, capsys):
    machine(tmp_path / "a")
    monkeypatch.setenv("LOPT_CACHE_DIR", str(tmp_path / "a"))
    main(["cache", f"export={tmp_path / 'export'}", "match=transformer"])
    assert "copied 2 evaluation runs and 0 stopped parts" in capsys.readouterr().out
    monkeypatch.setenv("LOPT_CACHE_DIR", str(tmp_path / "b"))
    main(["cache", f"import={tmp_path / 'export'}", "dry_run=true"])
    assert "would add 2 evaluation runs" in capsys.readouterr().out
    assert not (tmp_path / "b").exists()
    main(["cache", f"import={tmp_path / 'export'}"])
    assert "added 2 evaluation runs" in capsys.readouterr().out
    assert RunCache(tmp_path / "b" / "eval").lookup({"run": 1}) == {"final": [1.0]}


@pytest.mark.parametrize("args, message", [
    (["export=x", "import=y"], "one action each"),
    (["clear=runs", "export=x"], "one action each"),
    (["import=x", "match=AdamLR"], "match= chooses what export= copies"),
    (["export=x", "older_than_days=3"], "older_than_days= chooses what clear= removes"),
    (["import=/nonexistent/cache"], "no such directory"),
])
def test_a_bad_carrying_option_is_one_line_and_exit_status_2(tmp_path, monkeypatch, capsys,
                                                              args, message):
    monkeypatch.setenv("LOPT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as stopped:
        main(["cache", *args])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
