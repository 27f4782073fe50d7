"""Runs every benchmark module in ``benchmarks/`` (``make bench``).

Each module other than this one and ``_private`` ones must define ``main(out_dir)``, print its
table and write ``<out_dir>/<name>.json``. A failing benchmark is reported and the others still
run; the exit status is 1 if any failed.

    python -m benchmarks.run                       # all of them
    python -m benchmarks.run optimizer_overhead    # only the named ones
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def benchmark_names() -> list[str]:
    """Module names of the benchmarks, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)])
                  if m.name != "run" and not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (all: {benchmark_names()})")
    parser.add_argument("--out-dir", default=str(PACKAGE_DIR / "results"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(benchmark_names()))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {benchmark_names()}")
    # Host devices must be requested before any benchmark starts JAX: the meta-training one
    # places its population like `compute=cpu` (one device per core on a CPU-only machine).
    from lopt_cli.meta.sharding import request_cpu_devices

    request_cpu_devices(os.cpu_count() or 1)
    failed = []
    for name in args.names or benchmark_names():
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").main(out_dir=args.out_dir)
        except Exception:  # noqa: BLE001 - report, run the others, fail at the end
            traceback.print_exc()
            failed.append(name)
        print(f"== {name}: {time.perf_counter() - start:.0f}s"
              f"{' (FAILED)' if name in failed else ''}", flush=True)
    if failed:
        print(f"failed benchmarks: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
