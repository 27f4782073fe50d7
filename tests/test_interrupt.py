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

    def interrupted(spec, candidates, cache, progress):
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
