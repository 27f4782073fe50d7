"""The held-out loss of saved learned optimizers, measured as meta-training measures it, without
starting a run (nothing is written unless ``--out`` is given).

    python -m lopt_cli.scripts.heldout_loss SOURCE [SOURCE ...] [OVERRIDE ...] [--out FILE.json]

Each ``SOURCE`` is what ``load_optimizer`` reads (a run directory, a ``learned_optimizer.msgpack``,
a shipped name, ``default``), measured with its own architecture and θ, or ``init``: the
untrained θ₀ of the configured ``optimizer``, drawn as a run's first step draws it. The
arguments holding ``=`` are Hydra overrides of ``lopt meta-train``'s config; they set the
held-out check (``heldout.*``, ``meta_loss``, ``seed``, ``inner.valid_every``) and, for
``init``, the optimizer, so ``recipe=adam_nominal_wsd`` measures what that recipe's runs log
as ``heldout_loss``: the mean final normalised loss of ``heldout.num_tasks`` unseen tasks ×
``heldout.num_seeds`` seeds after ``heldout.horizon`` steps
(:class:`~lopt_cli.meta.heldout.HeldOutEvaluator`). For example::

    python -m lopt_cli.scripts.heldout_loss init default runs/candidate recipe=adam_nominal_wsd

A bad source or override, or a config without a held-out check (``heldout.every=0``), is a
one-line error (exit 2). Comparing sources under one command compares them on the same tasks
and seeds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lopt_cli.errors import LoptUserError
from lopt_cli.io import write_json_atomic

INIT = "init"


def composed_config(overrides: list[str]):
    """The parsed ``meta_train`` config of ``overrides`` (Hydra's errors as one line)."""
    from hydra import initialize_config_module

    from lopt_cli.commands.meta_train_config import parse_meta_train
    from lopt_cli.commands.validation import CONFIG_MODULE, compose_checked

    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return parse_meta_train(compose_checked("meta_train", overrides))


def source_optimizer(source: str, config):
    """``(lopt, θ)`` of a source: a saved learned optimizer, or ``init`` (θ₀ of the config)."""
    from lopt_cli.commands.common import build
    from lopt_cli.meta.outer import run_keys
    from lopt_cli.optimizers.storage import load_learned_optimizer

    if source == INIT:
        lopt = build(config.optimizer, "optimizer")
        return lopt, lopt.init(run_keys(config.seed)[1])
    lopt, theta, _ = load_learned_optimizer(source, "source")
    return lopt, theta


def heldout_losses(sources: list[str], overrides: list[str], report=print) -> dict:
    """``{"losses": {source: loss}, "check": the held-out settings}``, measured in order once
    every source has loaded; ``report`` gets the settings, then one line per source."""
    import dataclasses

    from lopt_cli.commands.common import build_family
    from lopt_cli.commands.meta_train import heldout_evaluator

    config = composed_config(overrides)
    evaluator = heldout_evaluator(config, None, build_family(config.task_family))
    if evaluator is None:
        raise LoptUserError("the config has no held-out check (heldout.every=0); pass a recipe "
                            "(for example recipe=adam_nominal_wsd) or heldout.every=1")
    heldout = config.heldout
    check = {"task_family": getattr(evaluator.family, "name", None),
             "num_tasks": heldout.num_tasks, "num_seeds": heldout.num_seeds,
             "horizon": heldout.horizon, "first_id": heldout.first_id,
             "meta_loss": config.meta_loss, "seed": heldout.seed, "overrides": list(overrides)}
    optimizers = {source: source_optimizer(source, config) for source in sources}  # all, first
    report(f"held-out check: {heldout.num_tasks} tasks of {check['task_family']} x "
           f"{heldout.num_seeds} seeds, {heldout.horizon} steps, {config.meta_loss} loss")
    losses = {}
    for source, (lopt, theta) in optimizers.items():
        started = time.perf_counter()
        losses[source] = dataclasses.replace(evaluator, lopt=lopt)(theta)
        report(f"{source}: heldout_loss {losses[source]:.4f} "
               f"({time.perf_counter() - started:.0f} s)")
    return {"losses": losses, "check": check}


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lopt_cli.scripts.heldout_loss",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("arguments", nargs="+", metavar="SOURCE|OVERRIDE",
                        help="sources (init, a run directory, a shipped name, default) and "
                             "key=value overrides of lopt meta-train's config")
    parser.add_argument("--out", type=Path, help="write the losses and settings as JSON here")
    args = parser.parse_args(argv)
    overrides = [a for a in args.arguments if "=" in a]
    sources = [a for a in args.arguments if "=" not in a]
    if not sources:
        parser.error("give at least one SOURCE (init, a run directory, a shipped name)")
    try:
        from lopt_cli.commands.common import configure_jax

        configure_jax()
        result = heldout_losses(sources, overrides)
        if args.out is not None:
            write_json_atomic(args.out, result)
            print(f"written: {args.out}")
    except (LoptUserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
