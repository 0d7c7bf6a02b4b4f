"""Experiment tracking: a run's metrics logged to TensorBoard as it trains.

A logger takes what :class:`~jaxadv.engine.metrics.MetricsWriter` takes — each compiled call's
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

:class:`WandbLogger` logs the same values, config, summary and plot to one Weights & Biases
run (the ``wandb`` extra; ``WANDB_MODE=offline`` keeps it on disk, under ``--out/wandb``), and
:func:`log_sweep_wandb` logs a sweep as one W&B run per point and seed, grouped by point.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import multiprocessing
import os
import pathlib
import queue
import signal
import socket
import struct
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["LOGGERS", "OtherProcess", "TensorBoardLogger", "WandbLogger",
           "WandbSettings", "check_loggers", "log_sweep_wandb", "make_loggers", "update_values"]

LOGGERS = {"tensorboard": ("tensorboard", "google_crc32c"), "wandb": ("wandb",)}
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


@dataclasses.dataclass(frozen=True)
class WandbSettings:
    """Where ``--log wandb`` puts its runs (W&B's own ``WANDB_*`` variables apply too; set
    ``WANDB_MODE=offline`` to keep the runs on disk and ``wandb sync`` them later)."""

    project: str = "jaxadv"
    """W&B project."""
    entity: str | None = None
    """W&B entity (user or team); default: yours."""
    group: str | None = None
    """W&B group of the run (a sweep's runs: this, then the point); default: the --out directory's name."""
    every: int | None = None
    """log update 1 and every this many updates after it, each with all its values; default: as few as keep a run within 1,000 logged updates (every update of a run of up to 1,000), so that W&B's work per run is bounded."""

    def __post_init__(self) -> None:
        if not (self.every is None or (isinstance(self.every, int) and self.every >= 1)):
            raise ValueError(f"`wandb.every` must be an int >= 1, got {self.every!r}")


WANDB_POINTS = 1000
"""Logged updates per W&B run at most, where ``--wandb.every`` is not given."""


def make_loggers(kinds: tuple[str, ...], out: pathlib.Path, batch_size: int, num_updates: int,
                 record: dict[str, Any], wandb: WandbSettings | None = None
                 ) -> list[OtherProcess]:
    """One logger per ``--log`` choice, writing under ``out`` (``out/tb`` for TensorBoard,
    ``out/wandb`` for W&B's local files), each in an :class:`OtherProcess`."""
    check_loggers(kinds)
    loggers: list[OtherProcess] = []
    for kind in kinds:
        if kind == "tensorboard":
            loggers.append(OtherProcess(functools.partial(
                TensorBoardLogger, out / "tb", batch_size, _plain(record))))
        else:
            loggers.append(OtherProcess(functools.partial(
                WandbLogger, out, batch_size, num_updates, _plain(record),
                wandb or WandbSettings())))
    return loggers


def update_values(metrics: dict[str, np.ndarray]) -> Iterator[list[tuple[str, float]]]:
    """Per update of ``metrics[name]: [seeds, K]``, its ``(tag, value)`` pairs: ``<name>/mean``
    (the mean over the seeds with a finite value) and ``<name>/seed<s>``, NaNs left out
    (``env_steps`` is the x axis, not a value).

    >>> [list(u) for u in update_values({"loss": np.array([[1.0, np.nan], [3.0, np.nan]])})]
    [[('loss/mean', 2.0), ('loss/seed0', 1.0), ('loss/seed1', 3.0)], []]
    """
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
    for i in range(len(rows[0][1]) if rows else 0):
        values: list[tuple[str, Any]] = []
        append = values.append
        for tag, means, seed_tags, per_seed in rows:
            if means[i] == means[i]:  # not NaN: some seed has a value
                append((tag, means[i]))
            for t, v in zip(seed_tags, per_seed[i]):
                if v == v:
                    append((t, v))
        yield values


class OtherProcess:
    """A logger built by ``make()`` (picklable, from a module other than ``__main__``) in a
    child process of its own (``spawn``, without running the parent's main module again) at
    the lowest CPU priority, called in order through a queue, so that neither its Python
    (which would hold the trainer's GIL in a thread) nor its CPU time slows training: the
    child runs when XLA's threads leave a core idle. A helper process it starts
    (``wandb-core``) inherits the priority. :meth:`wait` and :meth:`close` wait for the
    calls and raise what one raised, or that the child died (the calls after a failure are
    dropped, so neither ever hangs). ``seconds``: the logger's, as of the last :meth:`wait`
    or :meth:`close`."""

    def __init__(self, make: Any):
        context = multiprocessing.get_context("spawn")
        self._calls = context.Queue()
        self._results = context.Queue()
        self._process = context.Process(target=_serve, args=(make, self._calls, self._results),
                                        name="jaxadv-logger", daemon=True)
        # spawn would run the trainer's main module again in the child (the ``jaxadv`` script
        # imports jax: 2 s of CPU taken from training, and a user's script without an
        # ``if __name__ == "__main__"`` guard would start its work again): show it none
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self._process.start()
        finally:
            sys.modules["__main__"] = main
        self.seconds = 0.0
        self._error: str | None = None

    def append(self, metrics: dict[str, np.ndarray], first_update: int, wall_seconds: float) -> None:
        self._calls.put(("append", ({k: np.asarray(v) for k, v in metrics.items()},
                                    first_update, wall_seconds)))

    def finish(self, summary: dict[str, Any], returns_png: pathlib.Path) -> None:
        self._calls.put(("finish", (_plain(summary), returns_png)))

    def _receive(self, until: str | None = None) -> None:
        """Take the child's reports: all there are (``until=None``), or up to ``until`` or the
        child's death."""
        while True:
            try:
                kind, value = self._results.get(timeout=0.1 if until else 0)
            except queue.Empty:
                if until is None:
                    return
                if not self._process.is_alive():
                    self._receive()
                    self._error = self._error or (
                        f"the logger's process exited (code {self._process.exitcode})")
                    return
                continue
            if kind == until:
                return
            if kind == "error" and self._error is None:
                self._error = value
            elif kind == "seconds":
                self.seconds = value

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"logging failed: {self._error}")

    def wait(self) -> None:
        """Return once every call so far is done; raise if one failed."""
        self._calls.put(("sync", ()))
        self._receive(until="synced")
        self._raise()

    def close(self) -> None:
        """Make the calls so far, close the logger, end the child; raise if a call failed."""
        self._calls.put(None)
        self._receive(until="closed")
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.terminate()
        self._raise()


def _serve(make: Any, calls: Any, results: Any) -> None:
    """The child of :class:`OtherProcess`: build the logger, make the calls (answering each
    ``sync`` with ``synced``), close it, report ``closed`` and exit. It ignores Ctrl-C (which
    reaches the whole process group): the trainer's process stops the run, then closes it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    logger: Any = None
    failed = False
    try:
        logger = make()
    except Exception as exc:  # reported to the parent by wait()/close()
        failed = True
        results.put(("error", repr(exc)))
    while (item := calls.get()) is not None:
        name, args = item
        try:
            if name == "sync":
                results.put(("synced", None))
            elif not failed:
                getattr(logger, name)(*args)
                results.put(("seconds", logger.seconds))
        except Exception as exc:
            failed = True
            results.put(("error", repr(exc)))
    try:
        if logger is not None:
            logger.close()
            results.put(("seconds", logger.seconds))
    except Exception as exc:
        results.put(("error", repr(exc)))
    # everything is written: skip the interpreter's teardown (unloading W&B's modules takes
    # about 0.3 s, which the trainer's process would wait for), once the results are sent
    results.put(("closed", None))
    results.close()
    results.join_thread()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


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
        for i, values in enumerate(update_values(metrics)):
            summary = summary_pb2.Summary()
            add = summary.value.add  # ~0.7 µs a value, half the cost of building a list
            add(tag="wall_seconds", simple_value=wall_seconds)
            for tag, value in values:
                add(tag=tag, simple_value=value)
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


class WandbLogger:
    """One Weights & Biases run (see the module docstring), its local files in ``out/wandb``.

    ``batch_size``: env steps per update and seed (W&B's step); ``record``: the run's
    ``config.json`` (the run's config); ``settings``: project, entity, group; the run's
    name is ``out``'s. ``seconds``: the time spent in :meth:`append` so far.
    """

    def __init__(self, out: pathlib.Path, batch_size: int, num_updates: int,
                 record: dict[str, Any], settings: WandbSettings):
        self._run = _wandb_run(out, settings.project, settings.entity, settings.group or out.name,
                               out.name, _plain(record))
        self._batch_size = batch_size
        self._every = settings.every or -(-num_updates // WANDB_POINTS)
        self._last_step = 0
        self.seconds = 0.0
        # W&B imports pandas (about 0.5 s) and PIL when it first logs an image: import them
        # now, while the trainer compiles, rather than when the run ends
        for module in ("pandas", "PIL.Image"):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)

    def append(self, metrics: dict[str, np.ndarray], first_update: int, wall_seconds: float) -> None:
        """Log ``metrics[name]: [seeds, K]`` of updates ``first_update … first_update + K − 1``
        (those that are 1 or a multiple of ``settings.every``)."""
        t0 = time.perf_counter()
        every = self._every
        picked = [i for i in range(np.shape(metrics["episode_return"])[1])
                  if (first_update + i) % every == 0 or (first_update + i) == 1]
        if picked:
            chosen = {name: np.asarray(x)[:, picked] for name, x in metrics.items()}
            for i, values in zip(picked, update_values(chosen), strict=True):
                self._last_step = (first_update + i) * self._batch_size
                self._run.log({"wall_seconds": wall_seconds, **dict(values)}, step=self._last_step)
        self.seconds += time.perf_counter() - t0

    def finish(self, summary: dict[str, Any], returns_png: pathlib.Path) -> None:
        """The run's ``summary`` as W&B's summary and ``returns_png`` as an image at the last step."""
        import wandb

        self._run.summary.update(_plain(summary))
        self._run.log({"returns": wandb.Image(str(returns_png))}, step=self._last_step)

    def close(self) -> None:
        """Finish the run (W&B writes its last records) and stop W&B's ``wandb-core`` helper."""
        import wandb

        self._run.finish()
        wandb.teardown()


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as plain JSON values (arrays as lists, anything else unknown as its string)."""
    return json.loads(json.dumps(data, default=lambda v: v.tolist() if hasattr(v, "tolist")
                                 else str(v)))


def _wandb_run(out: pathlib.Path, project: str, entity: str | None, group: str, name: str,
               config: dict[str, Any]) -> Any:
    """A new W&B run with its files under ``out/wandb``, quiet, without console capture or
    system metrics (they would compete with training for the CPU)."""
    import wandb

    out.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(console="off", silent=True, x_disable_stats=True,
                              x_save_requirements=False, disable_git=True)
    return wandb.init(project=project, entity=entity, group=group, name=name, dir=str(out),
                      config=config, reinit="create_new", settings=settings)


def log_sweep_wandb(out: pathlib.Path, result: Any, record: dict[str, Any],
                    settings: WandbSettings) -> int:
    """Log a finished sweep (:class:`~jaxadv.engine.sweep.SweepResult`) to W&B: one run per point and
    seed, named ``p<point>-s<seed>`` in group ``<group>-p<point>`` (default group: ``out``'s
    name), config ``record`` with the point's values and the seed, ``episode_return`` and
    ``episodes`` against env steps, ``final_return`` and ``auc`` in the summary. Returns the
    number of runs."""
    group = settings.group or out.name
    for p, point in enumerate(result.points):
        for s in range(result.seeds):
            config = _plain({**record, "point": point, "point_index": p, "seed": s})
            run = _wandb_run(out, settings.project, settings.entity, f"{group}-p{p}", f"p{p}-s{s}",
                             config)
            for step, ret, eps in zip(result.env_steps[p].tolist(), result.returns[p][s].tolist(),
                                      result.episodes[p][s].tolist()):
                run.log({"episodes": eps} if ret != ret else {"episode_return": ret, "episodes": eps},
                        step=int(step))
            final, auc = float(result.final_return[p, s]), float(result.auc[p, s])
            run.summary.update({k: v for k, v in (("final_return", final), ("auc", auc)) if v == v})
            run.finish()
    return len(result.points) * result.seeds


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

