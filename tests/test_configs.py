"""Every option of every config group composes and instantiates; primary configs compose."""
from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import compose_config, group_options

from lopt_cli.commands import evaluate, meta_train, self_train, tasks
from lopt_cli.commands.common import build

GROUPS = ("task_family", "optimizer", "estimator", "outer_optimizer", "compute", "meta_budget",
          "hardware", "recipe")
SETS_OTHER_GROUPS = ("compute", "meta_budget", "hardware", "recipe")  # no key of their own


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_option_builds_a_meta_training_job(group, option):
    cfg = compose_config("meta_train", [f"{group}={option}"])
    job = meta_train.build_job(cfg)
    assert job.settings.num_outer_steps > 0
    if group not in SETS_OTHER_GROUPS:
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


@pytest.mark.parametrize(("override", "expected"), [
    ("compute.num_outer_steps=0", "compute.num_outer_steps=0: expected a positive integer"),
    ("inner.valid_every=-1", "inner.valid_every=-1: expected a positive integer"),
    ("tasks.count=many", "tasks.count='many': expected a positive integer"),
    ("seed=1.5", "seed=1.5: expected an integer"),
    ("checkpoint_every=-1", "checkpoint_every=-1: expected an integer >= 0"),
    ("population.mix=maybe", "population.mix='maybe': expected true, false or auto"),
    ("heldout.num_seeds=0", "heldout.num_seeds=0: expected a positive integer"),
    ("heldout.seed=-1", "heldout.seed=-1: expected an integer >= 0"),
    ("curriculum.start_max_horizon=99999", "curriculum.start_max_horizon=99999 exceeds"),
    ("estimator.truncation_length=7", "estimator.truncation_length=7 must be a multiple of"),
    ("inner.min_horizon=500", "inner.min_horizon=500 exceeds inner.max_horizon=400"),
])
def test_typed_meta_train_config_names_the_bad_value(override, expected):
    from lopt_cli.errors import LoptUserError

    with pytest.raises(LoptUserError) as error:
        meta_train.build_job(compose_config("meta_train", [override]))
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_meta_train_config_is_typed_end_to_end():
    from lopt_cli.commands.meta_train_config import MetaTrainConfig, parse_meta_train

    config = parse_meta_train(compose_config("meta_train", ["compute=smoke"]))
    assert isinstance(config, MetaTrainConfig) and config.compute.num_tasks == 4
    assert config.heldout.first_id == 1_000_000 and config.population.mix == "auto"
    from lopt_cli.commands.meta_train_resume import JOB_KEYS

    assert JOB_KEYS == tuple(f for f in MetaTrainConfig.__dataclass_fields__)
    assert not [name for name, hint in meta_train.MetaTrainJob.__annotations__.items()
                if hint == "Any"]


def test_an_outer_optimizer_with_a_schedule_gets_the_run_length_by_its_signature():
    job = meta_train.build_job(compose_config("meta_train", ["compute=smoke"]))
    assert job.outer_tx is not None
    source = Path(meta_train.__file__).read_text()
    assert "make_outer_optimizer" not in source  # no _target_ matched as text
