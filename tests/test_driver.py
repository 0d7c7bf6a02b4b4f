"""The driver as a library (:func:`jaxadv.engine.driver.drive`): by default it writes no file,
prints nothing, installs no signal handler and returns the run in memory, the same bits as
``jax.vmap(make_train(config))``; its sinks, checkpoints, progress and ``stop`` are the
caller's."""

import os
import signal

import jax
import numpy as np
import pytest

from jaxadv.engine.checkpoint import checkpoint_steps
from jaxadv.engine.driver import RunOptions, RunStopped, drive
from jaxadv.engine.metrics import MetricsWriter
from jaxadv.engine.train import HParams, TrainConfig, make_train

pytestmark = pytest.mark.fast_compile  # mechanics and bitwise comparisons (conftest.py)

CONFIG = TrainConfig(num_envs=2, num_steps=8, total_timesteps=96, hidden=(8,))  # 6 updates


class Sink:
    """Records what the driver hands a metrics sink, and the SIGINT handler at that moment."""

    def __init__(self):
        self.calls, self.handlers = [], []

    def append(self, metrics, first_update, wall_seconds):
        self.calls.append((first_update, np.asarray(metrics["episode_return"]).shape))
        self.handlers.append(signal.getsignal(signal.SIGINT))


@pytest.mark.product_emitters  # two different programs, bit for bit (conftest.py)
def test_a_bare_drive_is_silent_and_writes_nothing(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGINT)
    sink = Sink()
    result = drive(CONFIG, HParams(), RunOptions(seed=3, seeds=2, chunk_updates=4, sinks=(sink,)))
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""
    assert list(tmp_path.iterdir()) == []  # no metrics.csv, no checkpoints
    assert sink.calls == [(1, (2, 4)), (5, (2, 2))]  # two calls: updates 1-4 and 5-6
    assert sink.handlers == [before, before]  # no handler of its own while it runs
    keys = jax.random.split(jax.random.key(3), 2)
    ref_state, ref_metrics = jax.jit(jax.vmap(make_train(CONFIG), (0, None)))(keys, HParams())
    jax.tree.map(np.testing.assert_array_equal, result.state.params, ref_state.params)
    np.testing.assert_array_equal(result.history["episode_return"], ref_metrics["episode_return"])
    assert result.summary["num_updates"] == 6 and result.resumed_from == 0


def test_stop_saves_and_raises_then_resume_finishes_the_same_run(tmp_path):
    asked = []

    def stop():
        asked.append(True)
        return len(asked) == 1  # after the first call

    options = RunOptions(seeds=2, chunk_updates=2, checkpoints=tmp_path / "ckpt", stop=stop)
    with pytest.raises(RunStopped) as stopped:
        drive(CONFIG, HParams(), options)
    assert (stopped.value.reason, stopped.value.update) == ("stopped", 2)
    assert stopped.value.checkpoint == tmp_path / "ckpt" / "2"
    assert checkpoint_steps(tmp_path / "ckpt") == [2]

    rows = tmp_path / "metrics.csv"
    with MetricsWriter(rows, CONFIG.batch_size) as writer:
        resumed = drive(CONFIG, HParams(), RunOptions(
            seeds=2, chunk_updates=2, checkpoints=tmp_path / "ckpt", resume=True, sinks=(writer,)))
    assert resumed.resumed_from == 2
    whole = drive(CONFIG, HParams(), RunOptions(seeds=2, chunk_updates=2))
    jax.tree.map(np.testing.assert_array_equal, resumed.state.params, whole.state.params)
    lines = rows.read_text().splitlines()  # the 2 restored updates, then the 4 computed, x 2 seeds
    assert len(lines) == 1 + 6 * 2 and [line.split(",")[1] for line in lines[1::2]] == [
        "1", "2", "3", "4", "5", "6"]


def test_resume_without_a_checkpoint_directory_is_refused():
    with pytest.raises(ValueError, match="`resume` needs `checkpoints`"):
        drive(CONFIG, HParams(), RunOptions(resume=True))


def test_non_finite_values_stop_with_the_last_finite_checkpoint(tmp_path):
    hp = HParams(lr=float("nan"))
    with pytest.raises(RunStopped) as stopped:
        drive(CONFIG, hp, RunOptions(seeds=1, chunk_updates=2, checkpoints=tmp_path / "c"))
    assert stopped.value.reason == "nonfinite" and stopped.value.status == 1
    assert "non-finite" in str(stopped.value) and "at update 1" in str(stopped.value)
    assert stopped.value.checkpoint is None and os.listdir(tmp_path / "c") == []
