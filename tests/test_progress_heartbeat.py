"""Plain progress lines of a long meta-training run off a terminal (``LOPT_PROGRESS_EVERY``).

rich draws nothing off a terminal until the bar stops, so ``nohup lopt meta-train ... > log``
would show nothing for hours; the recorder prints a heartbeat line instead.
"""
from __future__ import annotations

import io
import re
from collections import deque

import numpy as np
import pytest
from rich.console import Console

from lopt_cli.commands.recorder import MetaTrainRecorder, heartbeat_line, recent_pace
from lopt_cli.console import HEARTBEAT_ENV, duration, heartbeat_seconds
from lopt_cli.errors import LoptUserError


def log_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=80)  # a log's default


def test_heartbeat_only_off_a_terminal_every_60_s_unless_set(monkeypatch):
    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    assert heartbeat_seconds(Console(file=io.StringIO(), force_terminal=True)) is None
    assert heartbeat_seconds(log_console()) == 60.0
    monkeypatch.setenv(HEARTBEAT_ENV, "0")
    assert heartbeat_seconds(log_console()) == 0.0
    monkeypatch.setenv(HEARTBEAT_ENV, " 300 ")
    assert heartbeat_seconds(log_console()) == 300.0


@pytest.mark.parametrize("bad", ["soon", "-5", "nan", "inf"])
def test_a_bad_interval_is_one_line_naming_the_variable(monkeypatch, bad):
    monkeypatch.setenv(HEARTBEAT_ENV, bad)
    with pytest.raises(LoptUserError, match=f"{HEARTBEAT_ENV} must be a number of seconds"):
        heartbeat_seconds(log_console())


@pytest.mark.parametrize("command", ["meta-train", "self-train", "evaluate"])
def test_the_cli_refuses_a_bad_interval_before_any_work(monkeypatch, tmp_path, capsys, command):
    from lopt_cli.cli import main

    monkeypatch.setenv(HEARTBEAT_ENV, "soon")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([command])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("lopt: error:") and HEARTBEAT_ENV in error and "\n" not in error
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing written


def test_durations_read_as_wall_time():
    assert [duration(s) for s in (0, 42.4, 61, 3599, 3600, 11_100)] == [
        "0s", "42s", "1m01s", "59m59s", "1h00m", "3h05m"]


def test_the_line_has_progress_mean_meta_loss_rate_best_heldout_and_eta():
    history = [{"step": s, "meta_loss": 1.0 - 0.1 * s} for s in range(4)]
    history[1]["heldout_loss"] = 0.7
    history[3]["heldout_loss"] = 0.8
    line = heartbeat_line("meta-train", history, 10, 800, window_seconds=2.0, window_rows=2,
                          elapsed=40.0, rows_this_run=4)
    assert line == ("meta-train: step 4/10 (40%), meta-loss 0.7500 (mean of the last 2), "
                    "800 inner steps/s, held-out best 0.7000 (step 1), elapsed 40s, ETA 1m00s")
    # a resumed run: ETA from this process's pace, not the steps its history already had
    resumed = heartbeat_line("meta-train", history, 10, 800, 2.0, 2, elapsed=20.0,
                             rows_this_run=1)
    assert resumed.endswith("elapsed 20s, ETA 2m00s")
    assert "held-out" not in heartbeat_line("m", history[:1], 10, 1, 1.0, 1, 1.0, 1)
    # the pace of the last minutes, when the recorder has it: 6 steps left at 0.5 s
    recent = heartbeat_line("meta-train", history, 10, 800, 2.0, 2, elapsed=4000.0,
                            rows_this_run=4, recent_pace=0.5)
    assert recent.endswith("elapsed 1h06m, ETA 3s")


def test_the_eta_after_a_pause_follows_the_pace_since_it_ended():
    marks = deque([(0.0, 0), (60.0, 600), (3660.0, 610), (3720.0, 1210)])
    assert recent_pace(marks, 600.0) == pytest.approx(3660.0 / 610)  # the pause is in the window
    for t in range(3780, 4321, 60):  # ten more minutes at 0.1 s per step
        marks.append((float(t), 610 + (t - 3660) * 10))
    assert recent_pace(marks, 600.0) == pytest.approx(0.1)
    assert marks[0][0] == 3720.0 and recent_pace(deque([(5.0, 3)]), 600.0) is None


def run_recorder(directory, console: Console, steps: int) -> str:
    """What a recorder of ``steps`` outer steps prints on ``console``."""
    recorder = MetaTrainRecorder(directory, steps, 50, {"name": "toy"}, checkpoint_every=0,
                                 console=console)
    with recorder:
        for step in range(steps):
            recorder(step, {"meta_loss": 0.5}, {"w": np.zeros(2, np.float32)})
    return console.file.getvalue()


def test_the_recorder_prints_a_line_per_interval_and_after_the_last_step(monkeypatch, tmp_path):
    monkeypatch.setenv(HEARTBEAT_ENV, "0")
    lines = re.findall(r"^meta-train: step .*$", run_recorder(tmp_path, log_console(), 3), re.M)
    assert [line.split(",")[0] for line in lines] == [
        "meta-train: step 1/3 (33%)", "meta-train: step 2/3 (67%)", "meta-train: step 3/3 (100%)"]
    monkeypatch.setenv(HEARTBEAT_ENV, "3600")  # not due within the run: only the last step
    lines = re.findall(r"^meta-train: step .*$", run_recorder(tmp_path, log_console(), 3), re.M)
    assert len(lines) == 1 and lines[0].startswith("meta-train: step 3/3 (100%)")
    assert "meta-loss 0.5000 (mean of the last 3)" in lines[0] and "ETA" in lines[0]  # unwrapped


def test_on_a_terminal_only_the_live_bar_shows_progress(monkeypatch, tmp_path):
    monkeypatch.setenv(HEARTBEAT_ENV, "0")
    terminal = Console(file=io.StringIO(), force_terminal=True, width=200)
    assert "meta-train: step" not in run_recorder(tmp_path, terminal, 3)


def test_count_lines_and_when_a_heartbeat_is_due(monkeypatch):
    from lopt_cli.console import Heartbeat, count_line

    assert count_line("evaluate: task runs", 10, 40, 30.0) == (
        "evaluate: task runs: 10/40 (25%), elapsed 30s, ETA 1m30s")
    # the first unit paid a one-off 21 s (compilation): the pace is the other nine's, 1 s each
    assert count_line("run: segments", 10, 40, 30.0, first=21.0).endswith("elapsed 30s, ETA 30s")
    assert count_line("run: segments", 1, 40, 21.0, first=21.0).endswith("ETA 13m39s")
    monkeypatch.setenv(HEARTBEAT_ENV, "3600")
    heartbeat = Heartbeat(log_console())
    assert not heartbeat.due() and heartbeat.due(final=True)
    heartbeat.emit("x" * 150)
    assert heartbeat.console.file.getvalue() == "x" * 150 + "\n"  # one line, however long
    monkeypatch.setenv(HEARTBEAT_ENV, "0")
    assert Heartbeat(log_console()).due()
    assert not Heartbeat(Console(file=io.StringIO(), force_terminal=True)).due(final=True)


@pytest.mark.parametrize(("plot_every", "drawn_at"), [(0.0, [1, 2]), (3600.0, [])])
def test_the_meta_loss_plot_is_redrawn_at_checkpoints_while_the_run_goes_on(
        monkeypatch, tmp_path, plot_every, drawn_at):
    from types import SimpleNamespace

    from lopt_cli.commands import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "save_checkpoint", lambda *args: None)
    drawn = []
    monkeypatch.setattr("lopt_cli.evaluation.plots.plot_meta_loss",
                        lambda histories, path, title: drawn.append(
                            (len(next(iter(histories.values()))), path.name)))
    recorder = MetaTrainRecorder(tmp_path, 3, 50, {"name": "toy"}, checkpoint_every=1,
                                 console=log_console(), plot_every=plot_every)
    with recorder:
        for step in range(3):
            recorder(step, {"meta_loss": 0.5}, {"w": np.zeros(2, np.float32)})
            recorder.checkpoint(SimpleNamespace(step=step + 1, theta=None))
    # the last checkpoint is left to the run's own final plot
    assert drawn == [(n, "meta_loss.png") for n in drawn_at]
