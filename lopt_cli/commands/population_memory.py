"""Whether a meta-training population fits in this machine's memory, checked before a run
writes anything (``lopt meta-train`` and ``lopt self-train``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lopt_cli.errors import LoptUserError

if TYPE_CHECKING:
    from lopt_cli.commands.meta_train import MetaTrainJob


# Device memory of one particle ≈ this many copies of its inner state (parameters and
# optimizer state): the state itself, its gradients, the perturbed twin's, and activations.
STATE_COPIES = 4


def population_bytes(job: MetaTrainJob) -> int:
    """An estimate of the population's memory: ``STATE_COPIES`` inner states per particle plus
    each member's task arrays (datasets live on the device)."""
    import jax

    from lopt_cli.evaluation.benchmark_cost import tree_bytes
    from lopt_cli.meta.outer import build_members

    task = build_members(job.family, [(job.settings.first_task_id, 0)])
    theta = jax.eval_shape(job.problem.lopt.init, jax.random.PRNGKey(0))
    state = jax.eval_shape(lambda th, k: jax.vmap(job.problem.fresh_state, (None, 0, None))(
        th, task, k), theta, jax.random.PRNGKey(0))

    particles = job.settings.num_tasks * job.estimator.unrolls_per_task
    return (particles * STATE_COPIES * tree_bytes(state)
            + job.settings.num_tasks * tree_bytes(task))


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_population_memory(job: MetaTrainJob) -> None:
    """A one-line error when the population clearly cannot fit in this machine's memory (CPU
    runs; on accelerators XLA reports its own out-of-memory)."""
    import jax

    available = available_memory_bytes()
    if available is None or jax.default_backend() != "cpu":
        return
    needed = population_bytes(job)
    if needed > 0.8 * available:
        gib = 2.0**30
        raise LoptUserError(
            f"compute.num_tasks={job.settings.num_tasks}: the population needs an estimated "
            f"{needed / gib:,.1f} GiB but {available / gib:,.1f} GiB are available; lower "
            "compute.num_tasks (or the task's batch size)")
