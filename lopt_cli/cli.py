"""The ``lopt`` command: picks the subcommand and hands the rest of argv to Hydra.

Overrides are checked before Hydra creates a run directory: a bad override, an unknown option or
an unusable input file gives one line on stderr and exit status 2, and nothing is written.
"""
from __future__ import annotations

import importlib
import os
import sys

from lopt_cli.errors import LoptUserError

COMMANDS = {
    "meta-train": ("lopt_cli.commands.meta_train",
                   "meta-train a learned optimizer on a sampled task suite"),
    "evaluate": ("lopt_cli.commands.evaluate",
                 "compare a learned optimizer with tuned baselines on seen and unseen tasks"),
    "self-train": ("lopt_cli.commands.self_train",
                   "meta-train a fresh optimizer with a learned one vs. with AdamW"),
    "tasks": ("lopt_cli.commands.tasks",
              "list task families, describe sampled tasks, try one with Adam"),
    "cache": ("lopt_cli.commands.cache",
              "show what lopt keeps on disk (cached runs, stopped parts, compiles); clear it"),
}
HELP_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc"}
MULTIRUN_FLAGS = ("--multirun", "-m")
VERSION_FLAGS = ("--version", "-V")
# What a bug report needs beside lopt's own version: the libraries whose APIs move fastest.
REPORTED_LIBRARIES = ("jax", "jaxlib", "optax", "flax", "hydra-core", "tensorflow-datasets")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lopt <command> [overrides] [--multirun] [--help]", "       lopt --version",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`lopt <command> --help` lists the config groups and options of a command."]
    return "\n".join(lines)


def version_text() -> str:
    """``lopt --version``: lopt's version, the source's git commit when it runs from a checkout,
    Python's and the key libraries' versions (read from the installed metadata: JAX is not
    imported)."""
    import platform
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    commit = source_commit()
    lines = [f"lopt {installed('lopt')}" + (f" (commit {commit})" if commit else ""),
             f"python {platform.python_version()}"]
    lines += [f"{name} {installed(name)}" for name in REPORTED_LIBRARIES]
    return "\n".join(lines)


def source_commit() -> str | None:
    """The short commit of the git checkout lopt runs from (``+`` when files differ from it),
    or ``None`` outside one or without git."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def fail(message: str) -> None:
    print(f"lopt: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def multirun_flag_last(args: list[str]) -> list[str]:
    """``args`` with ``--multirun``/``-m`` moved after the overrides: Hydra's parser takes the
    overrides as one run of words, so ``a=1 --multirun b=2`` would fail there ("unknown
    flag 'b=2'"), while ``a=1 b=2 --multirun`` is the same command.

    >>> multirun_flag_last(["seed=0,1", "--multirun", "hydra.sweep.dir=x"])
    ['seed=0,1', 'hydra.sweep.dir=x', '--multirun']
    """
    flags = [arg for arg in args if arg in MULTIRUN_FLAGS]
    return [arg for arg in args if arg not in MULTIRUN_FLAGS] + flags[:1]


def print_to_pipe(text: str) -> None:
    """Prints ``text``; a reader that stops early (``lopt evaluate --help | head``) is no error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def parallel_sweep(args: list[str]) -> bool:
    """Whether ``args`` run a sweep whose jobs are other processes (``hydra/launcher=joblib``)."""
    return any(a in MULTIRUN_FLAGS for a in args) and any(
        a.startswith("hydra/launcher=") and not a.endswith("=basic") for a in args)


def run_parallel_sweep(run) -> None:
    """Runs a sweep whose jobs are other processes so that Ctrl-C or SIGTERM stops each job
    after its current step or segment (:func:`~lopt_cli.interrupt.sweep_stop_requests`), with
    one line and exit status 130; a second Ctrl-C stops them at once."""
    from lopt_cli.interrupt import RunStopped, sweep_stop_requests

    try:
        with sweep_stop_requests() as requested:
            run()
    except KeyboardInterrupt:
        print("lopt: interrupted: the sweep's jobs stopped at once; a meta-training job "
              "continues from its last checkpoint (resume=<job dir>)", file=sys.stderr)
        raise SystemExit(RunStopped.exit_code) from None
    if requested():
        print("lopt: the sweep stopped on request: each job's line above says where it "
              "stopped and how to continue it", file=sys.stderr)
        raise SystemExit(RunStopped.exit_code)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_to_pipe(usage())
        return
    if argv[0] in VERSION_FLAGS:
        print_to_pipe(version_text())
        return
    command, rest = argv[0], multirun_flag_last(argv[1:])
    if command not in COMMANDS:
        fail(f"unknown command {command!r}; choose one of: {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[command][0])
    if hasattr(module, "run_argv"):  # a command without Hydra (lopt cache)
        module.run_argv(argv[1:])
        return
    if {"-h", "--help"}.intersection(rest) and not (HELP_FLAGS - {"-h", "--help"}) & set(rest):
        from lopt_cli.commands.command_help import command_help

        try:
            text = command_help(command, module.CONFIG_NAME, COMMANDS[command][1],
                                [a for a in rest if a not in ("-h", "--help", *MULTIRUN_FLAGS)])
        except LoptUserError as error:
            fail(str(error))
        print_to_pipe(text)
        return
    if not HELP_FLAGS.intersection(rest):
        from lopt_cli.commands.validation import validate_overrides
        from lopt_cli.console import heartbeat_interval

        try:
            heartbeat_interval()
            validate_overrides(module.CONFIG_NAME, rest, module.check)
        except LoptUserError as error:
            fail(str(error))
    sys.argv = [f"lopt {command}", *rest]
    if parallel_sweep(rest):
        run_parallel_sweep(module.main)
        return
    module.main()
