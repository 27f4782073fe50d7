"""opt_list: greedy selection on matrices with known answers, the tuning run, the shipped list;
and the maths of the Adam8p / NAdamW baselines it builds on (against NumPy references)."""
from __future__ import annotations

import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import baselines
from lopt_cli.optimizers import opt_list as ol
from lopt_cli.scripts import build_opt_list
from task_definitions.quadratic import QuadraticFamily
from task_definitions.task_ids import OPT_LIST_FIRST_ID

# Candidate 1 is the best single setting; 0 and 3 are specialists that together cover every
# task, so the greedy list is [1, 0, 3, 2] although sorting by mean loss gives [1, 2, 0, 3].
SPECIALISTS = np.array([
    [0.0, 0.0, 1.0, 1.0],
    [0.3, 0.3, 0.3, 0.3],
    [0.25, 0.25, 0.45, 0.45],
    [1.0, 1.0, 0.0, 0.0],
])


def test_greedy_list_on_a_hand_made_matrix():
    order = ol.learn_opt_list(SPECIALISTS, 4)
    assert order == [1, 0, 3, 2]
    np.testing.assert_allclose(ol.prefix_objective(SPECIALISTS, order), [0.3, 0.15, 0.0, 0.0])
    assert ol.learn_opt_list(SPECIALISTS, 1) == [1]


def test_ties_go_to_the_better_single_setting():
    """Once candidate 0 is best everywhere nothing improves the objective; the rest follow in
    order of their own mean loss instead of their index."""
    losses = np.array([[0.0, 0.0], [0.9, 0.9], [0.5, 0.5], [0.7, 0.1]])
    assert ol.learn_opt_list(losses, 4) == [0, 3, 2, 1]


def test_each_greedy_step_is_the_best_extension():
    losses = np.random.default_rng(0).uniform(size=(12, 9))
    order = ol.learn_opt_list(losses, 6)
    assert len(set(order)) == 6
    assert order[0] == int(np.argmin(losses.mean(axis=1)))
    for k in range(1, 6):  # brute force over every unused candidate
        best = min((c for c in range(12) if c not in order[:k]),
                   key=lambda c: ol.prefix_objective(losses, [*order[:k], c])[-1])
        assert np.isclose(ol.prefix_objective(losses, [*order[:k], best])[-1],
                          ol.prefix_objective(losses, order[:k + 1])[-1])
    # Greedy never loses to the best pair by much here, and always beats random search.
    best_pair = min(ol.prefix_objective(losses, list(p))[-1]
                    for p in itertools.permutations(range(12), 2))
    assert ol.prefix_objective(losses, order)[1] <= best_pair + 0.1
    assert np.all(ol.prefix_objective(losses, order) <= ol.random_search_objective(losses, 6))


def test_diverged_candidates_count_as_worst_and_bad_arguments_are_user_errors():
    losses = np.array([[np.nan, 0.0], [0.4, 0.4], [np.inf, np.inf]])
    assert ol.learn_opt_list(losses, 3) == [1, 0, 2]
    with pytest.raises(LoptUserError, match="length"):
        ol.learn_opt_list(losses, 4)
    with pytest.raises(LoptUserError, match="matrix"):
        ol.learn_opt_list(np.zeros(3), 1)


def test_normalisation_between_best_candidate_and_initial_loss():
    final = np.array([[1.0, 5.0], [3.0, np.nan], [100.0, 4.0]])
    normalised = ol.normalise_final_losses(final, initial=np.array([5.0, 6.0]))
    np.testing.assert_allclose(normalised, [[0.0, 0.5], [0.5, 2.0], [2.0, 0.0]])


def test_tuning_run_gives_a_candidates_by_tasks_matrix():
    result = build_opt_list.run_tuning(QuadraticFamily(dims=(4,)), num_tasks=2, num_candidates=5, horizon=20,
                           valid_every=10, log=lambda _: None)
    assert result.final.shape == (5, 2) and result.initial.shape == (2,)
    assert set(result.hparams) == set(baselines.sample_nadamw(0, 1))
    assert result.task_ids == [OPT_LIST_FIRST_ID, OPT_LIST_FIRST_ID + 1]
    assert all(c["family"] == "quadratic" for c in result.task_configs)
    assert np.all(ol.normalise_final_losses(result.final, result.initial) >= 0)


# ------------------------------------------------------------------ the shipped list


def quadratic_losses(opt, num_steps: int = 50):
    target = jnp.linspace(-1.0, 1.0, 6)

    def loss_fn(p):
        return 0.5 * jnp.sum((p["x"] - target) ** 2)

    def step(carry, _):
        p, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, state = opt.update(grads, state, p, loss=loss)
        return (optax.apply_updates(p, updates), state), loss

    params = {"x": jnp.zeros(6)}
    return jax.lax.scan(step, (params, opt.init(params)), None, num_steps)[1]


def test_shipped_list_loads_with_metadata():
    settings = ol.load_opt_list()
    assert len(settings) >= 10  # `lopt evaluate` budgets try up to 10 entries
    names = set(inspect.signature(baselines.nadamw).parameters) - {"num_steps"}
    assert all(set(s) == names for s in settings)
    meta = ol.opt_list_metadata()
    assert meta["command"].startswith("python -m lopt_cli.optimizers.opt_list")
    assert meta["num_candidates"] >= len(settings) and len(meta["tasks"]) == meta["num_tasks"]
    objective = meta["mean_normalised_loss_by_length"]
    assert objective == sorted(objective, reverse=True)  # the list only gets better
    assert objective[-1] <= meta["random_search_by_length"][-1]


def test_every_shipped_entry_builds_a_working_optimizer():
    settings = ol.load_opt_list()
    stacked = {k: jnp.asarray([s[k] for s in settings], jnp.float32) for k in settings[0]}
    losses = jax.jit(jax.vmap(lambda h: quadratic_losses(baselines.nadamw(**h, num_steps=50))))(
        stacked)
    assert losses.shape == (len(settings), 50) and bool(jnp.all(jnp.isfinite(losses)))
    first = quadratic_losses(ol.opt_list(0, num_steps=50))
    np.testing.assert_allclose(first, losses[0], rtol=1e-5)
    assert float(first[-1]) < 0.5 * float(first[0])  # the suite's best setting descends
    with pytest.raises(LoptUserError, match="out of range"):
        ol.opt_list(len(settings))


def test_unreadable_list_is_a_user_error(tmp_path):
    bad = tmp_path / "list.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(LoptUserError, match="not an opt_list file"):
        ol.load_opt_list(bad)


# ------------------------------------------------------------------ Adam8p and NAdamW maths


def nadamw_reference(h: dict, grads: list[np.ndarray], p0: np.ndarray, num_steps: int):
    """NumPy NAdamW with TaskSet's schedule, written independently of the JAX version."""
    p, m, v, out = p0.astype(np.float64), 0.0, 0.0, []
    total, cf = float(num_steps), h["constant_fraction"]
    for t, g in enumerate(grads):
        s = min(t, total)
        warm = total * min(h["warmup_fraction"], cf)
        low = h["learning_rate"] * h["min_learning_rate_mult"]
        if s < warm:
            rate = h["learning_rate"] * s / warm
        else:
            x = (max(s, total * cf) - total * cf) / max(total - total * cf, 1.0)
            rate = low + (h["learning_rate"] - low) * 0.5 * (1 + np.cos(np.pi * x))
        g = g + h["l2_weight_decay"] * p
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        alpha = rate * np.sqrt(1 - h["b2"] ** (t + 1)) / (1 - h["b1"] ** (t + 1))
        ahead = h["b1"] * m + (1 - h["b1"]) * g if h["nesterov"] else m
        p = p - alpha * (ahead / (np.sqrt(v) + h["eps"]) + h["weight_decay"] * p)
        out.append(p.copy())
    return np.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nadamw_matches_numpy_reference(seed):
    h = {k: float(v[0]) for k, v in baselines.sample_nadamw(seed, 1).items()}
    h.update(learning_rate=0.05, eps=1e-3, warmup_fraction=max(h["warmup_fraction"], 0.05))
    rng = np.random.default_rng(seed)
    grads = [rng.normal(size=4).astype(np.float32) for _ in range(20)]
    p0 = rng.normal(size=4).astype(np.float32)
    opt = baselines.nadamw(**h, num_steps=20)
    params, state, trace = jnp.asarray(p0), opt.init(jnp.asarray(p0)), []
    for g in grads:
        updates, state = opt.update(jnp.asarray(g), state, params)
        params = params + updates
        trace.append(np.asarray(params))
    np.testing.assert_allclose(np.stack(trace), nadamw_reference(h, grads, p0, 20),
                               rtol=2e-4, atol=1e-5)


def test_adam8p_is_adam_without_penalties_and_decays_on_schedule():
    params = {"w": jnp.asarray([0.5, -2.0, 3.0])}
    grads = {"w": jnp.asarray([0.1, -0.3, 0.2])}
    mine, reference = baselines.adam8p(1e-2), optax.adam(1e-2, eps_root=1e-10)
    a, _ = mine.update(grads, mine.init(params), params)
    b, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)
    # L1 + L2: the gradient gains l1 sign(p) + 2 l2 p (visible through Adam's first step sign).
    penalised = baselines.adam8p(1e-2, l1=1.0, l2=1.0)
    steps, _ = penalised.update({"w": jnp.zeros(3)}, penalised.init(params), params)
    np.testing.assert_array_less(steps["w"] * jnp.sign(params["w"]), 0.0)
    # s = 1e4 t / T: linear decay 1e-4 reaches zero exactly at the horizon T.
    factors = baselines.adam8p_factor(jnp.asarray([0, 50, 100]), 1e-4, 0.0, 100)
    np.testing.assert_allclose(factors, [1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(baselines.adam8p_factor(100, 0.0, 1e-4, 100), np.exp(-1.0),
                               rtol=1e-6)


def test_samplers_follow_the_paper_ranges_and_vmap():
    names8 = set(inspect.signature(baselines.adam8p).parameters) - {"num_steps"}
    h8 = baselines.sample_adam8p(np.random.default_rng(0), 2000)
    assert set(h8) == names8 and all(v.dtype == np.float32 for v in h8.values())
    assert 1e-8 <= h8["learning_rate"].min() and h8["learning_rate"].max() <= 10.0
    assert np.all((h8["b1"] <= 1 - 1e-4 + 1e-7) & (h8["b1"] >= 0.0))
    assert np.all((1e-7 <= h8["linear_decay"]) & (h8["linear_decay"] <= 1e-4))
    # log-uniform: about half the learning rates lie below the geometric midpoint 1e-3.5
    assert abs(np.mean(h8["learning_rate"] < 10**-3.5) - 0.5) < 0.05
    hn = baselines.sample_nadamw(jax.random.key(3), 2000)
    assert set(hn) == set(inspect.signature(baselines.nadamw).parameters) - {"num_steps"}
    assert set(np.unique(hn["nesterov"])) == {0.0, 1.0}
    assert abs(np.mean(hn["warmup_fraction"] == 0) - 0.5) < 0.05
    both = (hn["weight_decay"] > 0) & (hn["l2_weight_decay"] > 0)
    assert abs(np.mean(both) - 1 / 3) < 0.05
    np.testing.assert_array_equal(baselines.sample_nadamw(7, 3)["eps"],  # deterministic
                                  baselines.sample_nadamw(np.random.default_rng(7), 3)["eps"])
    few = {k: jnp.asarray(v[:4]) for k, v in h8.items()}
    losses = jax.jit(jax.vmap(lambda h: quadratic_losses(baselines.adam8p(**h, num_steps=50))))(
        few)
    assert losses.shape == (4, 50)
