"""celo and adam_nominal: the contracts beyond the conformance suite (exactly Adam at
initialisation, the learned and supplied schedules, decoupled weight decay, per-tensor output
normalisation, layer names that tell the schedule from the update rule, field checks)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hydra import compose, initialize_config_module
from tests_support import perturbed

from lopt_cli.config import instantiate_plain
from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import schedule as sched
from lopt_cli.optimizers.adam_nominal import AdamNominalLOpt
from lopt_cli.optimizers.celo import CeloLOpt


def make_params():
    keys = jax.random.split(jax.random.key(3), 2)
    return {"w": jax.random.normal(keys[0], (6, 4)), "b": 0.1 * jax.random.normal(keys[1], (4,)),
            "s": jnp.asarray(0.7)}


def loss_fn(params):
    return (jnp.sum(jnp.square(params["w"] - 1.0)) + jnp.sum(jnp.square(params["b"] + 0.5))
            + params["s"] ** 4)


def run(opt, params, steps: int, pass_loss: bool = True):
    state = opt.init(params)
    for _ in range(steps):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        extra = {"loss": loss} if pass_loss else {}
        updates, state = opt.update(grads, state, params, **extra)
        params = optax.apply_updates(params, updates)
    return params


def lockstep_with_adam(opt, steps: int, learning_rate: float = 1e-3):
    """``opt`` and ``optax.adam`` fed the same gradients, stepping ``opt``'s parameters: the
    pair of updates at each step."""
    adam = optax.adam(learning_rate)
    params = make_params()
    state, adam_state = opt.init(params), adam.init(params)
    for _ in range(steps):
        grads = jax.grad(loss_fn)(params)
        ours, state = opt.update(grads, state, params)
        plain, adam_state = adam.update(grads, adam_state, params)
        yield ours, plain
        params = optax.apply_updates(params, ours)


@pytest.mark.parametrize("learning_rate", [1e-3, 3e-2])
@pytest.mark.parametrize("pass_loss", [True, False])
@pytest.mark.parametrize("correction", ["additive", "multiplicative"])
def test_untrained_adam_nominal_is_exactly_adam(learning_rate, pass_loss, correction):
    lopt = AdamNominalLOpt(learning_rate=learning_rate, correction=correction)
    opt = lopt.transform(lopt.init(jax.random.key(0)), 100)
    ours = run(opt, make_params(), 30, pass_loss)
    adam = run(optax.adam(learning_rate), make_params(), 30, pass_loss)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(adam)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("correction", ["additive", "multiplicative"])
def test_untrained_nesterov_adam_nominal_is_exactly_nadam(correction):
    lopt = AdamNominalLOpt(correction=correction, nesterov=True, schedule="constant",
                           schedule_hidden=0)
    ours = run(lopt.transform(lopt.init(jax.random.key(0)), 100), make_params(), 30)
    nadam = run(optax.nadam(1e-3), make_params(), 30)
    adam = run(optax.adam(1e-3), make_params(), 30)
    for a, b, c in zip(jax.tree.leaves(ours), jax.tree.leaves(nadam), jax.tree.leaves(adam)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert not np.allclose(a, c, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("correction", ["additive", "multiplicative"])
def test_meta_learned_weights_move_adam_nominal_away_from_adam(correction):
    lopt = AdamNominalLOpt(correction=correction)
    theta = perturbed(lopt.init(jax.random.key(0)))
    ours = run(lopt.transform(theta, 100), make_params(), 5)
    adam = run(optax.adam(1e-3), make_params(), 5)
    assert not np.allclose(ours["w"], adam["w"], atol=1e-6)


def two_moment_run(mix_bias: float, steps: int = 30):
    """The untrained two-moment ``adam_nominal`` (β₂ 0.999 and 0.99) with its mixing logit's
    bias set to ``mix_bias``."""
    lopt = AdamNominalLOpt(beta2_fast=0.99, correction="multiplicative", schedule="constant",
                           schedule_hidden=0)
    theta = lopt.init(jax.random.key(0))
    theta["params"]["second_moment_mix"]["bias"] = jnp.full((1,), mix_bias)
    return run(lopt.transform(theta, 100), make_params(), steps)


def reference_two_moment_adam(steps: int = 30, learning_rate: float = 1e-3):
    """Adam whose bias-corrected second moment is the mean of the 0.999 and 0.99 ones (the
    untrained mixing weight 1/2), written out."""
    params = make_params()
    m, v_slow, v_fast = (jax.tree.map(jnp.zeros_like, params) for _ in range(3))
    for t in range(1, steps + 1):
        grads = jax.grad(loss_fn)(params)
        m = jax.tree.map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
        v_slow = jax.tree.map(lambda a, g: 0.999 * a + 0.001 * g * g, v_slow, grads)
        v_fast = jax.tree.map(lambda a, g: 0.99 * a + 0.01 * g * g, v_fast, grads)
        m_hat, s_hat, f_hat = (jax.tree.map(lambda a, k=1 - c**t: a / k, tree)
                               for tree, c in ((m, 0.9), (v_slow, 0.999), (v_fast, 0.99)))
        params = jax.tree.map(
            lambda p, a, s, f: p - learning_rate * a / (jnp.sqrt(0.5 * s + 0.5 * f) + 1e-8),
            params, m_hat, s_hat, f_hat)
    return params


def test_untrained_two_moment_adam_nominal_is_adam_on_the_mean_second_moment():
    for a, b in zip(jax.tree.leaves(two_moment_run(0.0)),
                    jax.tree.leaves(reference_two_moment_adam())):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mix_bias, beta2", [(40.0, 0.99), (-40.0, 0.999)])
def test_the_learned_mix_selects_either_second_moment(mix_bias, beta2):
    """A saturated mixing weight makes the rule Adam with that second moment alone."""
    adam = run(optax.adam(1e-3, b2=beta2), make_params(), 30)
    for a, b in zip(jax.tree.leaves(two_moment_run(mix_bias)), jax.tree.leaves(adam)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_two_second_moments_add_one_correction_input_and_a_mixing_layer():
    one, two = AdamNominalLOpt(), AdamNominalLOpt(beta2_fast=0.99)
    assert two.num_features == one.num_features + 1
    layers = two.init(jax.random.key(0))["params"]
    assert "second_moment_mix" in layers
    assert "second_moment_mix" not in one.init(jax.random.key(0))["params"]


@pytest.mark.parametrize("decay_bias, decay", [(0.0, np.exp(-7.0)), (100.0, 1.0)])
def test_the_learned_decay_shrinks_parameters_at_rate_times_decay(decay_bias, decay):
    """With no gradient, the step is the decay alone: -η λ_θ p, λ_θ = e^-7 untrained and
    bounded by 1 however far the head is pushed."""
    lopt = AdamNominalLOpt(learning_rate=0.01, learned_decay=True, schedule="constant",
                           schedule_hidden=0)
    theta = lopt.init(jax.random.key(0))
    theta["params"]["weight_decay"]["bias"] = jnp.full((1,), decay_bias)
    opt = lopt.transform(theta, 10)
    params = make_params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
        np.testing.assert_allclose(u, -0.01 * decay * p, rtol=1e-5)


def first_step_at_the_minimum(correction: str) -> list:
    """The first update from the minimiser of ``loss_fn`` (zero gradient) under a trained-looking
    θ whose correction is far from zero (output bias 1, every weight perturbed)."""
    lopt = AdamNominalLOpt(correction=correction, schedule="constant", schedule_hidden=0)
    theta = perturbed(lopt.init(jax.random.key(0)))
    theta["params"]["correction_out"]["bias"] = jnp.ones((1,))
    at_minimum = {"w": jnp.ones((6, 4)), "b": jnp.full((4,), -0.5), "s": jnp.asarray(0.0)}
    opt = lopt.transform(theta, 100)
    updates, _ = opt.update(jax.grad(loss_fn)(at_minimum), opt.init(at_minimum), at_minimum)
    return jax.tree.leaves(updates)


def test_a_multiplicative_correction_keeps_adams_stationary_points():
    """exp(γc)·adam vanishes with Adam's step; adam + γc does not, which is what stalls the
    additive form short of the minimum on long deterministic problems."""
    assert all(np.all(np.asarray(u) == 0.0) for u in first_step_at_the_minimum("multiplicative"))
    assert any(np.any(np.asarray(u) != 0.0) for u in first_step_at_the_minimum("additive"))


def test_a_multiplicative_correction_keeps_adams_sign():
    lopt = AdamNominalLOpt(correction="multiplicative", schedule="constant", schedule_hidden=0)
    theta = perturbed(lopt.init(jax.random.key(0)), scale=2.0)
    for ours, plain in lockstep_with_adam(lopt.transform(theta, 100), 5):
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
            np.testing.assert_array_equal(np.sign(a), np.sign(b))


def test_decoupled_weight_decay_is_rate_times_decay_times_param():
    lopt = AdamNominalLOpt(learning_rate=0.01, weight_decay=0.5, schedule="constant",
                           schedule_hidden=0)
    opt = lopt.transform(lopt.init(jax.random.key(0)), 10)
    params = make_params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
        np.testing.assert_allclose(u, -0.01 * 0.5 * p, rtol=1e-6)


def test_supplied_schedules():
    r = jnp.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(sched.supplied_factor("constant", r), 1.0)
    cosine = sched.supplied_factor("cosine", r)
    assert cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.0, abs=1e-7)
    assert bool(jnp.all(jnp.diff(cosine) <= 1e-7))
    warm = sched.supplied_factor("warmup_cosine", r)
    peak = int(jnp.argmax(warm))
    assert warm[0] == 0.0 and warm[peak] == pytest.approx(1.0) and r[peak] == pytest.approx(
        sched.WARMUP_FRACTION)
    assert warm[-1] == pytest.approx(0.0, abs=1e-7)
    stable = sched.supplied_factor("warmup_stable_decay", r)
    np.testing.assert_allclose(stable[:peak + 1], warm[:peak + 1], atol=1e-7)  # same warm-up
    decay_start = 1.0 - sched.DECAY_FRACTION
    np.testing.assert_allclose(stable[(r > sched.WARMUP_FRACTION) & (r <= decay_start)], 1.0)
    tail = r > decay_start
    np.testing.assert_allclose(stable[tail], (1.0 - r[tail]) / sched.DECAY_FRACTION, atol=1e-6)
    assert float(stable[-1]) == 0.0
    assert float(stable.mean()) == pytest.approx(1.0 - sched.WARMUP_FRACTION / 2
                                                 - sched.DECAY_FRACTION / 2, abs=0.01)
    sqrt_decay = sched.supplied_factor("warmup_stable_sqrt_decay", r)
    np.testing.assert_allclose(sqrt_decay[~tail], stable[~tail], atol=1e-7)  # same until decay
    np.testing.assert_allclose(sqrt_decay[tail], 1.0 - jnp.sqrt(1.0 - stable[tail]), atol=1e-5)
    assert bool(jnp.all(sqrt_decay[tail] <= stable[tail] + 1e-7)) and float(sqrt_decay[-1]) == 0.0
    quarter = int(jnp.argmin(jnp.abs(r - (decay_start + sched.DECAY_FRACTION / 4))))
    assert float(sqrt_decay[quarter]) == pytest.approx(0.5, abs=1e-5)


def test_a_cosine_schedule_scales_adam_nominal_steps():
    lopt = AdamNominalLOpt(schedule="cosine", schedule_hidden=0)
    assert all(not name.startswith(sched.LAYER_PREFIX)
               for name in lopt.init(jax.random.key(0))["params"])
    opt = lopt.transform(lopt.init(jax.random.key(0)), 4)
    for t, (ours, plain) in enumerate(lockstep_with_adam(opt, 4)):
        factor = 0.5 * (1 + np.cos(np.pi * (t + 1) / 4))
        np.testing.assert_allclose(ours["w"], factor * plain["w"], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("factory", [CeloLOpt, AdamNominalLOpt])
def test_the_learned_schedule_reads_the_losses(factory):
    lopt = factory()
    theta = lopt.init(jax.random.key(0))
    names = set(theta["params"])
    assert {sched.SCHEDULE_IN, sched.SCHEDULE_OUT} <= names
    assert any(not n.startswith(sched.LAYER_PREFIX) for n in names)  # the update rule's
    theta = perturbed(theta)
    opt = lopt.transform(theta, 100)
    params = make_params()
    grads = jax.grad(loss_fn)(params)

    def second_update(second_loss):
        _, state = opt.update(grads, opt.init(params), params, loss=1.0)
        return opt.update(grads, state, params, loss=second_loss)[0]["w"]

    assert not np.allclose(second_update(1.0), second_update(0.1))


def test_untrained_celo_moves_along_adams_direction_with_rms_lr():
    lopt = CeloLOpt(learning_rate=0.01)
    opt = lopt.transform(lopt.init(jax.random.key(0)), 1000)
    params = make_params()
    grads = jax.grad(loss_fn)(params)
    updates, _ = opt.update(grads, opt.init(params), params, loss=1.0)
    adam, _ = optax.adam(1.0).update(grads, optax.adam(1.0).init(params), params)
    for name in ("w", "b"):
        u, a = np.ravel(updates[name]), np.ravel(adam[name])
        assert np.sqrt(np.mean(u**2)) == pytest.approx(0.01, rel=1e-4)  # output="rms"
        # the skip starts on m / sqrt(v_hat) with Adafactor's factored v_hat (not Adam's), and
        # the small random MLP adds to it: mostly, not exactly, Adam's direction
        assert np.dot(u, a) / np.linalg.norm(u) / np.linalg.norm(a) > 0.8


def test_celo_param_scale_output_is_relative_to_the_tensor():
    lopt = CeloLOpt(output="param_scale", schedule="constant", schedule_hidden=0)
    theta = lopt.init(jax.random.key(0))
    opt = lopt.transform(theta, 100)
    params = make_params()
    big = jax.tree.map(lambda p: 100.0 * p, params)
    grads = jax.grad(loss_fn)(params)
    small_step, _ = opt.update(grads, opt.init(params), params)
    big_step, _ = opt.update(grads, opt.init(big), big)
    ratio = np.linalg.norm(big_step["w"]) / np.linalg.norm(small_step["w"])
    assert ratio == pytest.approx(100.0, rel=0.2)  # features are scale-free except p / rms(p)


def test_celo_adam_scale_output_takes_the_rms_of_adams_step():
    """output=adam_scale: each tensor's step has the RMS of m_0.9 / sqrt(v_hat) (a rank-1 tensor's
    v_hat is Adam's own, so one step from zero state is Adam's first step, of RMS 1 · rate), and
    it shrinks where the gradients have shrunk since (v_hat remembers them), unlike output=rms."""
    def step_rms(output, grads_seq):
        lopt = CeloLOpt(learning_rate=0.01, output=output, schedule="constant",
                        schedule_hidden=0)
        opt = lopt.transform(lopt.init(jax.random.key(0)), 1000)
        params = {"b": jnp.zeros(5)}
        state = opt.init(params)
        for grads in grads_seq:
            updates, state = opt.update({"b": grads}, state, params)
        return float(jnp.sqrt(jnp.mean(jnp.square(updates["b"]))))

    grads = jnp.asarray([1.0, -2.0, 0.5, 3.0, -1.0])
    assert step_rms("adam_scale", [grads]) == pytest.approx(0.01, rel=1e-4)
    fading = [grads * 0.5**k for k in range(40)]
    assert step_rms("adam_scale", fading) < 0.3 * 0.01
    assert step_rms("rms", fading) == pytest.approx(0.01, rel=1e-4)


def test_celo_without_rms_inputs_ignores_the_parameters_signs_and_starts_on_adams_direction():
    """rms_inputs=False drops g/rms(g) and p/rms(p) (K = 5): with no weight decay the step reads
    the parameters only through the per-tensor log rms(p), so flipping their signs changes
    nothing; and the untrained skip still starts on m_0.9 / sqrt(v_hat)."""
    def first_steps(rms_inputs, params):
        lopt = CeloLOpt(learning_rate=0.01, output="adam_scale", rms_inputs=rms_inputs)
        opt = lopt.transform(perturbed(lopt.init(jax.random.key(0))), 1000)
        updates, _ = jax.jit(opt.update)(grads, opt.init(params), params, loss=1.0)
        return updates

    params = make_params()
    grads = jax.grad(loss_fn)(params)
    moved = jax.tree.map(jnp.negative, params)
    assert CeloLOpt(rms_inputs=False).num_features == CeloLOpt().num_features - 2 == 5
    for a, b in zip(jax.tree.leaves(first_steps(False, params)),
                    jax.tree.leaves(first_steps(False, moved))):
        np.testing.assert_array_equal(a, b)
    with_p = first_steps(True, params)["w"], first_steps(True, moved)["w"]
    assert not np.allclose(*with_p)
    lopt = CeloLOpt(learning_rate=0.01, rms_inputs=False)
    opt = lopt.transform(lopt.init(jax.random.key(0)), 1000)
    updates, _ = opt.update(grads, opt.init(params), params, loss=1.0)
    adam, _ = optax.adam(1.0).update(grads, optax.adam(1.0).init(params), params)
    u, a = np.ravel(updates["w"]), np.ravel(adam["w"])
    assert np.dot(u, a) / np.linalg.norm(u) / np.linalg.norm(a) > 0.8


@pytest.mark.parametrize("factory, field, bad", [
    (CeloLOpt, "schedule", "bogus"), (CeloLOpt, "learning_rate", 0.0),
    (CeloLOpt, "output", "max"), (CeloLOpt, "weight_decay", -1.0),
    (AdamNominalLOpt, "learning_rate", float("inf")), (AdamNominalLOpt, "beta1", 1.0),
    (AdamNominalLOpt, "correction_hidden", 0), (CeloLOpt, "log_lr_bounds", [1.0, 3.0]),
    (CeloLOpt, "log_lr_bounds", [-3.0, float("inf")]), (AdamNominalLOpt, "log_lr_bounds", [-1]),
    (CeloLOpt, "rms_inputs", "yes"), (AdamNominalLOpt, "correction", "both"),
    (AdamNominalLOpt, "beta2_fast", 1.0), (AdamNominalLOpt, "learned_decay", "yes"),
    (AdamNominalLOpt, "nesterov", "yes"),
])
def test_fields_are_checked_in_one_line(factory, field, bad):
    with pytest.raises(LoptUserError, match=field) as info:
        factory(**{field: bad})
    assert "\n" not in str(info.value)


def test_the_schedule_bound_is_soft_and_may_be_asymmetric():
    out = jnp.linspace(-50.0, 50.0, 2001)
    symmetric = sched.bounded_log_rate(out)
    np.testing.assert_allclose(symmetric, 3.0 * jnp.tanh(out / 3.0), rtol=1e-6)  # as shipped
    wide = sched.bounded_log_rate(out, (-12.0, 3.0))
    assert float(wide.min()) == pytest.approx(-12.0, abs=1e-2) and float(wide.max()) <= 3.0
    np.testing.assert_allclose(wide[out >= 0], symmetric[out >= 0], rtol=1e-6)
    slope = jax.vmap(jax.grad(lambda o: sched.bounded_log_rate(o, (-12.0, 3.0))))(
        jnp.asarray([-1e-4, 1e-4]))
    np.testing.assert_allclose(slope, 1.0, rtol=1e-4)  # smooth through 0
    assert bool(jnp.all(jnp.diff(wide) >= -1e-6))  # non-decreasing (to rounding)


@pytest.mark.parametrize("factory", [CeloLOpt, AdamNominalLOpt])
def test_a_wider_lower_bound_lets_the_learned_schedule_anneal_further(factory):
    """The same θ, its schedule's output pushed far negative: the rate floors at η e^{low}."""
    params, grads = make_params(), jax.grad(loss_fn)(make_params())

    def first_step_rms(bounds):
        lopt = factory(log_lr_bounds=bounds, learning_rate=0.01)
        theta = lopt.init(jax.random.key(0))
        theta["params"][sched.SCHEDULE_OUT]["bias"] = jnp.full((1,), -100.0)
        opt = lopt.transform(theta, 100)
        updates, _ = opt.update(grads, opt.init(params), params, loss=1.0)
        return float(jnp.sqrt(jnp.mean(jnp.square(updates["w"]))))

    narrow, wide = first_step_rms((-3.0, 3.0)), first_step_rms((-12.0, 3.0))
    assert wide / narrow == pytest.approx(np.exp(-9.0), rel=1e-3)


def test_a_learned_schedule_needs_hidden_units():
    with pytest.raises(LoptUserError, match="schedule_hidden"):
        CeloLOpt(schedule="learned", schedule_hidden=0)


@pytest.mark.parametrize("name, cls", [("celo", CeloLOpt), ("adam_nominal", AdamNominalLOpt)])
def test_the_hydra_configs_are_the_defaults(name, cls):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("meta_train", overrides=[f"optimizer={name}"])
    built = instantiate_plain(cfg.optimizer)
    assert isinstance(built, cls)
    assert dataclasses.asdict(built) == dataclasses.asdict(cls())


def without_schedule_layers(theta):
    """θ of the same optimizer without ``schedule_modulation``: the update rule's layers."""
    return {"params": {k: v for k, v in theta["params"].items()
                       if not k.startswith(sched.LAYER_PREFIX)}}


@pytest.mark.parametrize("factory", [CeloLOpt, AdamNominalLOpt])
def test_an_untrained_modulation_is_exactly_the_supplied_schedule(factory):
    """schedule_modulation adds the schedule's layers, whose output starts at zero: every update
    equals the unmodulated optimizer's on the shared layers, bit for bit."""
    plain = factory(schedule="warmup_stable_decay")
    modulated = dataclasses.replace(plain, schedule_modulation=True)
    theta = modulated.init(jax.random.key(0))
    assert {sched.SCHEDULE_IN, sched.SCHEDULE_OUT} <= set(theta["params"])
    shared = without_schedule_layers(theta)
    opts = [plain.transform(shared, 8), modulated.transform(theta, 8)]
    params = [make_params(), make_params()]
    states = [opt.init(p) for opt, p in zip(opts, params)]
    for step in range(8):
        loss, grads = jax.value_and_grad(loss_fn)(params[0])
        updates = []
        for i, opt in enumerate(opts):
            update, states[i] = opt.update(grads, states[i], params[i], loss=loss,
                                           valid_loss=loss + 0.1 * step)
            updates.append(update)
            params[i] = optax.apply_updates(params[i], update)
        for a, b in zip(jax.tree_util.tree_leaves(updates[0]),
                        jax.tree_util.tree_leaves(updates[1])):
            assert np.array_equal(a, b)


def test_a_modulation_scales_the_supplied_schedule_by_e_to_the_h():
    """Its output bias pinned at b (no hidden weight): every step is e^{B tanh(b/B)} times the
    supplied schedule's, and with hidden weights h reads the validation loss."""
    lopt = AdamNominalLOpt(schedule="warmup_stable_decay", schedule_modulation=True)
    theta = lopt.init(jax.random.key(0))
    plain = AdamNominalLOpt(schedule="warmup_stable_decay")
    shared = without_schedule_layers(theta)
    theta["params"][sched.SCHEDULE_OUT]["bias"] = jnp.full((1,), -1.5)
    params, grads = make_params(), jax.grad(loss_fn)(make_params())
    scaled = lopt.transform(theta, 20).update(grads, lopt.transform(theta, 20).init(params),
                                              params, loss=1.0)[0]
    base = plain.transform(shared, 20).update(grads, plain.transform(shared, 20).init(params),
                                              params, loss=1.0)[0]
    np.testing.assert_allclose(scaled["w"], np.exp(3.0 * np.tanh(-0.5)) * base["w"], rtol=1e-5)

    opt = lopt.transform(perturbed(theta), 20)

    def second_update(valid_loss):
        _, state = opt.update(grads, opt.init(params), params, loss=1.0, valid_loss=1.0)
        return opt.update(grads, state, params, loss=1.0, valid_loss=valid_loss)[0]["w"]

    assert not np.allclose(second_update(1.0), second_update(3.0))


@pytest.mark.parametrize("fields, match", [
    ({"schedule": "learned", "schedule_modulation": True}, "modulates a supplied schedule"),
    ({"schedule": "cosine", "schedule_modulation": True, "schedule_hidden": 0},
     "schedule_modulation needs schedule_hidden > 0"),
    ({"schedule_modulation": "yes"}, "schedule_modulation"),
])
def test_a_bad_modulation_is_a_one_line_error(fields, match):
    with pytest.raises(LoptUserError, match=match) as info:
        AdamNominalLOpt(**fields)
    assert "\n" not in str(info.value)
