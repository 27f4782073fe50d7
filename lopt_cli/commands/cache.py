"""``lopt cache``: what lopt keeps on disk between commands, and removing some of it.

    lopt cache                                   # show the four places, sizes, stopped parts
    lopt cache clear=stopped                     # drop the kept state of stopped benchmark parts
    lopt cache clear=runs match=AdamLR           # drop cached evaluation runs labelled so
    lopt cache clear=compile older_than_days=30  # drop compiled programs not written for 30 days
    lopt cache clear=all dry_run=true            # say what would go, remove nothing
    lopt cache export=DIR match=transformer      # copy runs (and stopped parts) so labelled
    lopt cache import=DIR                        # add another machine's export to this cache

Not a Hydra command: it writes no run directory and imports no JAX. The places are those the
other commands use (``LOPT_CACHE_DIR``, ``LOPT_JAX_CACHE``, ``LOPT_DATA_DIR``); built datasets
are listed, never removed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from lopt_cli.errors import LoptUserError

OPTIONS = {
    "clear": "runs | stopped | compile | all: what to remove (without it: show)",
    "match": "remove (or export) only runs or stopped parts whose label ('task: optimizer') "
             "holds this text",
    "older_than_days": "remove only what was last written more than this many days ago",
    "dry_run": "true: say what would be removed (or copied), change nothing",
    "export": "copy the evaluation runs and stopped parts into this directory (an evaluation "
              "cache another machine can import)",
    "import": "add the runs and stopped parts of this directory (`export=`'s) to this cache",
}
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


# A part's directory without about.json: a host-loop part keeps each finished trial × seed as
# it goes, so its directory exists while it runs, and stays if its command is killed outright.
UNRECORDED_PART = "(not named: running now, or killed before it could stop)"


def usage() -> str:
    lines = [(__doc__ or "").strip().splitlines()[0], "", "usage: lopt cache [key=value ...]",
             "", "options:"]
    width = max(map(len, OPTIONS))
    lines += [f"  {key:<{width}}  {text}" for key, text in OPTIONS.items()]
    return "\n".join(lines)


def parse_options(args: list[str]) -> dict:
    """``key=value`` words as options, each checked; a LoptUserError names a bad one."""
    from lopt_cli.evaluation.cache_contents import CLEARABLE

    options = {"clear": "", "match": "", "older_than_days": 0.0, "dry_run": False,
               "export": "", "import": ""}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in OPTIONS:
            raise LoptUserError(f"{arg!r}: expected one of {', '.join(k + '=' for k in OPTIONS)}"
                                " (`lopt cache --help`)")
        options[key] = value
    if options["clear"] not in ("", *CLEARABLE, "all"):
        raise LoptUserError(f"clear={options['clear']!r}: choose one of "
                            f"{', '.join((*CLEARABLE, 'all'))}")
    try:
        days = float(options["older_than_days"])
    except ValueError:
        days = -1.0
    if not days >= 0.0:
        raise LoptUserError(f"older_than_days={options['older_than_days']!r}: expected a "
                            "number of days >= 0 (0: whatever its age)")
    options["older_than_days"] = days
    flag = str(options["dry_run"]).lower()
    if flag not in (*TRUE, *FALSE):
        raise LoptUserError(f"dry_run={options['dry_run']!r}: expected true or false")
    options["dry_run"] = flag in TRUE
    if options["match"] and options["clear"] == "compile":
        raise LoptUserError("match= selects runs or stopped parts; compiled programs have no "
                            "label")
    _check_carrying(options)
    if not (options["clear"] or options["export"] or options["import"]) and (
            options["match"] or days or options["dry_run"]):
        raise LoptUserError("match=, older_than_days= and dry_run= choose what clear= removes;"
                            " give clear=runs|stopped|compile|all")
    return options


def _check_carrying(options: dict) -> None:
    """``export=`` and ``import=`` go alone: one action per command."""
    carrying = [key for key in ("export", "import") if options[key]]
    if len(carrying) + bool(options["clear"]) > 1:
        raise LoptUserError("clear=, export= and import= are one action each: give one")
    if options["import"] and options["match"]:
        raise LoptUserError("import= adds every run of its directory; match= chooses what "
                            "export= copies")
    if carrying and options["older_than_days"]:
        raise LoptUserError("older_than_days= chooses what clear= removes")


def human_size(size: int) -> str:
    """Bytes as ``"163 MB"`` (powers of 1000, as ``du --si``).

    >>> human_size(0), human_size(1234), human_size(162_900_000)
    ('0 B', '1.2 kB', '163 MB')
    """
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.0f} TB"


def when(mtime: float | None) -> str:
    return "-" if mtime is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


def places() -> tuple[Path, Path | None, Path]:
    """The evaluation cache, the compile cache and the datasets directory in use."""
    from lopt_cli.evaluation.cache import default_cache_dir
    from lopt_cli.evaluation.cache_contents import compile_cache_dir, data_dir

    return default_cache_dir(), compile_cache_dir(), data_dir()


def show(console) -> None:
    from collections import Counter

    from rich.table import Table

    from lopt_cli.evaluation.cache_contents import areas, run_files, run_labels, stopped_parts

    eval_dir, compile_dir, data_dir = places()
    table = Table(title="what lopt keeps between commands")
    for column in ("what", "where", "entries", "size", "newest"):
        table.add_column(column, justify="right" if column in ("entries", "size") else "left")
    for area in areas(eval_dir, compile_dir, data_dir):
        where = "off (LOPT_JAX_CACHE=)" if area.path is None else str(area.path)
        table.add_row(area.name, where, str(area.entries), human_size(area.size),
                      when(area.newest))
    console.print(table)
    console.print(measuring_code_line(eval_dir), markup=False)
    labels = run_labels(eval_dir)
    runs = run_files(eval_dir)
    by_optimizer = Counter(labels[p.stem].rpartition(": ")[2] if p.stem in labels
                           else "(unlabelled: stored before labels)" for p in runs)
    if runs:
        console.print("evaluation runs by optimizer: " + ", ".join(
            f"{name} {count}" for name, count in sorted(by_optimizer.items())))
    parts = stopped_parts(eval_dir)
    if parts:
        stopped = Table(title="stopped benchmark parts (the same `lopt evaluate` command "
                              "continues each)")
        for column in ("part", "stopped", "size", "kept at", "directory"):
            stopped.add_column(column)
        for part in parts:
            stopped.add_row(part.label or UNRECORDED_PART, part.stopped or "-",
                            human_size(part.size), when(part.kept_at), part.path.name)
        console.print(stopped)
    console.print("remove: `lopt cache clear=stopped|runs|compile|all` "
                  "[match=TEXT] [older_than_days=N] [dry_run=true]", markup=False)


def measuring_code_line(eval_dir: Path) -> str:
    """Whether the runs are keyed as those of the code that trains and measures now."""
    from lopt_cli.evaluation.cache import first_code
    from lopt_cli.evaluation.code_version import measuring_code_digest

    now, first = measuring_code_digest(), first_code(eval_dir)
    if first is None:
        return f"code that trains and measures: {now} (the cache has not keyed a run yet)"
    if first == now:
        return (f"code that trains and measures: {now}, the code this cache first ran: its "
                "runs are read back")
    return (f"code that trains and measures: {now}, not the code this cache first ran "
            f"({first}): runs computed by other code are recomputed, not read back")


def clear(options: dict, console) -> None:
    from lopt_cli.evaluation.cache_contents import clear_compiled, clear_runs, clear_stopped

    eval_dir, compile_dir, _ = places()
    what = ("runs", "stopped", "compile") if options["clear"] == "all" else (options["clear"],)
    match, days, dry = options["match"], options["older_than_days"], options["dry_run"]
    verb = "would remove" if dry else "removed"
    for name in what:
        if name == "runs":
            done, where = clear_runs(eval_dir, match, days, dry), "evaluation runs"
        elif name == "stopped":
            done, where = clear_stopped(eval_dir, match, days, dry), "stopped benchmark parts"
        else:
            if match:  # clear=all with match: compiled programs have no label to match
                continue
            done, where = clear_compiled(compile_dir, days, dry), "compiled programs"
        console.print(f"{verb} {done.entries} {where} ({human_size(done.size)})", markup=False)


def carry(options: dict, console) -> None:
    """``export=DIR`` or ``import=DIR`` (:mod:`~lopt_cli.evaluation.cache_transfer`)."""
    from lopt_cli.evaluation.cache_transfer import export_runs, import_runs

    eval_dir, dry = places()[0], options["dry_run"]
    place = Path(options["export"] or options["import"]).expanduser()
    try:
        if options["export"]:
            done = export_runs(eval_dir, place, options["match"], dry)
            verb, where = ("would copy" if dry else "copied"), f"into {place}"
        else:
            done = import_runs(place, eval_dir, dry)
            verb, where = ("would add" if dry else "added"), f"from {place} to {eval_dir}"
    except OSError as error:
        raise LoptUserError(f"{error.filename or place}: {error.strerror or error}") from None
    kept = f"; {done.present} were there already, kept" if done.present else ""
    console.print(f"{verb} {done.runs} evaluation runs and {done.parts} stopped parts "
                  f"({human_size(done.size)}) {where}{kept}", markup=False)


def run_argv(args: list[str]) -> None:
    """Entry point from ``lopt cache ...`` (not Hydra: ``key=value`` words only)."""
    from lopt_cli.console import output_console

    if {"-h", "--help", "help"}.intersection(args):
        print(usage())
        return
    try:
        options = parse_options(args)
        console = output_console()
        if options["clear"]:
            clear(options, console)
        elif options["export"] or options["import"]:
            carry(options, console)
        else:
            show(console)
    except LoptUserError as error:
        print(f"lopt: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
