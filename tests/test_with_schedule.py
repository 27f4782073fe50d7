"""``python -m lopt_cli.scripts.with_schedule``: a learned optimizer with another supplied
schedule, written as a run directory (weights byte for byte, config differing in ``schedule``)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml

import lopt_cli
from lopt_cli.optimizers import storage
from lopt_cli.scripts.with_schedule import cli


def first_step(opt: optax.GradientTransformation):
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.zeros(4)}
    grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
    return opt.update(grads, opt.init(params), params)[0]


def test_it_writes_the_same_weights_with_the_new_schedule(tmp_path, capsys):
    out = tmp_path / "default_cosine"
    assert cli(["default", "warmup_cosine", str(out)]) == 0
    shipped = storage.resolve_weights_path("default")
    assert (out / storage.WEIGHTS_FILE).read_bytes() == shipped.read_bytes()
    written = yaml.safe_load((out / storage.CONFIG_FILE).read_text())
    original = yaml.safe_load(shipped.with_name(storage.CONFIG_FILE).read_text())
    assert written == {**original, "schedule": "warmup_cosine"}
    assert original["schedule"] != "warmup_cosine"
    # Its first step is load_optimizer's in-memory swap, bit for bit.
    from_dir = first_step(lopt_cli.load_optimizer(str(out), 100))
    swapped = first_step(lopt_cli.load_optimizer("default", 100, schedule="warmup_cosine"))
    assert jax.tree.all(jax.tree.map(jnp.array_equal, from_dir, swapped))
    assert "written:" in capsys.readouterr().out


@pytest.mark.parametrize("source, schedule, message", [
    ("celo_mix", "constant", "learns its schedule"),
    ("default", "linear", "not a supplied schedule"),
    ("mlp_digits", "constant", "has no learning-rate schedule"),
])
def test_bad_sources_and_schedules_are_one_line_errors(tmp_path, capsys, source, schedule,
                                                       message):
    out = tmp_path / "out"
    assert cli([source, schedule, str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()  # nothing written


def test_an_existing_optimizer_needs_force_and_a_file_is_no_directory(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["default", "constant", str(out)]) == 0
    assert cli(["default", "cosine", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert cli(["default", "cosine", str(out), "--force"]) == 0
    assert yaml.safe_load((out / storage.CONFIG_FILE).read_text())["schedule"] == "cosine"
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli(["default", "cosine", str(blocker / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_untrained_writes_the_architectures_theta0_which_is_adam_on_the_schedule(tmp_path,
                                                                                 capsys):
    """``--untrained``: a shipped optimizer's config and schedule at θ₀ (never its weights);
    for ``adam_nominal_wsd`` (no cautious mask) its steps are optax's Adam at the config's rate
    times the schedule's factor s((t + 1) / T): the schedule alone, to compare meta-training
    against."""
    from lopt_cli.optimizers import schedule as sched

    out = tmp_path / "adam_wsd"
    assert cli(["adam_nominal_wsd", "warmup_stable_decay", str(out), "--untrained"]) == 0
    assert "untrained θ₀" in capsys.readouterr().out
    shipped = storage.resolve_weights_path("adam_nominal_wsd")
    assert (out / storage.WEIGHTS_FILE).read_bytes() != shipped.read_bytes()
    written = yaml.safe_load((out / storage.CONFIG_FILE).read_text())
    original = yaml.safe_load(shipped.with_name(storage.CONFIG_FILE).read_text())
    assert {k: v for k, v in written.items() if k != storage.CHECKSUM_KEY} == {
        **{k: v for k, v in original.items() if k != storage.CHECKSUM_KEY},
        "schedule": "warmup_stable_decay"}
    lopt, theta, _ = storage.load_learned_optimizer(str(out))
    assert jax.tree.all(jax.tree.map(jnp.array_equal, theta, lopt.init(jax.random.PRNGKey(0))))

    horizon = 40
    ours = lopt_cli.load_optimizer(str(out), horizon)
    rate = float(written["learning_rate"])
    adam = optax.chain(optax.scale_by_adam(), optax.scale_by_schedule(
        lambda count: -rate * sched.supplied_factor("warmup_stable_decay",
                                                    sched.progress(count, horizon))))
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.zeros(4)}
    state, adam_state = ours.init(params), adam.init(params)
    for step in range(horizon):
        grads = jax.tree.map(lambda p, s=step: jnp.sin(p * (s + 1)) + 0.1, params)
        mine, state = ours.update(grads, state, params)
        plain, adam_state = adam.update(grads, adam_state, params)
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(plain)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
        params = optax.apply_updates(params, mine)
    assert float(jnp.abs(mine["w"]).max()) < 1e-6  # the last step of the decay is ~0
