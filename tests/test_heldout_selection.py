"""Selecting θ on held-out tasks: ``heldout.task_family`` and ``heldout.keep_best``.

The held-out check may draw its tasks from another family than meta-training's; θ₀ is checked
before the first step, and with ``keep_best`` the run publishes the θ of the lowest held-out
loss, θ₀ included (the last θ goes to ``last/``), a resumed run keeping the best its history
records.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from flax import serialization
from tests_support import compose_config

from lopt_cli.commands.meta_train import build_job, check, run_meta_training
from lopt_cli.commands.recorder import MetaTrainRecorder, best_heldout
from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.storage import LAST_DIR, WEIGHTS_FILE
from task_definitions.functions2d import Functions2DFamily
from task_definitions.quadratic import QuadraticFamily

TINY = ["compute=smoke", "compute.num_outer_steps=4", "compute.num_tasks=2",
        "task_family=quadratic", "task_family.dims=[8]"]
OTHER_FAMILY = ["task_family@heldout.task_family=functions_2d", "heldout.num_tasks=2",
                "heldout.num_seeds=1", "heldout.horizon=20"]


class ScriptedHeldOut:
    """A held-out check due at every step, returning the scripted losses in turn."""

    def __init__(self, losses):
        self.losses = list(losses)

    def due(self, step, num_outer_steps):
        return True

    def __call__(self, theta):
        return self.losses.pop(0)


def theta_at(step: int) -> dict:
    return {"w": np.full((3,), float(step), np.float32)}


def published(directory) -> float:
    """The step whose θ (:func:`theta_at`) the file in ``directory`` holds."""
    saved = serialization.msgpack_restore((directory / WEIGHTS_FILE).read_bytes())
    return float(saved["w"][0])


def record(directory, losses, history=None, first_step=0, keep_best=True, initial=None):
    """Records ``losses`` as the checks of steps ``first_step...``, θ of step s being
    ``theta_at(s)`` (θ₀: ``theta_at(-1)``, whose check is ``initial``)."""
    recorder = MetaTrainRecorder(directory, first_step + len(losses), 1, {"name": "toy"},
                                 checkpoint_every=1, heldout=ScriptedHeldOut(losses),
                                 history=history, keep_best=keep_best,
                                 initial_heldout_loss=initial, initial_theta=theta_at(-1))
    with recorder:
        for step in range(first_step, first_step + len(losses)):
            recorder(step, {"meta_loss": 1.0}, theta_at(step))
    return recorder.history


def test_keep_best_publishes_the_lowest_heldout_loss_theta(tmp_path):
    history = record(tmp_path, [0.9, 0.5, math.nan, 0.7, 0.6])
    assert published(tmp_path) == 1.0  # NaN is never the best; later worse θs are not saved
    assert best_heldout(history) == {"best_heldout_loss": 0.5, "best_heldout_step": 1}


def test_keep_best_publishes_the_initial_theta_when_no_check_beats_it(tmp_path):
    history = record(tmp_path, [0.5, 0.45], initial=0.4)
    assert history[0]["initial_heldout_loss"] == 0.4
    assert published(tmp_path) == -1.0
    assert best_heldout(history) == {"best_heldout_loss": 0.4, "best_heldout_step": -1}
    record(tmp_path, [0.5, 0.3], initial=0.4)
    assert published(tmp_path) == 1.0


def test_without_keep_best_the_last_theta_is_published(tmp_path):
    record(tmp_path, [0.9, 0.5, 0.7], keep_best=False)
    assert published(tmp_path) == 2.0


def test_a_resumed_recorder_keeps_its_historys_best(tmp_path):
    """Resumed after step 1 with a best of 0.5 in its rows: 0.6 and 0.55 are not saved over
    the file, 0.4 is."""
    first = record(tmp_path, [0.9, 0.5])
    record(tmp_path, [0.6, 0.55], history=first, first_step=2)
    assert published(tmp_path) == 1.0
    record(tmp_path, [0.6, 0.4], history=first, first_step=2)
    assert published(tmp_path) == 3.0


def test_best_heldout_takes_the_earliest_of_equal_losses_and_skips_rows_without_one():
    rows = [{"step": 0}, {"step": 1, "heldout_loss": 0.3}, {"step": 2, "heldout_loss": 0.3},
            {"step": 3, "heldout_loss": math.inf}]
    assert best_heldout(rows) == {"best_heldout_loss": 0.3, "best_heldout_step": 1}
    assert best_heldout([{"step": 0, "heldout_loss": math.nan}]) == {}


def test_the_heldout_family_defaults_to_the_training_family_and_can_be_another():
    same = build_job(compose_config("meta_train", TINY + ["heldout.every=2"]))
    assert same.heldout.family is same.family and not same.keep_best
    other = build_job(compose_config("meta_train", TINY + ["heldout.every=2"] + OTHER_FAMILY))
    assert isinstance(other.family, QuadraticFamily)
    assert isinstance(other.heldout.family, Functions2DFamily)
    assert isinstance(other.heldout.tasks[0], type(other.heldout.tasks[1]))


@pytest.mark.parametrize("overrides, message", [
    (["heldout.every=0", "heldout.keep_best=true"], "heldout.keep_best=true selects θ"),
    (["heldout.every=2", "heldout.keep_best=maybe"], "heldout.keep_best='maybe'"),
    (["heldout.every=2", "task_family@heldout.task_family=functions_2d",
      "heldout.task_family.functions=[no_such_function]"], "heldout.task_family"),
])
def test_bad_heldout_selection_settings_fail_in_one_line(overrides, message):
    with pytest.raises(LoptUserError, match=message):
        check(compose_config("meta_train", TINY + overrides))


def test_a_keep_best_run_publishes_its_best_checked_theta(tmp_path):
    """Through the composed config: the summary names the best check, the published θ is the
    one returned, and the last θ is in last/."""
    from lopt_cli.optimizers.storage import load_learned_optimizer

    job = build_job(compose_config("meta_train", TINY + OTHER_FAMILY + [
        "heldout.every=1", "heldout.keep_best=true"]))
    theta, history = run_meta_training(job, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["initial_heldout_loss"] == history[0]["initial_heldout_loss"]
    checked = {-1: summary["initial_heldout_loss"], **{r["step"]: r["heldout_loss"] for r in history}}
    assert summary["best_heldout_loss"] == min(checked.values())
    assert checked[summary["best_heldout_step"]] == min(checked.values())
    _, saved, _ = load_learned_optimizer(tmp_path)
    assert serialization.to_bytes(saved) == serialization.to_bytes(theta)
    assert (tmp_path / LAST_DIR / WEIGHTS_FILE).is_file()


def test_a_run_written_before_these_keys_existed_resumes_with_their_defaults(tmp_path):
    from omegaconf import OmegaConf

    from lopt_cli.commands.meta_train_config import parse_meta_train
    from lopt_cli.commands.meta_train_resume import resumed_config

    cfg = compose_config("meta_train", TINY + ["resume=true"])
    old = OmegaConf.to_container(cfg)
    del old["heldout"]["task_family"], old["heldout"]["keep_best"], old["heldout"]["seed"]
    old["seed"] = 3
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(old), tmp_path / ".hydra" / "config.yaml")
    heldout = parse_meta_train(resumed_config(cfg, tmp_path)).heldout
    assert heldout.task_family is None and heldout.keep_best is False
    assert heldout.seed == 3  # the check of such a run used the run's seed: it still does


def test_the_check_runs_on_a_host_copy_of_theta(monkeypatch):
    """A θ replicated over a sharded run's devices compiles with another rounding; the check
    hands learned_curves host arrays, so in-run checks agree with re-evaluations."""
    import jax

    import lopt_cli.meta.heldout as heldout_module

    job = build_job(compose_config("meta_train", TINY + ["heldout.every=2"] + OTHER_FAMILY))
    seen, real = [], heldout_module.learned_curves

    def spy(lopt, theta, *args):
        seen.extend(type(leaf) for leaf in jax.tree_util.tree_leaves(theta))
        return real(lopt, theta, *args)

    monkeypatch.setattr(heldout_module, "learned_curves", spy)
    theta = jax.device_put(job.problem.lopt.init(jax.random.PRNGKey(0)))
    loss = job.heldout(theta)
    assert seen and all(kind is np.ndarray for kind in seen), set(seen)
    assert loss == job.heldout(jax.device_get(theta))


def test_every_held_out_task_draws_its_own_seeds(monkeypatch):
    """Two MLP tasks that differ only in the config seed the family does not build from
    (unrescaled celo_mix) must not be the same run twice: each task gets its own keys."""
    import jax

    import lopt_cli.meta.heldout as heldout_module

    unscaled = ["task_family@heldout.task_family=celo_mix", "heldout.num_tasks=3",
                "heldout.num_seeds=2", "heldout.horizon=10", "heldout.every=2",
                "heldout.task_family.param_scale=[1.0,1.0]"]
    job = build_job(compose_config("meta_train", TINY + unscaled))
    seen, real = [], heldout_module.learned_curves

    def spy(lopt, theta, task, keys, *args):
        seen.append(np.asarray(keys))
        return real(lopt, theta, task, keys, *args)

    monkeypatch.setattr(heldout_module, "learned_curves", spy)
    job.heldout(job.problem.lopt.init(jax.random.PRNGKey(0)))
    assert len(seen) == 3
    distinct = {keys.tobytes() for keys in seen}
    assert len(distinct) == 3 and all(len({k.tobytes() for k in keys}) == 2 for keys in seen)
