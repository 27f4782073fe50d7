"""A learned optimizer with another supplied learning-rate schedule, saved as a run directory
that ``lopt evaluate``, ``load_optimizer`` and the drop-in check read like any other.

    python -m lopt_cli.scripts.with_schedule <θ source> <schedule> <out dir> [--untrained] [--force]

The weights are copied unchanged (a supplied schedule has no layers);
``learned_optimizer.yaml`` differs only in ``schedule``. This is what
``load_optimizer(source, n, schedule=...)`` does in memory, written down so that a benchmark
run can name it: for example ``with_schedule default warmup_cosine runs/default_cosine``,
then ``lopt evaluate benchmark=lopt_bench learned_optimizer=[runs/default_cosine,default]``.

``--untrained`` writes the same architecture at its initialisation θ₀ instead
(``lopt.init``, seed 0): what meta-training started from. For an architecture that starts at
its nominal optimizer (``adam_nominal``: exactly Adam at its ``learning_rate``) this is that
optimizer on the schedule, so the benchmark can tell what the schedule alone gives from what
meta-training adds (``with_schedule default warmup_stable_decay runs/adam_wsd --untrained``).

A source with a learned schedule or none, an unknown schedule, or an ``out dir`` that already
holds a learned optimizer (without ``--force``) or is a file is a one-line error (exit 2).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import yaml
from flax import serialization

from lopt_cli.errors import LoptUserError
from lopt_cli.io import sha256_hex, write_bytes_atomic, write_text_atomic
from lopt_cli.optimizers.dropin import with_supplied_schedule
from lopt_cli.optimizers.storage import (
    CHECKSUM_KEY,
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_learned_optimizer,
    resolve_weights_path,
)

UNTRAINED_SEED = 0  # the key of θ₀ for --untrained


def write_with_schedule(source: str, schedule: str, out: Path, force: bool = False,
                        untrained: bool = False) -> Path:
    """Copies ``source``'s weights byte for byte to ``out`` (``untrained``: writes its
    architecture's θ₀ instead) with its config's ``schedule`` replaced; returns the weights
    path."""
    if (out / WEIGHTS_FILE).exists() and not force:
        raise LoptUserError(f"{out} already holds a learned optimizer; pass --force to replace it")
    lopt, _, config = load_learned_optimizer(source)  # checks the weights against the config
    with_supplied_schedule(lopt, schedule, f"{source!r} ({type(lopt).__name__})")
    if untrained:
        weights = serialization.to_bytes(lopt.init(jax.random.PRNGKey(UNTRAINED_SEED)))
    else:
        weights = resolve_weights_path(source).read_bytes()
    path = write_bytes_atomic(out / WEIGHTS_FILE, weights)
    described = {**config, "schedule": schedule, CHECKSUM_KEY: sha256_hex(weights)}
    write_text_atomic(out / CONFIG_FILE, yaml.safe_dump(described, sort_keys=False))
    return path


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lopt_cli.scripts.with_schedule",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="θ source: a run directory, a shipped name, default")
    parser.add_argument("schedule", help="constant, cosine, warmup_cosine, warmup_stable_decay, "
                                         "warmup_stable_sqrt_decay")
    parser.add_argument("out", help="the run directory to write")
    parser.add_argument("--force", action="store_true", help="replace a learned optimizer there")
    parser.add_argument("--untrained", action="store_true",
                        help="write the architecture's initial θ₀, not the source's weights")
    args = parser.parse_args(argv)
    try:
        path = write_with_schedule(args.source, args.schedule, Path(args.out), args.force,
                                   args.untrained)
    except (LoptUserError, OSError) as error:  # OSError: an out dir that cannot be written
        print(f"error: {error}", file=sys.stderr)
        return 2
    kind = ", untrained θ₀" if args.untrained else ""
    print(f"written: {path} (schedule: {args.schedule}{kind})")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
