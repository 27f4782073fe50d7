"""PNG figures: meta-loss curves, learning curves of evaluated tasks."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lopt_cli.evaluation.leaderboard_report import with_ratio  # noqa: E402
from lopt_cli.io import write_bytes_atomic  # noqa: E402


def _save(figure, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return write_bytes_atomic(path, buffer.getvalue())


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (NaN-aware) of ``values`` over ``window`` points."""
    values = np.asarray(values, float)
    out = np.empty_like(values)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        finite = chunk[np.isfinite(chunk)]
        out[i] = finite.mean() if finite.size else np.nan
    return out


def plot_meta_loss(histories: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Meta-loss per outer step (faint) and its moving average (bold), one colour per run."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for index, (name, rows) in enumerate(histories.items()):
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["meta_loss"] for r in rows])
        colour = f"C{index}"
        axis.plot(steps, loss, color=colour, alpha=0.25, linewidth=0.8)
        axis.plot(steps, smooth(loss, max(1, len(loss) // 20)), color=colour, label=name)
    axis.set_xlabel("outer step")
    axis.set_ylabel("meta-loss (mean normalised validation loss)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(figure, path)


def plot_learning_curves(tasks: list[dict], path: Path, metric: str = "valid") -> Path:
    """A grid with one panel per task: loss curves of every optimizer (mean over seeds)."""
    columns = min(4, max(1, len(tasks)))
    rows = math.ceil(len(tasks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.6 * rows), squeeze=False)
    for axis, task in zip(axes.flat, tasks):
        starts = []
        for index, (name, curve) in enumerate(task["curves"].items()):
            values = np.asarray(curve[metric], dtype=float)  # None (diverged) -> NaN
            axis.plot(curve["steps"], values, color=f"C{index}", label=name)
            finite = values[np.isfinite(values) & (values > 0)]
            starts += finite[:1].tolist()
        axis.set_title(task["title"], fontsize=8)
        axis.set_yscale("log")
        if starts:  # a diverging run must not flatten everyone else's curve
            axis.set_ylim(top=10 * max(starts))
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(tasks):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.supxlabel("inner step")
    figure.supylabel(f"{metric} loss")
    figure.tight_layout()
    return _save(figure, path)


def plot_improvement_boxes(grouped: dict, metric: str, path: Path, title: str) -> Path:
    """The paper's figure: one row per baseline setting, a box per split (seen, unseen).

    ``grouped`` maps ``(metric, setting, split)`` to per-task improvements in [-1, 1].
    """
    settings = sorted({s for (m, s, _) in grouped if m == metric})
    splits = sorted({split for (m, _, split) in grouped if m == metric})
    figure, axis = plt.subplots(figsize=(8, 0.6 * len(settings) * max(1, len(splits)) + 1.5))
    height = 0.8 / max(1, len(splits))
    for index, split in enumerate(splits):
        data = [np.asarray(grouped.get((metric, s, split), []), float) for s in settings]
        positions = np.arange(len(settings)) + (index - (len(splits) - 1) / 2) * height
        boxes = axis.boxplot(data, positions=positions, widths=height * 0.9, vert=False,
                             patch_artist=True, manage_ticks=False)
        for patch in boxes["boxes"]:
            patch.set_facecolor(f"C{index}")
            patch.set_alpha(0.6)
        axis.plot([], [], color=f"C{index}", linewidth=6, alpha=0.6,
                  label=f"{split} ({len(data[0]) if data else 0} tasks)")
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_yticks(np.arange(len(settings)), settings, fontsize=8)
    axis.set_xlim(-1.05, 1.05)
    axis.set_xlabel("improvement of the learned optimizer  (baseline − learned) / max  "
                    "→ learned better")
    axis.set_title(title)
    axis.grid(axis="x", alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_trajectories(paths: dict, path: Path, title: str) -> Path:
    """Optimizer paths in the (x, y) plane with the solution line x = y and the origin."""
    figure, axis = plt.subplots(figsize=(5.5, 5.5))
    every = [np.asarray(p, float) for p in paths.values()]
    extent = max(float(np.nanmax(np.abs(p[..., 0, :]))) for p in every) * 1.15
    axis.plot([-extent, extent], [-extent, extent], color="grey", linestyle="--",
              label="minima: x = y")
    axis.scatter([0], [0], color="black", marker="x", zorder=5, label="origin")
    for index, (name, value) in enumerate(paths.items()):
        value = np.asarray(value, float)
        for number, line in enumerate(value):
            axis.plot(line[:, 0], line[:, 1], color=f"C{index}", alpha=0.8, linewidth=1.2,
                      label=name if number == 0 else None)
            axis.scatter(line[-1, 0], line[-1, 1], color=f"C{index}", s=12, zorder=4)
        axis.scatter(value[:, 0, 0], value[:, 0, 1], color="black", s=8, zorder=4)
    axis.set_xlim(-extent, extent)
    axis.set_ylim(-extent, extent)
    axis.set_aspect("equal")
    axis.set_xlabel("x")
    axis.set_ylabel("y")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    return _save(figure, path)


def plot_leaderboard(summary: dict, path: Path) -> Path:
    """Per optimizer: IQM speedup and IQM final-loss ratio against the headline setting, for
    both comparisons (1 = as good as the tuned baseline)."""
    names = list(summary["leaderboard"])
    reference = summary["reference_setting"]
    figure, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(names) + 2), squeeze=False)
    positions = np.arange(len(names))
    for axis, key, title in zip(axes.flat, ("iqm_speedup", "iqm_loss_ratio"),
                                ("IQM speedup", "IQM final-loss ratio")):
        for index, comparison in enumerate(("generalisation", "optimisation")):
            values = [summary["leaderboard"][n][comparison]["settings"].get(reference, {})
                      .get(key, np.nan) for n in names]
            axis.barh(positions + (index - 0.5) * 0.4, values, height=0.38, color=f"C{index}",
                      label="test loss (tuned on valid)" if index == 0 else "training loss")
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.set_yticks(positions, names, fontsize=8)
        axis.set_title(f"{title} vs {reference}", fontsize=9)
        axis.grid(axis="x", alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"{summary['benchmark']}: {summary['num_tasks']} tasks, "
                    f"{summary['num_seeds']} seeds (> 1: better than the baseline)", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def plot_horizon(rows: list[dict], path: Path) -> Path:
    """Training curves of the long-horizon tasks, one panel per task, the minimum marked."""
    tasks: dict = {}
    for row in rows:
        if row["record"] == "horizon":
            tasks.setdefault(row["task"], {"title": f"{row['task']} ({row['horizon']} steps)",
                                           "curves": {}})["curves"][row["optimizer"]] = row
    if not tasks:
        figure, axis = plt.subplots(figsize=(4, 2))
        axis.text(0.5, 0.5, "no long-horizon task", ha="center", va="center")
        axis.axis("off")
        return _save(figure, path)
    panels = []
    for task in tasks.values():
        rising = [with_ratio(name, row.get("rise_ratio"))
                  for name, row in task["curves"].items() if row["rises"]]
        panels.append({"title": f"{task['title']}\nrises: {', '.join(rising) or 'none'}",
                       "curves": {name: {"steps": row["steps"], "train": row["train_curve"]}
                                  for name, row in task["curves"].items()}})
    return plot_learning_curves(panels, path, metric="train")
