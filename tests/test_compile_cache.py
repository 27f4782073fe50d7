"""The persistent compilation cache of the CLI: every program is kept, whatever its compile
time (``LOPT_JAX_CACHE_MIN_SECONDS``, default 0), and a bad floor is a one-line error."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lopt_cli.commands.common import cache_min_seconds
from lopt_cli.errors import LoptUserError

RUN = ("tasks", "action=run", "task_family=quadratic", "steps=20")


def run_with(lopt_env, tmp_path, cache, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lopt_cli", *RUN], cwd=tmp_path,
                          env={**lopt_env, "LOPT_JAX_CACHE": str(cache), **env},
                          capture_output=True, text=True, timeout=300)


def cached_programs(cache) -> list:
    return [p for p in cache.iterdir() if "-cache" in p.name] if cache.exists() else []


def test_quick_programs_are_cached_by_default_and_not_above_a_floor(lopt_env, tmp_path):
    lopt_env = {k: v for k, v in lopt_env.items() if k != "LOPT_JAX_CACHE_MIN_SECONDS"}
    default, floored = tmp_path / "default", tmp_path / "floored"
    assert run_with(lopt_env, tmp_path, default).returncode == 0
    assert len(cached_programs(default)) >= 3  # a tiny task: every program compiles in < 1 s
    result = run_with(lopt_env, tmp_path, floored, LOPT_JAX_CACHE_MIN_SECONDS="1000")
    assert result.returncode == 0 and cached_programs(floored) == []


@pytest.mark.parametrize("text", ["-1", "soon", "nan"])
def test_a_bad_floor_is_a_one_line_error(lopt_env, tmp_path, text):
    with pytest.raises(LoptUserError, match="LOPT_JAX_CACHE_MIN_SECONDS"):
        cache_min_seconds(text)
    result = run_with(lopt_env, tmp_path, tmp_path / "c", LOPT_JAX_CACHE_MIN_SECONDS=text)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"LOPT_JAX_CACHE_MIN_SECONDS={text!r}" in lines[0]


def test_the_floor_reads_numbers():
    assert cache_min_seconds("0") == 0.0 and cache_min_seconds("2.5") == 2.5
