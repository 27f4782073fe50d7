"""The named benchmark: tuning that never reads the test split, held-out task configs, and the
leaderboard written by ``lopt evaluate benchmark=...`` (its metrics: test_leaderboard_metrics)."""
from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import only_run_dir
from flax import struct
from hydra import compose, initialize_config_module

from lopt_cli.evaluation.benchmark import BenchmarkSpec, BenchmarkTask, MeasureSettings
from lopt_cli.evaluation.candidates import first_multiplier, multiplier_grid
from lopt_cli.evaluation.leaderboard import per_task
from lopt_cli.evaluation.leaderboard_report import (
    markdown_leaderboard,
    per_task_cells,
    rise_cell,
    rising_cell,
)

# ---------------------------------------------------------------- tuning never reads the test split


@struct.dataclass
class PoisonedTestTask:
    """½‖w − t‖² with t drawn near a fixed target; the test split's batches are NaN, so any
    choice made from test values would see every trial as diverged."""

    target: jax.Array

    def init(self, key):
        return {"w": jnp.zeros_like(self.target)}

    def sample_batch(self, key, split):
        noise = 0.01 * jax.random.normal(key, self.target.shape)
        poison = jnp.nan if split == "test" else 0.0
        return self.target + noise + poison

    def loss(self, params, batch, key):
        return 0.5 * jnp.sum((params["w"] - batch) ** 2)

    def normalize(self, loss):
        return loss / 8.0


class PoisonedFamily:
    name = "poisoned"

    def build(self, config):
        return PoisonedTestTask(jnp.full((4,), 2.0))


@pytest.fixture(scope="module")
def poisoned_results():
    from lopt_cli.evaluation.benchmark import run_benchmark
    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.candidates import resolve_candidate
    from lopt_cli.evaluation.search_spaces import AdamLR
    from task_definitions.quadratic import QuadraticConfig

    task = BenchmarkTask("poisoned", PoisonedFamily(), QuadraticConfig(4, 1.0, 0.0, 1.0, 0), 8)
    spec = BenchmarkSpec("tiny", (task,), {"AdamLR": AdamLR(1e-3, 1.0)},
                         {"AdamLR": 3, "candidates": 3}, (1,),
                         MeasureSettings(1, 2, 2, 0.5), long_horizon=8)
    candidates = [resolve_candidate("adam", 0.1, 10.0)]
    return spec, run_benchmark(spec, candidates, RunCache(None))


def test_tuning_on_validation_never_reads_the_poisoned_test_split(poisoned_results):
    from lopt_cli.evaluation.leaderboard import comparison_rows

    spec, results = poisoned_results
    runs = results["poisoned"]["baselines"]["AdamLR"]
    assert all(np.isfinite(runs["final"]["valid"]))
    rows = [r for r in comparison_rows(results, spec, ["adam"])
            if r["comparison"] == "generalisation"]
    best_valid = int(np.argmin(runs["final"]["valid"]))
    assert best_valid != 0  # the choice is informative: not just the first trial
    for row in rows:
        assert row["compared_on"] == "test" and row["tuned_on"] == "valid"
        if row["setting"] == "AdamLR per-task (3 trials)":
            assert row["baseline_trial"] == best_valid


def test_host_loop_reproduces_the_vmapped_runs_and_caches_them_alike(poisoned_results):
    """One (trial, seed) per call gives the vmapped runs' numbers, under the same cache keys."""
    from lopt_cli.evaluation.benchmark import run_benchmark
    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.candidates import resolve_candidate

    spec, _ = poisoned_results
    spec = dataclasses.replace(spec, measure=dataclasses.replace(spec.measure, num_seeds=2))
    candidates = [resolve_candidate("adam", 0.1, 10.0)]
    both = [run_benchmark(dataclasses.replace(spec, host_loop=mode), candidates, RunCache(None))
            for mode in ("never", "always")]
    for group, name in (("baselines", "AdamLR"), ("candidates", "adam")):
        one, looped = (r["poisoned"][group][name] for r in both)
        for split in ("train", "valid"):
            np.testing.assert_allclose(looped["final"][split], one["final"][split], rtol=1e-5)
            np.testing.assert_allclose(np.asarray(looped["curves"][split], float),
                                       np.asarray(one["curves"][split], float), rtol=1e-5)
        assert looped["hparams"] == one["hparams"]


def test_only_convolutions_on_a_cpu_loop_on_the_host():
    from lopt_cli.evaluation.benchmark import has_convolution, loops_on_host
    from task_definitions.conv import ConvConfig, ConvFamily
    from task_definitions.mlp import MLPConfig, MLPFamily
    from task_definitions.reparam import reparameterize

    conv = ConvFamily().build(ConvConfig(dataset="digits", image_size=0, channels=(4,),
                                         kernel_size=3, pooling="max", head="dense",
                                         activation="relu", batch_size=8, init_scale=1.0,
                                         seed=0))
    mlp = MLPFamily().build(MLPConfig(dataset="digits", hidden_sizes=(8,), activation="relu",
                                      batch_size=8, init_scale=1.0, seed=0))
    assert has_convolution(conv) and not has_convolution(mlp)
    assert loops_on_host(conv, "auto") and not loops_on_host(mlp, "auto")  # CPU-only tests
    assert loops_on_host(mlp, "always") and not loops_on_host(conv, "never")
    wrapped = reparameterize(conv, seed=0)  # the augmentation forwards the flag
    assert wrapped.convolutional and loops_on_host(wrapped, "auto")
    assert not reparameterize(mlp, seed=0).convolutional


def test_choices_are_unchanged_when_test_values_are_replaced():
    from lopt_cli.evaluation.leaderboard import comparison_rows

    spec, results = synthetic_results()
    before = comparison_rows(results, spec, ["cand"])
    for entry in results.values():
        for group in ("baselines", "candidates"):
            for runs in entry[group].values():
                runs["final"]["test"] = [-v for v in runs["final"]["test"]]  # order reversed
    after = comparison_rows(results, spec, ["cand"])
    assert [(r["baseline_trial"], r["candidate_trial"]) for r in before] == \
        [(r["baseline_trial"], r["candidate_trial"]) for r in after]


def synthetic_results():
    """Two tasks, a baseline and a candidate with 3 trials each; valid and test disagree."""
    from lopt_cli.evaluation.search_spaces import AdamLR

    def runs(valid, test, train):
        curves = {s: [[1.0, f] for f in finals] for s, finals in
                  (("valid", valid), ("test", test), ("train", train))}
        return {"steps": [5, 10], "final": {"valid": valid, "test": test, "train": train},
                "curves": curves, "diverged": [False] * 3,
                "hparams": {"learning_rate": [0.1, 0.01, 0.001]}}

    results = {name: {"task": {"name": name, "horizon": 10, "family": "toy"},
                      "baselines": {"AdamLR": runs([0.3, 0.2, 0.4], [0.1, 0.5, 0.9],
                                                   [0.3, 0.25, 0.1])},
                      "candidates": {"cand": runs([0.35, 0.1, 0.5], [0.2, 0.3, 0.05],
                                                  [0.2, 0.1, 0.3])}}
               for name in ("a", "b")}
    spec = BenchmarkSpec("synthetic", (), {"AdamLR": AdamLR()}, {"AdamLR": 3, "candidates": 3},
                         (1,), MeasureSettings(1, 2, 1, 0.5), long_horizon=10)
    return spec, results


def test_synthetic_comparison_tunes_on_valid_and_compares_on_test():
    from lopt_cli.evaluation.leaderboard import comparison_rows

    spec, results = synthetic_results()
    row = next(r for r in comparison_rows(results, spec, ["cand"])
               if r["setting"] == "AdamLR per-task (3 trials)"
               and r["comparison"] == "generalisation")
    assert (row["baseline_trial"], row["candidate_trial"]) == (1, 1)  # best on valid
    assert (row["baseline_final"], row["candidate_final"]) == (0.5, 0.3)  # read on test
    assert row["loss_ratio"] == pytest.approx(0.5 / 0.3)


# ---------------------------------------------------------------- the shipped benchmarks


def benchmark_config(name: str):
    with initialize_config_module("conf", version_base="1.3"):
        return compose("evaluate", overrides=[f"benchmark={name}"])


def family_samples(count: int) -> dict:
    """``{config class name: [config dict]}`` sampled by meta-training's default suite."""
    from lopt_cli.commands.common import build_family
    from lopt_cli.meta.outer import task_key
    from task_definitions.base import config_to_dict

    with initialize_config_module("conf", version_base="1.3"):
        suite = build_family(compose("meta_train", overrides=["task_family=suite"]).task_family)
    samples: dict = {}
    for task_id in range(count):
        config = suite.sample(task_key(task_id)).config
        samples.setdefault(type(config).__name__, []).append(config_to_dict(config))
    return samples


def held_out(config: dict, samples: list[dict]) -> bool:
    """Some field lies outside what meta-training samples: an unseen discrete value, or a
    number outside the sampled range."""
    for key, value in config.items():
        if key in ("seed", "family"):
            continue
        seen = [s[key] for s in samples]
        if isinstance(value, float):
            if value < min(seen) or value > max(seen):
                return True
        elif value not in seen:
            return True
    return False


def test_lopt_bench_tasks_are_held_out_and_cover_the_issue():
    from lopt_cli.commands.evaluate_benchmark import build_benchmark_spec
    from task_definitions.base import config_to_dict

    spec, _ = build_benchmark_spec(benchmark_config("lopt_bench"))
    samples = family_samples(3000)
    families = {}
    for task in spec.tasks:
        families.setdefault(task.description["family"], []).append(task)
        config = config_to_dict(task.config)
        assert held_out(config, samples[type(task.config).__name__]), task.name
    assert 18 <= len(spec.tasks) <= 24
    assert {"mlp", "conv", "char_rnn", "transformer", "autoencoder", "vae", "flow", "quadratic",
            "functions_2d"} <= set(families)
    mlp_sizes = [t.config.hidden_sizes for t in families["mlp"]]
    assert max(max(s) for s in mlp_sizes) >= 4 * 64 and max(map(len, mlp_sizes)) >= 2 * 2
    horizons = [t.horizon for t in spec.tasks]
    assert min(horizons) == 1000 and max(horizons) == 10000
    widest = max(mlp_sizes, key=lambda s: sum(a * b for a, b in zip((64, *s), (*s, 10))))
    assert sum(a * b for a, b in zip((64, *widest), (*widest, 10))) >= 1e5


def test_lopt_bench_small_is_a_subset_with_a_real_adam8p_budget():
    from lopt_cli.commands.evaluate_benchmark import build_benchmark_spec

    full, _ = build_benchmark_spec(benchmark_config("lopt_bench"))
    small, _ = build_benchmark_spec(benchmark_config("lopt_bench_small"))
    assert {t.name for t in small.tasks} < {t.name for t in full.tasks}
    assert small.trials["Adam8p"] >= 50 and small.measure.num_seeds >= 3
    assert any(t.horizon >= small.long_horizon for t in small.tasks)


# ---------------------------------------------------------------- the command


TINY_BENCHMARK = ("benchmark=lopt_bench_small", "benchmark.select=[beale_noisy]",
                  "benchmark.horizon_override=8", "benchmark.num_points=2",
                  "benchmark.num_seeds=1", "benchmark.eval_batches=2",
                  "benchmark.trials.AdamLR=2", "benchmark.trials.candidates=2",
                  "benchmark.long_horizon=8", "~baselines.Adam8p", "~baselines.opt_list")


def markdown_tables(text: str) -> dict:
    """``{(section, subsection): [row cells]}`` of the tables in ``leaderboard.md``."""
    tables, section, sub = {}, None, None
    lines = text.splitlines()
    for line, after in zip(lines, [*lines[1:], ""]):
        if line.startswith("## "):
            section, sub = line[3:].split(":")[0], None
        elif line.startswith("### "):
            sub = line[4:]
        elif line.startswith("| ") and not after.startswith("|---"):  # a header precedes |---|
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables.setdefault((section, sub), []).append(cells)
    return tables


def independent_iqm(values) -> float:
    values = np.sort(np.asarray(values, float))
    cut = len(values) // 4
    return float(np.mean(values[cut:len(values) - cut]))


def plan_rows(stdout: str) -> dict:
    """``{(task, optimizer): predicted}`` of a ``plan=true`` table."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines()
            if line.startswith("│")]
    return {(row[0], row[2]): row[4] for row in rows}


def test_cli_leaderboard_matches_results_and_reuses_the_cache(run_lopt, tmp_path):
    # plan=true first: every part to compute, with its predicted time; nothing computed
    plan = run_lopt("evaluate", *TINY_BENCHMARK, "learned_optimizer=mlp_digits,adam", "plan=true")
    assert set(plan_rows(plan.stdout)) == {("beale_noisy", name)
                                           for name in ("AdamLR", "mlp_digits", "adam")}
    assert all(cell.startswith("~") for cell in plan_rows(plan.stdout).values())
    assert "0 of 3 parts cached; 3 to compute, predicted ~" in plan.stdout
    assert not any((tmp_path / "outputs" / "evaluate").rglob("summary.json"))
    written = json.loads(only_run_dir(tmp_path / "outputs" / "evaluate").joinpath(
        "plan.json").read_text())
    assert [(p["task"], p["optimizer"], p["trials"], p["seeds"]) for p in written["parts"]] == [
        ("beale_noisy", name, 2, 1) for name in ("AdamLR", "mlp_digits", "adam")]
    assert all(p["predicted_seconds"] > 0 for p in written["parts"])
    assert (written["cached"], written["to_compute"]) == (0, 3)
    assert written["predicted_seconds"] == pytest.approx(
        sum(p["predicted_seconds"] for p in written["parts"]))
    result = run_lopt("evaluate", *TINY_BENCHMARK, "learned_optimizer=mlp_digits,adam")
    assert "vs AdamLR per-task (2 trials)" in result.stdout
    run = sorted((tmp_path / "outputs" / "evaluate").iterdir())[-1]  # after the plan's
    for name in ("leaderboard.md", "leaderboard.png", "summary.json", "results.jsonl",
                 "horizon.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    for key in ("iqm_loss_ratio", "iqm_speedup", "win_rate", "horizon_rise"):
        assert set(summary[key]) == {"mlp_digits", "adam"}, key
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    tables = markdown_tables((run / "leaderboard.md").read_text())
    for comparison in ("generalisation", "optimisation"):
        for setting in ("AdamLR global (2 trials)", "AdamLR per-task (2 trials)"):
            table = {cells[0]: cells for cells in
                     tables[(comparison.capitalize(), f"vs {setting}")]}
            for name in ("mlp_digits", "adam"):
                mine = [r for r in rows if r["record"] == "comparison" and r["candidate"] == name
                        and r["setting"] == setting and r["comparison"] == comparison]
                ratio = independent_iqm([r["baseline_final"] / max(r["candidate_final"], 1e-8)
                                         for r in mine])
                assert summary["iqm_loss_ratio"][name][comparison][setting] == \
                    pytest.approx(ratio)
                wins = sum(r["baseline_final"] > r["candidate_final"] for r in mine)
                assert table[name][1] == f"{wins}/{len(mine)}"
                assert float(table[name][5]) == pytest.approx(ratio, abs=5e-4)
                assert float(table[name][6]) == pytest.approx(
                    independent_iqm([r["speedup"] for r in mine]), abs=5e-4)
    per_task_tables = {sub: {cells[0]: cells for cells in table}
                       for (section, sub), table in tables.items() if section == "Per task"}
    reference = [r for r in rows if r["record"] == "comparison"
                 and r["setting"] == summary["reference_setting"]]
    assert len(reference) == 2 * 2  # two candidates, two comparisons, one task
    for r in reference:
        entry = summary["per_task"][r["candidate"]][r["task"]][r["comparison"]]
        assert entry["loss_ratio"] == pytest.approx(r["loss_ratio"])
        assert entry["speedup"] == pytest.approx(r["speedup"])
        cells = per_task_tables[r["candidate"]][r["task"]]
        column = 1 if r["comparison"] == "generalisation" else 3
        assert float(cells[column]) == pytest.approx(r["loss_ratio"], abs=5e-4)
        assert float(cells[column + 1]) == pytest.approx(r["speedup"], abs=5e-4)
    intervals = tables[("Headline", "How sure: 95% intervals over tasks, vs "
                        f"{summary['reference_setting']}")]
    for r in reference:  # one task: every draw is that task, a zero-width interval
        entry = summary["intervals"][r["candidate"]][r["comparison"]]
        assert entry["iqm_loss_ratio"] == pytest.approx([r["loss_ratio"]] * 2)
        assert entry["iqm_speedup"] == pytest.approx([r["speedup"]] * 2)
        assert entry["win_rate"] == [float(r["improvement"] > 0)] * 2
        cells = next(c for c in intervals if c[0] == r["candidate"])
        column = 2 if r["comparison"] == "generalisation" else 5
        assert cells[column] == f"[{r['loss_ratio']:.3f}, {r['loss_ratio']:.3f}]"
    paired = tables[("Headline", "Paired: mlp_digits against each other candidate")]
    assert [cells[0] for cells in paired] == ["mlp_digits − adam"]
    for comparison, column in (("generalisation", 1), ("optimisation", 3)):
        mine, theirs = (next(r for r in reference if r["candidate"] == name
                             and r["comparison"] == comparison) for name in ("mlp_digits", "adam"))
        difference = mine["loss_ratio"] - theirs["loss_ratio"]
        entry = summary["paired"]["adam"][comparison]["iqm_loss_ratio"]
        assert entry["difference"] == pytest.approx(difference)
        assert entry["interval"] == pytest.approx([difference] * 2)  # one task
        assert paired[0][column].startswith(f"{difference:+.3f} [")
    horizon = [r for r in rows if r["record"] == "horizon"]
    assert {r["optimizer"] for r in horizon} == {"AdamLR", "mlp_digits", "adam"}
    for r in horizon:  # the rise ratio is the curve's last reading over its lowest
        curve = np.asarray(r["train_curve"], float)
        floored = np.maximum(curve, 1e-6)
        assert r["rise_ratio"] == pytest.approx(floored[-1] / np.nanmin(floored))
        assert summary["horizon"]["rise_ratio"][r["optimizer"]][r["task"]] == r["rise_ratio"]
        if r["group"] == "candidates":
            entry = summary["per_task"][r["optimizer"]][r["task"]]
            assert entry["rise_ratio"] == r["rise_ratio"]
            flag = "yes" if r["rises"] else "no"
            assert per_task_tables[r["optimizer"]][r["task"]][-1] == \
                f"{flag} ({r['rise_ratio']:.2f}×)"
    assert summary["runs"]["computed"] == 3 and summary["runs"]["from_cache"] == 0
    plan = run_lopt("evaluate", *TINY_BENCHMARK, "learned_optimizer=mlp_digits,adam", "plan=true")
    assert all(re.fullmatch(r"cached \(took \S+\)", cell)
               for cell in plan_rows(plan.stdout).values())
    assert "3 of 3 parts cached; 0 to compute. Nothing was computed" in plan.stdout
    assert "Recorded time per step of one run, median over tasks, × AdamLR's" in plan.stdout
    replanned = json.loads(sorted((tmp_path / "outputs" / "evaluate").iterdir())[-1].joinpath(
        "plan.json").read_text())
    assert all(p["recorded_seconds"] > 0 and p["seconds_per_run_step"] > 0
               for p in replanned["parts"])
    assert set(replanned["relative_step_times"]) == {"mlp_digits", "adam"}
    run_lopt("evaluate", *TINY_BENCHMARK, "learned_optimizer=[mlp_digits,adam]")
    second = sorted((tmp_path / "outputs" / "evaluate").iterdir())[-1]
    assert json.loads((second / "summary.json").read_text())["runs"] == {
        "computed": 0, "from_cache": 3}
    leaderboard = (second / "leaderboard.md").read_text()
    assert re.search(r"diverged trials: AdamLR \d+/2", leaderboard)
    assert "trials per task: AdamLR 2, candidates 2 (" in leaderboard  # removed baselines: unlisted
    assert "factor on [0.1, 10], factor 1 first)" in leaderboard
    assert "Not checked: no optimizer was tuned" in leaderboard  # 2 trials: no edge to speak of
    summary = json.loads((second / "summary.json").read_text())
    summary["lr_multiplier"] = [0.1, 100.0]
    assert "factor on [0.1, 100], factor 3.16 first)" in markdown_leaderboard(summary)


@pytest.mark.parametrize("low, high", [(0.1, 10.0), (0.1, 100.0), (0.5, 2.0)])
@pytest.mark.parametrize("num", [1, 4, 10])
def test_trial_zero_is_the_factor_the_leaderboard_names(low, high, num):
    assert multiplier_grid(num, low, high)[0] == pytest.approx(first_multiplier(low, high),
                                                               rel=1e-6)


@pytest.mark.parametrize("override, message", [
    ("benchmark.horizon_override=45", "expected a multiple of benchmark.num_points=40"),
    ("benchmark.trials.candidates=0", "benchmark.trials.candidates=0: expected a positive int"),
    ("benchmark.lr_multiplier=[2.0,1.0]", "expected [min, max] with 0 < min <= max"),
    ("benchmark.lr_multiplier=[1.0]", "expected [min, max] with 0 < min <= max"),
    ("benchmark.select=mlp_deep_digits", "choose task names among"),
    ("benchmark.host_loop=sometimes", "benchmark.host_loop=sometimes: expected one of auto"),
    ("devices=two", "devices='two': expected 'auto' or a positive integer"),
    ("learned_optimizer=[adam,adam]", "an optimizer is named twice"),
])
def test_bad_benchmark_settings_are_user_errors(override, message):
    from lopt_cli.commands.evaluate import check
    from lopt_cli.errors import LoptUserError

    with initialize_config_module("conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=["benchmark=lopt_bench_small", override])
        with pytest.raises(LoptUserError, match=re.escape(message)):
            check(cfg)


def test_a_bad_benchmark_override_fails_in_one_line(run_lopt):
    result = run_lopt("evaluate", "benchmark=lopt_bench_small", "benchmark.select=[nope]",
                      check=False)
    assert result.returncode == 2, result.stderr
    assert "benchmark.select=['nope']: choose task names among" in result.stderr
    assert "Traceback" not in result.stderr


def test_same_shape_tasks_run_stacked_in_one_call_with_the_same_results(monkeypatch):
    from lopt_cli.evaluation import benchmark
    from lopt_cli.evaluation.cache import RunCache
    from lopt_cli.evaluation.candidates import resolve_candidate
    from lopt_cli.evaluation.search_spaces import AdamLR
    from task_definitions.quadratic import QuadraticConfig, QuadraticFamily

    def task(name, dim, seed):
        return BenchmarkTask(name, QuadraticFamily(), QuadraticConfig(dim, 10.0, 0.0, 1.0, seed), 8)

    tasks = (task("a", 4, 1), task("b", 8, 2), task("c", 4, 3))
    spec = BenchmarkSpec("tiny", tasks, {"AdamLR": AdamLR()}, {"AdamLR": 2, "candidates": 2},
                         (1,), MeasureSettings(1, 2, 1, 0.5), long_horizon=8)
    candidates = [resolve_candidate("adam", 0.1, 10.0)]
    calls = []
    real = benchmark.trial_curves
    monkeypatch.setattr(benchmark, "trial_curves",
                        lambda *a, **k: calls.append(k.get("stacked", False)) or real(*a, **k))
    cache = RunCache(None)
    together = benchmark.run_benchmark(spec, candidates, cache)
    assert calls == [True, True, False, False]  # a and c stacked per optimizer, then b alone
    assert cache.computed == 6
    alone = benchmark.run_benchmark(
        BenchmarkSpec("tiny", (tasks[2],), *[getattr(spec, f) for f in (
            "baselines", "trials", "trial_counts", "measure", "long_horizon")]),
        candidates, RunCache(None))
    for group in ("baselines", "candidates"):
        for name, runs in alone["c"][group].items():
            np.testing.assert_allclose(together["c"][group][name]["final"]["train"],
                                       runs["final"]["train"], rtol=1e-5)


def test_per_task_numbers_are_the_headline_settings_with_the_rise():
    def row(setting, ratio):
        return {"record": "comparison", "candidate": "c", "task": "t", "setting": setting,
                "comparison": "optimisation", "loss_ratio": ratio, "speedup": 1.5,
                "baseline_final": 0.2, "candidate_final": 0.1}

    rows = [row("ref", 2.0), row("other", 9.0),
            {"record": "horizon", "optimizer": "c", "group": "candidates", "task": "t",
             "rises": True, "rise_ratio": 1.172},
            {"record": "horizon", "optimizer": "AdamLR", "group": "baselines", "task": "t",
             "rises": False, "rise_ratio": 1.0}]
    table = per_task(rows, "ref")
    assert table == {"c": {"t": {"optimisation": {"loss_ratio": 2.0, "speedup": 1.5,
                                                  "baseline_final": 0.2,
                                                  "candidate_final": 0.1},
                                 "rises": True, "rise_ratio": 1.172}}}
    assert per_task_cells("t", table["c"]["t"]) == ["t", "-", "-", "2.000", "1.500",
                                                    "yes (1.17×)"]
    assert rise_cell(True, None) == "yes" and rise_cell(False, float("inf")) == "no"
    assert rising_cell(["t", "u"], {"t": 6.272}) == "t (6.27×), u"
