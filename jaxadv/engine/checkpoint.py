"""Checkpoints of a ``jaxadv train`` run, written with orbax, and the finished chunks of a
``jaxadv sweep``: arrays and JSON, no pickle.

``<out>/checkpoints/<update>/`` holds three items:

- ``state``: every leaf of the vmapped :class:`~jaxadv.engine.train.TrainState` (parameters,
  optimiser state, environment state, observations, normaliser statistics, PRNG keys,
  update counter) as one array, PRNG keys as their ``jax.random.key_data``;
- ``history``: the metrics so far, each ``[seeds, updates]``, and ``wall_seconds``
  ``[updates]`` (what ``metrics.csv`` holds, so a resumed run rewrites it exactly);
- ``meta``: JSON with the update, the training seconds, each array's path in the state,
  shape, dtype and SHA-256, and the run's configuration, and the SHA-256 of all of that.

Orbax writes a checkpoint into a temporary directory and renames it when it is complete,
so one cut short (a crash, a second Ctrl-C) is never listed; the digests catch one that
was truncated or garbled afterwards, and :meth:`CheckpointStore.restore` then falls back
to the one before. Host-side only: nothing here is traced.

A sweep's chunks (:class:`SweepChunks`) are a few small arrays each, so they are plain
NumPy ``.npz`` files (``allow_pickle=False``) beside a JSON manifest, each written to a
temporary name and renamed into place, with the same SHA-256 check on the way back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import pathlib
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointStore",
    "ChunkId",
    "ChunkResult",
    "SweepChunks",
    "checkpoint_steps",
]

_FORMAT = 1


class CheckpointError(ValueError):
    """No usable checkpoint: none written, all unreadable, or one of another configuration."""


class _Mismatch(CheckpointError):
    """A readable checkpoint whose arrays do not fit the run's state (another config)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: ``state`` after ``step`` updates, the metrics ``history``
    (``[seeds, step]`` each, plus ``wall_seconds`` ``[step]``) and the training seconds."""

    step: int
    state: Any
    history: dict[str, np.ndarray]
    train_seconds: float


def checkpoint_steps(directory: pathlib.Path) -> list[int]:
    """The finished checkpoints in ``directory``, oldest first, without opening any.

    Orbax names a finished checkpoint by its step alone; one being written carries a
    temporary suffix until it is complete, so it is not listed.

    >>> checkpoint_steps(pathlib.Path("no/such/dir"))
    []
    """
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _is_key(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _spec(state: Any) -> list[dict[str, Any]]:
    """Path, shape and dtype of each leaf of ``state`` (arrays or ``ShapeDtypeStruct``)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return [{"path": jax.tree_util.keystr(path), "shape": list(leaf.shape),
             "dtype": str(leaf.dtype)} for path, leaf in flat]


class CheckpointStore:
    """The checkpoints of one run: save after an update, restore the latest good one.

    ``keep`` is how many to keep (older ones are deleted as new ones are saved). Saving is
    synchronous: when :meth:`save` returns, the checkpoint is complete on disk.
    ``read_only``: never write to ``directory`` (no saves, nothing created, cleaned up or
    moved aside), e.g. to evaluate a run that may still be training.
    """

    def __init__(self, directory: pathlib.Path, keep: int = 2, *, read_only: bool = False):
        import orbax.checkpoint as ocp  # ~1 s to import: only when a run needs it

        _ignore_closed_event_loops()
        self._ocp = ocp
        self.directory = pathlib.Path(directory).absolute()
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, enable_async_checkpointing=False,
            cleanup_tmp_directories=not read_only,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """The finished checkpoints, oldest first."""
        return checkpoint_steps(self.directory)

    def save(self, step: int, state: Any, history: dict[str, np.ndarray], *,
             train_seconds: float, config: dict[str, Any]) -> None:
        """Write ``state`` after ``step`` updates with ``history`` and ``config`` (JSON-able)."""
        if self.read_only:
            raise ValueError(f"{self.directory} was opened read-only")
        ocp = self._ocp
        leaves = jax.tree.leaves(state)
        arrays, meta_leaves = {}, []
        for i, (leaf, spec) in enumerate(zip(leaves, _spec(state), strict=True)):
            key_impl = str(jax.random.key_impl(leaf)) if _is_key(leaf) else None
            data = np.asarray(jax.random.key_data(leaf) if key_impl else leaf)
            arrays[f"{i:04d}"] = data
            meta_leaves.append({**spec, "key_impl": key_impl, "stored_shape": list(data.shape),
                                "stored_dtype": str(data.dtype), "sha256": _digest(data)})
        history = {name: np.asarray(v) for name, v in history.items()}
        meta = {
            "format": _FORMAT,
            "step": step,
            "train_seconds": train_seconds,
            "leaves": meta_leaves,
            "history": {name: {"shape": list(v.shape), "dtype": str(v.dtype),
                               "sha256": _digest(v)} for name, v in history.items()},
            "config": config,
        }
        meta["sha256"] = _meta_digest(meta)
        size = sum(a.nbytes for a in arrays.values()) + sum(v.nbytes for v in history.values())
        self._check_space(step, size)
        try:
            with _orbax_quiet():  # its threads log each failure with a traceback; we raise it
                self._manager.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(arrays),
                    history=ocp.args.StandardSave(history),
                    meta=ocp.args.JsonSave(meta),
                ), force=True)
                self._manager.wait_until_finished()
        except Exception as exc:
            code = re.search(r"os_error_code='(\d+)'", str(exc))
            if code is None:
                raise
            number = int(code.group(1))  # tensorstore's OS error, as the OSError it is
            raise OSError(number, os.strerror(number), str(self.directory / str(step))) from None

    def _check_space(self, step: int, size: int) -> None:
        """Raise ``OSError(ENOSPC)`` before writing where the filesystem lacks room for a
        checkpoint of ``size`` array bytes (counted twice, orbax writes a temporary copy,
        plus 256 KiB of files and metadata): a write that fails part-way through leaves
        orbax's background threads to fail noisily."""
        free = shutil.disk_usage(self.directory).free
        if free < 2 * size + (1 << 18):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.directory / str(step)))

    def restore(self, abstract_state: Any, warn: Callable[[str], Any] = print) -> Checkpoint:
        """The latest checkpoint that reads back intact, as a state like ``abstract_state``.

        A checkpoint that cannot be read, or whose digests do not match, is reported
        through ``warn`` and the one before it is tried; once a good one is found, the bad
        ones after it are moved aside to ``<step>.corrupt`` (so the run can save those steps
        again; not when ``read_only``). Raises :class:`CheckpointError` if there is none, none is usable, or the
        latest readable one holds arrays of another shape (another configuration).
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"{self.directory} holds no checkpoint")
        bad: list[int] = []
        for step in reversed(steps):
            try:
                checkpoint = self._restore_step(step, abstract_state)
            except _Mismatch:
                raise
            except Exception as exc:  # unreadable: orbax, tensorstore, JSON or our digests
                reason = " ".join(str(exc).split())[:300]
                warn(f"warning: checkpoint {self.directory / str(step)} is unusable "
                     f"({type(exc).__name__}: {reason}); trying the one before")
                bad.append(step)
                continue
            for b in [] if self.read_only else bad:
                aside = self.directory / f"{b}.corrupt"
                shutil.rmtree(aside, ignore_errors=True)
                (self.directory / str(b)).rename(aside)
                warn(f"warning: moved the unusable checkpoint aside to {aside}")
            if bad and not self.read_only:
                self._manager.reload()
            return checkpoint
        raise CheckpointError(
            f"no usable checkpoint in {self.directory}: "
            f"{', '.join(map(str, reversed(steps)))} are all unreadable or damaged"
        )

    def _restore_step(self, step: int, abstract_state: Any) -> Checkpoint:
        ocp = self._ocp
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = meta["meta"]
        if meta.get("format") != _FORMAT or meta.get("step") != step:
            raise ValueError(f"meta: format {meta.get('format')!r}, step {meta.get('step')!r}")
        if "sha256" in meta and meta["sha256"] != _meta_digest(meta):  # (older ones have none)
            raise ValueError("meta: SHA-256 does not match (edited after it was written?)")
        expected = _spec(abstract_state)
        stored = [{k: leaf[k] for k in ("path", "shape", "dtype")} for leaf in meta["leaves"]]
        if stored != expected:
            diff = next((s, e) for s, e in zip(stored + [None] * len(expected),
                                                 expected + [None] * len(stored)) if s != e)
            raise _Mismatch(
                f"checkpoint {self.directory / str(step)} does not fit this run's state "
                f"(a different configuration?): stored {diff[0]}, expected {diff[1]}"
            )
        targets = {f"{i:04d}": np.zeros(leaf["stored_shape"], leaf["stored_dtype"])
                   for i, leaf in enumerate(meta["leaves"])}
        history_targets = {name: np.zeros(h["shape"], h["dtype"])
                           for name, h in meta["history"].items()}
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(targets),
            history=ocp.args.StandardRestore(history_targets),
        ))
        leaves = []
        for i, leaf in enumerate(meta["leaves"]):
            data = np.asarray(restored["state"][f"{i:04d}"])
            if _digest(data) != leaf["sha256"]:
                raise ValueError(f"array {leaf['path']}: SHA-256 does not match")
            value = jnp.asarray(data)
            if leaf["key_impl"]:
                value = jax.random.wrap_key_data(value, impl=leaf["key_impl"])
            leaves.append(value)
        history = {}
        for name, h in meta["history"].items():
            history[name] = np.asarray(restored["history"][name])
            if _digest(history[name]) != h["sha256"]:
                raise ValueError(f"history {name}: SHA-256 does not match")
        state = jax.tree.unflatten(jax.tree.structure(abstract_state), leaves)
        return Checkpoint(step, state, history, float(meta["train_seconds"]))

    def close(self) -> None:
        """Wait for any write in flight and release orbax's resources."""
        with _orbax_quiet():
            self._manager.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's ``meta`` JSON (sorted keys), its own ``sha256`` left out."""
    body = json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


_CLOSED_LOOP = "Event loop is closed"


def _ignore_closed_event_loops() -> None:
    """After a failed write, orbax's writer threads call back into the asyncio loops it has
    closed; each prints a ``RuntimeError: Event loop is closed`` traceback (through
    ``sys.excepthook`` from its C++ threads, or ``threading.excepthook``) although the
    failure itself reaches the caller as an exception. Drop those, and only those."""
    if getattr(sys.excepthook, "_jaxadv", False):
        return
    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def sys_hook(kind, value, tb):
        if not (isinstance(value, RuntimeError) and str(value) == _CLOSED_LOOP):
            previous_sys(kind, value, tb)

    def thread_hook(args):
        if not (isinstance(args.exc_value, RuntimeError) and str(args.exc_value) == _CLOSED_LOOP):
            previous_thread(args)

    sys_hook._jaxadv = True  # type: ignore[attr-defined]
    sys.excepthook, threading.excepthook = sys_hook, thread_hook


@contextlib.contextmanager
def _orbax_quiet() -> Iterator[None]:
    """Orbax's own error logs (``absl``) off: a failure reaches the caller as an exception."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place: a reader
    (or a crash) sees the old file or the whole new one, never part of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ChunkId(NamedTuple):
    """The runs one compiled call of :func:`~jaxadv.engine.sweep.run_sweep` trains: ``[start, stop)`` of static
    group ``group``'s flattened ``points × seeds`` axis.

    Groups are numbered in order of first appearance among the points; run ``e`` of a
    group is its point ``e // seeds`` with seed ``e % seeds``. The bounds follow from the
    grid, ``seeds``, ``max_parallel`` and the device count, nothing else.

    >>> ChunkId(group=0, start=6, stop=9)
    ChunkId(group=0, start=6, stop=9)
    """

    group: int
    start: int
    stop: int


class ChunkResult(NamedTuple):
    """One chunk's results on the host, one row per run (``[stop − start, U]`` each), and
    what its call cost.

    Attributes:
      returns: ``episode_return`` of each run and update (NaN where no episode ended).
      episodes: ``episodes``: episodes that ended in each update.
      env_steps: ``env_steps`` after each update.
      seconds: wall seconds of the call, its compile included.
      compile_seconds: seconds compiling the group's program for it (0 but for the first
        chunk of a group that was computed).
      final: the leaves of each run's final ``(params, obs_stats)``
        (``jax.tree.leaves``), ``[stop − start, ...]`` each — what ``jaxadv eval --point``
        restores; empty in a chunk saved before sweeps kept them.
    """

    returns: np.ndarray
    episodes: np.ndarray
    env_steps: np.ndarray
    seconds: float = 0.0
    compile_seconds: float = 0.0
    final: tuple[np.ndarray, ...] = ()


class SweepChunks:
    """The finished chunks of one ``jaxadv sweep``, in ``directory`` (``<out>/chunks``).

    ``manifest.json`` holds the sweep's ``settings`` (what a resumed sweep may not
    change), the ``devices`` its chunks were cut for, ``complete`` (all its outputs
    written) and, per chunk file, its :class:`ChunkId` and SHA-256. A chunk
    file ``group<g>-runs<start>-<stop>.npz`` holds the :class:`ChunkResult`.
    A chunk is written before the manifest that lists it, each renamed into place, so a
    crash at any point leaves a manifest whose chunks are complete (or detectably not).

    ``write=False`` (every process but the first of a multi-process sweep) reads and
    never writes: one process writes, and all of them read the same files, which must
    then be on a filesystem they share.
    """

    FORMAT = 1

    def __init__(self, directory: pathlib.Path, *, write: bool = True):
        self.directory = pathlib.Path(directory)
        self.write = write
        self.manifest: dict[str, Any] | None = None

    @property
    def path(self) -> pathlib.Path:
        """The manifest's path."""
        return self.directory / "manifest.json"

    def read(self) -> dict[str, Any] | None:
        """The manifest on disk (also kept as :attr:`manifest`); ``None`` if there is none.

        Raises ``ValueError`` if it cannot be read or is not a sweep's manifest.
        """
        try:
            manifest = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path} is unreadable ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != self.FORMAT or not all(
            k in manifest for k in ("settings", "devices", "complete", "chunks")
        ):
            raise ValueError(f"{self.path} is not the manifest of a jaxadv sweep")
        self.manifest = manifest
        return manifest

    def start(self, settings: dict[str, Any], devices: int) -> None:
        """Begin a sweep: remove what ``directory`` held, write an empty manifest."""
        self.manifest = {"format": self.FORMAT, "settings": settings, "devices": devices,
                         "complete": False, "chunks": {}}
        if self.write:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir(parents=True)
            self._write_manifest()

    def load(self, settings: dict[str, Any], devices: int,
             warn: Callable[[str], Any] = print) -> dict[ChunkId, ChunkResult]:
        """Resume: the saved chunks that read back intact, by id; the manifest then records
        ``settings`` and ``devices`` (of the sweep that goes on) and is not complete.

        A chunk whose file is missing, fails its SHA-256 or does not load is reported
        through ``warn`` and left out (its runs are computed again).
        """
        manifest = self.manifest or self.read()
        if manifest is None:
            raise ValueError(f"{self.path} not found")
        chunks: dict[ChunkId, ChunkResult] = {}
        for name, entry in list(manifest["chunks"].items()):
            try:
                chunk_id = ChunkId(int(entry["group"]), int(entry["start"]), int(entry["stop"]))
                chunks[chunk_id] = self._load_chunk(name, entry, chunk_id)
            except Exception as exc:  # missing, truncated, garbled: recompute it
                reason = " ".join(str(exc).split())[:200]
                warn(f"warning: chunk {self.directory / name} is unusable "
                     f"({type(exc).__name__}: {reason}); computing its runs again")
                del manifest["chunks"][name]
        manifest.update(settings=settings, devices=devices, complete=False)
        if self.write:
            self._write_manifest()
        return chunks

    def _load_chunk(self, name: str, entry: dict[str, Any], chunk_id: ChunkId) -> ChunkResult:
        data = (self.directory / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError("SHA-256 does not match the manifest")
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            final = tuple(arrays[f"final_{i}"] for i in range(sum(k.startswith("final_")
                                                                  for k in arrays.files)))
            result = ChunkResult(**{k: arrays[k] for k in ChunkResult._fields if k != "final"},
                                 final=final)
        rows = chunk_id.stop - chunk_id.start
        if any(np.ndim(a) == 0 or len(a) != rows for a in (*result[:3], *result.final)):
            raise ValueError(f"expected {rows} rows per array")
        return result._replace(seconds=float(result.seconds),
                               compile_seconds=float(result.compile_seconds))

    def rows(self, group: int, start: int, stop: int) -> ChunkResult:
        """Runs ``[start, stop)`` of static group ``group`` from the saved chunks (read-only,
        each checked against its SHA-256), joined in order; ``seconds`` 0. Raises
        ``ValueError`` if a run is in no saved chunk."""
        manifest = self.manifest or self.read()
        if manifest is None:
            raise ValueError(f"{self.path} not found")
        chunks = [(name, entry, ChunkId(int(entry["group"]), int(entry["start"]), int(entry["stop"])))
                  for name, entry in manifest["chunks"].items()]
        parts, pos = [], start
        while pos < stop:
            found = [c for c in chunks if c[2].group == group and c[2].start <= pos < c[2].stop]
            if not found:
                raise ValueError(f"{self.directory} does not hold run {pos} of group {group} "
                                 "(the sweep did not finish it)")
            name, entry, chunk_id = found[0]
            part = self._load_chunk(name, entry, chunk_id)
            cut = slice(pos - chunk_id.start, min(stop, chunk_id.stop) - chunk_id.start)
            parts.append(jax.tree.map(lambda x, cut=cut: x[cut], (*part[:3], part.final)))
            pos = min(stop, chunk_id.stop)
        joined = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
        return ChunkResult(joined[0], joined[1], joined[2], final=tuple(joined[3]))

    def save(self, chunk_id: ChunkId, result: ChunkResult) -> None:
        """Write one finished chunk, then the manifest that lists it (with ``write=False``:
        only list it in :attr:`manifest`)."""
        name = f"group{chunk_id.group}-runs{chunk_id.start}-{chunk_id.stop}.npz"
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in result._asdict().items() if k != "final"}
        arrays.update({f"final_{i}": np.asarray(x) for i, x in enumerate(result.final)})
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        if self.write:
            _write_atomic(self.directory / name, data)
        manifest = cast(dict[str, Any], self.manifest)  # after start() or resume()
        manifest["chunks"][name] = {**chunk_id._asdict(),
                                    "sha256": hashlib.sha256(data).hexdigest()}
        if self.write:
            self._write_manifest()

    def finish(self) -> None:
        """Mark the sweep complete (its outputs are written)."""
        cast(dict[str, Any], self.manifest)["complete"] = True  # after start() or resume()
        if self.write:
            self._write_manifest()

    def _write_manifest(self) -> None:
        _write_atomic(self.path, (json.dumps(self.manifest, indent=1) + "\n").encode())
