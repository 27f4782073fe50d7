"""Ships a meta-trained learned optimizer with its model card.

    python -m lopt_cli.scripts.ship_optimizer <run dir> --name <name> [--default] [--force]
        [--leaderboard <leaderboard.md>] [--dropin <dropin_check.json>] [--summary <file.md>]

Copies ``learned_optimizer.msgpack`` and ``learned_optimizer.yaml`` from a ``lopt meta-train``
run directory into ``lopt_cli/pretrained/<name>/`` (checksum verified before and after, and the
copy loaded as ``load_optimizer`` would), the run's ``meta_loss.png`` beside them (drawn from
``metrics.jsonl`` for a run stopped before it drew one), and writes ``README.md``, a model card
built only from what the run recorded: the architecture, the meta-training task family
(``.hydra/config.yaml``), the command (``.hydra/overrides.yaml``), outer steps, time and
meta-loss (``metrics.jsonl``, ``summary.json``; a run stopped early is said to be, its kept θ
found from its rows), the machine (``summary.json``'s, else ``machine.json`` written at the
run's start; runs that predate both: the machine writing the card, said so),
and, when given, an evaluation leaderboard (``lopt evaluate benchmark=...``'s
``leaderboard.md``) and the drop-in check (``python -m benchmarks.dropin_check``'s JSON, with
its ``.md`` beside it). ``--summary`` places a hand-written markdown file (a short account of
what was measured, with its commands) under the card's title, so a card regenerated from a new
run or evaluation keeps it. ``--default`` also makes it what ``load_optimizer("default", ...)``
returns. Refused in one line (exit 2, nothing written): a run directory without weights, a
corrupt copy, an existing name without ``--force``, a reserved or path-like name.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import yaml

from lopt_cli.commands.recorder import MACHINE_FILE, best_heldout, machine_facts
from lopt_cli.errors import LoptUserError, one_line
from lopt_cli.io import read_jsonl, write_text_atomic
from lopt_cli.optimizers import storage
from lopt_cli.optimizers.dropin import OPT_LIST_PREFIX, hand_designed_names

# Names load_optimizer resolves before the shipped ones: shipping under them would be unreachable.
RESERVED = {storage.DEFAULT_SOURCE, "latest", storage.DEFAULT_POINTER, *hand_designed_names()}
PLOT = "meta_loss.png"
CARD = "README.md"
RUN_DIR_TIME = "%Y-%m-%d_%H-%M-%S_%f"  # hydra.run.dir's timestamp (conf/hydra/output)


def read_yaml(path: Path, default=None):
    return yaml.safe_load(path.read_text()) if path.is_file() else default


def verified_weights(directory: Path) -> tuple[bytes, dict]:
    """The weights of ``directory`` and its architecture config (without the checksum), loaded
    as ``load_optimizer`` loads them (checksum, shapes, finiteness); the checksum is required."""
    weights_path, config_path = directory / storage.WEIGHTS_FILE, directory / storage.CONFIG_FILE
    if not weights_path.is_file() or not config_path.is_file():
        raise LoptUserError(f"{directory}: no {storage.WEIGHTS_FILE} with {storage.CONFIG_FILE} "
                            "beside it; give a meta-train run directory that wrote one")
    if storage.CHECKSUM_KEY not in storage.read_config(config_path):
        raise LoptUserError(f"{weights_path}: SHA-256 does not match {storage.CHECKSUM_KEY} in "
                            f"{storage.CONFIG_FILE} (missing)")
    _, _, config = storage.load_learned_optimizer(weights_path)
    return weights_path.read_bytes(), config


def check_name(name: str, force: bool) -> Path:
    if (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name in RESERVED
            or name.startswith(OPT_LIST_PREFIX)):
        raise LoptUserError(f"--name {name!r}: expected letters, digits, '_', '.', '-' and not "
                            f"one of {sorted(RESERVED)}")
    target = storage.PRETRAINED_DIR / name
    if target.exists() and not force:
        raise LoptUserError(f"--name {name!r}: {target} exists; pass --force to replace it")
    return target


def resolved(config: dict) -> dict:
    """``config`` with its interpolations (``${compute.x}``, lopt's resolvers) resolved."""
    from omegaconf import OmegaConf

    import lopt_cli.commands.resolvers  # noqa: F401 - registers lopt's resolvers

    try:
        return OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    except Exception:  # noqa: BLE001 - an unresolvable record is shown as written
        return config


def run_record(run_dir: Path) -> dict:
    """What the run recorded: config, overrides, metrics rows, summary."""
    metrics = run_dir / "metrics.jsonl"
    summary = run_dir / "summary.json"
    machine = run_dir / MACHINE_FILE
    return {"config": resolved(read_yaml(run_dir / ".hydra" / "config.yaml", {}) or {}),
            "overrides": read_yaml(run_dir / ".hydra" / "overrides.yaml", None),
            "rows": read_jsonl(metrics) if metrics.is_file() else [],
            "summary": json.loads(summary.read_text()) if summary.is_file() else {},
            "machine": json.loads(machine.read_text()) if machine.is_file() else None,
            "metrics_mtime": metrics.stat().st_mtime if metrics.is_file() else None}


def wall_clock(run_dir: Path, record: dict) -> str:
    """Recorded outer-step and held-out seconds, and start-to-last-row time where the run
    directory's name is hydra's timestamp."""
    rows = record["rows"]
    recorded = sum(r.get("seconds", 0.0) + r.get("heldout_seconds", 0.0) for r in rows)
    text = f"{recorded / 60:.1f} min in outer steps and held-out evaluations (`metrics.jsonl`)"
    try:
        start = dt.datetime.strptime(run_dir.name, RUN_DIR_TIME).timestamp()
    except ValueError:
        return text
    if record["metrics_mtime"] is not None:
        span = (record["metrics_mtime"] - start) / 60
        text += f"; {span:.1f} min from the run directory's start stamp to its last metrics row"
        if record["summary"].get("resumed_at_step") is not None:
            text += " (a resumed run: this span includes the time it was stopped)"
    return text


def yaml_block(value) -> list[str]:
    return ["```yaml", yaml.safe_dump(value, sort_keys=False).rstrip(), "```"]


def machine_lines(summary: dict, started_on: dict | None = None) -> list[str]:
    """Where the run ran: its summary's record, else the one written at its start
    (``machine.json``, kept by a run stopped before its summary), else this machine, said so."""
    facts, note = summary.get("machine"), "recorded by the run (`summary.json`)"
    if facts is None and started_on is not None:
        facts, note = started_on, f"recorded by the run at its start (`{MACHINE_FILE}`)"
    if facts is None:
        facts = machine_facts()
        note = ("the run recorded none (it predates the record); this is the machine that wrote "
                "the card")
    return [f"- {note}: {facts['cpu']}, {facts['usable_cores']} usable of {facts['cpu_count']} "
            f"cores, {facts['platform']}, Python {facts['python']}, JAX {facts['jax_version']} "
            f"on {facts['jax_backend']} ({', '.join(facts['jax_devices'])})"]


def record_lines(run_dir: Path, record: dict) -> list[str]:
    rows, summary = record["rows"], record["summary"]
    if not rows:
        return ["- the run directory holds no `metrics.jsonl` rows"]
    losses = [r["meta_loss"] for r in rows]
    tail = losses[-max(1, len(losses) // 10):]
    lines = [f"- outer steps: {len(rows)}"
             + (f" (resumed at step {summary['resumed_at_step']})"
                if summary.get("resumed_at_step") is not None else ""),
             f"- time: {wall_clock(run_dir, record)}",
             f"- meta-loss: {losses[0]:.4g} at the first step, {statistics.fmean(tail):.4g} over "
             f"the last {len(tail)} steps (lowest {min(losses):.4g})"]
    heldout = [(r["step"], r["heldout_loss"]) for r in rows if r.get("heldout_loss") is not None]
    if heldout:
        lines.append(f"- held-out loss: {heldout[0][1]:.4g} at step {heldout[0][0]}, "
                     f"{heldout[-1][1]:.4g} at step {heldout[-1][0]}")
    run_config = record.get("config", {})
    planned = run_config.get("compute", {}).get("num_outer_steps")
    if not summary and planned and len(rows) < planned:
        lines.append(f"- the run stopped before its end (no `summary.json`): {len(rows):,} of "
                     f"its {planned:,} outer steps")
    if not summary and run_config.get("heldout", {}).get("keep_best"):
        summary = best_heldout(rows)  # what the run published so far, from its rows
    if summary.get("best_heldout_step") is not None:
        lines.append(f"- shipped weights: the θ of the lowest held-out loss "
                     f"({summary['best_heldout_loss']:.4g} at step {summary['best_heldout_step']},"
                     f" `heldout.keep_best=true`), not the last one")
    rates = sorted(r["inner_steps_per_second"] for r in rows[len(rows) // 2:])
    lines.append(f"- throughput: {rates[len(rates) // 2]:,.0f} inner steps/s (median of the "
                 "second half)")
    skipped = sum(bool(r.get("skipped_update")) for r in rows)
    if skipped:
        lines.append(f"- outer updates skipped as non-finite: {skipped}")
    return lines


def learning_rate_lines(name: str, config: dict, dropin: dict | None) -> list[str]:
    from lopt_cli.config import instantiate_plain
    from lopt_cli.optimizers.dropin import LEARNING_RATE_FIELD, has_learning_rate

    lopt = instantiate_plain(config)
    if not has_learning_rate(lopt):
        return [f'It takes no learning rate: `load_optimizer("{name}", num_steps)` is all it '
                "needs (the horizon `num_steps` is a feature: give the real one)."]
    own = getattr(lopt, LEARNING_RATE_FIELD)
    lines = [f"It takes a base learning rate, {own:g} as meta-trained: "
             f'`load_optimizer("{name}", num_steps, learning_rate=...)` replaces it. Start from '
             "the "
             "meta-trained value; if the loss stalls or diverges, tune it like Adam's, on a log "
             "grid (e.g. 1e-4 … 1e-1)."]
    if dropin and dropin.get("candidate_tuned_over_lr_grid"):
        best = [r["candidate"]["by_train"]["learning_rate"] for r in dropin["rows"]]
        best = sorted(v for v in best if v is not None)
        if best:
            lines.append(f"In the drop-in check below, the best rate per problem (by training "
                         f"loss) ranged "
                         f"{best[0]:.3g} … {best[-1]:.3g} (median {statistics.median(best):.3g}).")
    return lines


def demoted(markdown: str) -> str:
    """``markdown`` with every heading two levels deeper (to nest under the card's)."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", markdown,
                  flags=re.M).strip()


def dropin_lines(path: Path) -> tuple[list[str], dict]:
    result = json.loads(path.read_text())
    lines = ["## Drop-in check", "",
             f"Held-out problems outside the project (`python -m benchmarks.dropin_check "
             f"--optimizer {result['optimizer']} --steps "
             f"{','.join(str(s) for s in result['steps'])}`), against Adam tuned per problem "
             "over the same learning-rate grid:", ""]
    table = path.with_suffix(".md")
    if table.is_file():
        return lines + [demoted(table.read_text())], result
    for steps, s in result["summary"].items():
        lines.append(f"- {steps} steps: training loss {s['train']['win']} wins / "
                     f"{s['train']['tie']} ties / {s['train']['loss']} losses, test loss "
                     f"{s['test']['win']} / {s['test']['tie']} / {s['test']['loss']} of "
                     f"{s['problems']}; non-finite {s['candidate_nonfinite']}; training loss "
                     f"rose late {s['candidate_rose_late']} (Adam {s['adam_rose_late']})")
    return lines, result


def task_range(tasks: dict) -> str:
    first, count = tasks.get("first_id"), tasks.get("count")
    if not isinstance(first, int) or not isinstance(count, int):
        return ""
    return f", task ids {first:,} – {first + count - 1:,}"


def model_card(name: str, run_dir: Path, config: dict, record: dict, is_default: bool,
               leaderboard: Path | None, dropin: Path | None,
               summary: Path | None = None) -> str:
    run_config = record["config"]
    architecture = config
    family = run_config.get("task_family", {})
    tasks = run_config.get("tasks", {})
    overrides = record["overrides"]
    command = "lopt meta-train " + " ".join(str(o) for o in overrides) if overrides else None
    use = f'`lopt_cli.load_optimizer("{name}", num_steps)`'
    if is_default:
        use += (f' (and, from when it was shipped on {dt.date.today().isoformat()} until another '
                'is, `load_optimizer("default", num_steps)`; `lopt_cli/pretrained/DEFAULT` '
                'names the current default)')
    dropin_text, dropin_result = dropin_lines(dropin) if dropin else ([], None)
    lines = [f"# Model card: `{name}`", "",
             *([summary.read_text().strip(), ""] if summary else []),
             f"A learned optimizer (`{architecture['_target_'].rsplit('.', 1)[-1]}`), shipped so "
             f"that {use} works out of the box as an optax optimizer.", "",
             *learning_rate_lines(name, config, dropin_result), "",
             "## Architecture (`learned_optimizer.yaml`)", "", *yaml_block(architecture), "",
             "## Meta-training data", "",
             f"Task family `{family.get('_target_', 'unrecorded')}`{task_range(tasks)}:", "",
             *yaml_block(family), "",
             "## How it was meta-trained", "",
             *(["```bash", command, "```"] if command else
               ["The run recorded no `.hydra/overrides.yaml`."]), "",
             *yaml_block({k: run_config[k] for k in ("estimator", "outer_optimizer", "compute",
                                                     "seed") if k in run_config}), "",
             "## Meta-training record", "", *record_lines(run_dir, record),
             *([f"- meta-loss curve: `{PLOT}` beside this card"] if record["rows"] else []), "",
             "## Machine", "", *machine_lines(record["summary"], record.get("machine")), ""]
    if leaderboard:
        lines += ["## Evaluation leaderboard", "", f"From `{leaderboard.name}`:", "",
                  demoted(leaderboard.read_text()), ""]
    if dropin_text:
        lines += [*dropin_text, ""]
    lines += ["## Intended use and limits", "",
              f"Meta-trained only on the family above, at inner horizons "
              f"{run_config.get('compute', {}).get('min_horizon', '?')} … "
              f"{run_config.get('compute', {}).get('max_horizon', '?')} steps. Evaluate it on "
              f"your problem against tuned Adam before trusting it "
              f"(`lopt evaluate learned_optimizer={name}`)."]
    return "\n".join(lines) + "\n"


def ship(run_dir: Path, name: str, make_default: bool = False, force: bool = False,
         leaderboard: Path | None = None, dropin: Path | None = None,
         summary: Path | None = None) -> Path:
    """Copies, verifies, writes the card; returns the shipped directory."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise LoptUserError(f"{run_dir}: not a directory; give a meta-train run directory")
    weights, config = verified_weights(run_dir)
    target = check_name(name, force)
    for label, path in (("--leaderboard", leaderboard), ("--dropin", dropin),
                        ("--summary", summary)):
        if path is not None and not Path(path).is_file():
            raise LoptUserError(f"{label} {path}: no such file")
    try:
        record = run_record(run_dir)
        card = model_card(name, run_dir, config, record, make_default,
                          leaderboard and Path(leaderboard), dropin and Path(dropin),
                          summary and Path(summary))
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as error:  # JSON errors included
        raise LoptUserError(f"{run_dir}: its records, --leaderboard, --dropin or --summary cannot be read "
                            f"({one_line(error)})") from None
    staging = target.with_name(f".{name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for file in (storage.WEIGHTS_FILE, storage.CONFIG_FILE, PLOT):
            if (run_dir / file).is_file():
                shutil.copy2(run_dir / file, staging / file)
        if not (staging / PLOT).is_file() and record["rows"]:  # stopped before drawing it
            from lopt_cli.evaluation.plots import plot_meta_loss

            plot_meta_loss({name: record["rows"]}, staging / PLOT, "meta-training")
        write_text_atomic(staging / CARD, card)
        if verified_weights(staging)[0] != weights:
            raise LoptUserError(f"{staging}: the copied weights differ from {run_dir}'s")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if make_default:
        storage.set_default_shipped_name(name)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lopt_cli.scripts.ship_optimizer",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a lopt meta-train run directory")
    parser.add_argument("--name", required=True, help="the shipped name")
    parser.add_argument("--default", action="store_true", help='make it load_optimizer("default")')
    parser.add_argument("--force", action="store_true", help="replace a shipped optimizer")
    parser.add_argument("--leaderboard", type=Path, help="a leaderboard.md to embed")
    parser.add_argument("--dropin", type=Path, help="a dropin_check JSON to embed")
    parser.add_argument("--summary", type=Path,
                        help="a hand-written markdown file placed under the card's title")
    args = parser.parse_args(argv)
    try:
        target = ship(args.run_dir, args.name, args.default, args.force, args.leaderboard,
                      args.dropin, args.summary)
    except LoptUserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"shipped {args.name} to {target}" + (" (now the default)" if args.default else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
