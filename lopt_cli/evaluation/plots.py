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


def heldout_checks(rows: list[dict]) -> tuple[list[int], list[float]]:
    """A run's held-out checks as ``(steps, losses)``: θ₀'s check (``initial_heldout_loss``)
    at step 0, then every ``heldout_loss``; non-finite readings left out."""
    checks = [(0, rows[0].get("initial_heldout_loss"))] if rows else []
    checks += [(r["step"], r.get("heldout_loss")) for r in rows]
    kept = [(s, v) for s, v in checks
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return [s for s, _ in kept], [float(v) for _, v in kept]


def meta_loss_figure(histories: dict[str, list[dict]], title: str):
    """Meta-loss per outer step (faint) and its moving average (bold), one colour per run;
    when any run checked a held-out loss, a second panel with its checks, the lowest of each
    run ringed (the θ that ``heldout.keep_best`` publishes)."""
    checks = {name: heldout_checks(rows) for name, rows in histories.items()}
    panels = 2 if any(steps for steps, _ in checks.values()) else 1
    figure, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.2), squeeze=False)
    for index, (name, rows) in enumerate(histories.items()):
        meta_loss_curve(axes[0, 0], rows, f"C{index}", name)
        steps, losses = checks[name]
        if panels == 2 and steps:
            best = int(np.argmin(losses))
            axes[0, 1].plot(steps, losses, marker="o", markersize=3, color=f"C{index}",
                            label=name)
            axes[0, 1].plot(steps[best], losses[best], marker="o", markersize=10,
                            markerfacecolor="none", color=f"C{index}")
            axes[0, 1].annotate(f"{losses[best]:.4g}", (steps[best], losses[best]),
                                textcoords="offset points", xytext=(0, 8), ha="center",
                                fontsize=7, color=f"C{index}")
    axes[0, 0].set_ylabel("meta-loss (mean normalised validation loss)")
    axes[0, 0].set_title(title, fontsize=9)
    if panels == 2:
        axes[0, 1].set_ylabel("held-out loss")
        axes[0, 1].set_title("held-out check (ringed: the lowest)", fontsize=9)
        axes[0, 1].margins(x=0.05, y=0.15)
    for axis in axes.flat:
        axis.set_xlabel("outer step")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_meta_loss(histories: dict[str, list[dict]], path: Path, title: str) -> Path:
    """:func:`meta_loss_figure` written to ``path`` (a run, a sweep's jobs, self-training's
    two runs)."""
    return _save(meta_loss_figure(histories, title), path)


def meta_loss_curve(axis, rows: list[dict], colour: str, name: str) -> None:
    """One run's meta-loss per outer step on ``axis``: faint, and its moving average bold."""
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["meta_loss"] for r in rows], float)
    axis.plot(steps, loss, color=colour, alpha=0.25, linewidth=0.8)
    axis.plot(steps, smooth(loss, max(1, len(loss) // 20)), color=colour, label=name)


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


COMPARISONS = (("generalisation", "test loss (tuned on valid)"),
               ("optimisation", "training loss"))


def plot_leaderboard(summary: dict, path: Path) -> Path:
    """The leaderboard's figure (:func:`leaderboard_figure`) as a PNG."""
    return _save(leaderboard_figure(summary), path)


def leaderboard_figure(summary: dict):
    """Per optimizer, against the headline setting, for both comparisons (1 = as good as the
    tuned baseline): the IQM speedup (bars) and the IQM final-loss ratio (dots, log axis), each
    with its 95% interval over tasks when the summary has them, and every task's loss ratio
    beside its IQM: the spread the IQM summarises."""
    names = list(summary["leaderboard"])
    reference = summary["reference_setting"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 0.6 * len(names) + 2.2), squeeze=False)
    positions = np.arange(len(names))
    for axis, key, title in zip(axes.flat, ("iqm_speedup", "iqm_loss_ratio"),
                                ("IQM speedup", "IQM final-loss ratio")):
        for index, (comparison, label) in enumerate(COMPARISONS):
            values = np.array([summary["leaderboard"][n][comparison]["settings"]
                               .get(reference, {}).get(key, np.nan) for n in names], float)
            offsets = positions + (index - 0.5) * 0.4
            if key == "iqm_speedup":
                axis.barh(offsets, values, height=0.38, color=f"C{index}", label=label)
            else:  # a ratio: multiplicative, read on a log axis, where bars from 0 mislead
                axis.scatter(values, offsets, s=30, color=f"C{index}", zorder=3)
            low, high = interval_arrays(summary, names, comparison, key)
            shown = np.isfinite(low) & np.isfinite(high) & np.isfinite(values)
            if shown.any():
                axis.errorbar(values[shown], offsets[shown], fmt="none", ecolor="black",
                              elinewidth=1.0, capsize=3, xerr=[
                                  np.maximum(values[shown] - low[shown], 0),
                                  np.maximum(high[shown] - values[shown], 0)])
        if key == "iqm_loss_ratio":
            axis.set_xscale("log")
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.set_yticks(positions, names, fontsize=8)
        axis.set_ylim(-0.7, len(names) - 0.3)
        axis.set_title(f"{title} vs {reference}", fontsize=9)
        axis.grid(axis="x", alpha=0.3)
    per_task_panel(axes.flat[2], summary, names)
    whiskers = "; whiskers: 95% interval over tasks" if summary.get("intervals") else ""
    figure.suptitle(f"{summary['benchmark']}: {summary['num_tasks']} tasks, "
                    f"{summary['num_seeds']} seeds (> 1: better than the baseline{whiskers})",
                    fontsize=10)
    figure.legend(*axes.flat[0].get_legend_handles_labels(), loc="lower center", ncol=2,
                  fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def interval_arrays(summary: dict, names: list, comparison: str, key: str):
    """``(low, high)`` of ``key``'s interval per optimizer (NaN where the summary has none)."""
    bounds = [(summary.get("intervals") or {}).get(n, {}).get(comparison, {}).get(key)
              for n in names]
    low = np.array([b[0] if b else np.nan for b in bounds], float)
    high = np.array([b[1] if b else np.nan for b in bounds], float)
    return low, high


def per_task_panel(axis, summary: dict, names: list) -> None:
    """Every task's final-loss ratio against the headline baseline (log axis), one row of dots
    per optimizer and comparison, the IQM marked by a bar."""
    per_task = summary.get("per_task") or {}
    positions = np.arange(len(names))
    for index, (comparison, _) in enumerate(COMPARISONS):
        offsets = positions + (index - 0.5) * 0.4
        for name, offset in zip(names, offsets):
            ratios = np.array([entry[comparison]["loss_ratio"]
                               for entry in per_task.get(name, {}).values()
                               if entry.get(comparison, {}).get("loss_ratio") is not None], float)
            ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
            if ratios.size == 0:
                continue
            axis.scatter(ratios, np.full(ratios.size, offset), s=12, color=f"C{index}",
                         alpha=0.7, linewidths=0)
            iqm = summary["leaderboard"][name][comparison]["settings"].get(
                summary["reference_setting"], {}).get("iqm_loss_ratio")
            if iqm is not None and np.isfinite(iqm) and iqm > 0:
                axis.plot([iqm, iqm], [offset - 0.17, offset + 0.17], color="black",
                          linewidth=1.5)
    axis.set_xscale("log")
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_yticks(positions, names, fontsize=8)
    axis.set_ylim(-0.7, len(names) - 0.3)
    axis.set_title("final-loss ratio per task (dots; bar: IQM)", fontsize=9)
    axis.grid(axis="x", alpha=0.3)


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
