"""What a new user meets first: ``lopt tasks``, errors for a config group a command lacks, and
tables that stay readable at 80 columns and off a terminal."""
from __future__ import annotations

import io
import re

import pytest
from omegaconf import OmegaConf
from tests_support import CONF, compose_config

from lopt_cli.errors import LoptUserError

COMMANDS = {"meta-train": "meta_train", "evaluate": "evaluate", "self-train": "self_train",
            "tasks": "tasks"}


def all_groups() -> list[str]:
    """Every top-level config group under conf/ (Hydra's own excepted)."""
    return sorted(p.name for p in CONF.iterdir()
                  if p.is_dir() and p.name != "hydra" and any(p.glob("*.yaml")))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def own_groups(config_name: str) -> set[str]:
    """The groups named in a command's defaults list (read from its YAML, not composed)."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / f"{config_name}.yaml").defaults)
    groups = set()
    for entry in defaults:
        if isinstance(entry, str) and (CONF / f"{entry}.yaml").is_file():
            groups |= own_groups(entry)  # a composed primary config (self_train: meta_train)
        elif isinstance(entry, dict):  # `override hydra/...` entries pick Hydra's own groups
            groups |= {key.split("@")[0] for key in entry if not key.startswith("override ")}
    return groups


def test_lopt_tasks_without_arguments_lists_every_family(run_lopt):
    result = run_lopt("tasks")
    families = options("task_family")
    assert len(families) > 5
    for name in families:
        assert re.search(rf"^\W*{name}\b", result.stdout, re.MULTILINE), (name, result.stdout)
    assert "task_family._target_=" in result.stdout  # the `user` template, not instantiated


def test_lopt_tasks_rejects_a_bad_seed_with_its_own_error(run_lopt):
    result = run_lopt("tasks", "seed=abc", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "lopt: error: seed='abc': expected a non-negative integer"


def test_evaluate_names_the_group_it_takes_instead_of_compute(run_lopt, tmp_path):
    result = run_lopt("evaluate", "compute=smoke", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "`lopt evaluate` does not take compute" in lines[0]
    assert "did you mean budget=smoke?" in lines[0]
    assert "budget=full|small|smoke" in lines[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_group_a_command_lacks_is_named_as_such(command):
    from lopt_cli.commands.validation import validate_overrides

    config_name = COMMANDS[command]
    own, missing = own_groups(config_name), set(all_groups()) - own_groups(config_name)
    assert own and missing
    for group in sorted(missing):
        option = options(group)[0]
        with pytest.raises(LoptUserError) as error:
            validate_overrides(config_name, [f"{group}={option}"], lambda cfg: None)
        message = str(error.value)
        assert f"`lopt {command}` does not take {group}" in message, message
        assert "choose one of" not in message
        for name in own:
            assert f"{name}={'|'.join(options(name))}" in message, message


def rendered_cells(text: str) -> list[list[str]]:
    """The cells of each row of a rendered rich table, wrapped lines joined with spaces."""
    rows: list[list[list[str]]] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells[0]:
            rows.append([[] for _ in cells])
        for fragments, cell in zip(rows[-1], cells):
            if cell:
                fragments.append(cell)
    return [[" ".join(fragments) for fragments in row] for row in rows]


def test_describe_table_at_80_columns_breaks_no_word():
    from rich.console import Console

    from lopt_cli.commands.common import build_family
    from lopt_cli.commands.tasks import describe_table
    from task_definitions.describe import describe_task, task_row

    family = build_family(compose_config("tasks", ["task_family=suite"]).task_family)
    records = [describe_task(family, task_id) for task_id in range(20)]
    console = Console(file=io.StringIO(), width=80)
    console.print(describe_table(family, records, 0))
    text = console.file.getvalue()
    assert max(map(len, text.splitlines())) <= 80
    expected = [task_row(record) for record in records]
    assert rendered_cells(text) == expected  # any word broken or cut would differ
    assert len({row[1] for row in expected}) > 3  # several families, one row per task
    assert all(len(row) == 6 for row in expected)


def test_tables_off_a_terminal_are_wide(monkeypatch):
    from lopt_cli.console import NON_TERMINAL_WIDTH, output_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_console(file=io.StringIO()).width == NON_TERMINAL_WIDTH
    monkeypatch.setenv("COLUMNS", "100")
    assert output_console(file=io.StringIO()).width == 100


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_lopt_python_and_the_libraries(run_lopt, flag):
    from importlib import metadata

    out = run_lopt(flag).stdout.splitlines()
    assert out[0].startswith(f"lopt {metadata.version('lopt')}")
    assert any(line == f"jax {metadata.version('jax')}" for line in out)
    assert any(line == f"optax {metadata.version('optax')}" for line in out)
    assert any(line.startswith("python 3.") for line in out)


def test_version_names_the_checkout_commit(monkeypatch):
    from lopt_cli import cli

    monkeypatch.setattr(cli, "source_commit", lambda: "abc1234+")
    assert cli.version_text().splitlines()[0].endswith("(commit abc1234+)")
    monkeypatch.setattr(cli, "source_commit", lambda: None)
    assert "commit" not in cli.version_text().splitlines()[0]


def test_source_commit_is_the_checkouts_head():
    import subprocess
    from pathlib import Path

    from lopt_cli.cli import source_commit

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        pytest.skip("not run from a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert source_commit().rstrip("+") == head
