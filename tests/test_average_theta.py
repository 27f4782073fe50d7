"""`python -m lopt_cli.scripts.average_theta`: the mean of several θ of one architecture, saved
as a learned optimizer that loads; bad inputs are one-line errors."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from lopt_cli.optimizers import storage
from lopt_cli.scripts.average_theta import SOURCES_FILE, cli


def theta_leaves(source) -> list[np.ndarray]:
    _, theta, _ = storage.load_learned_optimizer(source)
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(theta)]


def shifted_copy(source: str, out, shift: float):
    """``source``'s optimizer with ``shift`` added to every weight, saved to ``out``."""
    _, theta, config = storage.load_learned_optimizer(source)
    storage.save_learned_optimizer(out, config, jax.tree_util.tree_map(lambda a: a + shift, theta))
    return out


def test_the_average_is_the_leafwise_mean_and_loads_as_an_optimizer(tmp_path, capsys):
    first = shifted_copy("adam_nominal_wsd", tmp_path / "a", 0.5)
    second = shifted_copy("adam_nominal_wsd", tmp_path / "b", -0.25)
    out = tmp_path / "soup"
    assert cli([str(out), "adam_nominal_wsd", str(first), str(second)]) == 0
    assert capsys.readouterr().out.startswith("written: ")
    for mean, base in zip(theta_leaves(out), theta_leaves("adam_nominal_wsd")):
        np.testing.assert_allclose(mean, base + (0.5 - 0.25) / 3, rtol=1e-5, atol=1e-6)
    assert (out / SOURCES_FILE).read_text().splitlines() == ["adam_nominal_wsd", str(first),
                                                              str(second)]
    _, _, config = storage.load_learned_optimizer(out)
    _, _, original = storage.load_learned_optimizer("adam_nominal_wsd")
    assert config == original


def test_averaging_a_theta_with_itself_gives_it_back(tmp_path):
    assert cli([str(tmp_path / "same"), "adam_nominal_wsd", "adam_nominal_wsd"]) == 0
    for mean, base in zip(theta_leaves(tmp_path / "same"), theta_leaves("adam_nominal_wsd")):
        np.testing.assert_array_equal(mean, base)


@pytest.mark.parametrize("sources, says", [
    (["adam_nominal_wsd"], "at least two"),
    (["adam_nominal_wsd", "muon_nominal_wsd"], "another architecture"),
    (["adam_nominal_wsd", "/nonexistent/run"], "/nonexistent/run"),
])
def test_bad_sources_are_one_line_errors(tmp_path, capsys, sources, says):
    assert cli([str(tmp_path / "out"), *sources]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_an_existing_optimizer_needs_force(tmp_path, capsys):
    out = tmp_path / "soup"
    assert cli([str(out), "adam_nominal_wsd", "adam_nominal_wsd"]) == 0
    assert cli([str(out), "adam_nominal_wsd", "adam_nominal_wsd"]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli([str(out), "adam_nominal_wsd", "adam_nominal_wsd", "--force"]) == 0


def test_a_field_written_at_its_default_is_the_same_architecture(tmp_path):
    _, theta, config = storage.load_learned_optimizer("adam_nominal_wsd")
    assert "nesterov" not in config  # shipped before the field existed
    storage.save_learned_optimizer(tmp_path / "explicit", {**config, "nesterov": False}, theta)
    assert cli([str(tmp_path / "soup"), "adam_nominal_wsd", str(tmp_path / "explicit")]) == 0
    storage.save_learned_optimizer(tmp_path / "other", {**config, "nesterov": True}, theta)
    assert cli([str(tmp_path / "bad"), "adam_nominal_wsd", str(tmp_path / "other")]) == 2
