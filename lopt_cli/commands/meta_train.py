"""``lopt meta-train``: meta-train a learned optimizer and write its run directory.

``resume=<run dir>`` continues a killed run from its last checkpoint, in its directory and with
the config it was started with (read from ``<run dir>/.hydra/config.yaml``); overrides given
with it must agree with that config. ``resume=true`` does the same for the run in
``hydra.run.dir=<run dir>``, or without one (like ``resume=latest``) for this command's newest
resumable run under ``outputs/`` (:mod:`lopt_cli.commands.meta_train_resume`). ``init_from``,
``train_only`` and ``meta_loss`` (the recipe's switches) are checked and applied here; see
:mod:`lopt_cli.commands.meta_train_start`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from lopt_cli.commands.common import (
    build,
    build_family,
    configure_jax,
    guarded,
    plain,
    probe_family,
    run_dir,
)
from lopt_cli.commands.meta_train_config import MetaTrainConfig, parse_meta_train
from lopt_cli.commands.meta_train_resume import resume_directory, resumed_config
from lopt_cli.commands.population_memory import check_population_memory
from lopt_cli.errors import LoptUserError
from lopt_cli.interrupt import RunStopped, stop_requests

CONFIG_NAME = "meta_train"

if TYPE_CHECKING:  # pragma: no cover
    import optax

    from lopt_cli.meta.estimator import GradientEstimator
    from lopt_cli.meta.heldout import HeldOutEvaluator
    from lopt_cli.meta.outer import MetaTrainSettings
    from lopt_cli.meta.problem import TruncatedProblem
    from lopt_cli.optimizers.base import MetaParams
    from task_definitions.base import TaskFamily


@dataclasses.dataclass(frozen=True)
class MetaTrainJob:
    """Everything a meta-training run needs, as plain objects."""

    family: TaskFamily
    problem: TruncatedProblem
    estimator: GradientEstimator
    outer_tx: optax.GradientTransformationExtraArgs
    settings: MetaTrainSettings
    optimizer_config: dict
    checkpoint_every: int
    heldout: HeldOutEvaluator | None = None
    num_devices: int = 1  # per process
    num_processes: int = 1  # jax.distributed processes meta-training together
    resume: bool = False  # continue from a checkpoint in the output directory when there is one
    resume_dir: Path | None = None  # the run directory named by resume=<dir>
    initial_theta: MetaParams | None = None  # init_from's θ (None: the optimizer's init)
    init_from: Path | None = None  # the weights file it was read from
    train_only: str | None = None  # the part of θ the outer optimizer moves (None: all)
    average_theta: float = 0.0  # β of the published running average of θ (0: the last θ)
    keep_best: bool = False  # publish the θ of the lowest heldout_loss, not the last one

    @property
    def inner_steps_per_outer(self) -> int:
        """Inner task-steps per outer step: tasks × unrolls per task × truncation length."""
        estimator = self.estimator
        return self.settings.num_tasks * estimator.unrolls_per_task * estimator.truncation_length


def build_job(cfg: DictConfig) -> MetaTrainJob:
    """The meta-training job of a composed config: typed and validated
    (:func:`~lopt_cli.commands.meta_train_config.parse_meta_train`), then built."""
    from lopt_cli.commands.meta_train_start import check_train_only, initial_theta
    from lopt_cli.config import import_object, instantiate_plain
    from lopt_cli.meta.averaging import check_decay
    from lopt_cli.meta.cpu_tuning import cpu_cores_per_device, for_population
    from lopt_cli.meta.curriculum import HorizonCurriculum
    from lopt_cli.meta.estimator import checked_estimator
    from lopt_cli.meta.outer import MetaTrainSettings
    from lopt_cli.meta.problem import TruncatedProblem
    from lopt_cli.meta.sharding import resolve_num_devices
    from task_definitions.suite import MixtureFamily

    num_processes = join_processes(cfg)  # before anything starts a JAX backend
    resume_dir = resume_directory(cfg)
    if resume_dir is not None:
        cfg = resumed_config(cfg, resume_dir)
    config = parse_meta_train(cfg)
    compute, inner = config.compute, config.inner
    try:
        num_devices = resolve_num_devices(compute.num_devices, compute.num_tasks)
    except ValueError as error:
        raise LoptUserError(f"compute.num_devices={error}") from None
    if compute.num_tasks % (num_devices * num_processes):
        where = f" x {num_processes} processes" if num_processes > 1 else ""
        raise LoptUserError(f"compute.num_tasks={compute.num_tasks} must be a multiple of "
                            f"the {num_devices} devices of compute.num_devices{where}")
    try:
        average_theta = check_decay(config.average_theta)
    except ValueError as error:
        raise LoptUserError(str(error)) from None
    lopt = build(config.optimizer, "optimizer")
    check_train_only(config.train_only, lopt, config.optimizer)
    if resume_dir is None:
        theta, init_path = initial_theta(config.init_from, lopt)
    else:  # resume wins: θ is the checkpoint's; init_from is not reloaded nor re-resolved
        theta = None
        init_path = None if config.init_from is None else Path(str(config.init_from))
    family = build_family(config.task_family)
    outer = dict(config.outer_optimizer)
    if "total_steps" in inspect.signature(import_object(str(outer.get("_target_")))).parameters:
        outer.setdefault("total_steps", compute.num_outer_steps)  # a schedule over the run
    mix = config.population.mix
    curriculum = config.curriculum
    settings = MetaTrainSettings(
        compute.num_outer_steps, compute.num_tasks, compute.resample_every,
        config.seed, config.tasks.first_id, config.tasks.count,
        checkpoint_every=checkpoint_interval(config),
        max_skipped_updates=config.max_skipped_updates,
        curriculum=None if curriculum.start_max_horizon is None else HorizonCurriculum(
            curriculum.start_max_horizon, inner.max_horizon,
            curriculum.steps or compute.num_outer_steps),
        mix_population=isinstance(family, MixtureFamily) if mix == "auto" else mix,
        mix_candidates=config.population.candidates,
    )
    estimator = checked_estimator(build(config.estimator, "estimator"))
    particles = compute.num_tasks * estimator.unrolls_per_task
    inner_lopt = for_population(lopt, particles // (num_devices * num_processes),
                                cpu_cores_per_device(num_devices))
    return MetaTrainJob(
        family=family,
        problem=TruncatedProblem(inner_lopt, inner.min_horizon, inner.max_horizon,
                                 inner.valid_every, config.meta_loss,
                                 float(config.meta_loss_progress_power)),
        estimator=estimator,
        outer_tx=instantiate_plain(outer),  # restricted to train_only's part when it runs
        settings=settings,
        optimizer_config=dict(config.optimizer),
        checkpoint_every=settings.checkpoint_every,
        heldout=heldout_evaluator(config, lopt, family),
        num_devices=num_devices,
        num_processes=num_processes,
        resume=bool(config.resume),
        resume_dir=resume_dir,
        initial_theta=theta,
        init_from=init_path,
        train_only=config.train_only,
        average_theta=average_theta,
        keep_best=config.heldout.keep_best,
    )


def heldout_evaluator(config, lopt, family: TaskFamily):
    """The held-out check of a parsed meta-train ``config`` for ``lopt`` (``None`` when
    ``heldout.every`` is 0); ``family`` is the training family it defaults to."""
    from lopt_cli.meta.heldout import HeldOutEvaluator

    heldout = config.heldout
    if not heldout.every:
        return None
    return HeldOutEvaluator(heldout_family(heldout.task_family, family), lopt, heldout.every,
                            heldout.num_tasks, heldout.horizon, config.inner.valid_every,
                            heldout.num_seeds, heldout.first_id, heldout.seed, config.meta_loss)


def heldout_family(node, family: TaskFamily) -> TaskFamily:
    """The held-out check's family: ``heldout.task_family`` built, or the training ``family``."""
    if node is None:
        return family
    try:
        return build_family(node)
    except LoptUserError as error:
        raise LoptUserError(f"heldout.{error}") from None


def join_processes(cfg: DictConfig) -> int:
    """Joins the ``jax.distributed`` run ``compute.distributed`` (or ``LOPT_COORDINATOR``,
    ``LOPT_NUM_PROCESSES``, ``LOPT_PROCESS_ID``) describes; returns the process count."""
    from lopt_cli.meta.distributed import initialize_from, resolve_settings

    try:
        settings = resolve_settings(plain(OmegaConf.select(cfg, "compute.distributed")))
    except ValueError as error:
        raise LoptUserError(f"compute.distributed.{error}") from None
    initialize_from(settings)
    return settings.num_processes


def checkpoint_interval(config: MetaTrainConfig) -> int:
    """``checkpoint_every``; ``auto``: a tenth of the run, at most 50 steps, at least 1, so
    every budget (``compute=smoke`` included) checkpoints before its end."""
    if config.checkpoint_every == "auto":
        return min(50, max(1, config.compute.num_outer_steps // 10))
    return config.checkpoint_every


def check(cfg: DictConfig) -> None:
    """Builds the job (no compilation) so that bad values fail before any output is written."""
    from lopt_cli.meta.checkpoint import has_checkpoint

    job = check_job(cfg)
    if job.resume_dir is not None and not has_checkpoint(job.resume_dir):
        raise LoptUserError(f"resume={cfg.resume}: no checkpoint.msgpack in {job.resume_dir}")


def check_job(cfg: DictConfig) -> MetaTrainJob:
    """The job, its tasks and its population's memory checked; a resume's checkpoint is the
    command's to check (``self-train`` keeps one per run, in subdirectories)."""
    job = build_job(cfg)
    first_task = probe_family(job.family, job.settings.first_task_id)
    if job.heldout is not None and job.heldout.family is not job.family:
        try:
            probe_family(job.heldout.family, job.heldout.first_id)
        except LoptUserError as error:
            raise LoptUserError(f"heldout.{error}") from None
    check_population_memory(job)
    warn_of_lapack(job, first_task)
    return job


def warn_of_lapack(job: MetaTrainJob, task) -> None:
    """:func:`~lopt_cli.evaluation.lapack_guard.meta_training_warning` for the job's first
    ``task``, on stderr once per process (a sweep checks every job)."""
    from lopt_cli.evaluation.lapack_guard import meta_training_warning, say_once

    warning = meta_training_warning(task, job.problem.lopt, job.problem.min_horizon)
    if warning:
        say_once(warning)


def run_meta_training(job: MetaTrainJob, out_dir, label: str = "meta-train"):
    """Runs the job into ``out_dir``; returns ``(theta, history)``.

    With ``job.resume`` and a checkpoint in ``out_dir``, continues from it (``metrics.jsonl``
    is cut back to the checkpoint's rows first); without one, starts afresh there.
    """
    from lopt_cli.commands.meta_train_start import initial_theta
    from lopt_cli.commands.recorder import (
        MACHINE_FILE,
        META_LOSS_PLOT,
        MetaTrainRecorder,
        best_heldout,
        final_meta_loss,
        machine_facts,
    )
    from lopt_cli.evaluation.plots import plot_meta_loss
    from lopt_cli.io import write_json_atomic
    from lopt_cli.meta.averaging import with_parameter_average
    from lopt_cli.meta.checkpoint import has_checkpoint, load_checkpoint, remove_stale_temporaries
    from lopt_cli.meta.distributed import QuietRecorder, is_main, is_multiprocess, to_host
    from lopt_cli.meta.outer import initial_state, meta_train
    from lopt_cli.meta.phases import train_only_part
    from lopt_cli.meta.sharding import Placement

    out_dir = Path(out_dir)
    outer_tx = with_parameter_average(train_only_part(job.outer_tx, job.train_only),
                                      job.average_theta)
    main = is_main()
    start, history = None, []  # a fresh start rewrites metrics.jsonl (a killed try's rows go)
    if job.resume and has_checkpoint(out_dir):
        if main:
            remove_stale_temporaries(out_dir)
        start, history = load_checkpoint(out_dir, job.family, job.problem, job.estimator,
                                          outer_tx, job.settings)
    if main:  # where it ran, at its start: a run killed before its summary keeps the record
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / MACHINE_FILE, machine_facts())
    initial = job.initial_theta
    if start is None and job.resume and job.init_from is not None:
        # resumed before this run's first checkpoint (self-train's second run): as if fresh
        initial = initial_theta(str(job.init_from), build(job.optimizer_config, "optimizer"))[0]
    theta0 = initial_loss = None
    if main and start is None and job.heldout is not None:  # θ₀'s held-out check, once
        theta0 = initial_state(job.problem, outer_tx, job.settings, initial).theta
        initial_loss = job.heldout(theta0)
    if main:
        recorder = MetaTrainRecorder(out_dir, job.settings.num_outer_steps,
                                     job.inner_steps_per_outer, job.optimizer_config,
                                     job.checkpoint_every, label=label, heldout=job.heldout,
                                     seed=job.settings.seed, history=history,
                                     save_last=job.average_theta > 0 or job.keep_best,
                                     keep_best=job.keep_best,
                                     initial_heldout_loss=initial_loss, initial_theta=theta0)
    else:  # other processes of a multi-process run write nothing
        recorder = QuietRecorder(history)
    on_step, on_checkpoint = recorder, recorder.checkpoint
    if is_multiprocess():  # the callbacks get host copies (gathering is collective: all call)
        def on_step(step, metrics, theta):
            recorder(step, metrics, to_host(theta))

        def on_checkpoint(state):
            recorder.checkpoint(state._replace(theta=to_host(state.theta),
                                               opt_state=to_host(state.opt_state),
                                               states=to_host(state.states)))
    # Ctrl-C or SIGTERM: stop after the current outer step with a checkpoint (one process
    # only: the others of a multi-process run would wait in a collective).
    stops = stop_requests(label) if not is_multiprocess() else contextlib.nullcontext(None)
    with recorder, stops as stop_requested:
        try:
            theta = meta_train(job.family, job.problem, job.estimator, outer_tx, job.settings,
                               theta=initial, on_step=on_step, start=start,
                               on_checkpoint=on_checkpoint,
                               placement=Placement.create(job.num_devices),
                               stop_requested=stop_requested or (lambda: False))
        except RunStopped:
            recorder.stopped()
            plot_meta_loss({label: recorder.history}, out_dir / META_LOSS_PLOT,
                           "meta-training")
            raise
    history = recorder.history
    if not main:
        return theta, history
    plot_meta_loss({label: history}, out_dir / META_LOSS_PLOT, "meta-training")
    tail = history[-max(1, len(history) // 10):]
    summary = {
        "outer_steps": len(history),
        "first_meta_loss": history[0]["meta_loss"],
        "final_meta_loss": final_meta_loss(history),
        "inner_steps_per_second": sorted(r["inner_steps_per_second"] for r in tail)[len(tail) // 2],
        "num_devices": job.num_devices,
        "num_processes": job.num_processes,
        "resumed_at_step": start.step if start is not None else None,
        "init_from": str(job.init_from) if job.init_from is not None else None,
        "train_only": job.train_only,
        "average_theta": job.average_theta,
        "machine": machine_facts(),
    }
    heldout = [r["heldout_loss"] for r in history if "heldout_loss" in r]
    if heldout:
        summary["final_heldout_loss"] = heldout[-1]
    if "initial_heldout_loss" in history[0]:
        summary["initial_heldout_loss"] = history[0]["initial_heldout_loss"]
    if job.keep_best:
        summary.update(best_heldout(history))
    write_json_atomic(out_dir / "summary.json", summary)
    if job.keep_best:  # the published θ (this process's best, or a resumed run's file)
        from lopt_cli.optimizers.storage import load_learned_optimizer

        theta = load_learned_optimizer(out_dir)[1]
    return theta, history


@guarded
def run(cfg: DictConfig) -> None:
    configure_jax()
    job = build_job(cfg)
    out_dir = run_dir()
    if job.resume:
        from lopt_cli.meta.checkpoint import read_raw

        if job.resume_dir is not None and job.resume_dir.resolve() != out_dir.resolve():
            raise LoptUserError(f"resume={cfg.resume} but hydra.run.dir={out_dir}; give one")
        read_raw(out_dir)  # a missing or unreadable checkpoint: one line, exit 2
    try:
        theta, history = run_meta_training(job, out_dir)
    except RunStopped as stop:
        raise RunStopped(f"{stop}; checkpoint and learned optimizer in {out_dir}; continue "
                         f"with: lopt meta-train resume={out_dir}") from None
    if job.num_processes > 1:
        from lopt_cli.meta.distributed import digest_line, is_main

        print(digest_line(theta))
        if not is_main():
            return
    print(f"meta-loss {history[0]['meta_loss']:.4f} -> {history[-1]['meta_loss']:.4f}; "
          f"learned optimizer written to {out_dir}")


@hydra.main(config_path="pkg://conf", config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)
