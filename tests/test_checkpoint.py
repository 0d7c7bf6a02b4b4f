"""Checkpoints of `jaxadv train`: interrupt and resume bit for bit, damaged checkpoints,
non-finite values, and resume flags refused before anything compiles."""

import csv
import json
import os
import shutil
import signal
import sys
import time

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _processes import interrupt_when
from rich.console import Console

from jaxadv import cli, envs
from jaxadv.cli.interrupts import Interrupts
from jaxadv.engine import driver
from jaxadv.engine.checkpoint import CheckpointError, CheckpointStore, checkpoint_steps
from jaxadv.engine.train import HParams, TrainConfig, make_train, make_trainer

# checks mechanics; the tests marked product_emitters compare programs bit for bit (conftest.py)
pytestmark = [pytest.mark.fast_compile]

TINY = ["--num-envs", "2", "--num-steps", "8", "--hidden", "8", "--seeds", "2"]


def _config(total_timesteps: int, env: str = "CartPole-v1", algo: str = "a2c") -> TrainConfig:
    return TrainConfig(env=env, algo=algo, num_envs=2, num_steps=8,
                       total_timesteps=total_timesteps, hidden=(8,))


def _abstract(config: TrainConfig):
    keys = jax.random.split(jax.random.key(0), 2)
    return jax.eval_shape(jax.vmap(make_trainer(config).init, (0, None)), keys, HParams())


def _restore(run_dir, config: TrainConfig, warnings: list | None = None):
    with CheckpointStore(run_dir / "checkpoints") as store:
        return store.restore(_abstract(config), warn=(warnings if warnings is not None
                                                      else []).append)


def _rows(run_dir) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, default_emitters):
    """a2c, 16 updates in calls of 4, a checkpoint after each, the last 3 kept: 8, 12, 16
    (default emitters: two tests compare it with other programs bit for bit)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    argv = ["train", "--algo", "a2c", *TINY, "--total-timesteps", "256", "--chunk-updates", "4",
            "--checkpoint-every", "4", "--keep-checkpoints", "3", "--out", str(out), "--quiet"]
    with default_emitters():
        assert cli.main(argv) == 0
    return out


@pytest.mark.product_emitters  # compares two programs bit for bit (conftest.py)
def test_finished_run_checkpoints_state_and_history(finished_run):
    config = _config(256)
    assert checkpoint_steps(finished_run / "checkpoints") == [8, 12, 16]
    checkpoint = _restore(finished_run, config)
    assert checkpoint.step == 16
    keys = jax.random.split(jax.random.key(0), 2)
    ref_state, ref_metrics = jax.jit(jax.vmap(make_train(config), (0, None)))(keys, HParams())
    # every leaf, PRNG keys included (saved as key data, restored as typed keys)
    assert jax.random.key_impl(checkpoint.state.key) == jax.random.key_impl(ref_state.key)
    data = lambda s: jax.tree.map(
        lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, s)
    jax.tree.map(np.testing.assert_array_equal, data(checkpoint.state), data(ref_state))
    for name, values in ref_metrics.items():
        np.testing.assert_array_equal(checkpoint.history[name], values, err_msg=name)
    wall = checkpoint.history["wall_seconds"]
    assert wall.shape == (16,) and np.all(np.diff(wall) >= 0)
    assert all(int(r["nonfinite"]) == 0 for r in _rows(finished_run))


@pytest.mark.product_emitters  # compares two programs bit for bit (conftest.py)
@pytest.mark.timeout(150)
def test_sigint_then_resume_equals_an_uninterrupted_run_bitwise(tmp_path, capsys):
    out = tmp_path / "run"
    config = _config(24 * 16, algo="ppo")  # 24 updates, calls of 4, a checkpoint after each
    cmd = [sys.executable, "-m", "jaxadv.cli", "train", *TINY, "--total-timesteps", "384",
           "--chunk-updates", "4", "--checkpoint-every", "4", "--out", str(out), "--quiet"]
    status, err = interrupt_when(cmd, lambda: len(checkpoint_steps(out / "checkpoints")) >= 2, within=90)
    assert status == 130, err
    stopped = checkpoint_steps(out / "checkpoints")[-1]
    assert 8 <= stopped < 24, err
    assert f"SIGINT: stopped after update {stopped} of 24" in err
    assert f"resume with: jaxadv train --resume {out}" in err
    assert len(_rows(out)) == stopped * 2  # metrics.csv up to the checkpoint

    # resumed in this process (its one device; the interrupted run spread its seed groups
    # over a device per core), which then compiles the reference below from the cache
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert checkpoint_steps(out / "checkpoints") == [20, 24]  # --keep-checkpoints 2

    # the uninterrupted run: the same calls, the seeds in the run's groups (2 on a machine
    # with 2 cores, one per CPU device; the same bits on this process's one device)
    groups = json.loads((out / "config.json").read_text())["run"]["seed_groups"]
    keys = jax.random.split(jax.random.key(0), 2)
    calls = list(driver.compile_chunked(config, HParams(), keys, 4, groups=groups).iterate(
        keys, HParams()))
    ref_state = calls[-1][0]
    ref_metrics = {name: np.concatenate([np.asarray(m[name]) for _, m in calls], axis=1)
                   for name in calls[0][1]}
    final = _restore(out, config)
    jax.tree.map(np.testing.assert_array_equal, final.state.params, ref_state.params)
    jax.tree.map(np.testing.assert_array_equal, final.state.opt_state, ref_state.opt_state)
    for name, values in ref_metrics.items():
        np.testing.assert_array_equal(final.history[name], values, err_msg=name)
    rows = _rows(out)  # one row per update and seed: none lost, none repeated
    assert sorted((int(r["seed"]), int(r["update"])) for r in rows) == [
        (s, u) for s in range(2) for u in range(1, 25)]
    policy_loss = np.array([[float(r["policy_loss"]) for r in rows if r["seed"] == str(s)]
                            for s in range(2)])
    np.testing.assert_allclose(policy_loss, ref_metrics["policy_loss"], rtol=1e-6)
    wall = [float(r["wall_seconds"]) for r in rows]
    assert wall == sorted(wall)


def _damage(step_dir, how: str) -> None:
    """Truncate the largest file of the checkpoint's state arrays, or garble its middle."""
    files = sorted((p for p in (step_dir / "state").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    data = files[-1].read_bytes()
    if how == "truncate":
        files[-1].write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        files[-1].write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64])
                              + data[middle + 64:])


def test_second_signal_quits_at_once_while_the_main_thread_waits(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)  # the watcher thread's exit, recorded
    previous = signal.getsignal(signal.SIGINT)
    with Interrupts(Console(quiet=True)) as interrupts:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the driver is asked to stop
        deadline = time.monotonic() + 10
        while interrupts.signum is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert interrupts.signum == signal.SIGINT and exits == []
        os.kill(os.getpid(), signal.SIGTERM)
        while not exits and time.monotonic() < deadline:
            time.sleep(0.01)
        assert exits == [128 + signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_damaged_latest_checkpoint_falls_back_to_the_one_before(finished_run, tmp_path, how):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _damage(run / "checkpoints" / "16", how)
    # what a save cut short leaves: orbax's temporary directory, never taken for a checkpoint
    shutil.copytree(run / "checkpoints" / "16", run / "checkpoints" / "20.orbax-checkpoint-tmp-1")
    warnings: list[str] = []
    checkpoint = _restore(run, _config(256), warnings)
    assert checkpoint.step == 12
    assert "checkpoints/16 is unusable" in warnings[0], warnings
    assert (run / "checkpoints" / "16.corrupt").is_dir()  # set aside, so 16 can be saved again
    assert checkpoint_steps(run / "checkpoints") == [8, 12]
    with CheckpointStore(finished_run / "checkpoints") as store:
        original = store._restore_step(12, _abstract(_config(256)))
    jax.tree.map(np.testing.assert_array_equal, checkpoint.state.params, original.state.params)


@pytest.mark.product_emitters  # compares two programs bit for bit (conftest.py)
def test_resume_after_a_damaged_checkpoint_recomputes_it_bitwise(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _damage(run / "checkpoints" / "16", "truncate")
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "checkpoints/16 is unusable" in capsys.readouterr().err
    redone, original = _restore(run, _config(256)), _restore(finished_run, _config(256))
    assert redone.step == 16
    jax.tree.map(np.testing.assert_array_equal, redone.state.params, original.state.params)
    assert len(_rows(run)) == 16 * 2


def test_no_usable_checkpoint_is_a_clear_error(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for step in (8, 12, 16):
        _damage(run / "checkpoints" / str(step), "truncate")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        _restore(run, _config(256))
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: no usable checkpoint in" in err and "Traceback" not in err
    assert checkpoint_steps(run / "checkpoints") == [8, 12, 16]  # nothing moved or deleted


class NaNAfter(gymnax.environments.classic_control.CartPole):
    """CartPole that never terminates and whose reward turns NaN at step ``t`` (until the
    time limit of 500): with 8-step rollouts from reset, step 33 is in update 5."""

    def __init__(self, t: int):
        super().__init__()
        self.t = t

    def step_env(self, key, state, action, params):
        obs, state, reward, _, info = super().step_env(key, state, action, params)
        reward = jnp.where(state.time >= self.t, jnp.nan, reward)
        return obs, state, reward, jnp.zeros((), bool), info


NAN_ENV = "CartPole-nan-after-33-v0"


@pytest.fixture(scope="module")
def nan_env():
    envs.register(NAN_ENV, lambda: (NaNAfter(33), gymnax.make("CartPole-v1")[1]))
    return NAN_ENV


def test_nonfinite_values_stop_the_run_and_keep_the_last_finite_state(nan_env, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--env", nan_env, "--algo", "a2c", *TINY, "--total-timesteps", str(16 * 16),
            "--chunk-updates", "2", "--checkpoint-every", "16", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    rows = _rows(out)
    flagged = sorted({int(r["update"]) for r in rows if int(r["nonfinite"])})
    assert flagged == [5, 6]  # step 33 is in update 5; the call of updates 5-6 is written
    assert "error: non-finite loss" in err and "at update 5, seed(s) 0, 1" in err, err
    last = 4  # the end of the call before: saved although --checkpoint-every 16
    assert checkpoint_steps(out / "checkpoints") == [last]  # saved although not due
    assert f"checkpoints/{last}; rerun from it with `jaxadv train --resume {out} --debug-nans`" in err
    checkpoint = _restore(out, _config(256, nan_env))
    assert checkpoint.step == last
    for leaf in jax.tree.leaves((checkpoint.state.params, checkpoint.state.opt_state)):
        assert np.all(np.isfinite(leaf))
    assert max(int(r["update"]) for r in rows) == last + 2  # the bad call's rows are kept

    # the diagnostic rerun it suggests: from checkpoint 4, with checkify's NaN checks
    assert cli.main(["train", "--resume", str(out), "--debug-nans", "--quiet"]) == 1
    err = capsys.readouterr().err
    # the env's NaN reward first meets arithmetic in the episode-statistics wrapper
    assert "error: nan generated by primitive: add at jaxadv/envs/wrappers.py" in err, err
    assert "--debug-nans` to find" not in err
    assert checkpoint_steps(out / "checkpoints") == [last]


def test_huge_learning_rate_overflows_and_the_checkpoint_before_is_finite(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--algo", "a2c", *TINY, "--total-timesteps", "64", "--chunk-updates", "1",
            "--checkpoint-every", "1", "--lr", "1e30", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    # one Adam step of size 1e30 leaves finite parameters; the next forward pass overflows
    flags = [int(r["nonfinite"]) for r in _rows(out)]
    assert flags == [0, 0, 7, 7], flags  # updates 1, 2 (two seeds each): loss, grad, params
    assert "error: non-finite loss and grad and params (NaN or inf) at update 2, seed(s) 0, 1" in err
    assert checkpoint_steps(out / "checkpoints") == [1]
    checkpoint = _restore(out, _config(64))
    params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(checkpoint.state.params)])
    assert np.all(np.isfinite(params)) and np.max(np.abs(params)) > 1e29  # really huge


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--num-envs", "4"], ["`num_envs` = 4", "num_envs = 2"]),
        (["--lr", "0.1"], ["`lr` = 0.1", "lr = 0.00025"]),
        (["--algo", "ppo"], ["`algo` = 'ppo'", "algo = 'a2c'"]),
        (["--seeds", "3"], ["`seeds` = 3", "seeds = 2"]),
        (["--out", "elsewhere"], ["`out`", "own directory"]),
        (["--keep-checkpoints", "0"], ["`keep_checkpoints`", "positive"]),
    ],
)
def test_resume_refuses_a_changed_setting_before_compiling(
    finished_run, flags, words, no_compile, capsys
):
    assert cli.main(["train", "--resume", str(finished_run), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


def test_resume_without_checkpoints_and_fresh_run_over_an_unfinished_one(
    finished_run, tmp_path, capsys
):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(finished_run / "config.json", empty / "config.json")
    assert cli.main(["train", "--resume", str(empty)]) == 2
    assert "checkpoints holds no checkpoint to resume from" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "config.json not found" in capsys.readouterr().err

    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished_run, unfinished)
    shutil.rmtree(unfinished / "checkpoints" / "16")
    argv = ["train", "--algo", "a2c", *TINY, "--total-timesteps", "256", "--out", str(unfinished)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "unfinished train run (update 12 of 16)" in err and f"--resume {unfinished}" in err
