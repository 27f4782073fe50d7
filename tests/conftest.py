"""Shared fixtures: CPU only, offline, a private data directory and compile cache per test run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
REPO = Path(__file__).resolve().parent.parent

# The tests compile hundreds of small programs and run most of them for milliseconds, so XLA's
# compile time is most of the suite's. With LLVM at -O0 the fast suite took 557 s instead of
# 816 s on 2 cores (README, "Tests"); the programs (their HLO, hence their maths) are the same,
# only their machine code is less optimised, which may reorder float sums (a few ulps). A level
# the user chose wins. Set here, before any test imports JAX; CLI subprocesses inherit it.
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}".strip()


def with_host_devices(env: dict, count: int) -> dict:
    """``env`` with ``count`` XLA host devices added to its ``XLA_FLAGS`` (the others kept)."""
    flags = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"
    return dict(env, XLA_FLAGS=flags.strip())


def without_host_devices(env: dict) -> dict:
    """``env`` with any XLA host-device count taken out of its ``XLA_FLAGS`` (the fast-compile
    flag and the others kept): one CPU device per process."""
    flags = [flag for flag in env.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count")]
    return dict(env, XLA_FLAGS=" ".join(flags))


def run_wide_dir(tmp_path_factory, name: str) -> Path:
    """A directory shared by every process of this pytest run (both xdist workers included)."""
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def jax_compile_cache(tmp_path_factory) -> Path:
    """One persistent compilation cache for this run's tests and their CLI subprocesses:
    a program compiled by one test (or worker) is read back by the next, never by another
    run (the directory is this run's)."""
    import jax

    path = run_wide_dir(tmp_path_factory, "jax-compile-cache")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


@pytest.fixture(scope="session")
def lopt_env(tmp_path_factory, jax_compile_cache) -> dict:
    """Environment for CLI subprocesses: shared data dir and JAX cache, no accelerators."""
    cache = tmp_path_factory.mktemp("cache")
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", LOPT_JAX_CACHE=str(jax_compile_cache),
               PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0", LOPT_CACHE_DIR=str(cache / "lopt"))
    env.setdefault("LOPT_DATA_DIR", str(Path.home() / ".cache" / "lopt" / "tensorflow_datasets"))
    return env


@pytest.fixture
def run_lopt(lopt_env, tmp_path):
    """Runs ``lopt ARGS`` in ``tmp_path`` (so run directories land there); returns the result."""

    def run(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "lopt_cli", *args], cwd=tmp_path, env=lopt_env,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"lopt {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    return run


def only_run_dir(root: Path) -> Path:
    """The single run directory below ``root`` (asserts that there is exactly one)."""
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]
