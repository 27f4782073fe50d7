"""Every option of every config group composes and instantiates; primary configs compose."""
from __future__ import annotations

import pytest
from tests_support import compose_config, group_options

from lopt_cli.commands import evaluate, meta_train, self_train, tasks
from lopt_cli.commands.common import build

GROUPS = ("task_family", "optimizer", "estimator", "outer_optimizer", "compute")


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_option_builds_a_meta_training_job(group, option):
    cfg = compose_config("meta_train", [f"{group}={option}"])
    job = meta_train.build_job(cfg)
    assert job.settings.num_outer_steps > 0
    if group != "compute":
        assert build(cfg[group], option) is not None


@pytest.mark.parametrize("module", [meta_train, evaluate, self_train, tasks])
def test_primary_configs_compose_with_job_names(module):
    cfg = compose_config(module.CONFIG_NAME)
    assert cfg is not None


def test_hydra_run_dirs_have_microsecond_timestamps():
    from pathlib import Path

    for name in ("meta_train", "evaluate", "self_train", "tasks"):
        text = (Path(__file__).resolve().parent.parent / "conf" / f"{name}.yaml").read_text()
        assert "%f}" in text and "name:" in text


def test_evaluate_settings_from_config():
    cfg = compose_config("evaluate", ["adam_lr.min=1e-3", "adam_lr.max=1e-1", "adam_lr.num=3"])
    settings = evaluate.build_settings(cfg)
    assert settings.learning_rates == pytest.approx((1e-3, 1e-2, 1e-1))
    assert settings.first_task_id >= compose_config("meta_train").tasks.count
