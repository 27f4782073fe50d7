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
