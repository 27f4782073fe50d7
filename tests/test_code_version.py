"""Cached evaluation runs are keyed by the code that computed them (``code_version``)."""
from __future__ import annotations

import dataclasses
import sys
from types import SimpleNamespace

import pytest

from lopt_cli.evaluation import code_version
from lopt_cli.evaluation.benchmark import BenchmarkTask, Optimizer, run_description
from lopt_cli.evaluation.cache import cache_key
from lopt_cli.evaluation.code_version import code_digest, code_modules, task_code
from task_definitions.char_rnn import CharRNNFamily
from task_definitions.mlp import MLPFamily


def test_a_family_reaches_the_helpers_it_imports_even_inside_functions():
    rnn = code_modules(CharRNNFamily, ("task_definitions",))
    assert "task_definitions.orthogonal" in rnn  # the recurrent init
    assert "task_definitions.datasets" in rnn  # imported inside a function
    assert "task_definitions.orthogonal" not in code_modules(MLPFamily, ("task_definitions",))
    assert all(name.startswith("task_definitions") for name in rnn)


def test_digests_are_stable_and_differ_between_families():
    assert task_code(CharRNNFamily()) == task_code(CharRNNFamily)
    assert task_code(CharRNNFamily) != task_code(MLPFamily)


@pytest.fixture
def scratch_package(tmp_path, monkeypatch):
    """A package ``scratchpkg`` whose family module imports a helper inside a function."""
    package = tmp_path / "scratchpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("SCALE = 1.0\n")
    (package / "family.py").write_text(
        "class Family:\n    def build(self):\n        from . import helper\n"
        "        return helper.SCALE\n")
    (package / "unrelated.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    for name in [n for n in sys.modules if n.startswith("scratchpkg")]:
        del sys.modules[name]
    code_version._reachable.cache_clear()
    code_version._source_path.cache_clear()


def test_an_edit_to_an_imported_helper_changes_the_digest_an_unrelated_one_does_not(
        scratch_package):
    from scratchpkg.family import Family

    before = code_digest(Family)
    assert code_modules(Family) == ["scratchpkg", "scratchpkg.family", "scratchpkg.helper"]
    (scratch_package / "unrelated.py").write_text("X = 2\n")
    assert code_digest(Family) == before
    (scratch_package / "helper.py").write_text("SCALE = 2.0\n")
    assert code_digest(Family) != before


def test_the_benchmark_cache_key_holds_the_task_code(monkeypatch):
    from task_definitions.mlp import MLPConfig

    @dataclasses.dataclass
    class Measure:
        seed: int = 0

    class Space:
        def trials(self, n, seed):
            return {"learning_rate": [1e-3] * n}

    task = BenchmarkTask("t", MLPFamily(), MLPConfig("digits", (8,), "relu", 32, 1.0, 0), 100)
    spec = SimpleNamespace(measure=Measure())
    optimizer = Optimizer("baselines", "AdamLR", Space(), None, "adam", 2)
    key = cache_key(run_description(task, optimizer, spec))
    assert run_description(task, optimizer, spec)["code"] == task_code(MLPFamily)
    monkeypatch.setattr("lopt_cli.evaluation.benchmark.task_code", lambda family: "edited")
    assert cache_key(run_description(task, optimizer, spec)) != key


def test_a_learned_candidate_identity_holds_its_architecture_code():
    from lopt_cli.evaluation.candidates import resolve_candidate
    from lopt_cli.optimizers.storage import load_learned_optimizer, resolve_weights_path

    lopt, _, _ = load_learned_optimizer(resolve_weights_path("default"))
    candidate = resolve_candidate("default", 0.1, 10.0)
    assert code_digest(lopt) in candidate.identity
    assert "lopt_cli.optimizers.adam_nominal" in code_modules(lopt)


def test_the_paper_style_cache_keys_hold_the_task_code():
    from lopt_cli.evaluation.runs import RunSettings
    from lopt_cli.evaluation.suite import baseline_runs, learned_runs

    class RecordingCache:
        def __init__(self):
            self.descriptions, self.labels = [], []

        def get(self, description, compute, label=""):
            self.descriptions.append(description)
            self.labels.append(label)
            return {}

    class Space:
        def trials(self, n, seed):
            return {"learning_rate": [1e-3] * n}

    ref = SimpleNamespace(family=MLPFamily(), description={"task_id": 0}, task=None, task_id=0,
                          label="mlp #0")
    spec = SimpleNamespace(max_trials=2, run=RunSettings(100, 10, 1, 0.1))
    cache = RecordingCache()
    baseline_runs(ref, Space(), spec, cache, "AdamLR")
    learned_runs(ref, None, None, "0123456789abcdef:code", spec, cache)
    learned_runs(ref, None, None, "0123456789abcdef:code", spec, cache, "default")
    assert [d["code"] for d in cache.descriptions] == [task_code(MLPFamily)] * 3
    assert cache.descriptions[1] == cache.descriptions[2]  # the name is no part of the key
    assert cache.labels == ["mlp #0: AdamLR", "mlp #0: learned (0123456789ab)",
                            "mlp #0: default (0123456789ab)"]


def test_docstrings_comments_and_layout_keep_the_digest_code_changes_do_not(scratch_package):
    from scratchpkg.family import Family

    before = code_digest(Family)
    (scratch_package / "helper.py").write_text(
        '"""The scale, documented."""\n# a comment\nSCALE = (1.0)  # why\n"""Its meaning."""\n')
    (scratch_package / "family.py").write_text(
        "class Family:\n    '''A family.'''\n\n    def build(self):\n"
        "        '''Builds.'''\n        from . import helper  # inside\n\n"
        "        return helper.SCALE\n")
    assert code_digest(Family) == before
    (scratch_package / "helper.py").write_text('"""The scale."""\nSCALE = 1.5\n')
    assert code_digest(Family) != before
    (scratch_package / "helper.py").write_text("SCALE = 1.0\n")
    (scratch_package / "family.py").write_text(
        "class Family:\n    def build(self):\n        from . import helper\n"
        "        return -helper.SCALE\n")
    assert code_digest(Family) != before


def test_within_sources_read_once_an_edit_keeps_every_digest(scratch_package):
    """A long command reads each source once: an edit while it runs keys nothing it computes
    differently; after it, the edit counts again."""
    from scratchpkg.family import Family

    before = code_digest(Family)
    with code_version.sources_read_once():
        assert code_digest(Family) == before
        (scratch_package / "helper.py").write_text("SCALE = 2.0\n")
        with code_version.sources_read_once():  # nested: the outer reading
            assert code_digest(Family) == before
        assert code_digest(Family) == before
    assert code_digest(Family) != before


def test_a_benchmark_keys_every_run_at_its_start_whatever_is_edited_meanwhile(monkeypatch):
    """Each call of ``task_code`` below stands for a source edited since the last one. The runs
    are looked up and stored under the keys made before the first run; before that rule, the
    stored key differed from the looked-up one and the benchmark failed after computing."""
    import itertools

    from lopt_cli.evaluation import benchmark
    from lopt_cli.evaluation.benchmark import BenchmarkSpec, MeasureSettings, run_benchmark
    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.candidates import resolve_candidate
    from lopt_cli.evaluation.search_spaces import AdamLR
    from task_definitions.quadratic import QuadraticConfig, QuadraticFamily

    tasks = tuple(BenchmarkTask(name, QuadraticFamily(), QuadraticConfig(dim, 10.0, 0.0, 1.0, 0), 8)
                  for name, dim in (("a", 4), ("b", 8)))
    spec = BenchmarkSpec("tiny", tasks, {"AdamLR": AdamLR()}, {"AdamLR": 2, "candidates": 2},
                         (1,), MeasureSettings(1, 2, 1, 0.5), long_horizon=8)
    edits = itertools.count()
    monkeypatch.setattr(benchmark, "task_code", lambda family: f"edit {next(edits)}")
    cache, looked_up, stored = RunCache(None), [], []
    lookup, store = cache.lookup, cache.store
    monkeypatch.setattr(cache, "lookup",
                        lambda d, label="": looked_up.append(d["code"]) or lookup(d, label))
    monkeypatch.setattr(cache, "store",
                        lambda d, v, label="": stored.append(d["code"]) or store(d, v, label))
    results = run_benchmark(spec, [resolve_candidate("adam", 0.1, 10.0)], cache)
    assert looked_up == stored == [f"edit {n}" for n in range(4)]  # 2 tasks × 2 optimizers
    assert set(results) == {"a", "b"} and cache.computed == 4


def test_every_piece_of_the_measuring_code_is_found():
    """A renamed module or definition would silently drop out of the digest."""
    for item in code_version.MEASURING_CODE:
        module, _, name = item.partition(":")
        source = code_version._source_bytes(module)
        assert source, item
        assert not name or code_version.definition_bytes(source, name), item


def test_an_edit_to_the_measuring_code_changes_its_digest_a_docstring_does_not():
    module = "lopt_cli.evaluation.measured_runs"
    original = code_version._source_bytes(module)
    with code_version.sources_read_once():
        before = code_version.measuring_code_digest()
    for edit, changes in ((b"\n'A docstring-like note.'\n# and a comment\n", False),
                          (b"\nEXTRA_CONSTANT = 1\n", True)):
        with code_version.sources_read_once():
            code_version._sources_read[module] = original + edit
            assert (code_version.measuring_code_digest() != before) is changes
    with code_version.sources_read_once():  # one definition of a larger module, not the rest
        code_version._sources_read["lopt_cli.evaluation.compare"] = (
            code_version._source_bytes("lopt_cli.evaluation.compare") + b"\nOTHER = 2\n")
        assert code_version.measuring_code_digest() == before


def test_runs_of_edited_measuring_code_are_computed_again_and_found_after_a_revert(
        tmp_path, monkeypatch):
    """The cache's first measuring code keys its runs as before (no digest in the key); an
    edited one keys them by its digest, so nothing computed by other code is read back."""
    from lopt_cli.evaluation.cache import FIRST_CODE_FILE, RunCache

    first = code_version.measuring_code_digest()
    RunCache(tmp_path).store({"run": 1}, {"final": [1.0]})
    assert (tmp_path / FIRST_CODE_FILE).read_text().strip() == first
    assert RunCache(tmp_path).keyed({"run": 1}) == {"run": 1}  # keys as before the digest
    monkeypatch.setattr(code_version, "measuring_code_digest", lambda: "edited")
    edited = RunCache(tmp_path)
    assert edited.keyed({"run": 1}) == {"run": 1, "measuring_code": "edited"}
    assert edited.lookup({"run": 1}) is None
    edited.store({"run": 1}, {"final": [2.0]})
    monkeypatch.setattr(code_version, "measuring_code_digest", lambda: first)  # reverted
    assert RunCache(tmp_path).lookup({"run": 1}) == {"final": [1.0]}
    (tmp_path / FIRST_CODE_FILE).write_text("damaged")  # never another code's runs
    assert RunCache(tmp_path).lookup({"run": 1}) is None
    assert RunCache(None).keyed({"run": 1}) == {"run": 1}


def test_a_hand_designed_candidate_identity_holds_its_code(monkeypatch):
    """``muon`` lives outside the measuring code: an edit to its module must key its runs anew
    (before, its identity was its name alone and the old runs were read back)."""
    from lopt_cli.evaluation.candidates import resolve_candidate
    from lopt_cli.optimizers import baselines, muon, opt_list

    identities = {name: resolve_candidate(name, 0.1, 10.0).identity
                  for name in ("muon", "adam", "opt_list:0")}
    assert identities["muon"] == f"hand-designed:muon:{code_digest(muon.muon)}"
    assert identities["adam"] == f"hand-designed:adam:{code_digest(baselines.adam)}"
    assert identities["opt_list:0"] == (f"hand-designed:opt_list:0:{code_digest(opt_list.opt_list)}"
                                        f":settings:{opt_list.settings_digest()}")

    read = code_version._source_bytes
    monkeypatch.setattr(code_version, "_source_bytes", lambda module: read(module) + (
        b"\nRMS = 0.3\n" if module == "lopt_cli.optimizers.muon" else b""))
    assert resolve_candidate("muon", 0.1, 10.0).identity != identities["muon"]
    assert resolve_candidate("adam", 0.1, 10.0).identity == identities["adam"]


def test_opt_list_runs_are_keyed_by_its_settings_file(monkeypatch, tmp_path):
    """``data/opt_list.json`` is data, in no code digest: an edit to its settings must key
    ``opt_list``'s runs (the baseline and ``opt_list:K`` entries) anew; its metadata need not."""
    import json

    from lopt_cli.evaluation.benchmark import baseline_identity
    from lopt_cli.evaluation.candidates import resolve_candidate
    from lopt_cli.evaluation.search_spaces import AdamLR, OptList
    from lopt_cli.optimizers import opt_list

    before = (baseline_identity(OptList()), resolve_candidate("opt_list:0", 0.1, 10.0).identity,
              baseline_identity(AdamLR()))
    data = json.loads(opt_list.DATA_FILE.read_text())
    data["metadata"]["note"] = "an edit to the metadata"
    monkeypatch.setattr(opt_list, "DATA_FILE", tmp_path / "metadata.json")
    opt_list.DATA_FILE.write_text(json.dumps(data))
    assert (baseline_identity(OptList()), resolve_candidate("opt_list:0", 0.1, 10.0).identity,
            baseline_identity(AdamLR())) == before
    data["settings"][0]["learning_rate"] *= 2
    monkeypatch.setattr(opt_list, "DATA_FILE", tmp_path / "settings.json")
    opt_list.DATA_FILE.write_text(json.dumps(data))
    after = (baseline_identity(OptList()), resolve_candidate("opt_list:0", 0.1, 10.0).identity,
             baseline_identity(AdamLR()))
    assert after[0] != before[0] and after[1] != before[1] and after[2] == before[2]
