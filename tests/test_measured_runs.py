"""Benchmark runs in segments of the horizon: the same numbers whatever the split, and the
progress a long run reports after each segment (the bar's row and the log's lines)."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from rich.console import Console

from lopt_cli.evaluation.benchmark import BenchmarkSpec, BenchmarkTask, MeasureSettings
from lopt_cli.evaluation.measured_runs import host_loop_curves, segments_of, trial_curves
from lopt_cli.evaluation.search_spaces import AdamLR
from task_definitions.base import stack_tasks
from task_definitions.quadratic import QuadraticConfig, QuadraticFamily
from tests.test_benchmark import poisoned_results  # noqa: F401 (a fixture)

MEASURE = MeasureSettings(num_seeds=2, num_points=8, eval_batches=2, final_fraction=0.5)
HORIZON = 16


def quadratic(seed: int, noise: float = 0.5):
    return QuadraticFamily().build(QuadraticConfig(6, 30.0, noise, 1.0, seed))


def curves(task, segments: int, stacked: bool = False, host_loop: bool = False) -> tuple:
    """The curves of 2 AdamLR trials × 2 seeds in ``segments`` segments, and how many
    segments reported done."""
    space, done = AdamLR(), []
    args = (space, None, space.trials(2), task, MEASURE.keys(), MEASURE.eval_keys(), HORIZON,
            MEASURE.num_points)
    if host_loop:
        out = host_loop_curves(*args, segments=segments, segment_done=lambda: done.append(1))
    else:
        out = trial_curves(*args, stacked=stacked, segments=segments,
                           segment_done=lambda: done.append(1))
    return out, len(done)


def test_segments_are_the_largest_divisor_up_to_ten_of_two_points_or_more():
    assert [segments_of(n) for n in (50, 40, 64, 13, 8, 4, 3, 2, 1)] == [10, 10, 8, 1, 4, 2, 1,
                                                                          1, 1]
    assert segments_of(50, max_segments=4) == 2


@pytest.mark.parametrize("layout", ["vmapped", "stacked", "host_loop"])
def test_a_run_split_into_segments_gives_exactly_the_unsplit_numbers(layout):
    """Every segment continues the same state with the same keys: splitting 8 measurements in
    2 or 4 segments changes no bit of any curve (noisy batches, so the keys matter), and each segment
    reports once it has run (per trial and seed on the host loop)."""
    stacked = layout == "stacked"
    task = stack_tasks([quadratic(1), quadratic(2)]) if stacked else quadratic(1)
    whole, _ = curves(task, 1, stacked, layout == "host_loop")
    per_call = 2 * 2 if layout == "host_loop" else 1
    for segments in (2, 4):
        split, done = curves(task, segments, stacked, layout == "host_loop")
        assert done == segments * per_call
        assert whole.keys() == split.keys()
        for name in whole:
            assert split[name].shape == whole[name].shape
            np.testing.assert_array_equal(split[name], whole[name])
    points = np.asarray(whole["train"])
    assert points.shape[-3:] == (2, 2, MEASURE.num_points)  # trial, seed, point
    assert not np.allclose(points[..., 0, :], points[..., 1, :])  # seeds differ: keys used


def stoppable_curves(task, layout: str, store, done: list, restored: list | None = None
                     ) -> dict:
    """:func:`curves`' runs (4 segments) with a part store; ``done`` gets a 1 per segment run,
    ``restored`` the count of each batch of segments read back."""
    space = AdamLR()
    args = (space, None, space.trials(2), task, MEASURE.keys(), MEASURE.eval_keys(), HORIZON,
            MEASURE.num_points)
    report = {"segment_done": lambda: done.append(1),
              "segments_restored": (restored if restored is not None else []).append}
    if layout == "host_loop":
        return host_loop_curves(*args, segments=4, store=store, **report)
    return trial_curves(*args, stacked=layout == "stacked", segments=4, store=store, **report)


@pytest.mark.parametrize("layout, stop_at_poll", [("vmapped", 1), ("stacked", 2),
                                                  ("host_loop", 1), ("host_loop", 8)])
def test_a_part_stopped_between_segments_continues_to_the_same_bytes(layout, stop_at_poll,
                                                                     tmp_path, monkeypatch):
    """Asked to stop at a segment boundary (on the host loop: also after whole trial × seed
    runs, poll 8 is in the third of four), the part saves its state and raises RunStopped; run
    again, it continues from there to exactly the uninterrupted curves, its progress counting
    the restored segments; its files go once it is discarded."""
    import itertools

    from lopt_cli.evaluation.partial_runs import PartStore
    from lopt_cli.interrupt import RunStopped

    task = stack_tasks([quadratic(1), quadratic(2)]) if layout == "stacked" else quadratic(1)
    whole = stoppable_curves(task, layout, None, [])
    polls = itertools.count(1)
    store = PartStore(tmp_path / "part", lambda: next(polls) == stop_at_poll)
    first_try = []
    with pytest.raises(RunStopped, match="stopped after segment"):
        stoppable_curves(task, layout, store, first_try)
    assert any((tmp_path / "part").rglob("state.msgpack"))
    from lopt_cli.evaluation import measured_runs

    advanced, advance = [], measured_runs.advance_trials
    monkeypatch.setattr(measured_runs, "advance_trials",
                        lambda *a, **k: advanced.append(1) or advance(*a, **k))
    done, restored = [], []
    resumed = stoppable_curves(task, layout, store._replace(stop_requested=lambda: False), done,
                               restored)
    per_part = 4 * (4 if layout == "host_loop" else 1)  # segments × (trial, seed) runs
    assert 0 < len(first_try) < per_part and sum(restored) == len(first_try)
    assert len(advanced) == len(done) == per_part - len(first_try)  # none run twice
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])
    store.discard()
    assert not (tmp_path / "part").exists()


def test_segments_that_do_not_divide_the_points_are_refused():
    with pytest.raises(ValueError, match="3 segments do not divide 8 points"):
        curves(quadratic(1), 3)


# ---------------------------------------------------------------- progress while it runs


def recorded_progress(events: list):
    from lopt_cli.evaluation.benchmark import RunProgress

    return RunProgress(finished=lambda label: events.append(("finished", label)),
                       started=lambda label, parts: events.append(("started", label, parts)),
                       part_done=lambda: events.append(("part",)))


@pytest.mark.parametrize("mode, runs", [("never", 1), ("always", 3 * 2)])
def test_a_computed_run_is_announced_before_it_runs_and_counts_its_segments(
        poisoned_results, mode, runs, tmp_path):  # noqa: F811 (the fixture)
    """``started`` names the run about to be computed and how many segments it runs one after
    another (its measurements split in :func:`segments_of` parts, once vmapped or per trial ×
    seed on the host loop); a cached run is not announced, only finished."""
    from lopt_cli.evaluation.benchmark import run_benchmark
    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.candidates import resolve_candidate

    spec, _ = poisoned_results
    spec = dataclasses.replace(spec, host_loop=mode, measure=dataclasses.replace(
        spec.measure, num_seeds=2, num_points=4))
    parts = runs * 2  # 8 steps, 4 measurements: 2 segments of 2
    candidates = [resolve_candidate("adam", 0.1, 10.0)]
    cache, events = RunCache(None), []
    run_benchmark(spec, candidates, cache, recorded_progress(events))
    expected = []
    for name in ("AdamLR", "adam"):
        label = f"poisoned: {name}"
        expected += [("started", label, parts), *[("part",)] * parts, ("finished", label)]
    assert events == expected

    cached, events = dataclasses.replace(spec, host_loop="never"), []
    run_benchmark(cached, candidates, RunCache(tmp_path))
    run_benchmark(cached, candidates, RunCache(tmp_path), recorded_progress(events))
    assert events == [("finished", "poisoned: AdamLR"), ("finished", "poisoned: adam")]


def logged_lines(monkeypatch, every: str) -> list[str]:
    """The log (not a terminal) of a run of 4 segments, then a cached one."""
    from lopt_cli.commands.benchmark_progress import benchmark_progress
    from lopt_cli.console import progress_bar

    monkeypatch.setenv("LOPT_PROGRESS_EVERY", every)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with progress_bar(console=console) as progress:
        report = benchmark_progress(progress, console, "tiny", total=2)
        report.started("conv: adam", 4)
        for _ in range(4):
            report.part_done()
        report.finished("conv: adam")
        report.finished("conv: AdamLR")  # cached: never started
    return [line for line in out.getvalue().splitlines()  # the lines, not the bar's last frame
            if line.startswith("tiny:") and "━" not in line]


def test_the_log_names_the_run_and_its_segments_with_an_eta(monkeypatch):
    """Off a terminal: what starts (with its segments), a line on the segments with the run's
    ETA every ``LOPT_PROGRESS_EVERY`` seconds (0: each), and what ends."""
    lines = logged_lines(monkeypatch, "0")
    assert lines[0] == "tiny: running conv: adam (4 segments)"
    assert [line.split(", elapsed")[0] for line in lines[1:5]] == [
        f"tiny:   conv: adam: segments: {k}/4 ({25 * k}%)" for k in range(1, 5)]
    assert all("ETA" in line for line in lines[1:5])
    assert lines[5].startswith("tiny: 1/2 conv: adam; elapsed")
    assert lines[6].startswith("tiny: 2/2 conv: AdamLR; elapsed") and lines[6].endswith("ETA 0s")


def test_the_segment_eta_leaves_out_the_first_segment(monkeypatch):
    """The first segment also compiles: each segment line's ETA is given its duration."""
    import lopt_cli.commands.benchmark_progress as progress_module

    firsts = []

    def recorded(label, done, total, elapsed, first=None, paced=None):
        firsts.append(first)
        return f"{label}: {done}/{total}"

    monkeypatch.setattr(progress_module, "count_line", recorded)
    logged_lines(monkeypatch, "0")
    assert len(firsts) == 4 and firsts[0] is not None and set(firsts) == {firsts[0]}


def test_a_continued_run_says_so_and_paces_its_eta_on_the_segments_it_runs(monkeypatch):
    """Two of four segments read back from a stopped run: one line says so, and the ETA of
    the rest comes from the segments run now (the first of which also compiles)."""
    from lopt_cli.commands.benchmark_progress import benchmark_progress
    from lopt_cli.console import progress_bar

    monkeypatch.setenv("LOPT_PROGRESS_EVERY", "0")
    clock = iter(range(0, 1000, 10))  # each heartbeat reading 10 s after the last
    monkeypatch.setattr("lopt_cli.console.Heartbeat.elapsed",
                        property(lambda self: float(next(clock))))
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with progress_bar(console=console) as progress:
        report = benchmark_progress(progress, console, "tiny", total=1)
        report.started("conv: adam", 4)
        report.restored(2)
        report.part_done()
        report.part_done()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("tiny:")]
    assert lines[1] == "tiny:   conv: adam: 2/4 segments read back from a stopped run"
    # 10 s for the one segment run so far, one to go: 10 s (counting the two read back, 5 s)
    assert lines[2] == "tiny:   conv: adam: segments: 3/4 (75%), elapsed 10s, ETA 10s"
    assert lines[3].startswith("tiny:   conv: adam: segments: 4/4 (100%)")


def test_the_segment_lines_wait_for_the_heartbeat(monkeypatch):
    """A short run (every segment well inside an hour) logs its start and end only."""
    lines = logged_lines(monkeypatch, "3600")
    assert lines[0] == "tiny: running conv: adam (4 segments)"
    assert not any("segments:" in line for line in lines)
    assert len(lines) == 3


def test_a_benchmark_spec_still_builds_with_its_defaults():
    """The spec's fields are unchanged by the segments (they are derived, not configured), so
    the cache keys of earlier runs still match."""
    fields = [f.name for f in dataclasses.fields(MeasureSettings)]
    assert fields == ["num_seeds", "num_points", "eval_batches", "final_fraction", "seed"]
    task = BenchmarkTask("q", QuadraticFamily(), QuadraticConfig(4, 1.0, 0.0, 1.0, 0), 8)
    assert BenchmarkSpec("tiny", (task,), {}, {}, (1,), MEASURE, 8).host_loop == "auto"


def test_a_damaged_kept_state_is_ignored_and_the_part_starts_afresh(tmp_path):
    from lopt_cli.evaluation.partial_runs import PartStore

    task = quadratic(1)
    whole = stoppable_curves(task, "vmapped", None, [])
    store = PartStore(tmp_path / "part")
    store.directory.mkdir()
    (store.directory / "state.msgpack").write_bytes(b"\x93not a state")
    done = []
    again = stoppable_curves(task, "vmapped", store, done)
    assert len(done) == 4  # every segment run
    for name in whole:
        np.testing.assert_array_equal(again[name], whole[name])


def test_the_bar_weighs_each_part_by_its_predicted_seconds_and_read_back_work_is_no_pace():
    """With predicted seconds, the bar moves by them (per segment within a part), a cached
    part moves it by nothing, and segments read back move it without counting as work done
    at the pace measured."""
    from lopt_cli.commands.benchmark_progress import benchmark_progress
    from lopt_cli.console import progress_bar

    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    predicted = {"conv: adam": 100.0, "mlp: adam": 300.0}
    with progress_bar(console=console) as progress:
        report = benchmark_progress(progress, console, "tiny", total=3, predicted=predicted)
        bar = progress.tasks[0]
        assert bar.total == 400.0
        report.started("conv: adam", 4)
        report.part_done()
        report.part_done()
        assert bar.completed == 50.0
        report.finished("conv: adam")
        report.finished("conv: AdamLR")  # cached: not predicted, moves nothing
        assert bar.completed == 100.0 and bar.description == "tiny: 2/3 conv: AdamLR"
        report.started("mlp: adam", 3)
        report.restored(1)  # a third read back from a stopped run
        assert bar.completed == 200.0
        report.part_done()
        report.part_done()
        report.finished("mlp: adam")
        assert bar.completed == 400.0


def test_the_paced_estimate_counts_read_back_work_as_done_but_not_as_pace():
    from lopt_cli.evaluation.benchmark_cost import PacedEstimate

    estimate = PacedEstimate({"a": 100.0, "b": 300.0})
    assert estimate.remaining_seconds(0.0) == 400.0  # nothing done: the prediction as it is
    estimate.advance("a", 0.5)
    assert estimate.remaining_seconds(10.0) == 350.0 * (10.0 / 50.0)
    estimate.skip("b", 1 / 3)  # read back: 100 predicted seconds done in no time
    assert estimate.remaining_seconds(10.0) == pytest.approx(250.0 * (10.0 / 50.0))
    assert estimate.finish("a", 0.5) == 50.0 and estimate.finish("cached", 0.0) == 0.0
    assert estimate.remaining_seconds(20.0) == pytest.approx(200.0 * (20.0 / 100.0))


def test_predicted_seconds_leave_out_cached_parts_and_weigh_bigger_tasks_more(tmp_path):
    from lopt_cli.evaluation.benchmark import (
        BenchmarkSpec,
        BenchmarkTask,
        MeasureSettings,
        optimizers_of,
        run_description,
    )
    from lopt_cli.evaluation.benchmark_cost import COMPILE_SECONDS, predicted_parts, step_cost
    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.candidates import resolve_candidate
    from lopt_cli.evaluation.search_spaces import AdamLR
    from task_definitions.quadratic import QuadraticConfig, QuadraticFamily

    tasks = tuple(BenchmarkTask(name, QuadraticFamily(), QuadraticConfig(dim, 10.0, 0.5, 1.0, 0),
                                1000) for name, dim in (("small", 4), ("big", 256)))
    spec = BenchmarkSpec("tiny", tasks, {"AdamLR": AdamLR()}, {"AdamLR": 2, "candidates": 2},
                         (1,), MeasureSettings(2, 4, 1, 0.5), long_horizon=8)
    candidates = [resolve_candidate("adam", 0.1, 10.0)]
    cache = RunCache(tmp_path)
    adam_lr = optimizers_of(spec, candidates)[0]
    cache.store(run_description(tasks[0], adam_lr, spec), {"final": {}})  # one part cached
    predicted = predicted_parts(spec, candidates, cache)
    assert sorted(predicted) == ["big: AdamLR", "big: adam", "small: adam"]
    assert predicted["big: adam"] > predicted["small: adam"] > COMPILE_SECONDS
    assert step_cost(tasks[1].task).flops > step_cost(tasks[0].task).flops > 0
    # once another optimizer's run of a task is timed, its parts are predicted from that time
    timed = {"final": {}, "timing": {"seconds": 40.0, "runs": 4, "horizon": 1000}}
    cache.store(run_description(tasks[1], adam_lr, spec), timed)
    again = predicted_parts(spec, candidates, cache)
    assert sorted(again) == ["big: adam", "small: adam"]
    # 2 trials × 2 seeds at 0.01 s per step (Adam's update, taken out and added back: ~0)
    assert again["big: adam"] == pytest.approx(40.0 * (2 * 2) / 4, rel=1e-3)
    assert again["small: adam"] == predicted["small: adam"]  # still from its step's cost

    # the plan reads each part of the cache once, and agrees with the prediction
    from lopt_cli.commands.evaluate_benchmark import plan_parts

    reads = []
    peek = cache.peek
    cache.peek = lambda description: reads.append(description) or peek(description)
    parts = plan_parts(spec, candidates, cache)
    assert len(reads) == len(parts) == 4
    assert {f"{p['task']}: {p['optimizer']}": p["predicted_seconds"] for p in parts
            if p["predicted_seconds"] is not None} == pytest.approx(again)
    assert [p["recorded_seconds"] for p in parts if p["predicted_seconds"] is None] == [None, 40.0]

    class Unbuildable:
        def init(self, key):
            raise ValueError("no")

    assert step_cost(Unbuildable()) == (0.0, 0.0, 0.0)


def test_an_update_with_newton_schulz_is_predicted_dearer_than_adam_from_the_same_record(
        tmp_path):
    """Muon orthogonalises every matrix each step (5 Newton–Schulz iterations of 3 products):
    on a wide MLP that is most of its step. Predicted from Adam's recorded time alone, a part of
    ``muon`` was 8× too short (2 min 42 s predicted, 22 min taken on mlp_wide_deep_digits)."""
    from lopt_cli.evaluation.benchmark import optimizers_of, run_description
    from lopt_cli.evaluation.benchmark_cost import predicted_parts, update_cost
    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.candidates import resolve_candidate
    from task_definitions.mlp import MLPConfig, MLPFamily

    width = 256
    task = BenchmarkTask("wide", MLPFamily(), MLPConfig("digits", (width, width), "relu", 32,
                                                        1.0, 0), 1000)
    spec = BenchmarkSpec("tiny", (task,), {"AdamLR": AdamLR()}, {"AdamLR": 2, "candidates": 2},
                         (1,), MeasureSettings(2, 4, 1, 0.5), long_horizon=8)
    candidates = [resolve_candidate(name, 0.1, 10.0) for name in ("adam", "muon")]
    adam_lr, adam, muon = optimizers_of(spec, candidates)
    adam_flops, muon_flops = (update_cost(o, task.task, 1000).flops for o in (adam, muon))
    newton_schulz = 5 * 3 * 2 * width ** 3  # the square matrix alone, at least
    assert muon_flops - adam_flops > newton_schulz > 0 < adam_flops

    cache = RunCache(tmp_path)
    cache.store(run_description(task, adam_lr, spec),
                {"final": {}, "timing": {"seconds": 4.0, "runs": 4, "horizon": 1000}})
    predicted = predicted_parts(spec, candidates, cache)
    assert predicted["wide: adam"] == pytest.approx(4.0, rel=0.05)  # 0.001 s per run and step
    # its Newton–Schulz products alone at the full rate: 4 runs × 1000 steps × 7.7 ms
    assert predicted["wide: muon"] > 5 * predicted["wide: adam"]


def test_an_update_is_predicted_to_touch_its_inputs_and_outputs_once():
    """An update is one fused elementwise chain: Adam reads gradients, parameters and two
    moments and writes updates and two moments, 7 floats per parameter. XLA's count before
    fusion was 5× that for Adam and 11× for the default's per-parameter MLP, which predicted
    its parts of ``lopt_bench`` up to 4× too long on a 2-core Zen 4."""
    import jax

    from lopt_cli.evaluation.benchmark import optimizers_of
    from lopt_cli.evaluation.benchmark_cost import update_cost
    from lopt_cli.evaluation.candidates import resolve_candidate
    from task_definitions.mlp import MLPConfig, MLPFamily

    task = BenchmarkTask("mlp", MLPFamily(), MLPConfig("digits", (32,), "relu", 16, 1.0, 0), 100)
    spec = BenchmarkSpec("tiny", (task,), {"AdamLR": AdamLR()}, {"AdamLR": 2, "candidates": 2},
                         (1,), MeasureSettings(2, 4, 1, 0.5), long_horizon=8)
    adam = optimizers_of(spec, [resolve_candidate("adam", 0.1, 10.0)])[1]
    size = sum(leaf.size for leaf in jax.tree.leaves(jax.eval_shape(task.task.init,
                                                                     jax.random.PRNGKey(0))))
    assert update_cost(adam, task.task, 100).bytes == pytest.approx(7 * 4 * size, rel=0.01)


def test_matmul_flops_count_a_scan_body_once_per_step():
    """XLA's cost analysis counts a scan's body once; the jaxpr count multiplies by its length,
    so a recurrent net's step is not predicted several times too cheap."""
    import jax
    import jax.numpy as jnp

    from lopt_cli.evaluation.benchmark_cost import matmul_flops

    def recurrent(w, x):
        def body(h, _):
            return jnp.tanh(h @ w), None

        h, _ = jax.lax.scan(body, x, None, length=7)
        return (h @ w).sum()  # one more product outside the scan

    product = 2 * 2 * 4 * 4  # [2, 4] @ [4, 4]
    jaxpr = jax.make_jaxpr(recurrent)(jnp.ones((4, 4)), jnp.ones((2, 4))).jaxpr
    assert matmul_flops(jaxpr) == (product, 7 * product)  # (outside, inside the scan)
    gradient = jax.make_jaxpr(jax.grad(recurrent))(jnp.ones((4, 4)), jnp.ones((2, 4))).jaxpr
    assert matmul_flops(gradient) == (3 * product, 3 * 7 * product)  # + 2 backward products
