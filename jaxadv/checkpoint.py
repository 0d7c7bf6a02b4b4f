"""Checkpoints of a ``jaxadv train`` run, written with orbax: arrays and JSON, no pickle.

``<out>/checkpoints/<update>/`` holds three items:

- ``state``: every leaf of the vmapped :class:`~jaxadv.train.TrainState` (parameters,
  optimiser state, environment state, observations, normaliser statistics, PRNG keys,
  update counter) as one array, PRNG keys as their ``jax.random.key_data``;
- ``history``: the metrics so far, each ``[seeds, updates]``, and ``wall_seconds``
  ``[updates]`` (what ``metrics.csv`` holds, so a resumed run rewrites it exactly);
- ``meta``: JSON with the update, the training seconds, each array's path in the state,
  shape, dtype and SHA-256, and the run's configuration.

Orbax writes a checkpoint into a temporary directory and renames it when it is complete,
so one cut short (a crash, a second Ctrl-C) is never listed; the digests catch one that
was truncated or garbled afterwards, and :meth:`CheckpointStore.restore` then falls back
to the one before. Host-side only: nothing here is traced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Checkpoint", "CheckpointError", "CheckpointStore", "checkpoint_steps"]

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
    """

    def __init__(self, directory: pathlib.Path, keep: int = 2):
        import orbax.checkpoint as ocp  # ~1 s to import: only when a run needs it

        self._ocp = ocp
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """The finished checkpoints, oldest first."""
        return checkpoint_steps(self.directory)

    def save(self, step: int, state: Any, history: dict[str, np.ndarray], *,
             train_seconds: float, config: dict[str, Any]) -> None:
        """Write ``state`` after ``step`` updates with ``history`` and ``config`` (JSON-able)."""
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
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(arrays),
            history=ocp.args.StandardSave(history),
            meta=ocp.args.JsonSave(meta),
        ), force=True)
        self._manager.wait_until_finished()

    def restore(self, abstract_state: Any, warn: Callable[[str], Any] = print) -> Checkpoint:
        """The latest checkpoint that reads back intact, as a state like ``abstract_state``.

        A checkpoint that cannot be read, or whose digests do not match, is reported
        through ``warn`` and the one before it is tried; once a good one is found, the bad
        ones after it are moved aside to ``<step>.corrupt`` (so the run can save those steps
        again). Raises :class:`CheckpointError` if there is none, none is usable, or the
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
            for b in bad:
                aside = self.directory / f"{b}.corrupt"
                shutil.rmtree(aside, ignore_errors=True)
                (self.directory / str(b)).rename(aside)
                warn(f"warning: moved the unusable checkpoint aside to {aside}")
            if bad:
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
        self._manager.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
