"""The examples in the docstrings run and give what they show (``>>>`` lines in ``lopt_cli/``,
``task_definitions/`` and ``benchmarks/``): a docstring's example is documentation that can
rot, and one did (an escaped newline written as a real one)."""
from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lopt_cli", "task_definitions", "benchmarks")


def modules_with_examples() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8"):
                parts = path.relative_to(ROOT).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_modules_with_examples_are_found():
    assert "lopt_cli.evaluation.code_version" in modules_with_examples()


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def docstrings(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every module, class and function docstring in ``path``, as Python
    reads it (escapes resolved)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [tree] + [node for node in ast.walk(tree) if isinstance(
        node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return [(getattr(node, "lineno", 1), doc) for node in nodes
            if (doc := ast.get_docstring(node, clean=False))]


def test_no_docstring_holds_a_control_character():
    """A backslash in a docstring that is not raw is an escape: ``\\beta`` there is a backspace
    and ``\\theta`` a tab (three were found in December 2026). Write ``\\\\beta`` or use
    ``r\"\"\"``."""
    found = [f"{path.relative_to(ROOT)}:{line}" for package in PACKAGES
             for path in sorted((ROOT / package).rglob("*.py"))
             for line, doc in docstrings(path)
             if any(ord(c) < 32 and c not in "\n" for c in doc)]
    assert not found, found
