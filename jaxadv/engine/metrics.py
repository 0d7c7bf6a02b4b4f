"""A run's metrics as they leave the engine: ``metrics.csv`` (:class:`MetricsWriter`, one
sink of the driver's) and the headline numbers of ``summary.json`` (:func:`summarize`).

Metrics arrive from the trainer as a dict of ``[seeds, updates]`` arrays, one chunk of
updates at a time. Host-side only (NumPy, ``csv``); nothing here is traced.
"""

from __future__ import annotations

import csv
import itertools
import pathlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxadv.stats import final_returns, seed_mean_std

__all__ = ["METRIC_COLUMNS", "MetricsWriter", "history_calls", "platform_info", "summarize"]

METRIC_COLUMNS = (
    "episode_return",
    "episode_length",
    "episodes",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "grad_norm",
)
"""Per-update metrics, in the order they appear in ``metrics.csv`` (others follow, sorted)."""


class MetricsWriter:
    """``metrics.csv``, appended one chunk at a time, one row per update per seed.

    Columns: ``seed`` (index among ``--seeds``), ``update`` (1-based), ``env_steps``
    (per seed, ``update × batch_size``), the metrics of :data:`METRIC_COLUMNS` (then any
    others, sorted), and ``wall_seconds``: training seconds (compile excluded) when the
    chunk holding that update finished. ``episode_return`` and ``episode_length`` are
    ``nan`` for an update in which no episode ended. Rows are flushed after each chunk,
    so an interrupted run keeps what it finished. The file is created (or emptied) at the
    first rows: a run stopped before training leaves none. As a sink of
    :func:`~jaxadv.engine.driver.drive` it writes a resumed run's restored rows first
    (:meth:`resumed`).
    """

    def __init__(self, path: pathlib.Path, batch_size: int):
        self._path = path
        self._file: Any = None
        self._writer: Any = None
        self._batch_size = batch_size
        self._names: list[str] | None = None

    def resumed(self, history: dict[str, np.ndarray]) -> None:
        """Write the rows of a restored ``history``, one group per call that made them."""
        for metrics, first_update, wall_seconds in history_calls(history):
            self.append(metrics, first_update, wall_seconds)

    def append(self, metrics: dict[str, np.ndarray], first_update: int, wall_seconds: float) -> None:
        """Write rows for ``metrics[name]: [seeds, K]``, updates ``first_update .. first_update + K - 1``."""
        if self._file is None:
            self._file = self._path.open("w", newline="")
            self._writer = csv.writer(self._file)
        if self._names is None:
            rest = sorted(set(metrics) - set(METRIC_COLUMNS) - {"env_steps"})
            self._names = [n for n in METRIC_COLUMNS if n in metrics] + rest
            self._writer.writerow(["seed", "update", "env_steps", *self._names, "wall_seconds"])
        columns = [np.asarray(metrics[n], dtype=np.float64) for n in self._names]
        seeds, k = columns[0].shape
        for i in range(k):
            update = first_update + i
            for s in range(seeds):
                values = [f"{c[s, i]:.7g}" for c in columns]
                self._writer.writerow(
                    [s, update, update * self._batch_size, *values, f"{wall_seconds:.3f}"]
                )
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def history_calls(history: dict[str, np.ndarray]) -> Iterator[tuple[dict[str, np.ndarray], int, float]]:
    """A ``history`` (as :class:`RunResult` and checkpoints hold it) cut back into the calls
    that made it: ``(metrics [seeds, k], first_update, wall_seconds)`` per call, what a sink's
    ``append`` got."""
    if not history:
        return
    wall = history["wall_seconds"]
    metrics = {n: v for n, v in history.items() if n != "wall_seconds"}
    cuts = [0, *(int(c) + 1 for c in np.flatnonzero(np.diff(wall) != 0)), len(wall)]
    for i, j in itertools.pairwise(cuts):
        yield {n: v[:, i:j] for n, v in metrics.items()}, i + 1, float(wall[i])


def platform_info() -> dict[str, str]:
    """The JAX version and the first device, for a summary."""
    device = jax.devices()[0]
    return {"jax_version": jax.__version__, "device": device.device_kind,
            "platform": device.platform}


def summarize(
    config: Any, episode_return: np.ndarray, episodes: np.ndarray, *, seed: int, seeds: int,
    chunk_updates: int, train_seconds: float, compile_seconds: float,
) -> dict[str, Any]:
    """The run's headline numbers for ``summary.json``.

    ``final_return_mean`` / ``final_return_std``: mean and (population) std across seeds
    of :func:`final_returns` (seeds with no finished episode in the window are left
    out; NaN if none has one). ``env_steps`` is per seed; ``steps_per_second`` counts
    all seeds' steps over ``train_seconds``, which excludes ``compile_seconds``.
    """
    final = final_returns(episode_return, episodes)
    mean, std = seed_mean_std(final[:, None])
    env_steps = config.num_updates * config.batch_size
    return {
        "env": config.env,
        "algo": config.algo,
        "estimator": config.estimator,
        "final_return_mean": float(mean[0]),
        "final_return_std": float(std[0]),
        "final_return_per_seed": final,
        "env_steps": env_steps,
        "num_updates": config.num_updates,
        "chunk_updates": chunk_updates,
        "seeds": seeds,
        "seed": seed,
        "steps_per_second": env_steps * seeds / train_seconds,
        "train_seconds": train_seconds,
        "compile_seconds": compile_seconds,
        **platform_info(),
    }
