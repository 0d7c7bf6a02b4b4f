"""What a training run leaves behind: ``config.json``, ``metrics.csv``, ``summary.json``, ``returns.png``.

Host-side only (NumPy, ``csv``, ``json``, matplotlib); nothing here is traced. Metrics
arrive from the trainer as a dict of ``[seeds, updates]`` arrays, one chunk of
updates at a time.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
from typing import Any

import jax
import numpy as np
from rich.table import Table

__all__ = [
    "METRIC_COLUMNS",
    "MetricsWriter",
    "final_returns",
    "forward_fill",
    "plot_returns",
    "seed_mean_std",
    "summarize",
    "summary_table",
    "windowed_returns",
    "write_json",
]

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


def _jsonable(value: Any) -> Any:
    """Plain JSON values: dataclasses and tuples unpacked, NumPy scalars as Python, NaN as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, pathlib.Path):
        return str(value)
    if isinstance(value, np.generic | np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: pathlib.Path, data: Any) -> None:
    """Write ``data`` as indented, strict JSON (non-finite floats become ``null``)."""
    path.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")


class MetricsWriter:
    """``metrics.csv``, appended one chunk at a time, one row per update per seed.

    Columns: ``seed`` (index among ``--seeds``), ``update`` (1-based), ``env_steps``
    (per seed, ``update × batch_size``), the metrics of :data:`METRIC_COLUMNS` (then any
    others, sorted), and ``wall_seconds``: training seconds (compile excluded) when the
    chunk holding that update finished. ``episode_return`` and ``episode_length`` are
    ``nan`` for an update in which no episode ended. Rows are flushed after each chunk,
    so an interrupted run keeps what it finished.
    """

    def __init__(self, path: pathlib.Path, batch_size: int):
        self._file = path.open("w", newline="")
        self._writer = csv.writer(self._file)
        self._batch_size = batch_size
        self._names: list[str] | None = None

    def append(self, metrics: dict[str, np.ndarray], first_update: int, wall_seconds: float) -> None:
        """Write rows for ``metrics[name]: [seeds, K]``, updates ``first_update .. first_update + K - 1``."""
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
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def forward_fill(episode_return: np.ndarray) -> np.ndarray:
    """Each seed's latest finished-episode return at every update: ``[seeds, updates]``.

    An update in which no episode ended (NaN) takes the seed's last finite value; NaN
    stays only before the seed's first finished episode.

    >>> forward_fill(np.array([[np.nan, 1.0, np.nan, 3.0], [2.0, np.nan, np.nan, np.nan]]))
    array([[nan,  1.,  1.,  3.],
           [ 2.,  2.,  2.,  2.]])
    """
    returns = np.asarray(episode_return, dtype=np.float64)
    finite = np.isfinite(returns)
    last = np.maximum.accumulate(np.where(finite, np.arange(returns.shape[1]), 0), axis=1)
    filled = np.take_along_axis(returns, last, axis=1)
    return np.where(np.maximum.accumulate(finite, axis=1), filled, np.nan)


def seed_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std over axis 0 of the finite entries; NaN where there are none.

    >>> seed_mean_std(np.array([[1.0, np.nan], [3.0, np.nan]]))
    (array([ 2., nan]), array([ 1., nan]))
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    safe = np.maximum(counts, 1)
    mean = np.where(finite, values, 0.0).sum(axis=0) / safe
    var = (np.where(finite, values - mean, 0.0) ** 2).sum(axis=0) / safe
    return np.where(counts > 0, mean, np.nan), np.where(counts > 0, np.sqrt(var), np.nan)


def windowed_returns(episode_return: np.ndarray, episodes: np.ndarray, window: int) -> np.ndarray:
    """Mean return of the episodes that ended in the trailing ``window`` updates, per seed.

    ``episode_return``, ``episodes``: ``[seeds, updates]`` (the per-update mean return,
    NaN where ``episodes`` is 0, and the episode count); NaN where the window holds no
    episode.

    >>> windowed_returns(np.array([[10.0, np.nan, 40.0]]), np.array([[1, 0, 2]]), 2)
    array([[10., 10., 40.]])
    """
    returns = np.nan_to_num(np.asarray(episode_return, np.float64))
    count = np.asarray(episodes, np.float64)

    def trailing_sum(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros_like(x[:, :1]), np.cumsum(x, axis=1)], axis=1)
        lo = np.maximum(np.arange(1, x.shape[1] + 1) - window, 0)
        return c[:, 1:] - c[:, lo]

    total, n = trailing_sum(returns * count), trailing_sum(count)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def final_returns(
    episode_return: np.ndarray, episodes: np.ndarray, fraction: float = 0.1
) -> np.ndarray:
    """Per seed, the mean return of the episodes that ended in the last ``fraction`` of
    updates (at least one update): ``[seeds]``, NaN for a seed with none.

    >>> final_returns(np.array([[1.0, 2.0, np.nan, 4.0]]), np.array([[1, 1, 0, 3]]), 0.5)
    array([4.])
    """
    window = max(1, math.ceil(fraction * np.shape(episode_return)[1]))
    return windowed_returns(episode_return, episodes, window)[:, -1]


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
    device = jax.devices()[0]
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
        "jax_version": jax.__version__,
        "device": device.device_kind,
        "platform": device.platform,
    }


def plot_returns(
    path: pathlib.Path,
    env_steps: np.ndarray,
    episode_return: np.ndarray,
    episodes: np.ndarray,
    title: str,
) -> None:
    """Save episodic return vs env steps, mean ± std band over seeds (PNG, Agg canvas).

    ``env_steps``: ``[updates]``; ``episode_return``, ``episodes``: ``[seeds, updates]``.
    Each seed's curve is its :func:`windowed_returns` over 2% of the updates,
    :func:`forward_fill`-ed through windows with no finished episode; the band is
    :func:`seed_mean_std` across seeds.
    """
    from matplotlib.figure import Figure  # no pyplot, no global backend state

    seeds, updates = np.shape(episode_return)
    window = max(1, updates // 50)
    curves = forward_fill(windowed_returns(episode_return, episodes, window))
    mean, std = seed_mean_std(curves)
    steps = np.asarray(env_steps)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, mean, lw=1.5, label=f"mean of {seeds} seed(s), episodes of the last {window} update(s)")
    ax.fill_between(steps, mean - std, mean + std, alpha=0.25, lw=0, label="± std across seeds")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("episodic return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=120)


def summary_table(summary: dict[str, Any]) -> Table:
    """A two-column :class:`rich.table.Table` of the run's headline numbers."""
    table = Table(title=f"{summary['env']} · {summary['algo']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    mean, std = summary["final_return_mean"], summary["final_return_std"]
    ret = "n/a" if mean is None or not math.isfinite(mean) else f"{mean:.2f} ± {std:.2f}"
    table.add_row("final return (last 10%)", ret)
    table.add_row("seeds", str(summary["seeds"]))
    table.add_row("env steps per seed", f"{summary['env_steps']:,}")
    table.add_row("updates (per call)", f"{summary['num_updates']} ({summary['chunk_updates']})")
    table.add_row("compile", f"{summary['compile_seconds']:.1f} s")
    table.add_row("train", f"{summary['train_seconds']:.1f} s")
    table.add_row("steps/s (all seeds)", f"{summary['steps_per_second']:,.0f}")
    table.add_row("device", f"{summary['device']} · jax {summary['jax_version']}")
    return table
