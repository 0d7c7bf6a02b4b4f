"""Experiment tracking: a run's metrics logged to TensorBoard as it trains.

A logger takes what :class:`~jaxadv.report.MetricsWriter` takes — each compiled call's
metrics ``{name: [seeds, k]}`` with the first update's number and the training seconds —
on the host, between compiled calls (never inside the fused program), and at the end the
run's summary and its returns plot. :class:`TensorBoardLogger` writes a TensorBoard event
file of TensorBoard's own protocol buffers (the ``tensorboard`` package, the ``tensorboard``
extra; no TensorFlow) as TFRecords checksummed by ``google-crc32c`` (TensorBoard's own
writer computes the CRC in pure Python: ~0.6 ms per event, a few % of a run; the C one
takes ~1 µs): one event per update holding every metric of
``metrics.csv`` as ``<name>/mean`` (the mean over the seeds with a finite value) and
``<name>/seed<s>``, against env steps per seed; the configuration as text at step 0; the
summary as text and ``returns.png`` as an image at the last step. NaN values (an update in
which no episode ended) are left out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import queue
import socket
import struct
import threading
import time
from typing import Any

import numpy as np

__all__ = ["LOGGERS", "Background", "TensorBoardLogger", "check_loggers", "make_loggers"]

LOGGERS = {"tensorboard": ("tensorboard", "google_crc32c")}
"""Each ``--log`` choice and the packages it needs."""


def check_loggers(kinds: tuple[str, ...]) -> None:
    """Refuse an unknown ``--log`` choice, or one whose package is not installed, naming the
    extra that installs it (before anything compiles)."""
    for kind in kinds:
        if kind not in LOGGERS:
            raise ValueError(f"`log` {kind!r}: choose from {', '.join(LOGGERS)}")
        missing = [p for p in LOGGERS[kind] if importlib.util.find_spec(p) is None]
        if missing:
            raise ValueError(f"`log` {kind!r} needs the {', '.join(missing)} package(s): "
                             f"pip install 'jaxadv[{kind}]'")


def make_loggers(kinds: tuple[str, ...], out: pathlib.Path, batch_size: int,
                 record: dict[str, Any]) -> list[TensorBoardLogger]:
    """One logger per ``--log`` choice, writing under ``out`` (``out/tb`` for TensorBoard)."""
    check_loggers(kinds)
    return [Background(TensorBoardLogger(out / "tb", batch_size, record)) for kind in kinds
            if kind == "tensorboard"]


class Background:
    """A logger's calls made in order on a thread of its own at the lowest CPU priority
    (nice 19, on Linux), so that building and writing the events takes the CPU only when
    XLA's threads leave it idle; :meth:`wait` and :meth:`close` wait for them and raise
    what a call raised (the calls after it are dropped, so neither ever hangs).
    ``seconds``: the logger's."""

    def __init__(self, logger: Any):
        self.logger = logger
        self._calls: queue.Queue = queue.Queue()
        self._error: Exception | None = None  # the first call that failed
        self._thread = threading.Thread(target=self._work, name="jaxadv-logger", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while (call := self._calls.get()) is not None:
            try:
                if self._error is None:  # after a failure, drain without calling
                    call()
            except Exception as exc:  # raised again in the caller's thread by wait/close
                self._error = exc
            finally:
                self._calls.task_done()
        self._calls.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"logging failed: {self._error!r}") from self._error

    @property
    def seconds(self) -> float:
        return self.logger.seconds

    def append(self, metrics: dict[str, np.ndarray], first_update: int, wall_seconds: float) -> None:
        self._calls.put(lambda: self.logger.append(metrics, first_update, wall_seconds))

    def finish(self, summary: dict[str, Any], returns_png: pathlib.Path) -> None:
        self._calls.put(lambda: self.logger.finish(summary, returns_png))

    def wait(self) -> None:
        """Return once every call so far is done; raise if one failed."""
        self._calls.join()
        self._raise()

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join()
        self.logger.close()
        self._raise()


class TensorBoardLogger:
    """TensorBoard event files of one run in ``directory`` (see the module docstring).

    ``batch_size``: env steps per update and seed (the x axis); ``record``: the run's
    ``config.json``, logged as text. ``seconds``: the time spent in :meth:`append` so far.
    """

    def __init__(self, directory: pathlib.Path, batch_size: int, record: dict[str, Any]):
        from tensorboard.compat.proto import event_pb2

        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._file = (directory / name).open("wb")
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self._batch_size = batch_size
        self._last_step = 0
        self.seconds = 0.0
        self._text("config", record, step=0)

    def _write(self, event: Any) -> None:
        """One TFRecord: length, its masked CRC-32C, the serialised event, its masked CRC."""
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", _masked_crc(header)) + data
                         + struct.pack("<I", _masked_crc(data)))

    def _event(self, step: int, summary: Any) -> None:
        from tensorboard.compat.proto import event_pb2

        self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _text(self, tag: str, data: dict[str, Any], step: int) -> None:
        """``data`` as indented JSON (a Markdown code block) in TensorBoard's text plugin."""
        from tensorboard.plugins.text.summary_v2 import text_pb

        body = json.dumps(data, indent=2, default=str).replace("\n", "\n    ")
        self._event(step, text_pb(tag, "    " + body))

    def append(self, metrics: dict[str, np.ndarray], first_update: int, wall_seconds: float) -> None:
        """Log ``metrics[name]: [seeds, K]`` of updates ``first_update … first_update + K − 1``."""
        from tensorboard.compat.proto import summary_pb2

        t0 = time.perf_counter()
        rows = []  # per name: (mean tag, [K] means, seed tags, [K][seeds] values), as lists
        for name, x in metrics.items():
            if name == "env_steps":
                continue
            x = np.asarray(x, np.float64)
            finite = np.isfinite(x)
            count = finite.sum(axis=0)
            mean = np.where(finite, x, 0.0).sum(axis=0) / np.maximum(count, 1)
            rows.append((f"{name}/mean", np.where(count > 0, mean, np.nan).tolist(),
                         [f"{name}/seed{s}" for s in range(x.shape[0])],
                         np.where(finite, x, np.nan).T.tolist()))
        for i in range(np.shape(metrics["episode_return"])[1]):
            summary = summary_pb2.Summary()
            add = summary.value.add  # ~0.7 µs a value, half the cost of building a list
            add(tag="wall_seconds", simple_value=wall_seconds)
            for tag, means, seed_tags, per_seed in rows:
                if means[i] == means[i]:  # not NaN: some seed has a value
                    add(tag=tag, simple_value=means[i])
                for t, v in zip(seed_tags, per_seed[i]):
                    if v == v:
                        add(tag=t, simple_value=v)
            self._last_step = (first_update + i) * self._batch_size
            self._event(self._last_step, summary)
        self._file.flush()
        self.seconds += time.perf_counter() - t0

    def finish(self, summary: dict[str, Any], returns_png: pathlib.Path) -> None:
        """Log the run's ``summary`` as text and ``returns_png`` as an image, at the last step."""
        from tensorboard.compat.proto import summary_pb2

        self._text("summary", summary, step=self._last_step)
        data = returns_png.read_bytes()
        width, height = np.frombuffer(data[16:24], ">u4")  # the PNG header's IHDR
        image = summary_pb2.Summary.Image(height=int(height), width=int(width), colorspace=4,
                                          encoded_image_string=data)
        value = summary_pb2.Summary.Value(tag="returns", image=image)
        self._event(self._last_step, summary_pb2.Summary(value=[value]))

    def close(self) -> None:
        """Close the event file."""
        self._file.close()


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

