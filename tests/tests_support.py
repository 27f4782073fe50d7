"""Helpers for tests that compose the real Hydra configs."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parent.parent / "conf"


TEMPLATES = {"task_family": {"user"}}  # options the user must complete on the command line


def group_options(group: str) -> list[str]:
    """The ready-to-use option names of a config group (one YAML per option)."""
    skip = TEMPLATES.get(group, set())
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem not in skip)


def compose_config(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """The composed primary config of a command, as the CLI would build it."""
    with initialize_config_module("conf", version_base="1.3"):
        return compose(config_name, overrides=list(overrides or []))


def perturbed(theta, scale: float = 0.5, seed: int = 1):
    """``theta`` plus ``scale`` × standard normal noise on every leaf (fixed ``seed``)."""
    import jax

    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([x + scale * jax.random.normal(k, x.shape)
                              for x, k in zip(leaves, keys)])
