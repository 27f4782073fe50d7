"""``task_family=celo_mix_seq``: celo_mix's classifiers with small sequence models in the mix.

The conformance suite of ``test_task_families.py`` covers it as every ``task_family`` option;
here: its members and their shares, the sequence models are small and reparameterised
exactly, and lopt_bench's sequence tasks stay unseen by it.
"""
from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
from tests_support import compose_config

from lopt_cli.commands.common import build
from lopt_cli.meta.outer import task_key
from task_definitions.char_rnn import CharRNNFamily
from task_definitions.mlp import MLPFamily
from task_definitions.reparam import ReparamFamily
from task_definitions.suite import MixtureFamily
from task_definitions.transformer import TransformerFamily

SEQUENCE_FIELDS = ("cell", "embed_size", "hidden_size", "d_model", "num_heads", "num_layers",
                   "mlp_ratio", "seq_len", "batch_size")


def celo_mix_seq() -> MixtureFamily:
    return build(compose_config("meta_train", ["task_family=celo_mix_seq"]).task_family, "seq")


def test_members_are_reparameterised_and_drawn_80_10_10():
    family = celo_mix_seq()
    members = dict(family.families)
    assert set(members) == {"celo_mix", "char_rnn", "transformer"}
    inner_types = {name: type(member.family) for name, member in members.items()}
    assert inner_types == {"celo_mix": MLPFamily, "char_rnn": CharRNNFamily,
                           "transformer": TransformerFamily}
    assert all(isinstance(m, ReparamFamily) and m.param_scale == (1e-3, 1e3)
               for m in members.values())
    counts = Counter(family.sample(task_key(i)).family for i in range(1000))
    assert 0.75 <= counts["celo_mix"] / 1000 <= 0.85
    assert 0.06 <= counts["char_rnn"] / 1000 <= 0.14
    assert 0.06 <= counts["transformer"] / 1000 <= 0.14


def test_sequence_models_are_small():
    members = dict(celo_mix_seq().families)
    rnn, transformer = members["char_rnn"].family, members["transformer"].family
    assert max(rnn.hidden_sizes) <= 64 and rnn.seq_lens == (16,) and rnn.batch_sizes == (16,)
    assert set(rnn.cells) == {"lstm", "gru"}
    assert max(transformer.d_models) <= 32 and max(transformer.num_layers) <= 2
    assert transformer.seq_lens == (16,)


def test_a_sequence_task_of_the_mix_is_reparameterised_exactly():
    """The wrapped loss at the rescaled parameters is the inner model's loss at the originals."""
    family = celo_mix_seq()
    config = next(c for c in (family.sample(task_key(i)) for i in range(200))
                  if c.family == "char_rnn")
    task = family.build(config)
    inner = dict(family.families)["char_rnn"].family.build(config.config.inner)
    key, batch_key = jax.random.split(jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda p: p + 0.05, inner.init(key))
    rescaled = jax.tree_util.tree_map(lambda p, c: p / c, params, task.factors)
    factors = np.asarray([float(c) for c in jax.tree_util.tree_leaves(task.factors)])
    assert factors.max() / factors.min() > 10
    batch = task.sample_batch(batch_key, "train")
    np.testing.assert_allclose(task.loss(rescaled, batch, key), inner.loss(params, batch, key),
                               rtol=1e-4)
    assert jnp.isfinite(task.loss(task.init(key), batch, key))


def test_lopt_bench_sequence_tasks_stay_unseen():
    """Each of lopt_bench's GRU, LSTM and transformers has a structural field (width, depth,
    crop length) that celo_mix_seq never draws."""
    from lopt_cli.commands.evaluate_benchmark import build_benchmark_spec
    from task_definitions.base import config_to_dict

    spec, _ = build_benchmark_spec(compose_config("evaluate", ["benchmark=lopt_bench"]))
    family = celo_mix_seq()
    drawn = [config_to_dict(c.config.inner) for c in
             (family.sample(task_key(i)) for i in range(2000)) if c.family != "celo_mix"]
    sequence_tasks = [t for t in spec.tasks if t.description["family"] in
                      ("char_rnn", "transformer")]
    assert len(sequence_tasks) == 4
    for task in sequence_tasks:
        config = config_to_dict(task.config)
        seen = [d for d in drawn if d["family"] == config["family"]]
        assert seen, task.name
        assert any(config[f] not in {d[f] for d in seen} for f in SEQUENCE_FIELDS
                   if f in config), task.name
