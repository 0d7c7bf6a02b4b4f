"""Hyperparameter sweeps: every (point, seed) pair of a static group is one element of a vmap.

``run_sweep(config, grid, seeds)`` expands ``grid`` — ``HParams`` or ``TrainConfig``
field names mapped to value lists (grid product) or to distributions (random search)
— into points, groups them by their static configuration (one compile per group), and
trains each group as a single ``jax.vmap``-ed ``train`` over the flattened
``points × seeds`` axis. That axis is sharded over all devices (``NamedSharding`` over
a 1-D mesh, padded to a multiple of the device count) and, when it is larger than
``max_parallel``, processed in equal chunks, each still one fused program. Under
``jax.distributed.initialize`` the mesh spans every process's devices and every
process receives the gathered results.

Each chunk is named by a :class:`~jaxadv.engine.checkpoint.ChunkId` (its group and its runs); ``on_result`` sees
each chunk's :class:`ChunkResult` as soon as it is computed, and ``saved`` hands back the
chunks of an earlier, interrupted sweep, which are then not computed again — how
``jaxadv sweep --resume`` continues a sweep. A run's results do not depend on the chunk
it ran in, so a resumed sweep equals an uninterrupted one bit for bit.

Because ``gae(λ = 0)`` is the one-step TD estimator and ``gae(λ = 1)`` is the Monte Carlo
return minus a baseline, a grid over ``gae_lambda`` sweeps the estimator family itself
in one compile.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxadv.engine.checkpoint import ChunkId, ChunkResult
from jaxadv.engine.devices import check_memory
from jaxadv.engine.train import HParams, TrainConfig, make_train
from jaxadv.stats import final_returns
from jaxadv.validate import positive_int

__all__ = ["ChunkId", "ChunkResult", "LogUniform", "SweepPoint", "SweepResult", "Uniform",
           "expand_grid", "run_sweep", "sweep_point"]

_HPARAM_FIELDS = tuple(f.name for f in dataclasses.fields(HParams))
_STATIC_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


class Uniform(NamedTuple):
    """Random-search distribution: uniform on [low, high]."""

    low: float
    high: float

    def sample(self, key: jax.Array, n: int) -> np.ndarray:
        return np.asarray(jax.random.uniform(key, (n,), minval=self.low, maxval=self.high))


class LogUniform(NamedTuple):
    """Random-search distribution: log-uniform on [low, high] (both > 0)."""

    low: float
    high: float

    def sample(self, key: jax.Array, n: int) -> np.ndarray:
        lo, hi = math.log(self.low), math.log(self.high)
        return np.exp(np.asarray(jax.random.uniform(key, (n,), minval=lo, maxval=hi)))


_DISTRIBUTIONS = (Uniform, LogUniform)


class SweepResult(NamedTuple):
    """Results of a sweep, on the host.

    Attributes:
      points: one dict per point of the swept fields' values.
      seeds: number of seeds per point.
      returns: per point, ``[S, U]`` mean episodic return per update (NaN where no
        episode ended); U may differ between static groups.
      episodes: per point, ``[S, U]`` number of episodes that ended in each update.
      env_steps: per point, ``[U]`` env steps after each update (per seed).
      final_return: ``[P, S]`` mean return of the episodes that ended in the last
        ``ceil(U / 10)`` updates (:func:`~jaxadv.stats.final_returns`, as ``jaxadv
        train`` reports it); NaN where none ended there.
      auc: ``[P, S]`` mean of the per-update returns over all updates (area under the
        learning curve per env step, normalised by the steps; updates with no
        finished episode skipped).
      compile_seconds, wall_seconds: totals over all groups (a chunk passed in as
        ``saved`` counts its own :attr:`ChunkResult.seconds` and ``compile_seconds``).
      devices, processes: how the sweep was spread.
    """

    points: list[dict[str, Any]]
    seeds: int
    returns: list[np.ndarray]
    episodes: list[np.ndarray]
    env_steps: list[np.ndarray]
    final_return: np.ndarray
    auc: np.ndarray
    compile_seconds: float
    wall_seconds: float
    devices: int
    processes: int


def _check_value(field: str, value: Any) -> None:
    if field in _HPARAM_FIELDS:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"`{field}` = {value!r} is not allowed; give a real number")
        single: dict[str, Any] = {field: value}
        HParams(**single).validate()


def expand_grid(
    grid: Mapping[str, Sequence | Uniform | LogUniform],
    *,
    num_samples: int | None = None,
    key: jax.Array | None = None,
) -> list[dict[str, Any]]:
    """The sweep's points: the product of the listed values, times random draws.

    Lists are crossed (grid search); each distribution draws ``num_samples`` values,
    drawn jointly per sample (random search), and crossed with the lists. Every value
    is checked before anything compiles: unknown fields, empty lists and values
    outside a field's domain raise a ``ValueError`` naming the field.

    >>> expand_grid({"lr": [1e-3, 3e-4], "gae_lambda": [0.0, 1.0]})[1]
    {'lr': 0.001, 'gae_lambda': 1.0}
    """
    if not grid:
        raise ValueError("`grid` is empty: give at least one field with values to sweep")
    lists, dists = {}, {}
    for field, values in grid.items():
        if field not in _HPARAM_FIELDS and field not in _STATIC_FIELDS:
            raise ValueError(
                f"`grid` field {field!r} is not a hyperparameter or config field; "
                f"HParams fields: {list(_HPARAM_FIELDS)}; TrainConfig fields: {list(_STATIC_FIELDS)}"
            )
        if isinstance(values, _DISTRIBUTIONS):
            if field not in _HPARAM_FIELDS:
                raise ValueError(f"`grid` field {field!r} is static; give it a list, not a distribution")
            for bound in values:
                _check_value(field, bound)
            if isinstance(values, LogUniform) and values.low <= 0:
                raise ValueError(f"`grid` field {field!r}: LogUniform needs low > 0, got {values.low}")
            if not values.low <= values.high:
                raise ValueError(f"`grid` field {field!r}: needs low <= high, got {values}")
            dists[field] = values
            continue
        if isinstance(values, (np.ndarray, jax.Array)):
            values = np.asarray(values).tolist()  # 1-D: a list of values; 0-D: one value
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            values = [values]
        if len(values) == 0:
            raise ValueError(f"`grid` field {field!r} has an empty list of values")
        for v in values:
            _check_value(field, v)
        lists[field] = list(values)
    if num_samples is not None:
        positive_int("num_samples", num_samples)
    if dists and num_samples is None:
        raise ValueError("`num_samples` must be a positive integer when the grid has distributions")
    if not dists:
        num_samples = 1
    key = jax.random.key(0) if key is None else key
    draws = {
        field: dist.sample(k, cast(int, num_samples))
        for (field, dist), k in zip(dists.items(), jax.random.split(key, max(len(dists), 1)))
    }
    points = []
    for combo in itertools.product(*lists.values()):
        for i in range(cast(int, num_samples)):  # set above where there is no distribution
            point = dict(zip(lists, combo))
            point.update({f: float(d[i]) for f, d in draws.items()})
            points.append(point)
    return points


def _summaries(returns: np.ndarray, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed of one point (``[S, U]`` each): the final return
    (:func:`~jaxadv.stats.final_returns`) and the AUC (mean per-update return)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
        auc = np.nanmean(returns, axis=-1)
    return final_returns(returns, episodes), auc


def _stacked_hparams(points: list[dict[str, Any]], base: HParams) -> HParams:
    values: dict[str, Any] = {
        f: np.asarray([p.get(f, getattr(base, f)) for p in points], np.float32)
        for f in _HPARAM_FIELDS
    }
    return HParams(**values)


def _put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array sharded along axis 0 built from the same host data on every process."""
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _compile(config: TrainConfig, sharding: NamedSharding, args: tuple) -> Callable:
    """``vmap(make_train(config))`` over the sweep axis, compiled for ``args``; returns
    ``(episode_return, episodes, env_steps)``, each ``[runs, U]``, and the leaves of the
    final ``(params, obs_stats)``, each ``[runs, ...]``."""
    train = make_train(config)

    def run_chunk(key_data, hp):
        keys = jax.random.wrap_key_data(key_data)
        state, metrics = jax.vmap(train)(keys, hp)
        final = tuple(jax.tree.leaves((state.params, state.obs_stats)))
        return metrics["episode_return"], metrics["episodes"], metrics["env_steps"], final

    fn = jax.jit(run_chunk, in_shardings=(sharding, sharding), out_shardings=sharding)
    compiled = fn.lower(*args).compile()
    local = sum(d.process_index == jax.process_index() for d in sharding.mesh.devices.flat)
    check_memory([compiled], local, "--max-parallel, --num-envs or --num-steps")
    return compiled


def _static_groups(
    config: TrainConfig, points: list[dict[str, Any]]
) -> dict[TrainConfig, list[int]]:
    """The points grouped by static configuration: each distinct ``TrainConfig`` (``config``
    with a point's static fields) → the indices of its points, groups in order of first
    appearance. Building each config validates it; nothing compiles."""
    groups: dict[TrainConfig, list[int]] = {}
    for i, point in enumerate(points):
        static = {f: v for f, v in point.items() if f in _STATIC_FIELDS}
        if "hidden" in static:
            if not isinstance(static["hidden"], (tuple, list)):
                raise ValueError(
                    "`grid` field 'hidden': each value is a tuple of layer widths, "
                    f"e.g. [(64, 64), (128,)]; got {static['hidden']!r}"
                )
            static["hidden"] = tuple(static["hidden"])
        cfg = config.replace(**static)
        groups.setdefault(cfg, []).append(i)
    return groups


class _ChunkPlan(NamedTuple):
    """How one static group's runs are cut into equal chunks.

    Run ``e`` of the group's flattened ``points × seeds`` axis is its point ``e // seeds``
    with seed ``e % seeds``; the axis is padded with copies of run 0 to a whole number of
    chunks.

    Attributes:
      runs: the group's runs, ``points × seeds`` (padding excluded).
      chunk_size: runs per compiled call, a multiple of the device count.
      keys: ``[padded, *key_shape]`` seed key data of each run.
      hparams: ``HParams`` with ``[padded]`` float32 leaves, each run's values.
    """

    runs: int
    chunk_size: int
    keys: np.ndarray
    hparams: HParams

    def chunk_ids(self, group: int) -> list[ChunkId]:
        """The chunks of group ``group``, in order; the last one may be short."""
        num_chunks = -(-self.runs // self.chunk_size)
        return [ChunkId(group, c * self.chunk_size, min((c + 1) * self.chunk_size, self.runs))
                for c in range(num_chunks)]


def _plan_chunks(
    group_points: list[dict[str, Any]],
    base: HParams,
    seed_keys: np.ndarray,
    max_parallel: int | None,
    num_devices: int,
) -> _ChunkPlan:
    """Cut the ``len(group_points) × seeds`` runs of one static group (``seed_keys``:
    ``[seeds, *key_shape]``) into chunks of at most ``max_parallel`` runs (default all),
    rounded up to a multiple of ``num_devices``."""
    seeds = len(seed_keys)
    runs = len(group_points) * seeds
    chunk_size = min(runs, max_parallel or runs)
    chunk_size = -(-chunk_size // num_devices) * num_devices  # a multiple of the device count
    pad = -(-runs // chunk_size) * chunk_size - runs
    point_of = np.concatenate([np.repeat(np.arange(len(group_points)), seeds), np.zeros(pad, int)])
    seed_of = np.concatenate([np.tile(np.arange(seeds), len(group_points)), np.zeros(pad, int)])
    hparams = _stacked_hparams([group_points[p] for p in point_of], base)
    return _ChunkPlan(runs, chunk_size, seed_keys[seed_of], hparams)


def _check_saved_chunk(chunk_id: ChunkId, part: ChunkResult) -> None:
    """Refuse a saved chunk that does not hold ``stop − start`` rows of each result."""
    rows = chunk_id.stop - chunk_id.start
    got = [np.shape(a)[0] if np.ndim(a) else None for a in part[:3]]
    if got != [rows] * 3:
        raise ValueError(f"`saved`: chunk {chunk_id} holds {got} rows of returns, "
                         f"episodes and env_steps; expected {rows} each")


def _compute_chunk(
    config: TrainConfig,
    plan: _ChunkPlan,
    chunk_id: ChunkId,
    sharding: NamedSharding,
    compiled: Callable | None,
) -> tuple[Callable, ChunkResult]:
    """Train the runs of ``chunk_id`` as one sharded call, compiling the group's program
    first when ``compiled`` is None; returns the program and the results gathered on every
    process, ``[stop − start, U]`` each (padding dropped)."""
    t0 = time.perf_counter()
    runs = slice(chunk_id.start, chunk_id.start + plan.chunk_size)
    args = (
        _put(plan.keys[runs], sharding),
        jax.tree.map(lambda x: _put(x[runs], sharding), plan.hparams),
    )
    compile_s = 0.0
    if compiled is None:
        t_compile = time.perf_counter()
        compiled = _compile(config, sharding, args)
        compile_s = time.perf_counter() - t_compile
    rows = chunk_id.stop - chunk_id.start
    gathered = jax.tree.map(
        lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))[:rows],
        compiled(*args))
    returns, episodes, env_steps, final = gathered
    result = ChunkResult(returns, episodes, env_steps, seconds=time.perf_counter() - t0,
                         compile_seconds=compile_s, final=tuple(final))
    return compiled, result


def _rows_per_point(
    parts: list[ChunkResult], num_points: int, seeds: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A group's chunks joined and split by point: returns and episodes ``[P, S, U]``,
    env steps ``[P, U]`` (seed 0's; every seed takes the same steps)."""
    returns, episodes, env_steps = (
        np.concatenate([np.asarray(p[k]) for p in parts]).reshape(num_points, seeds, -1)
        for k in range(3)
    )
    return returns, episodes, env_steps[:, 0]


class SweepPoint(NamedTuple):
    """Where :func:`run_sweep` trained one point: its static ``config``, its ``hparams`` (the
    float32 values the sweep used), the static ``group`` it was compiled in and its runs
    ``[start, stop)`` on that group's ``points × seeds`` axis (one per seed)."""

    config: TrainConfig
    hparams: HParams
    group: int
    start: int
    stop: int


def sweep_point(
    config: TrainConfig,
    grid: Mapping[str, Sequence | Uniform | LogUniform],
    seeds: int,
    point: int,
    *,
    hparams: HParams | None = None,
    key: jax.Array | None = None,
    num_samples: int | None = None,
) -> SweepPoint:
    """The :class:`SweepPoint` of point ``point`` (an index into :func:`expand_grid`'s order,
    the ``point`` column of ``sweep.csv``) of the sweep that :func:`run_sweep` runs with the
    same arguments; compiles nothing."""
    key = jax.random.key(0) if key is None else key
    base = (hparams or HParams()).validate()
    points = expand_grid(grid, num_samples=num_samples, key=jax.random.fold_in(key, 1))
    if not (isinstance(point, int) and 0 <= point < len(points)):
        raise ValueError(f"`point` must be an index in [0, {len(points)}), got {point!r}")
    for group, (cfg, idx) in enumerate(_static_groups(config, points).items()):
        if point in idx:
            local = idx.index(point)
            values = _stacked_hparams([points[point]], base)
            hp = HParams(**{f: float(getattr(values, f)[0]) for f in _HPARAM_FIELDS})
            return SweepPoint(cfg, hp, group, local * seeds, (local + 1) * seeds)
    raise AssertionError("every point is in a group")


def run_sweep(
    config: TrainConfig,
    grid: Mapping[str, Sequence | Uniform | LogUniform],
    seeds: int,
    *,
    hparams: HParams | None = None,
    key: jax.Array | None = None,
    num_samples: int | None = None,
    max_parallel: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    saved: Mapping[ChunkId, ChunkResult] | None = None,
    on_result: Callable[[ChunkId, ChunkResult], None] | None = None,
    on_start: Callable[[ChunkId], None] | None = None,
    points: Sequence[Mapping[str, Any]] | None = None,
) -> SweepResult:
    """Train every point of ``grid`` with ``seeds`` seeds; one compile per static group.

    Args:
      config: the base static configuration; static fields in ``grid`` override it.
      grid: field name → list of values, or → :class:`Uniform`/:class:`LogUniform`.
      seeds: seeds per point; seed ``s`` uses ``jax.random.split(key, seeds)[s]`` for
        every point (common random numbers across points).
      hparams: base hyperparameters for the fields not swept.
      key: PRNG key for the seeds (default ``jax.random.key(0)``); random-search draws
        use ``jax.random.fold_in(key, 1)``.
      num_samples: random-search draws per grid combination (needed with distributions).
      max_parallel: most (point, seed) runs in one compiled call; default all of a group.
      devices: devices of the 1-D mesh (default all, across processes).
      on_chunk: called as ``on_chunk(done, total)`` after each chunk, saved ones
        included (progress, in runs).
      saved: chunks already computed (an interrupted sweep's): a chunk whose
        :class:`~jaxadv.engine.checkpoint.ChunkId` is here is not computed, its rows (checked to be
        ``stop − start``) are used as they are, and a group whose chunks are all here is
        not even compiled. Ids that are not chunks of this sweep (cut for another
        ``max_parallel`` or device count) are ignored: their runs are computed.
      on_result: called as ``on_result(chunk_id, result)`` after each computed chunk
        (not the ``saved`` ones), on every process, with the gathered results — to save
        them as they come. An exception it raises stops the sweep there and propagates.
      on_start: called as ``on_start(chunk_id)`` before each chunk is computed (compiled
        first where it is its group's first).
      points: train these points (dicts of field values, as :func:`expand_grid` makes
        them) instead of expanding ``grid``, e.g. the configurations a search selected.

    Returns:
      A :class:`SweepResult`; points keep the order of :func:`expand_grid`.
    """
    positive_int("seeds", seeds)
    if max_parallel is not None:
        positive_int("max_parallel", max_parallel)
    key = jax.random.key(0) if key is None else key
    base = (hparams or HParams()).validate()
    points = (expand_grid(grid, num_samples=num_samples, key=jax.random.fold_in(key, 1))
              if points is None else [dict(p) for p in points])
    groups = _static_groups(config, points)

    devices = list(jax.devices() if devices is None else devices)
    sharding = NamedSharding(Mesh(np.array(devices), ("sweep",)), PartitionSpec("sweep"))
    seed_keys = np.asarray(jax.random.key_data(jax.random.split(key, seeds)))
    total = len(points) * seeds
    returns: list[np.ndarray | None] = [None] * len(points)
    episodes: list[np.ndarray | None] = [None] * len(points)
    env_steps: list[np.ndarray | None] = [None] * len(points)
    saved = dict(saved or {})
    compile_s, saved_s, done = 0.0, 0.0, 0
    start = time.perf_counter()
    for group, (cfg, idx) in enumerate(groups.items()):
        plan = _plan_chunks([points[i] for i in idx], base, seed_keys, max_parallel, len(devices))
        compiled = None  # built for the first chunk to compute: none if all are saved
        parts: list[ChunkResult] = []
        for chunk_id in plan.chunk_ids(group):
            part = saved.get(chunk_id)
            computed = part is None
            if part is None:
                if on_start is not None:
                    on_start(chunk_id)
                compiled, part = _compute_chunk(cfg, plan, chunk_id, sharding, compiled)
            else:
                _check_saved_chunk(chunk_id, part)
                saved_s += part.seconds
            compile_s += part.compile_seconds
            parts.append(part)
            done += chunk_id.stop - chunk_id.start
            if on_chunk is not None:
                on_chunk(done, total)
            if on_result is not None and computed:
                on_result(chunk_id, part)
        rows = _rows_per_point(parts, len(idx), seeds)
        for p, (r, e, s) in zip(idx, zip(*rows), strict=True):
            returns[p], episodes[p], env_steps[p] = r, e, s
    filled = lambda rows: cast(list[np.ndarray], rows)  # every point's row is set now
    final, auc = zip(*(_summaries(r, e)
                       for r, e in zip(filled(returns), filled(episodes), strict=True)))
    return SweepResult(
        points=points,
        seeds=seeds,
        returns=filled(returns),
        episodes=filled(episodes),
        env_steps=filled(env_steps),
        final_return=np.stack(final),
        auc=np.stack(auc),
        compile_seconds=compile_s,
        wall_seconds=time.perf_counter() - start + saved_s,
        devices=len(devices),
        processes=jax.process_count(),
    )
