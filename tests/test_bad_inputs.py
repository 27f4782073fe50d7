"""Table-driven: bad inputs across the four commands give exactly one line on stderr, exit
status 2, no traceback, and write nothing (DESIGN §5). Run in-process through the real entry
point (``lopt_cli.cli.main``) so that the table stays cheap; ``tests/test_cli.py`` runs a few
of them as real subprocesses."""
from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from lopt_cli.cli import main
from lopt_cli.optimizers.storage import CONFIG_FILE, WEIGHTS_FILE, save_learned_optimizer

USER_DIR = Path(__file__).parent / "user_tasks"
MLP = {"_target_": "lopt_cli.optimizers.mlp_lopt.MLPLOpt", "hidden_sizes": [8, 8]}


def make_files(root: Path) -> dict[str, Path]:
    """Broken inputs a user might hand over, created under ``root``."""
    from lopt_cli.optimizers.mlp_lopt import MLPLOpt

    theta = MLPLOpt(hidden_sizes=(8, 8)).init(jax.random.key(0))
    files = {name: root / name for name in ("flipped", "nan", "yaml", "empty_dir", "no_yaml",
                                            "mlp_8x8")}
    for name in ("flipped", "yaml", "no_yaml", "mlp_8x8"):
        save_learned_optimizer(files[name], MLP, theta)
    save_learned_optimizer(files["nan"], MLP, jax.tree.map(lambda x: x * jnp.nan, theta))
    weights = files["flipped"] / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2:][:64])
    weights.write_bytes(bytes(data))
    (files["yaml"] / CONFIG_FILE).write_text("_target_: [unclosed\n  - x: {\n")
    (files["no_yaml"] / CONFIG_FILE).unlink()
    (files["no_yaml"] / WEIGHTS_FILE).write_bytes(b"")
    files["empty_dir"].mkdir()
    files["a_file"] = root / "a_file"
    files["a_file"].write_text("not a directory")
    return files


MT, EV, ST, TK = "meta-train", "evaluate", "self-train", "tasks"
CASES = [
    # meta-train: groups, keys, types, ranges
    (MT, "optimizer=nope", "unknown option 'nope' for optimizer"),
    (MT, "estimator=nope", "unknown option 'nope' for estimator"),
    (MT, "task_family=nope", "unknown option 'nope' for task_family"),
    (MT, "compute=nope", "unknown option 'nope' for compute"),
    (MT, "outer_optimizer=nope", "unknown option 'nope' for outer_optimizer"),
    (MT, "budget=smoke", "does not take budget"),
    (MT, "bogus=1", "unknown key 'bogus'"),
    (MT, "compute.bogus=1", "unknown key 'compute.bogus'"),
    # ... beside the keys of the node as the other overrides compose it (not the defaults')
    (MT, "optimizer=adam_nominal optimizer.ns_block=3", "keys in optimizer: _target_, beta1,"),
    (MT, "optimizer=adam_nominal optimizer.hidden_sizes=[8]",
     "unknown key 'optimizer.hidden_sizes'"),
    (MT, "optimizer=muon_nominal optimizer.ns_block=4 optimizer.ns_blok=3",
     "unknown key 'optimizer.ns_blok'"),
    (MT, "seed=abc", "seed='abc': expected a non-negative integer"),
    (MT, "seed=-1", "seed=-1"),
    (MT, "seed=1.5", "seed=1.5"),
    (MT, "seed=[", "cannot parse override"),
    (MT, "compute.num_tasks=0", "compute.num_tasks=0: expected a positive integer"),
    (MT, "compute.num_tasks=-4", "compute.num_tasks=-4"),
    (MT, "compute.num_tasks=abc", "compute.num_tasks='abc'"),
    (MT, "compute.num_tasks=100000000", "GiB"),
    (MT, "compute.num_outer_steps=0", "compute.num_outer_steps=0"),
    (MT, "compute.resample_every=0", "compute.resample_every=0"),
    (MT, "inner.min_horizon=0", "inner.min_horizon=0"),
    (MT, "inner.min_horizon=500 inner.max_horizon=100", "exceeds"),
    (MT, "inner.valid_every=0", "inner.valid_every=0"),
    (MT, "estimator.truncation_length=0", "estimator.truncation_length=0"),
    (MT, "estimator.truncation_length=7", "must be a multiple of inner.valid_every"),
    (MT, "estimator.sigma=nan", "estimator.sigma=nan: expected a finite number > 0"),
    (MT, "estimator.sigma=-1", "estimator.sigma=-1"),
    (MT, "estimator.sigma=0", "estimator.sigma=0"),
    (MT, "outer_optimizer.learning_rate=inf", "outer_optimizer.learning_rate=inf"),
    (MT, "outer_optimizer.learning_rate=-0.1", "outer_optimizer.learning_rate=-0.1"),
    (MT, "outer_optimizer.learning_rate=nan", "outer_optimizer.learning_rate=nan"),
    (MT, "checkpoint_every=-1", "checkpoint_every=-1"),
    (MT, "checkpoint_every=soon", "checkpoint_every='soon'"),
    (MT, "max_skipped_updates=0", "max_skipped_updates=0"),
    (MT, "compute.num_devices=3", "compute.num_devices"),
    (MT, "tasks.count=0", "tasks.count=0"),
    (MT, "population.candidates=0", "population.candidates=0"),
    (MT, "resume={empty_dir}", "not a run directory"),
    (MT, "meta_loss=test", "meta_loss='test': expected valid, train or mean"),
    (MT, "meta_loss_progress_power=-1", "meta_loss_progress_power=-1: expected a finite number >= 0"),
    (MT, "meta_loss_progress_power=inf", "meta_loss_progress_power=inf"),
    (MT, "average_theta=1.0", "average_theta=1.0: expected a number in [0, 1)"),
    (MT, "task_family=celo_mix_plus task_family.families.quadratic.decades=0",
     "decades=0: expected a number of decades in [1, 30]"),
    (MT, "optimizer=celo optimizer.log_lr_bounds=[1.0,3.0]",
     "log_lr_bounds=[1.0, 3.0] must be [low, high], finite, with low < 0 < high"),
    (MT, "optimizer=celo optimizer.rms_inputs=maybe", "rms_inputs=maybe must be true or false"),
    (MT, "optimizer=adam_nominal optimizer.schedule_modulation=true",
     "schedule_modulation=true modulates a supplied schedule"),
    (MT, "optimizer=celo optimizer.schedule_modulation=maybe",
     "schedule_modulation=maybe must be true or false"),
    (MT, "train_only=both", "train_only='both': expected rule or schedule"),
    (MT, "train_only=schedule", "optimizer MLPLOpt has no schedule layers"),
    (MT, "optimizer=celo optimizer.schedule=constant train_only=schedule",
     "optimizer CeloLOpt has no schedule layers"),
    (MT, "init_from=/no/such/file.msgpack", "init_from='/no/such/file.msgpack': no such file"),
    (MT, "init_from={empty_dir}", "the directory holds no learned_optimizer.msgpack"),
    (MT, "init_from={nan}", "NaN or infinite"),
    (MT, "init_from={mlp_8x8}",
     "its optimizer is not the configured one: hidden_sizes=(8, 8) (configured: (32, 32))"),
    (MT, "--bogus", "unknown flag '--bogus'"),
    (MT, "--multirun compute=smoke,nope", "unknown option 'nope' for compute"),
    (MT, "--multirun seed=0,abc", "seed='abc'"),
    (MT, "task_family=user", "task_family._target_ is not set"),
    (MT, "task_family=user task_family._target_=nowhere.nothing", "cannot import _target_"),
    (MT, "task_family=user task_family._target_=raising_tasks.make_task",
     "raising_tasks.make_task raised RuntimeError: cannot open my dataset"),
    (MT, "task_family=user task_family._target_=raising_tasks.make_family",
     "cannot build task #0: OSError: my_data.npz is missing"),
    (MT, "task_family.datasets=[mnist]", "not available offline"),
    (MT, "hydra.run.dir={a_file}/run", "is a file, not a directory"),
    # evaluate
    (EV, "learned_optimizer=/no/such/file.msgpack", "no such file"),
    (EV, "learned_optimizer={empty_dir}", "the directory holds no learned_optimizer.msgpack"),
    (EV, "learned_optimizer={flipped}", "corrupt weights"),
    (EV, "learned_optimizer={nan}", "NaN or infinite"),
    (EV, "learned_optimizer={yaml}", "unreadable YAML"),
    (EV, "learned_optimizer={no_yaml}", "unreadable weights file"),
    (EV, "budget=nope", "unknown option 'nope' for budget"),
    (EV, "compute=smoke", "does not take compute"),
    (EV, "optimizer=mlp", "does not take optimizer"),
    (EV, "mode=bogus", "mode='bogus'; choose one of"),
    (EV, "plan=true", "plan=true lists a benchmark's parts; give benchmark=NAME"),
    (EV, "seed=abc", "seed='abc'"),
    (EV, "horizon=45 valid_every=10", "must be a multiple of"),
    (EV, "splits.unseen.first_id=0", "shares task ids"),
    (EV, "splits.seen.from_run=maybe", "from_run='maybe'"),
    (EV, "--bogus", "unknown flag"),
    (EV, "learned_optimizer=mlp_digits trial_counts=[1,500]", "exceeds max_trials"),
    (EV, "learned_optimizer=mlp_digits num_seeds=0", "num_seeds=0"),
    (EV, "benchmark=nope", "unknown option 'nope' for benchmark"),
    (EV, "learned_optimizer=mlp_digits devices=0", "devices=0: expected 'auto' or a positive"),
    (EV, "learned_optimizer=mlp_digits devices=64", "devices=64: only"),
    (EV, "hydra.run.dir={a_file}/x", "is a file, not a directory"),
    # self-train
    (ST, "seed=abc", "seed='abc'"),
    (ST, "seed=-3", "seed=-3"),
    (ST, "learned_optimizer=/no/such/file.msgpack", "no such file"),
    (ST, "learned_optimizer={nan}", "NaN or infinite"),
    (ST, "learned_optimizer={flipped}", "corrupt weights"),
    (ST, "compute=nope", "unknown option 'nope' for compute"),
    (ST, "budget=smoke", "does not take budget"),
    (ST, "learned_optimizer=mlp_digits train_only=schedule", "has no schedule layers"),
    (ST, "learned_optimizer=mlp_digits compute.num_tasks=100000000", "GiB"),
    # tasks
    (TK, "action=bogus", "action='bogus'; choose one of"),
    (TK, "seed=abc", "seed='abc'"),
    (TK, "action=describe first_id=1.5", "first_id=1.5"),
    (TK, "action=describe count=0", "count=0"),
    (TK, "action=run steps=0", "steps=0"),
    (TK, "action=run learning_rate=nan", "learning_rate=nan: expected a finite number > 0"),
    (TK, "action=run learning_rate=-1", "learning_rate=-1"),
    (TK, "task_family=nope", "unknown option 'nope' for task_family"),
    (TK, "compute=smoke", "does not take compute"),
    (TK, "action=run task_family=user task_family._target_=raising_tasks.make_task",
     "raised RuntimeError"),
    ("frobnicate", "", "unknown command 'frobnicate'"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return make_files(tmp_path_factory.mktemp("inputs"))


def test_the_table_covers_sixty_inputs_over_every_command():
    assert len(CASES) >= 60
    assert {case[0] for case in CASES} >= {MT, EV, ST, TK}


@pytest.mark.parametrize(("command", "args", "expected"), CASES,
                         ids=[f"{c} {a}" for c, a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
        command, args, expected, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(USER_DIR))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    argv = [command, *args.format(**{k: str(v) for k, v in files.items()}).split()]
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert caught.value.code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("lopt: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
