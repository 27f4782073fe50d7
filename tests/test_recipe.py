"""The meta-training recipe's switches: ``train_only=rule|schedule`` (two-phase training),
``init_from=<saved learned optimizer>`` and, end to end through the CLI, the two phases chained.
(``meta_loss=train|valid`` is tested with the estimators, in ``test_estimators.py``.)

The optimizer with a learned schedule is the real ``optimizer=celo`` (its ``schedule_in``,
``schedule_out`` layers are the schedule, the others the update rule).
"""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import yaml
from tests_support import CONF, compose_config

from lopt_cli.commands.meta_train_start import architecture_differences, check_train_only
from lopt_cli.config import instantiate_plain
from lopt_cli.errors import LoptUserError
from lopt_cli.meta.outer import initial_state, make_outer_optimizer, outer_update, run_keys
from lopt_cli.meta.phases import train_only_part, trainable_mask
from lopt_cli.optimizers.small_lopt import SmallLOpt
from lopt_cli.optimizers.storage import WEIGHTS_FILE, load_learned_optimizer

CELO = instantiate_plain(yaml.safe_load((CONF / "optimizer" / "celo.yaml").read_text()))


def leaves_by_layer(theta) -> dict[str, list[np.ndarray]]:
    return {name: [np.asarray(x) for x in jax.tree_util.tree_leaves(layer)]
            for name, layer in theta["params"].items()}


def same_bits(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b))


def test_the_mask_tells_the_schedule_layers_from_the_rule():
    theta = CELO.init(jax.random.PRNGKey(0))
    for part in ("rule", "schedule"):
        mask = trainable_mask(theta, part)
        for name, layer in mask["params"].items():
            expected = name.startswith("schedule") == (part == "schedule")
            assert all(leaf is expected for leaf in jax.tree_util.tree_leaves(layer)), name
    assert all(jax.tree_util.tree_leaves(trainable_mask(theta, None)))
    with pytest.raises(ValueError, match="train_only='both'"):
        trainable_mask(theta, "both")


@pytest.mark.parametrize(("part", "frozen"), [("rule", "schedule"), ("schedule", "rule")])
def test_outer_steps_leave_the_frozen_part_bit_identical(part, frozen):
    """AdamW with weight decay and clipping, gradients on every leaf: after 3 outer steps the
    frozen part is exactly its initial value (no decay drift), the trained part moved exactly as
    if the frozen part's gradients were zero (they count in no clipping norm)."""
    theta0 = CELO.init(jax.random.PRNGKey(0))
    adamw = make_outer_optimizer(0.01, warmup_steps=1, weight_decay=0.1, clip_norm=0.1)
    tx = train_only_part(adamw, part)
    mask = trainable_mask(theta0, part)
    theta, opt_state = theta0, tx.init(theta0)
    reference, reference_state = theta0, adamw.init(theta0)
    noise = jax.jit(lambda key: jax.tree_util.tree_map(
        lambda x: jax.random.normal(key, x.shape), theta0))
    update = jax.jit(outer_update, static_argnums=0)
    for step in range(3):
        grad = noise(jax.random.PRNGKey(step))
        theta, opt_state, _, skipped = update(tx, grad, opt_state, theta, 1.0)
        assert not skipped
        grad = jax.tree_util.tree_map(lambda g, keep: g if keep else 0 * g, grad, mask)
        reference, reference_state, _, _ = update(adamw, grad, reference_state, reference, 1.0)
    before, after = leaves_by_layer(theta0), leaves_by_layer(theta)
    for name in before:
        if name.startswith("schedule") == (frozen == "schedule"):
            assert same_bits(before[name], after[name]), name
        else:
            assert not any(np.array_equal(a, b) for a, b in zip(before[name], after[name])), name
            for got, want in zip(after[name], leaves_by_layer(reference)[name]):
                np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)


def test_train_only_without_the_part_is_a_user_error_naming_the_optimizer():
    with pytest.raises(LoptUserError, match="train_only=schedule: optimizer SmallLOpt has no "
                                            "schedule layers"):
        check_train_only("schedule", SmallLOpt(), {"_target_": "x.SmallLOpt"})

    class OnlySchedule:
        def init(self, key):
            return {"params": {"schedule_out": {"bias": jax.numpy.zeros(())}}}

    with pytest.raises(LoptUserError, match="optimizer OnlySchedule has only schedule layers"):
        check_train_only("rule", OnlySchedule(), {"_target_": "x.OnlySchedule"})
    check_train_only("rule", CELO, {"_target_": "x.CeloLOpt"})
    check_train_only("schedule", CELO, {"_target_": "x.CeloLOpt"})
    check_train_only(None, SmallLOpt(), {"_target_": "x.SmallLOpt"})


def test_architecture_differences_name_the_class_or_the_fields():
    assert architecture_differences(SmallLOpt(), SmallLOpt()) == []
    assert architecture_differences(SmallLOpt(hidden_sizes=(8,)), SmallLOpt()) == [
        "hidden_sizes=(8,) (configured: (4,))"]
    assert architecture_differences(CELO, SmallLOpt()) == ["CeloLOpt (configured: SmallLOpt)"]


def test_init_from_starts_meta_training_at_the_loaded_theta(tmp_path):
    """θ at outer step 0 is the saved optimizer's θ (not the optimizer's own init)."""
    from lopt_cli.commands.meta_train import build_job
    from lopt_cli.optimizers.storage import save_learned_optimizer

    common = ["compute=smoke", "optimizer=celo"]
    job = build_job(compose_config("meta_train", common))
    fresh = job.problem.lopt.init(jax.random.PRNGKey(0))
    saved = jax.tree_util.tree_map(lambda x: x + 0.5, fresh)
    save_learned_optimizer(tmp_path, job.optimizer_config, saved)
    job = build_job(compose_config("meta_train", [*common, f"init_from={tmp_path}"]))
    assert job.init_from == (tmp_path / WEIGHTS_FILE).resolve()
    start = initial_state(job.problem, job.outer_tx, job.settings, job.initial_theta).theta
    for name, leaves in leaves_by_layer(saved).items():
        assert same_bits(leaves, leaves_by_layer(start)[name]), name


@pytest.mark.slow
def test_two_phase_meta_training_through_the_cli(lopt_env, tmp_path):
    """Phase 1 (train_only=rule) then phase 2 (train_only=schedule, init_from=phase 1's run):
    phase 1 leaves the schedule at its init, phase 2 starts from phase 1's θ and leaves its rule
    bit-identical while moving the schedule; init_from is in phase 2's config of record."""
    import subprocess
    import sys

    common = ["compute=smoke", "compute.num_outer_steps=3", "heldout.every=0", "optimizer=celo"]
    phase_1, phase_2 = tmp_path / "phase_1", tmp_path / "phase_2"
    for args in ([*common, "train_only=rule", f"hydra.run.dir={phase_1}"],
                 [*common, "train_only=schedule", f"init_from={phase_1}",
                  f"hydra.run.dir={phase_2}"]):
        result = subprocess.run([sys.executable, "-m", "lopt_cli", "meta-train", *args],
                                cwd=tmp_path, env=lopt_env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr
    _, theta_1, _ = load_learned_optimizer(phase_1)
    _, theta_2, _ = load_learned_optimizer(phase_2)
    first, second = leaves_by_layer(theta_1), leaves_by_layer(theta_2)
    init = leaves_by_layer(CELO.init(run_keys(0)[1]))  # seed 0's θ_0
    for name in first:
        if name.startswith("schedule"):  # frozen in phase 1, trained in phase 2
            assert same_bits(first[name], init[name]), name
            assert not same_bits(second[name], first[name]), name
        else:  # trained in phase 1, frozen in phase 2
            assert not same_bits(first[name], init[name]), name
            assert same_bits(first[name], second[name]), name
    record = yaml.safe_load((phase_2 / ".hydra" / "config.yaml").read_text())
    assert record["init_from"] == str(phase_1) and record["train_only"] == "schedule"
    summary = json.loads((phase_2 / "summary.json").read_text())
    assert summary["init_from"] == str((phase_1 / WEIGHTS_FILE).resolve())


def test_resume_wins_over_init_from(tmp_path):
    """A resumed run continues from its checkpoint's θ, not from init_from's."""
    import dataclasses

    from lopt_cli.commands.meta_train import build_job, run_meta_training
    from lopt_cli.optimizers.storage import save_learned_optimizer

    common = ["compute=smoke", "compute.num_outer_steps=2", "compute.num_tasks=1",
              "task_family=quadratic", "task_family.dims=[2]", "heldout.every=0",
              "outer_optimizer.warmup_steps=1", "optimizer=small"]
    job = build_job(compose_config("meta_train", common))
    saved = jax.tree_util.tree_map(lambda x: x + 0.5, job.problem.lopt.init(jax.random.key(0)))
    save_learned_optimizer(tmp_path / "saved", job.optimizer_config, saved)
    job = build_job(compose_config("meta_train", [*common, f"init_from={tmp_path / 'saved'}"]))
    run = tmp_path / "run"
    trained, _ = run_meta_training(job, run)  # from the saved θ; checkpointed at the end
    resumed, _ = run_meta_training(dataclasses.replace(job, resume=True), run)  # nothing left
    for name, leaves in leaves_by_layer(trained).items():
        assert same_bits(leaves, leaves_by_layer(resumed)[name]), name
    assert not same_bits(leaves_by_layer(trained)["out"], leaves_by_layer(saved)["out"])


def test_a_run_saved_before_the_recipe_keys_resumes_with_their_defaults(tmp_path):
    from omegaconf import OmegaConf

    from lopt_cli.commands.meta_train_config import parse_meta_train
    from lopt_cli.commands.meta_train_resume import resumed_config

    cfg = compose_config("meta_train", ["compute=smoke", "resume=true"])
    old = OmegaConf.to_container(cfg)
    for key in ("meta_loss", "train_only", "init_from", "meta_loss_progress_power"):
        del old[key]
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(old), tmp_path / ".hydra" / "config.yaml")
    config = parse_meta_train(resumed_config(cfg, tmp_path))
    assert (config.meta_loss, config.train_only, config.init_from,
            config.meta_loss_progress_power) == ("valid", None, None, 0.0)


def test_a_resume_neither_reloads_nor_re_resolves_init_from(tmp_path):
    """Resuming reads θ from the checkpoint only: init_from's file may be gone by then (and
    ``init_from=latest`` could otherwise resolve to the run itself)."""
    import shutil

    from omegaconf import OmegaConf

    from lopt_cli.commands.meta_train import build_job, run_meta_training
    from lopt_cli.optimizers.storage import save_learned_optimizer

    common = ["compute=smoke", "compute.num_outer_steps=2", "compute.num_tasks=1",
              "task_family=quadratic", "task_family.dims=[2]", "heldout.every=0",
              "outer_optimizer.warmup_steps=1", "optimizer=small"]
    job = build_job(compose_config("meta_train", common))
    save_learned_optimizer(tmp_path / "saved", job.optimizer_config,
                           job.problem.lopt.init(jax.random.key(0)))
    run = tmp_path / "run"
    started = [*common, f"init_from={tmp_path / 'saved'}"]
    job = build_job(compose_config("meta_train", started))
    run_meta_training(job, run)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text(
        OmegaConf.to_yaml(compose_config("meta_train", started)))
    shutil.rmtree(tmp_path / "saved")
    resumed = build_job(compose_config("meta_train", [*started, f"resume={run}"]))
    assert resumed.initial_theta is None and resumed.resume_dir == run
    assert resumed.init_from == tmp_path / "saved"


# --- recipe=<name>: a shipped optimizer's whole meta-training command as one config ---------

SHIPPED = CONF.parent / "lopt_cli" / "pretrained"
RECIPES = ["adam_nominal_cautious_wsd", "adam_nominal_b99", "adam_nominal_wsd", "adam_nominal_mix",
           "celo_mix"]


def model_card_command(name: str) -> list[str]:
    """The overrides of the ``lopt meta-train`` command in a shipped optimizer's model card."""
    card = (SHIPPED / name / "README.md").read_text()
    line = next(line for line in card.splitlines() if line.startswith("lopt meta-train "))
    return line.split()[2:]


def plain(config) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config, resolve=False)


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_composes_exactly_its_model_cards_command(name):
    assert plain(compose_config("meta_train", [f"recipe={name}"])) == plain(
        compose_config("meta_train", model_card_command(name)))


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_builds_the_shipped_optimizers_architecture(name):
    """Every option the shipped config records has the recipe's value (options added to the
    optimizer since it shipped are absent there and take their defaults)."""
    shipped = yaml.safe_load((SHIPPED / name / "learned_optimizer.yaml").read_text())
    shipped.pop("weights_sha256")
    composed = plain(compose_config("meta_train", [f"recipe={name}"]))["optimizer"]
    assert {key: composed[key] for key in shipped} == shipped


def test_the_command_line_still_overrides_a_recipe():
    config = compose_config("meta_train", ["recipe=adam_nominal_mix", "seed=3",
                                           "compute.num_outer_steps=100", "meta_loss=train"])
    assert (config.seed, config.compute.num_outer_steps, config.meta_loss) == (3, 100, "train")
    assert config.optimizer.correction == "multiplicative"
    assert config.heldout.task_family.name == "celo_mix_plus"


def test_init_from_adds_a_modulation_to_a_saved_supplied_schedule(tmp_path):
    """optimizer.schedule_modulation=true on a θ saved without it: the saved layers bit for bit,
    the schedule's added at their init (output zero); any other difference is still an error."""
    from lopt_cli.commands.meta_train import build_job
    from lopt_cli.optimizers.storage import save_learned_optimizer

    common = ["compute=smoke", "optimizer=adam_nominal", "optimizer.schedule=warmup_stable_decay"]
    job = build_job(compose_config("meta_train", common))
    saved = jax.tree_util.tree_map(lambda x: x + 0.5, job.problem.lopt.init(jax.random.key(0)))
    assert not any(name.startswith("schedule") for name in saved["params"])
    save_learned_optimizer(tmp_path, job.optimizer_config, saved)
    job = build_job(compose_config("meta_train", [
        *common, "optimizer.schedule_modulation=true", f"init_from={tmp_path}",
        "train_only=schedule"]))
    start = leaves_by_layer(job.initial_theta)
    for name, leaves in leaves_by_layer(saved).items():
        assert same_bits(leaves, start[name]), name
    assert {"schedule_in", "schedule_out"} <= set(start)
    assert not np.any(np.asarray(job.initial_theta["params"]["schedule_out"]["kernel"]))
    with pytest.raises(LoptUserError, match="correction_hidden=4 .configured: 8."):
        build_job(compose_config("meta_train", [
            *common, "optimizer.schedule_modulation=true", "optimizer.correction_hidden=8",
            f"init_from={tmp_path}"]))


def test_the_modulation_recipe_starts_at_the_shipped_default():
    from lopt_cli.commands.meta_train import build_job
    from lopt_cli.optimizers.storage import load_learned_optimizer, resolve_weights_path

    job = build_job(compose_config("meta_train", ["recipe=adam_nominal_wsd_mod"]))
    shipped, theta, _ = load_learned_optimizer(resolve_weights_path("adam_nominal_wsd", "x"))
    assert job.problem.lopt.schedule_modulation and not shipped.schedule_modulation
    assert job.train_only == "schedule"
    start = leaves_by_layer(job.initial_theta)
    for name, leaves in leaves_by_layer(theta).items():
        assert same_bits(leaves, start[name]), name
