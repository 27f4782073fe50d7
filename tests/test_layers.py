"""The layer order of the README, enforced: no module imports from a layer above its own.

Every ``import`` of every module in ``lopt_cli/`` and ``task_definitions/`` is read from its AST
(imports inside functions included) and mapped to a layer. Lowest first:

0. utilities: ``lopt_cli.errors``, ``lopt_cli.io``, ``lopt_cli.config``, ``lopt_cli.console``
1. tasks: ``task_definitions``
2. optimizers: ``lopt_cli.optimizers`` (and the ``lopt_cli`` package facade, ``load_optimizer``)
3. inner training: ``lopt_cli.inner`` (the unroll, curves, the lopt-as-task family)
4. meta-training ``lopt_cli.meta`` and evaluation ``lopt_cli.evaluation``: peers, neither
   imports the other
5. commands: ``lopt_cli.commands``, ``lopt_cli.scripts``, ``lopt_cli.cli``, ``lopt_cli.__main__``

A module may import its own layer and any layer below it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lopt_cli", "task_definitions")
# (module prefix, layer name, rank): the longest matching prefix wins.
LAYERS = (
    ("lopt_cli.errors", "utilities", 0),
    ("lopt_cli.io", "utilities", 0),
    ("lopt_cli.config", "utilities", 0),
    ("lopt_cli.console", "utilities", 0),
    ("lopt_cli.interrupt", "utilities", 0),
    ("task_definitions", "tasks", 1),
    ("lopt_cli", "optimizers", 2),  # the package facade: lopt_cli.load_optimizer
    ("lopt_cli.optimizers", "optimizers", 2),
    ("lopt_cli.pretrained", "optimizers", 2),
    ("lopt_cli.inner", "inner", 3),
    ("lopt_cli.meta", "meta", 4),
    ("lopt_cli.evaluation", "evaluation", 4),
    ("lopt_cli.commands", "commands", 5),
    ("lopt_cli.scripts", "commands", 5),
    ("lopt_cli.cli", "commands", 5),
    ("lopt_cli.__main__", "commands", 5),
)


def layer_of(module: str) -> tuple[str, int] | None:
    """``(layer name, rank)`` of a module of this project; None for third-party modules."""
    matches = [(len(prefix), name, rank) for prefix, name, rank in LAYERS
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1:] if matches else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported_modules(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, relative ones resolved; ``from a import
    b`` counts as ``a.b`` when that is a module of the project."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in known else base))
    return list(dict.fromkeys(found))


def violations() -> list[str]:
    modules = project_modules()
    bad = []
    for module, path in sorted(modules.items()):
        own = layer_of(module)
        for line, target in imported_modules(path, module, set(modules)):
            theirs = layer_of(target)
            if own is None or theirs is None:
                continue
            upward = theirs[1] > own[1]
            sideways = theirs[1] == own[1] and theirs[0] != own[0]
            if upward or sideways:
                where = f"{path.relative_to(ROOT)}:{line}"
                bad.append(f"{where}: {own[0]} module {module} imports {theirs[0]} {target}")
    return bad


def test_every_module_has_a_layer():
    assert [m for m in project_modules() if layer_of(m) is None] == []


def test_no_import_runs_up_or_sideways_between_the_layers():
    assert violations() == []


@pytest.mark.parametrize(("source", "target"), [
    ("task_definitions/fake.py", "lopt_cli.inner.unroll"),  # tasks -> inner: up
    ("lopt_cli/optimizers/fake.py", "lopt_cli.evaluation.plots"),  # optimizers -> evaluation
    ("lopt_cli/meta/fake.py", "lopt_cli.evaluation.plots"),  # peers: sideways
    ("lopt_cli/evaluation/fake.py", "lopt_cli.meta.outer"),  # peers: sideways
    ("lopt_cli/inner/fake.py", "lopt_cli.commands.common"),  # inner -> commands: up
])
def test_the_walk_catches_an_import_inside_a_function(tmp_path, monkeypatch, source, target):
    """The check itself: an up or sideways import, hidden in a function body, is reported."""
    fake = ROOT / source
    monkeypatch.setattr(Path, "rglob", _with_extra(Path.rglob, fake))
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        f"def f():\n    import {target}\n" if self == fake else real_read(self, *a, **k)))
    assert any(source in v and target in v for v in violations())


def _with_extra(rglob, extra: Path):
    def patched(self, pattern):
        found = list(rglob(self, pattern))
        return found + [extra] if extra.is_relative_to(self) and extra not in found else found

    return patched
