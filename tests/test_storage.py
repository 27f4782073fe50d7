"""Saving, finding and loading learned optimizers; atomic writes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_cli.errors import LoptUserError
from lopt_cli.io import write_text_atomic
from lopt_cli.optimizers.storage import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_learned_optimizer,
    resolve_weights_path,
    save_learned_optimizer,
)

CONFIG = {"_target_": "lopt_cli.optimizers.mlp_lopt.MLPLOpt", "hidden_sizes": [8, 8]}


def saved(tmp_path, seed=1):
    from lopt_cli.optimizers.mlp_lopt import MLPLOpt

    theta = MLPLOpt(hidden_sizes=(8, 8)).init(jax.random.PRNGKey(seed))
    save_learned_optimizer(tmp_path, CONFIG, theta)
    return theta


def test_round_trip_from_directory_and_file(tmp_path):
    theta = saved(tmp_path)
    for source in (tmp_path, tmp_path / WEIGHTS_FILE):
        lopt, loaded, config = load_learned_optimizer(source)
        assert lopt.hidden_sizes == (8, 8) and config == CONFIG
        jax.tree_util.tree_map(np.testing.assert_array_equal, theta, loaded)


def test_loaded_optimizer_runs(tmp_path):
    saved(tmp_path)
    lopt, theta, _ = load_learned_optimizer(tmp_path)
    opt = lopt.transform(theta, 10)
    params = {"w": jnp.ones((3,))}
    updates, _ = opt.update(params, opt.init(params), params, loss=jnp.asarray(1.0))
    assert jnp.all(jnp.isfinite(updates["w"]))


def test_latest_finds_newest_run(tmp_path, monkeypatch):
    saved(tmp_path / "outputs" / "meta-train" / "a")
    saved(tmp_path / "outputs" / "meta-train" / "b", seed=2)
    monkeypatch.chdir(tmp_path)
    assert resolve_weights_path("latest").parent.name == "b"


def test_latest_is_a_run_not_its_raw_last_theta(tmp_path, monkeypatch):
    """A run with average_theta writes last/ after its own (averaged) file: `latest` is the run;
    a run directory that happens to be named `last` still counts."""
    runs = tmp_path / "outputs" / "meta-train"
    saved(runs / "a")
    saved(runs / "a" / "last", seed=2)
    monkeypatch.chdir(tmp_path)
    assert resolve_weights_path("latest").resolve() == (runs / "a" / WEIGHTS_FILE).resolve()
    saved(runs / "last", seed=3)
    assert resolve_weights_path("latest").parent.name == "last"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / WEIGHTS_FILE).unlink(), "directory holds no learned_optimizer.msgpack"),
        (lambda d: (d / CONFIG_FILE).unlink(), "missing"),
        (lambda d: (d / WEIGHTS_FILE).write_bytes(b"\x00garbage"), "corrupt weights"),
        (lambda d: ((d / CONFIG_FILE).unlink(), (d / WEIGHTS_FILE).write_bytes(b"")),
         "unreadable weights file"),
        (lambda d: (d / CONFIG_FILE).write_text("_target_: [unclosed\n"), "unreadable YAML"),
        (lambda d: (d / CONFIG_FILE).write_text("_target_: nowhere.Nothing\n"), "cannot import"),
        (lambda d: (d / CONFIG_FILE).write_text(
            "_target_: lopt_cli.optimizers.mlp_lopt.MLPLOpt\nhidden_sizes: [4]\n"),
         "do not match"),
    ],
)
def test_broken_files_are_user_errors(tmp_path, mutate, message):
    saved(tmp_path)
    mutate(tmp_path)
    with pytest.raises(LoptUserError, match=message):
        load_learned_optimizer(tmp_path)


def flip_middle_bytes(path, count: int = 64) -> None:
    """Inverts ``count`` bytes in the middle of ``path`` (same length)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_weight_bytes_are_detected_by_the_checksum(tmp_path):
    saved(tmp_path)
    flip_middle_bytes(tmp_path / WEIGHTS_FILE)
    with pytest.raises(LoptUserError, match="corrupt weights.*SHA-256") as caught:
        load_learned_optimizer(tmp_path)
    assert "\n" not in str(caught.value)


def test_non_finite_weights_are_refused(tmp_path):
    from lopt_cli.optimizers.mlp_lopt import MLPLOpt

    theta = MLPLOpt(hidden_sizes=(8, 8)).init(jax.random.PRNGKey(0))
    theta = jax.tree_util.tree_map(lambda x: x * jnp.nan, theta)
    save_learned_optimizer(tmp_path, CONFIG, theta)  # checksum matches: the values are the fault
    with pytest.raises(LoptUserError, match="NaN or infinite"):
        load_learned_optimizer(tmp_path)


def test_files_without_a_checksum_still_load(tmp_path):
    theta = saved(tmp_path)
    config_path = tmp_path / CONFIG_FILE
    lines = [line for line in config_path.read_text().splitlines() if "sha256" not in line]
    config_path.write_text("\n".join(lines) + "\n")
    _, loaded, config = load_learned_optimizer(tmp_path)
    assert config == CONFIG
    jax.tree_util.tree_map(np.testing.assert_array_equal, theta, loaded)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    write_text_atomic(tmp_path / "x.txt", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_shipped_optimizer_loads_by_name():
    from lopt_cli.optimizers.storage import PRETRAINED_DIR

    lopt, theta, config = load_learned_optimizer("mlp_digits")
    assert config["_target_"].endswith("MLPLOpt")
    assert (PRETRAINED_DIR / "mlp_digits" / "README.md").is_file()  # its model card
    opt = lopt.transform(theta, 100)
    params = {"w": jnp.ones((4, 3))}
    updates, _ = opt.update(params, opt.init(params), params, loss=jnp.asarray(1.0))
    assert jnp.all(jnp.isfinite(updates["w"]))
