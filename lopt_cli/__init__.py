"""lopt: train, evaluate and use learned optimizers in JAX.

The one library entry point most users need is :func:`load_optimizer` (see
:mod:`lopt_cli.optimizers.dropin`): a learned (or hand-designed) optimizer as a drop-in
``optax.GradientTransformationExtraArgs``::

    import lopt_cli

    opt = lopt_cli.load_optimizer("path/to/run_dir", num_steps=1000)
    updates, state = opt.update(grads, state, params, loss=loss)

It is imported lazily, so ``import lopt_cli`` (and ``lopt --help``) stays fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["load_optimizer"]

if TYPE_CHECKING:  # pragma: no cover
    from lopt_cli.optimizers.dropin import load_optimizer


def __getattr__(name: str) -> Any:
    if name == "load_optimizer":
        from lopt_cli.optimizers.dropin import load_optimizer

        return load_optimizer
    raise AttributeError(f"module 'lopt_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
