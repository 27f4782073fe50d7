"""A digest of the source code behind a task family or a learned optimizer, for cache keys.

A cached evaluation run is only valid for the code that computed it: a change to a task's
initialisation or data pipeline changes every run on it. :func:`code_digest` hashes the source
files of the object's module and of every module it imports (at the top or inside a function,
read from the source) inside the same packages, transitively. An edit to a helper such as
``task_definitions/orthogonal.py`` changes the digest of the recurrent families that use it;
an edit to an unrelated family does not.

What is hashed is each module's syntax tree without its docstrings (:func:`behaviour_bytes`),
not its text: an edit to a docstring, a comment or the layout keeps every cached run, any
change to the code itself (a constant, an expression, a default) invalidates them. Until
December 2026 the text was hashed, so a docstring edit recomputed every run of an optimizer.

The files are read when a digest is asked for, not when the code was imported. A command that
computes for an hour wraps its work in :func:`sources_read_once` and asks for every digest it
will need at its start: an edit made while it runs then changes none of its cache keys, so
runs computed by the code in memory are never stored under the edited code's key.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def code_digest(obj: Any, packages: Iterable[str] = ()) -> str:
    """SHA-256 (32 hex digits) of the sources of :func:`code_modules` of ``obj``."""
    hasher = hashlib.sha256()
    for name in code_modules(obj, packages):
        hasher.update(name.encode("utf-8") + b"\0" + behaviour_bytes(_source_bytes(name)) + b"\0")
    return hasher.hexdigest()[:32]


class _WithoutDocstrings(ast.NodeTransformer):
    """Drops every statement that is a bare string (docstrings of modules, classes and
    functions, and strings documenting attributes): they do nothing when run."""

    def visit_Expr(self, node: ast.Expr):
        is_text = isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        return None if is_text else node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if isinstance(getattr(node, "body", None), list) and not node.body:
            node.body = [ast.Pass()]  # a body that held only its docstring
        return node


def behaviour_bytes(source: bytes) -> bytes:
    """What the digest hashes of one module: the dump of its syntax tree without docstrings
    (comments and layout are not in the tree), or the raw ``source`` when it does not parse.

    >>> behaviour_bytes(b"'Doc.'\\nX = 1  # note\\n") == behaviour_bytes(b"X = (1)\\n")
    True
    >>> behaviour_bytes(b"X = 1\\n") == behaviour_bytes(b"X = 2\\n")
    False
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    return ast.dump(_WithoutDocstrings().visit(tree)).encode("utf-8")


def task_code(family: Any) -> str:
    """The digest of a task family's code: its module and the ``task_definitions`` it uses."""
    return code_digest(family, ("task_definitions",))


# The code that turns (task, optimizer, settings) into a cached run's numbers, besides the
# task's and a learned optimizer's own code (in their digests above): the inner training, the
# measured runs, the hand-designed baselines' optax code, and the few functions of larger
# modules that shape the stored values. "module" hashes the module, "module:name" one top-level
# definition of it (so an edit elsewhere in that module keeps the cache).
MEASURING_CODE = (
    "lopt_cli.inner.unroll",
    "lopt_cli.inner.curves",
    "lopt_cli.evaluation.runs",
    "lopt_cli.evaluation.measured_runs",
    "lopt_cli.evaluation.placement",
    "lopt_cli.evaluation.search_spaces",
    "lopt_cli.optimizers.baselines",
    "lopt_cli.evaluation.benchmark:MeasureSettings",
    "lopt_cli.evaluation.benchmark:summarize_curves",
    "lopt_cli.evaluation.candidates:make_optimizer",
    "lopt_cli.evaluation.compare:final_value",
    "task_definitions.task_ids:seed_keys",
)


def measuring_code_digest(items: Iterable[str] = MEASURING_CODE) -> str:
    """SHA-256 (32 hex digits) of :data:`MEASURING_CODE`: each module's, or each named
    definition's, syntax tree without docstrings."""
    hasher = hashlib.sha256()
    for item in items:
        module, _, name = item.partition(":")
        source = _source_bytes(module)
        hasher.update(item.encode("utf-8") + b"\0" + (
            definition_bytes(source, name) if name else behaviour_bytes(source)) + b"\0")
    return hasher.hexdigest()[:32]


def definition_bytes(source: bytes, name: str) -> bytes:
    """The dump of the top-level function or class ``name`` of ``source`` without docstrings
    (empty when there is none: a renamed definition changes the digest).

    >>> a = b"def f(x):\\n    'Doc.'\\n    return x\\n\\ndef g():\\n    return 1\\n"
    >>> b = b"def f(x):\\n    return x  # same\\n\\ndef g():\\n    return 2\\n"
    >>> definition_bytes(a, "f") == definition_bytes(b, "f") != definition_bytes(a, "g")
    True
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.name == name:
            return ast.dump(_WithoutDocstrings().visit(node)).encode("utf-8")
    return b""


def code_modules(obj: Any, packages: Iterable[str] = ()) -> list[str]:
    """The sorted names of ``obj``'s module and the modules it imports inside ``packages``,
    transitively (the package of the object's own module is always one of them)."""
    root = _module_name(obj)
    if not root:
        return []
    own_package = root.rpartition(".")[0] or root
    return sorted(_reachable(root, tuple(sorted({own_package, *packages}))))


def _module_name(obj: Any) -> str | None:
    if inspect.ismodule(obj):
        return obj.__name__
    target = obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj)
    return getattr(target, "__module__", None)


def _in_scope(name: str, scope: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(f"{package}.") for package in scope)


@functools.cache
def _reachable(start: str, scope: tuple[str, ...]) -> frozenset[str]:
    seen, frontier = {start}, [start]
    while frontier:
        for name in _imports(frontier.pop(), scope):
            if name not in seen:
                seen.add(name)
                frontier.append(name)
    return frozenset(seen)


def _imports(module: str, scope: tuple[str, ...]) -> set[str]:
    """The modules inside ``scope`` that ``module``'s source imports (``from a import b``: ``a``,
    and ``a.b`` where that is a module), relative imports resolved."""
    source = _source_bytes(module)
    try:
        tree = ast.parse(source) if source else None
    except SyntaxError:
        tree = None
    if tree is None:
        return set()
    package = module if _is_package(module) else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            if not _in_scope(base, scope):
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names
                         if _source_path(f"{base}.{alias.name}") is not None)
    return {name for name in names if name and _in_scope(name, scope)}


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def _is_package(module: str) -> bool:
    path = _source_path(module)
    return path is not None and path.name == "__init__.py"


@functools.cache
def _source_path(module: str) -> Path | None:
    """Where ``module``'s source is, without importing it (``None``: none found)."""
    loaded = sys.modules.get(module)
    origin = getattr(loaded, "__file__", None)
    if origin is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
    return Path(origin) if origin and str(origin).endswith(".py") else None


_sources_read: dict[str, bytes] | None = None  # within sources_read_once: module -> source


@contextlib.contextmanager
def sources_read_once() -> Iterator[None]:
    """Within: each module's source file is read at most once, at the first digest that needs
    it, and every later digest uses that reading (nested uses share the outer one)."""
    global _sources_read
    if _sources_read is not None:
        yield
        return
    _sources_read = {}
    try:
        yield
    finally:
        _sources_read = None


def _source_bytes(module: str) -> bytes:
    if _sources_read is not None and module in _sources_read:
        return _sources_read[module]
    path = _source_path(module)
    try:
        source = path.read_bytes() if path is not None else b""
    except OSError:
        source = b""
    if _sources_read is not None:
        _sources_read[module] = source
    return source
