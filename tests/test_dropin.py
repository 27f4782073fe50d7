"""``lopt_cli.load_optimizer``: every kind of source, clear errors, and the user example run
end to end (as a subprocess) against a saved learned optimizer."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt_cli
from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import storage
from lopt_cli.optimizers.mlp_lopt import MLPLOpt

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "train_with_learned_optimizer.py"
CONFIG = {"_target_": "lopt_cli.optimizers.mlp_lopt.MLPLOpt", "hidden_sizes": [8, 8]}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run directory holding an (untrained) learned optimizer, as meta-train leaves it."""
    directory = tmp_path / "outputs" / "meta-train" / "run"
    theta = MLPLOpt(hidden_sizes=(8, 8)).init(jax.random.key(0))
    storage.save_learned_optimizer(directory, CONFIG, theta)
    return directory


def one_step(opt: optax.GradientTransformationExtraArgs):
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params, loss=jnp.float32(1.0))
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    return updates


def test_example_trains_with_a_saved_learned_optimizer(run_dir, lopt_env):
    result = subprocess.run([sys.executable, str(EXAMPLE), str(run_dir), "60"], check=False,
                            cwd=REPO, env=lopt_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [float(v) for v in re.findall(r"loss\s+(\S+)", result.stdout)]
    assert len(losses) == 3, result.stdout  # steps 0, 50 and 59
    assert all(math.isfinite(v) for v in losses)


def test_run_directory_and_weights_file(run_dir):
    for source in (run_dir, str(run_dir), run_dir / storage.WEIGHTS_FILE):
        opt = lopt_cli.load_optimizer(source, 100)
        assert isinstance(opt, optax.GradientTransformationExtraArgs)
        one_step(opt)


def test_latest_and_shipped_names(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(run_dir.parent.parent.parent)  # outputs/ is below the cwd
    one_step(lopt_cli.load_optimizer("latest", 100))
    shipped = tmp_path / "pretrained"
    storage.save_learned_optimizer(shipped / "tiny", CONFIG,
                                   MLPLOpt(hidden_sizes=(8, 8)).init(jax.random.key(1)))
    monkeypatch.setattr(storage, "PRETRAINED_DIR", shipped)
    one_step(lopt_cli.load_optimizer("tiny", 100))


def ship(shipped: Path, name: str, config: dict = CONFIG, seed: int = 1) -> None:
    from lopt_cli.config import instantiate_plain

    theta = instantiate_plain(config).init(jax.random.key(seed))
    storage.save_learned_optimizer(shipped / name, config, theta)


def test_default_is_the_shipped_one_the_pointer_names(tmp_path, monkeypatch):
    shipped = tmp_path / "pretrained"
    ship(shipped, "first", seed=1)
    ship(shipped, "second", seed=2)
    monkeypatch.setattr(storage, "PRETRAINED_DIR", shipped)
    storage.set_default_shipped_name("second")
    assert storage.resolve_weights_path("default") == shipped / "second" / storage.WEIGHTS_FILE
    updates = one_step(lopt_cli.load_optimizer("default", 100))
    expected = one_step(lopt_cli.load_optimizer("second", 100))
    other = one_step(lopt_cli.load_optimizer("first", 100))
    assert jax.tree.all(jax.tree.map(jnp.array_equal, updates, expected))
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, updates, other))
    # evaluate's leaderboard and self-train resolve learned optimizers the same way
    from lopt_cli.evaluation.candidates import resolve_candidate

    assert resolve_candidate("default", 0.1, 10.0).identity.startswith(
        resolve_candidate("second", 0.1, 10.0).identity.split(":")[0])
    with pytest.raises(LoptUserError, match="'third' is not shipped"):
        storage.set_default_shipped_name("third")
    (shipped / storage.DEFAULT_POINTER).write_text("gone\n")
    with pytest.raises(LoptUserError, match="names 'gone', not a shipped optimizer") as error:
        lopt_cli.load_optimizer("default", 100)
    assert "\n" not in str(error.value)


def test_the_repository_default_points_at_a_shipped_optimizer():
    assert storage.default_shipped_name() in storage.shipped_names()
    one_step(lopt_cli.load_optimizer("default", 100))


@pytest.mark.parametrize("name", storage.shipped_names())
def test_every_shipped_optimizer_has_a_card_and_takes_a_finite_step(name):
    assert (storage.PRETRAINED_DIR / name / "README.md").is_file()
    updates = one_step(lopt_cli.load_optimizer(name, 100))
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def assert_default_steps_scale_tenfold_with_learning_rate_1e_2(rtol: float, atol: float):
    """The default's first step at learning_rate=1e-2 is 10× its own (a base rate of 1e-3)."""
    own = one_step(lopt_cli.load_optimizer("default", 100))
    tenfold = one_step(lopt_cli.load_optimizer("default", 100, learning_rate=1e-2))
    for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(tenfold)):
        assert jnp.all(jnp.isfinite(a)) and jnp.allclose(10 * a, b, rtol=rtol, atol=atol)


def test_learning_rate_overrides_the_base_rate_of_an_optimizer_that_has_one(tmp_path,
                                                                            monkeypatch):
    shipped = tmp_path / "pretrained"
    ship(shipped, "nominal", {"_target_": "lopt_cli.optimizers.adam_nominal.AdamNominalLOpt"})
    monkeypatch.setattr(storage, "PRETRAINED_DIR", shipped)
    storage.set_default_shipped_name("nominal")
    assert_default_steps_scale_tenfold_with_learning_rate_1e_2(rtol=1e-5, atol=0.0)
    adam = one_step(lopt_cli.load_optimizer("adam", 100, learning_rate=0.5))
    assert float(jnp.max(jnp.abs(adam["w"]))) == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("source, learning_rate, message", [
    ("mlp_digits", 1e-3, "'mlp_digits' (MLPLOpt) takes no learning_rate"),
    ("opt_list:0", 1e-3, "'opt_list:0' takes no learning_rate"),
    ("adam", -1.0, "learning_rate=-1.0 must be a positive finite number"),
    ("adam", float("nan"), "must be a positive finite number"),
    ("adam", "1e-3", "must be a positive finite number"),
    ("adam", jnp.ones(2), "must be a positive finite number"),
    ("adam", np.array(True), "must be a positive finite number"),
    ("default", optax.cosine_decay_schedule(1e-3, 100), "learning_rate is a function; give a "
                                                       "number, the base rate"),
])
def test_learning_rate_errors_are_one_line(source, learning_rate, message):
    with pytest.raises(LoptUserError, match=re.escape(message)) as error:
        lopt_cli.load_optimizer(source, 100, learning_rate=learning_rate)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("num_steps, learning_rate", [
    (np.int64(100), np.float32(0.5)), (100, np.array(0.5)), (np.int32(100), jnp.asarray(0.5))])
def test_numpy_and_jax_scalars_are_numbers_too(num_steps, learning_rate):
    """What a training script computes (``len(data) // batch * epochs``, a rate from a config
    read with numpy) works as the Python number would."""
    adam = one_step(lopt_cli.load_optimizer("adam", num_steps, learning_rate=learning_rate))
    assert float(jnp.max(jnp.abs(adam["w"]))) == pytest.approx(0.5, rel=1e-4)


def test_the_shipped_default_is_adam_nominal_cautious_wsd_and_scales_with_its_learning_rate():
    from lopt_cli.optimizers.storage import default_shipped_name

    assert default_shipped_name() == "adam_nominal_cautious_wsd"
    assert_default_steps_scale_tenfold_with_learning_rate_1e_2(rtol=1e-4, atol=1e-9)


def test_schedule_swaps_the_defaults_supplied_schedule_and_keeps_its_weights():
    """The default runs warmup_stable_decay: at t = 0 of 100 steps its factor is 0.2 (1/100 of
    the way, 5% warm-up); constant's is 1, warmup_cosine's shares the warm-up."""
    own = one_step(lopt_cli.load_optimizer("default", 100))
    constant = one_step(lopt_cli.load_optimizer("default", 100, schedule="constant"))
    cosine = one_step(lopt_cli.load_optimizer("default", 100, schedule="warmup_cosine"))
    for a, b, c in zip(jax.tree.leaves(own), jax.tree.leaves(constant), jax.tree.leaves(cosine)):
        assert jnp.all(jnp.isfinite(a)) and jnp.allclose(5 * a, b, rtol=1e-4, atol=1e-9)
        assert jnp.allclose(a, c, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("source, schedule, message", [
    ("default", "linear", "schedule='linear' is not a supplied schedule; choose one of constant"),
    ("default", "learned", "schedule='learned' is not a supplied schedule"),
    ("celo_mix", "constant", "'celo_mix' (CeloLOpt) learns its schedule"),
    ("mlp_digits", "constant", "'mlp_digits' (MLPLOpt) has no learning-rate schedule"),
    ("adam", "constant", "'adam' takes no schedule"),
    ("opt_list:0", "cosine", "'opt_list:0' takes no schedule"),
])
def test_schedule_errors_are_one_line(source, schedule, message):
    with pytest.raises(LoptUserError, match=re.escape(message)) as error:
        lopt_cli.load_optimizer(source, 100, schedule=schedule)
    assert "\n" not in str(error.value)


def test_hand_designed_names_and_opt_list_entries():
    for name in ("adam", "sgd", "adam8p", "nadamw", "opt_list:0"):
        one_step(lopt_cli.load_optimizer(name, 100))
    # The horizon reaches the schedule: NAdamW's default cosine decay ends at zero.
    params, grads = {"x": jnp.ones(2)}, {"x": jnp.ones(2)}
    opt = lopt_cli.load_optimizer("nadamw", 1)
    state = opt.init(params)
    _, state = opt.update(grads, state, params)
    last, _ = opt.update(grads, state, params)
    assert float(jnp.max(jnp.abs(last["x"]))) == 0.0


@pytest.mark.parametrize("source, message", [
    ("no/such/run", "unknown optimizer source 'no/such/run'"),
    ("adamw_typo", "hand-designed optimizer"),
    ("opt_list:x", "opt_list:<index>"),
    ("opt_list:100000", "out of range"),
])
def test_bad_sources_are_one_line_user_errors(source, message):
    with pytest.raises(LoptUserError, match=re.escape(message)) as error:
        lopt_cli.load_optimizer(source, 100)
    assert "\n" not in str(error.value)


def test_broken_file_and_bad_horizon_are_user_errors(run_dir):
    (run_dir / storage.WEIGHTS_FILE).write_bytes(b"not msgpack")
    with pytest.raises(LoptUserError, match="corrupt weights"):
        lopt_cli.load_optimizer(run_dir, 100)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(LoptUserError, match="num_steps"):
            lopt_cli.load_optimizer("adam", bad)


def test_import_lopt_cli_stays_light():
    code = ("import sys, lopt_cli; heavy = {'jax', 'flax', 'optax'} & set(sys.modules); "
            "assert not heavy, heavy; assert callable(lopt_cli.load_optimizer)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_readme_shows_the_example_that_runs():
    """The README's drop-in example is the example file the test above runs."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    example = (root / "examples" / "train_with_learned_optimizer.py").read_text()
    assert example[example.index("import sys"):] in (root / "README.md").read_text()


def test_a_step_with_a_non_finite_update_is_skipped(run_dir):
    """The guard: NaN/inf gradients and overflowing squares (|g| >= 1e19 in float32) leave
    parameters and state as they were; finite steps are exactly the learned optimizer's."""
    lopt, theta, _ = storage.load_learned_optimizer(run_dir)
    bare, guarded = lopt.transform(theta, 100), lopt_cli.load_optimizer(run_dir, 100)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
    state = guarded.init(params)
    expected, _ = jax.jit(bare.update)(grads, bare.init(params), params, loss=1.0)
    updates, state = jax.jit(guarded.update)(grads, state, params, loss=1.0)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, updates, expected))
    for bad in (jnp.nan, jnp.inf, 1e20):  # at the first step: no running RMS clips them yet
        huge = jax.tree.map(lambda g, b=bad: g * b, grads)
        unguarded, _ = bare.update(huge, bare.init(params), params, loss=1.0)
        assert not all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(unguarded))
        fresh = guarded.init(params)
        updates, state = jax.jit(guarded.update)(huge, fresh, params, loss=1.0)
        assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
        assert jax.tree.all(jax.tree.map(jnp.array_equal, state.inner, fresh.inner))
        assert int(state.skipped) == 1


def test_parameters_users_bring(run_dir):
    """Half precision, scalars, empty tensors, int leaves and None keep their dtype and stay
    finite; complex parameters are a one-line error."""
    opt = lopt_cli.load_optimizer(run_dir, 100)
    params = {"half": jnp.ones((4, 3), jnp.float16), "bf16": jnp.ones(5, jnp.bfloat16),
              "scalar": jnp.float32(2.0), "empty": jnp.zeros((0, 3)),
              "int": jnp.ones(3, jnp.int32), "none": None}
    grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
    state = opt.init(params)
    step = jax.jit(opt.update)
    for _ in range(3):
        updates, state = step(grads, state, params, loss=1.0)
        params = optax.apply_updates(params, updates)
    assert params["none"] is None and int(state.skipped) == 0
    for name, leaf in params.items():
        if leaf is not None:
            assert leaf.dtype == grads[name].dtype, name
            assert bool(jnp.all(jnp.isfinite(leaf))), name
    with pytest.raises(LoptUserError, match=r"parameter \['c'\] is complex64") as error:
        opt.init({"c": jnp.ones(2, jnp.complex64)})
    assert "\n" not in str(error.value)
