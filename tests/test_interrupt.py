"""Ctrl-C and SIGTERM: a long command stops at a consistent point and says, in one line, what
it kept and how to continue (exit status 130); a second Ctrl-C stops at once. The meta-training
side (a checkpoint after the step, a bitwise resume) is in ``test_resume.py``."""
from __future__ import annotations

import os
import signal

import pytest
from tests_support import compose_config

from lopt_cli.commands.common import guarded
from lopt_cli.evaluation.cache import RunCache
from lopt_cli.interrupt import RunStopped, stop_requests


def deliver(signum: int) -> None:
    """Sends ``signum`` to this process; Python runs its handler before the next line."""
    os.kill(os.getpid(), signum)


@pytest.fixture(autouse=True)
def interactive_sigint():
    """SIGINT as in a foreground process, whatever started the tests (a shell's background
    job ignores it, and its children inherit that)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_asks_to_stop_and_the_handlers_come_back_after(signum, capsys):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_requests("meta-train") as requested:
        assert not requested()
        deliver(signum)
        assert requested()
    assert {s: signal.getsignal(s) for s in before} == before
    line = capsys.readouterr().err.strip()
    assert line == (f"lopt: {signal.Signals(signum).name}: meta-train stops after its current "
                    "step (Ctrl-C again to stop at once)")


def test_a_second_ctrl_c_stops_at_once():
    with stop_requests("meta-train") as requested:
        deliver(signal.SIGINT)
        assert requested()
        with pytest.raises(KeyboardInterrupt):
            deliver(signal.SIGINT)


def test_a_stop_and_a_ctrl_c_are_one_line_and_exit_status_130(capsys):
    def stops(cfg):
        raise RunStopped("stopped after outer step 3 of 9; continue with: lopt ...")

    def interrupted(cfg):
        raise KeyboardInterrupt

    for run, line in ((stops, "lopt: stopped after outer step 3 of 9; continue with: lopt ..."),
                      (interrupted, "lopt: interrupted")):
        with pytest.raises(SystemExit) as exit_:
            guarded(run)(None)
        assert exit_.value.code == 130
        assert capsys.readouterr().err.strip() == line


def test_an_interrupted_benchmark_says_what_its_cache_keeps(monkeypatch, capsys, tmp_path):
    """Ctrl-C during ``lopt evaluate benchmark=...``: finished runs are in the cache (each
    written atomically), so the same command continues from them; the line says so."""
    from lopt_cli.commands import evaluate
    from lopt_cli.evaluation import benchmark

    def interrupted(spec, candidates, cache, *progress_and_parts):
        cache.computed, cache.hits = 2, 5
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "run_benchmark", interrupted)
    monkeypatch.setenv("LOPT_CACHE_DIR", str(tmp_path))
    cfg = compose_config("evaluate", ["benchmark=lopt_bench_small", "learned_optimizer=adam"])
    with pytest.raises(SystemExit) as exit_:
        evaluate.run(cfg)
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"lopt: interrupted; the 2 runs computed and 5 read are cached in "
        f"{RunCache(tmp_path / 'eval').directory}: the same command continues from them")
    assert RunCache(None).interrupted() == ("interrupted; nothing is kept (cache=false): 0 runs "
                                            "were computed")


def test_a_benchmark_stopped_mid_part_continues_it_to_the_uninterrupted_results(tmp_path):
    """Stopped after the first of two segments of its first part, the benchmark names the part
    and keeps its state; the same call again computes the rest, gives the results of a run
    never stopped, and leaves no partial files."""
    import dataclasses
    import itertools

    import numpy as np

    from lopt_cli.evaluation.benchmark import (
        BenchmarkSpec,
        BenchmarkTask,
        MeasureSettings,
        optimizers_of,
        run_benchmark,
        run_description,
    )
    from lopt_cli.evaluation.cache_contents import run_labels, stopped_parts
    from lopt_cli.evaluation.candidates import resolve_candidate
    from lopt_cli.evaluation.partial_runs import PartStore
    from lopt_cli.evaluation.search_spaces import AdamLR
    from task_definitions.quadratic import QuadraticConfig, QuadraticFamily

    task = BenchmarkTask("q", QuadraticFamily(), QuadraticConfig(4, 10.0, 0.5, 1.0, 0), 8)
    spec = BenchmarkSpec("tiny", (task,), {"AdamLR": AdamLR()}, {"AdamLR": 2, "candidates": 2},
                         (1,), MeasureSettings(2, 4, 1, 0.5), long_horizon=8)
    candidates = [resolve_candidate("adam", 0.1, 10.0)]
    never_stopped = run_benchmark(spec, candidates, RunCache(tmp_path / "other"))
    polls = itertools.count(1)
    parts = PartStore(tmp_path / "partial", lambda: next(polls) == 1)
    cache = RunCache(tmp_path / "eval")
    with pytest.raises(RunStopped, match=r"^q: AdamLR: stopped after segment 1 of 2$"):
        run_benchmark(spec, candidates, cache, parts=parts)
    assert cache.computed == 0 and any((tmp_path / "partial").rglob("state.msgpack"))
    [kept] = stopped_parts(tmp_path)  # named for `lopt cache`
    assert (kept.label, kept.stopped) == ("q: AdamLR", "stopped after segment 1 of 2")
    again = run_benchmark(spec, candidates, cache, parts=parts)
    assert cache.computed == 2 and not any((tmp_path / "partial").iterdir())
    assert sorted(run_labels(tmp_path / "eval").values()) == ["q: AdamLR", "q: adam"]
    # each run records how long it took, scaled up for the segment read back (no time here)
    timing = cache.peek(run_description(task, optimizers_of(spec, candidates)[0], spec))["timing"]
    assert timing["runs"] == 2 * 2 and timing["horizon"] == 8 and timing["seconds"] > 0
    for group in ("baselines", "candidates"):
        for name, runs in never_stopped["q"][group].items():
            for split, values in runs["final"].items():
                np.testing.assert_array_equal(again["q"][group][name]["final"][split], values)
    assert dataclasses.asdict(spec.measure)["num_points"] == 4  # 2 segments of 2 points


def test_off_the_main_thread_no_handler_is_set_and_no_stop_is_asked():
    import threading

    seen = []

    def worker():
        with stop_requests("meta-train") as requested:
            seen.append((requested(), signal.getsignal(signal.SIGINT)))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(False, signal.getsignal(signal.SIGINT))]


def test_an_ignored_signal_stays_ignored():
    """A shell's background job starts with SIGINT ignored: it stays so; SIGTERM still stops."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_requests("meta-train") as requested:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            deliver(signal.SIGINT)
            assert not requested()
            deliver(signal.SIGTERM)
            assert requested()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_parallel_sweep_stop_tells_its_jobs_through_a_file_and_cleans_up(capsys):
    """The sweep's process makes the stop file at the first signal (SIGTERM to it alone, as
    ``kill <pid>`` sends); a job's own stop requests then read true without a signal of its
    own; afterwards the environment and the file are as before."""
    from lopt_cli.interrupt import SWEEP_STOP_ENV, sweep_stop_requests, sweep_stopped

    assert SWEEP_STOP_ENV not in os.environ
    with sweep_stop_requests() as requested:
        stop_file = os.environ[SWEEP_STOP_ENV]
        assert not requested() and not sweep_stopped() and not os.path.exists(stop_file)
        deliver(signal.SIGTERM)
        assert requested() and sweep_stopped() and os.path.exists(stop_file)
        with stop_requests("meta-train") as job_requested:  # as a job sees it
            assert job_requested()
    assert SWEEP_STOP_ENV not in os.environ and not os.path.exists(stop_file)
    assert "SIGTERM: every job of the sweep stops after its current step or segment" in \
        capsys.readouterr().err


def test_a_job_of_a_parallel_sweep_returns_on_a_stop_and_does_not_start_after_one(
        monkeypatch, tmp_path, capsys):
    """A stopped job returns (the sweep waits for the others, then exits 130) instead of
    raising SystemExit, which would make the launcher kill the other jobs mid-step."""
    from lopt_cli.interrupt import SWEEP_STOP_ENV

    stop_file = tmp_path / "stop"
    monkeypatch.setenv(SWEEP_STOP_ENV, str(stop_file))
    ran = []

    def stops(cfg):
        ran.append(cfg)
        raise RunStopped("stopped after outer step 3 of 9")

    assert guarded(stops)("job 0") is None and ran == ["job 0"]
    assert capsys.readouterr().err.strip() == "lopt: stopped after outer step 3 of 9"
    stop_file.touch()  # the sweep was asked to stop: a job not started yet does not start
    assert guarded(stops)("job 1") is None and ran == ["job 0"]
    assert capsys.readouterr().err.strip() == "lopt: not started, the sweep was asked to stop"


def test_only_a_sweep_whose_jobs_are_processes_is_run_as_a_parallel_sweep():
    from lopt_cli.cli import parallel_sweep

    assert parallel_sweep(["seed=0,1", "hydra/launcher=joblib", "--multirun"])
    assert not parallel_sweep(["seed=0,1", "--multirun"])  # jobs in this process
    assert not parallel_sweep(["seed=0,1", "hydra/launcher=basic", "--multirun"])
    assert not parallel_sweep(["hydra/launcher=joblib"])  # one run, no sweep
