"""The average of several learned optimizers' weights (a "soup"), saved as a run directory that
``lopt evaluate``, ``load_optimizer`` and the drop-in check read like any other.

    python -m lopt_cli.scripts.average_theta <out dir> <θ source> <θ source> ... [--force]

:math:`\\bar\\theta = \\frac1K \\sum_k \\theta_k`, leaf by leaf. It is meaningful for runs of one
architecture meta-trained from the same θ₀ (seeds of one recipe: ``adam_nominal`` starts at
exactly Adam whatever the seed), whose θ stay close enough for their mean to be an optimizer
of the same kind. The sources must build the same optimizer (their ``learned_optimizer.yaml`` may differ
only in fields left at their defaults); the output's config is the first's with the new
checksum, and
``averaged_from.txt`` beside it lists the sources as given.

Fewer than two sources, sources of different architectures, a source that is not a learned
optimizer, or an ``out dir`` that already holds one (without ``--force``) is a one-line error
(exit 2).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from lopt_cli.errors import LoptUserError
from lopt_cli.io import write_text_atomic
from lopt_cli.optimizers.storage import WEIGHTS_FILE, load_learned_optimizer, save_learned_optimizer

SOURCES_FILE = "averaged_from.txt"


def mean_theta(thetas: list) -> object:
    """The leaf-wise mean of pytrees of one structure."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.mean(jnp.stack(leaves), axis=0), *thetas)


def write_average(sources: list[str], out: Path, force: bool = False) -> Path:
    """Averages ``sources``' weights into ``out``; returns the weights path."""
    if len(sources) < 2:
        raise LoptUserError("give at least two θ sources to average")
    if (out / WEIGHTS_FILE).exists() and not force:
        raise LoptUserError(f"{out} already holds a learned optimizer; pass --force to replace it")
    loaded = [load_learned_optimizer(source) for source in sources]
    first, _, config = loaded[0]
    for source, (lopt, _, other) in zip(sources[1:], loaded[1:]):
        if lopt != first:  # the built optimizers: a field left out means its default
            differ = sorted(k for k in set(other) | set(config) if other.get(k) != config.get(k))
            raise LoptUserError(f"{source}: another architecture than {sources[0]} "
                                f"(its config differs in {', '.join(differ)}); only one "
                                "architecture's weights can be averaged")
    theta = mean_theta([theta for _, theta, _ in loaded])
    path = save_learned_optimizer(out, config, theta)
    write_text_atomic(out / SOURCES_FILE, "".join(f"{source}\n" for source in sources))
    return path


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lopt_cli.scripts.average_theta",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the run directory to write")
    parser.add_argument("sources", nargs="+",
                        help="θ sources: run directories, weight files, shipped names, default")
    parser.add_argument("--force", action="store_true", help="replace a learned optimizer there")
    args = parser.parse_args(argv)
    try:
        path = write_average(args.sources, Path(args.out), args.force)
    except (LoptUserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"written: {path} (mean of {len(args.sources)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
