"""Every option of every config group composes and instantiates; primary configs compose."""
from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import compose_config, group_options

from lopt_cli.commands import evaluate, meta_train, self_train, tasks
from lopt_cli.commands.common import build

GROUPS = ("task_family", "optimizer", "estimator", "outer_optimizer", "compute", "meta_budget",
          "hardware")


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_option_builds_a_meta_training_job(group, option):
    cfg = compose_config("meta_train", [f"{group}={option}"])
    job = meta_train.build_job(cfg)
    assert job.settings.num_outer_steps > 0
    if group not in ("compute", "meta_budget", "hardware"):
        assert build(cfg[group], option) is not None


@pytest.mark.parametrize("module", [meta_train, evaluate, self_train, tasks])
def test_primary_configs_compose_with_job_names(module):
    cfg = compose_config(module.CONFIG_NAME)
    assert cfg is not None


JOB_NAMES = {"meta_train": "meta-train", "evaluate": "evaluate", "self_train": "self-train",
             "tasks": "tasks"}


@pytest.mark.parametrize("name", sorted(JOB_NAMES))
def test_every_command_shares_one_run_and_sweep_block(name):
    """One hydra/output/lopt.yaml: microsecond run and sweep dirs under outputs/<command>."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("conf", version_base="1.3"):
        hydra_cfg = compose(name, return_hydra_config=True).hydra
    assert hydra_cfg.runtime.choices["hydra/output"] == "lopt"
    assert hydra_cfg.job.name == JOB_NAMES[name]
    assert hydra_cfg.run.dir.startswith(f"outputs/{JOB_NAMES[name]}/")
    assert hydra_cfg.run.dir.rsplit("_", 1)[1].isdigit()  # %f: microseconds
    assert hydra_cfg.sweep.dir.startswith(f"outputs/multirun/{JOB_NAMES[name]}/")


def test_no_primary_config_copies_the_run_block():
    conf = Path(__file__).resolve().parent.parent / "conf"
    copies = [p.name for p in conf.glob("*.yaml") if "sweep:" in p.read_text()
              or "%f" in p.read_text()]
    assert copies == []


def test_self_train_composes_meta_train():
    """self-train is meta-train's config plus its own key: nothing copied, nothing lost."""
    meta, self_cfg = compose_config("meta_train"), compose_config("self_train")
    assert set(self_cfg) - set(meta) == {"learned_optimizer"}
    assert all(self_cfg[k] == meta[k] for k in meta)
    text = (Path(__file__).resolve().parent.parent / "conf" / "self_train.yaml").read_text()
    assert "- meta_train" in text and "inner:" not in text


def test_reserved_task_id_ranges_come_from_one_module():
    from task_definitions.task_ids import TASK_ID_RANGES

    meta, ev = compose_config("meta_train"), compose_config("evaluate")
    assert meta.tasks.first_id == ev.splits.seen.first_id == TASK_ID_RANGES["seen"]
    assert meta.heldout.first_id == ev.splits.unseen.first_id == TASK_ID_RANGES["unseen"]
    assert ev.tuning.first_id == TASK_ID_RANGES["tuning"]
    conf = Path(__file__).resolve().parent.parent / "conf"
    literal = [p.name for p in conf.rglob("*.yaml")
               if any(f"{n:_}" in p.read_text() or str(n) in p.read_text()
                      for n in list(TASK_ID_RANGES.values())[1:])]
    assert literal == []


def test_evaluate_spec_from_config():
    cfg = compose_config("evaluate", ["budget=small", "max_trials=3", "trial_counts=[1,3]"])
    spec = evaluate.build_spec(cfg)
    assert set(spec.baselines) == {"AdamLR", "Adam8p", "opt_list"}
    assert spec.max_trials == 3 and spec.trial_counts == (1, 3)
    assert len(spec.splits["seen"]) == len(spec.splits["unseen"]) == 4
    # unseen and tuning ids are never sampled by meta-training
    meta = compose_config("meta_train")
    assert min(spec.splits["unseen"]) >= meta.tasks.first_id + meta.tasks.count
    assert min(spec.tuning_ids) > max(spec.splits["unseen"])
    lrs = spec.baselines["AdamLR"].trials(7)["learning_rate"]
    assert min(lrs) == pytest.approx(1e-4, rel=1e-5) and max(lrs) == pytest.approx(0.1, rel=1e-5)


PRESETS = {"smoke": ("smoke", "one_device"), "cpu": ("cpu", "all_devices"),
           "gpu": ("gpu", "one_device"), "multi_gpu": ("multi_gpu", "all_devices")}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_compute_presets_select_a_budget_and_a_hardware(preset):
    budget, hardware = PRESETS[preset]
    chosen = compose_config("meta_train", [f"meta_budget={budget}", f"hardware={hardware}"])
    assert compose_config("meta_train", [f"compute={preset}"]).compute == chosen.compute


def test_budget_and_hardware_stay_apart_and_the_command_line_wins_over_a_preset():
    conf = Path(__file__).resolve().parent.parent / "conf"
    budget_keys = {"num_outer_steps", "num_tasks", "truncation_length", "min_horizon",
                   "max_horizon", "resample_every", "heldout_every", "heldout_horizon"}
    for option in group_options("meta_budget"):
        assert set(compose_config("meta_train", [f"meta_budget={option}"]).compute) >= budget_keys
    for path in (conf / "hardware").glob("*.yaml"):
        assert not budget_keys & set(path.read_text().replace(":", " ").split())
    cfg = compose_config("meta_train", ["compute=smoke", "hardware=all_devices"])
    assert cfg.compute.num_devices == "auto" and cfg.compute.num_outer_steps == 30
