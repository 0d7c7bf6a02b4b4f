"""Trained policies kept without a checkpoint: the final ``(params, obs_stats)`` of some runs
of a stacked :class:`~jaxadv.engine.train.TrainState`, as a sweep's chunks keep them
(:class:`~jaxadv.engine.checkpoint.ChunkResult`'s ``final``) and as a search keeps its pick
(``best.npz``, what ``jaxadv eval DIR --point best`` restores).

:func:`policy_leaves` takes them from a state, :func:`save_policies` writes them (renamed
into place), :func:`load_policies` reads them back, and :func:`restore_policies` puts them
into freshly initialised states of the runs' configuration.
"""

from __future__ import annotations

import io
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.engine.checkpoint import _write_atomic
from jaxadv.engine.train import HParams, TrainConfig, TrainState, init, make_setup

__all__ = ["load_policies", "policy_leaves", "restore_policies", "save_policies"]


def policy_leaves(state: TrainState, rows: Any) -> tuple[np.ndarray, ...]:
    """The leaves (``jax.tree.leaves``) of ``(params, obs_stats)`` of the runs ``rows`` (an
    index array) of a state stacked over runs: ``[len(rows), ...]`` each."""
    rows = np.atleast_1d(np.asarray(rows))
    return tuple(np.asarray(x)[rows] for x in jax.tree.leaves((state.params, state.obs_stats)))


def save_policies(path: pathlib.Path, leaves: Sequence[np.ndarray]) -> None:
    """Write ``leaves`` to ``path`` (``.npz``, ``final_<i>`` each), renamed into place."""
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"final_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    np.savez(buffer, **arrays)
    _write_atomic(pathlib.Path(path), buffer.getvalue())


def load_policies(path: pathlib.Path) -> tuple[np.ndarray, ...]:
    """The leaves :func:`save_policies` wrote to ``path``; ``ValueError`` if it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            count = sum(name.startswith("final_") for name in arrays.files)
            return tuple(arrays[f"final_{i}"] for i in range(count))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} holds no saved policies ({type(exc).__name__}: {exc})") from None


def restore_policies(config: TrainConfig, hparams: HParams, keys: jax.Array,
                     leaves: Sequence[np.ndarray]) -> TrainState:
    """States of ``config`` initialised from ``keys`` ``[runs]`` (one per run) with their
    ``params`` and ``obs_stats`` replaced by ``leaves`` (``[runs, ...]`` each, as
    :func:`policy_leaves` gives them); ``ValueError`` if they do not fit the network."""
    setup = make_setup(config)
    state = jax.jit(jax.vmap(lambda k: init(setup, k, hparams)))(keys)
    final = (state.params, state.obs_stats)
    if [np.shape(x) for x in leaves] != [np.shape(x) for x in jax.tree.leaves(final)]:
        raise ValueError("the saved parameters do not fit the run's network")
    params, obs_stats = jax.tree.unflatten(jax.tree.structure(final),
                                           [jnp.asarray(x) for x in leaves])
    return state._replace(params=params, obs_stats=obs_stats)
