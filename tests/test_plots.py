"""The leaderboard's figure shows what its summary holds: IQMs, their intervals over tasks, and
every task's loss ratio."""
from __future__ import annotations

import numpy as np
import pytest

from lopt_cli.evaluation.plots import leaderboard_figure, plot_leaderboard

REFERENCE = "AdamLR per-task (10 trials)"
RATIOS = {"a": {"test": [0.5, 1.0, 2.0, 4.0], "train": [1.0, 3.0, 9.0, 300.0]},
          "b": {"test": [0.9, 1.1, 1.2, 1.3], "train": [0.8, 1.0, 1.0, 1.5]}}


def summary(with_intervals: bool = True) -> dict:
    def entry(name, split):
        return {"settings": {REFERENCE: {"iqm_loss_ratio": float(np.mean(RATIOS[name][split][1:3])),
                                         "iqm_speedup": 1.2 if split == "test" else 0.8}}}

    tasks = [f"task{i}" for i in range(4)]
    out = {"benchmark": "tiny", "num_tasks": 4, "num_seeds": 1, "reference_setting": REFERENCE,
           "leaderboard": {n: {"generalisation": entry(n, "test"),
                               "optimisation": entry(n, "train")} for n in RATIOS},
           "per_task": {n: {t: {"generalisation": {"loss_ratio": RATIOS[n]["test"][i]},
                                "optimisation": {"loss_ratio": RATIOS[n]["train"][i]}}
                            for i, t in enumerate(tasks)} for n in RATIOS}}
    if with_intervals:
        out["intervals"] = {n: {c: {"iqm_loss_ratio": [0.7, 10.0], "iqm_speedup": [0.5, 1.9]}
                                for c in ("generalisation", "optimisation")} for n in RATIOS}
    return out


def whiskers(axis) -> list[tuple[float, float]]:
    """The x extents of the interval lines drawn on ``axis`` (an errorbar's LineCollection)."""
    from matplotlib.collections import LineCollection

    spans = []
    for collection in axis.collections:
        if isinstance(collection, LineCollection):
            spans += [(float(seg[:, 0].min()), float(seg[:, 0].max()))
                      for seg in collection.get_segments()]
    return spans


def test_the_figure_draws_the_iqms_their_intervals_and_every_tasks_ratio():
    import matplotlib.pyplot as plt

    figure = leaderboard_figure(summary())
    speedup, ratio, per_task = figure.axes[:3]
    bars = sorted(round(p.get_width(), 6) for p in speedup.patches)
    assert bars == [0.8, 0.8, 1.2, 1.2]
    assert np.allclose(whiskers(speedup), [(0.5, 1.9)] * 4)
    assert np.allclose(whiskers(ratio), [(0.7, 10.0)] * 4)
    assert ratio.get_xscale() == "log" and per_task.get_xscale() == "log"
    dots = sorted(float(x) for c in per_task.collections for x in c.get_offsets()[:, 0])
    assert dots == sorted(v for r in RATIOS.values() for s in r.values() for v in s)
    plt.close(figure)


def test_without_intervals_there_are_no_whiskers_and_the_png_is_written(tmp_path):
    import matplotlib.pyplot as plt

    figure = leaderboard_figure(summary(with_intervals=False))
    assert all(whiskers(axis) == [] for axis in figure.axes[:2])
    assert "whiskers" not in figure._suptitle.get_text()
    plt.close(figure)
    path = plot_leaderboard(summary(with_intervals=False), tmp_path / "leaderboard.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_non_finite_or_missing_ratio_is_left_out_of_the_dots():
    import matplotlib.pyplot as plt

    data = summary()
    data["per_task"]["a"]["task0"]["generalisation"]["loss_ratio"] = None
    data["per_task"]["a"]["task1"]["generalisation"]["loss_ratio"] = float("inf")
    figure = leaderboard_figure(data)
    dots = [float(x) for c in figure.axes[2].collections for x in c.get_offsets()[:, 0]]
    assert len(dots) == 14 and all(np.isfinite(dots))
    plt.close(figure)


@pytest.mark.parametrize("name", ["a", "b"])
def test_iqm_marks_sit_on_each_rows_iqm(name):
    import matplotlib.pyplot as plt

    data = summary()
    figure = leaderboard_figure(data)
    marks = {round(float(line.get_xdata()[0]), 6) for line in figure.axes[2].lines
             if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]}
    for comparison in ("generalisation", "optimisation"):
        iqm = data["leaderboard"][name][comparison]["settings"][REFERENCE]["iqm_loss_ratio"]
        assert round(iqm, 6) in marks
    plt.close(figure)


def test_the_meta_training_figure_draws_every_held_out_check_and_rings_the_lowest():
    import matplotlib.pyplot as plt

    from lopt_cli.evaluation.plots import meta_loss_figure

    rows = [{"step": s, "meta_loss": 1.0 - 0.001 * s} for s in range(10)]
    rows[0]["initial_heldout_loss"] = 0.6
    rows[4]["heldout_loss"], rows[9]["heldout_loss"] = 0.5, 0.55
    rows[6]["heldout_loss"] = float("nan")  # a diverged check is not drawn
    unchecked = [{"step": s, "meta_loss": 1.0} for s in range(3)]
    figure = meta_loss_figure({"run": rows, "unchecked": unchecked}, "meta-training")
    meta, heldout = figure.axes
    lines = [line for line in heldout.get_lines() if len(line.get_xdata()) > 1]
    assert [list(line.get_xdata()) for line in lines] == [[0, 4, 9]]
    assert list(lines[0].get_ydata()) == [0.6, 0.5, 0.55]
    ring = [line for line in heldout.get_lines() if len(line.get_xdata()) == 1]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in ring] == [(4, 0.5)]
    assert len(meta.get_lines()) == 4  # two runs, each faint and averaged
    plt.close(figure)


def test_without_held_out_checks_the_meta_training_figure_has_one_panel():
    import matplotlib.pyplot as plt

    from lopt_cli.evaluation.plots import meta_loss_figure

    figure = meta_loss_figure({"run": [{"step": s, "meta_loss": 1.0} for s in range(5)]}, "t")
    assert len(figure.axes) == 1
    plt.close(figure)
