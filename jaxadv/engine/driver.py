"""The run driver, as a library: a compiled trainer in chunks of updates, with optional
sinks (metrics, checkpoints, progress), a caller's stop request and non-finite stops; the
result comes back in memory.

:func:`drive` compiles ``init`` and ``run(k)`` (:meth:`~jaxadv.engine.train.Trainer.run`, a
``lax.scan`` over ``k`` updates) over a leading seed axis and calls ``run`` once per chunk.
Each call is one fused program and chaining the calls gives the same numbers as
``make_train``: bit for bit ``jax.vmap(train)`` for several seeds, and ``train`` itself for
one seed (whose program has no seed axis at all, so no matrix product becomes a batched one).

The host work never stalls the program: the next call is dispatched before the metrics of
the one before are read, and checkpoints are written by a background thread, so the sinks,
the progress report and orbax's writes overlap the computation. Checkpoints (when a
directory is given) are saved at call ends every ``checkpoint_every`` updates (default: a
minute of training apart), at the end and when the caller's ``stop()`` asks; a non-finite
loss, gradient or parameter (the ``nonfinite`` metric) stops the run at the end of the call
in which it appeared, keeping the last finite state. :class:`RunStopped` says why a run
stopped. The driver installs no signal handler and prints nothing: the command line
(:mod:`jaxadv.cli.runs`) turns SIGINT/SIGTERM into ``stop()``, shows the progress and words
the messages.

Compiled programs are kept in JAX's persistent compilation cache
(:func:`enable_compile_cache`), so a second run of the same configuration — a resumed run,
a repeated experiment — loads them instead of compiling.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import jax
import numpy as np
from jax.experimental import checkify
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxadv.engine.checkpoint import CheckpointError, CheckpointStore
from jaxadv.engine.devices import check_memory, seed_groups
from jaxadv.engine.metrics import summarize
from jaxadv.engine.train import NONFINITE, HParams, TrainConfig, Trainer, TrainState, make_trainer
from jaxadv.stats import forward_fill, seed_mean_std

__all__ = [
    "CHECKPOINT_SECONDS",
    "ChunkedRun",
    "RunOptions",
    "RunProgress",
    "RunResult",
    "RunStopped",
    "chunk_sizes",
    "compile_chunked",
    "default_chunk_updates",
    "default_compile_cache",
    "drive",
    "enable_compile_cache",
]


def default_compile_cache() -> pathlib.Path:
    """Where compiled programs are cached: ``$JAXADV_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/jaxadv/xla`` (``~/.cache/jaxadv/xla``)."""
    if os.environ.get("JAXADV_CACHE_DIR"):
        return pathlib.Path(os.environ["JAXADV_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxadv" / "xla"


def enable_compile_cache(directory: pathlib.Path | None) -> None:
    """Keep every compiled program of at least 0.5 s in JAX's persistent cache in
    ``directory`` (``None``: turn the cache off). Call before the first compile."""
    if directory is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _cache_entries() -> int | None:
    """Files in the active persistent cache, or ``None`` when it is off."""
    # jax.config's flags are attributes made at run time, which its type does not declare
    directory = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
    if not jax.config.jax_enable_compilation_cache or not directory:  # type: ignore[attr-defined]
        return None
    path = pathlib.Path(directory)
    return sum(1 for _ in path.iterdir()) if path.is_dir() else 0


def default_chunk_updates(num_updates: int, target: int = 32) -> int:
    """Updates per call for about ``target`` calls per run.

    A divisor of ``num_updates`` giving 16–64 calls (the one nearest ``target`` by
    ratio) keeps every call the same length, so one program compiles; without such a
    divisor it is ``ceil(num_updates / target)`` and the shorter last call compiles
    a second program.

    >>> default_chunk_updates(960), default_chunk_updates(976), default_chunk_updates(997)
    (30, 16, 32)
    """
    candidates = range(max(1, num_updates // 64), num_updates // 16 + 1)
    divisors = [k for k in candidates if num_updates % k == 0 and 16 <= num_updates // k <= 64]
    if divisors:
        return min(divisors, key=lambda k: abs(math.log(num_updates / k / target)))
    return max(1, math.ceil(num_updates / target))


def chunk_sizes(num_updates: int, chunk_updates: int) -> list[int]:
    """Updates in each call: ``chunk_updates`` repeated, then the remainder if any.

    >>> chunk_sizes(10, 4)
    [4, 4, 2]
    """
    full, rest = divmod(num_updates, chunk_updates)
    return [chunk_updates] * full + ([rest] if rest else [])


@dataclasses.dataclass(frozen=True)
class ChunkedRun:
    """A run split into compiled calls over a leading seed axis.

    ``init(keys, hp) -> TrainState``; ``run[k](state, hp) -> (state, metrics)`` runs ``k``
    updates (metrics ``[seeds, k]``; with ``config.eval_every``, ``run[k](state, hp, done)``,
    ``done`` the updates before the call, from ``start`` on); ``sizes`` lists each call's ``k``; ``cache`` is
    ``"hit"`` when every program came from the persistent cache, ``"miss"`` when one was
    compiled, ``"off"`` without the cache. The seeds run in ``groups`` equal groups spread
    over ``devices`` devices (``sharding`` places the seed axis; ``None`` on one device).
    """

    init: Callable
    run: dict[int, Callable]
    sizes: list[int]
    compile_seconds: float
    cache: str = "off"
    trainer: Trainer | None = None
    devices: int = 1
    groups: int = 1
    sharding: NamedSharding | None = None
    start: int | None = None

    def iterate(
        self, keys: jax.Array, hp: HParams, state: TrainState | None = None
    ) -> Iterator[tuple[TrainState, dict]]:
        """Yield ``(state, metrics)`` after each call; the states equal ``vmap(train)``'s.

        ``state``: where to start (a restored checkpoint); default ``init(keys, hp)``. Each
        call is dispatched before the previous one's outputs are yielded, so the program
        runs while the caller handles them (``jax.device_get`` waits for a call's end).
        """
        if self.sharding is not None:  # the seeds' share on each device
            keys = jax.device_put(keys, self.sharding)
            state = None if state is None else jax.device_put(state, self.sharding)
        if state is None:
            state = self.init(keys, hp)
        pending, done = None, self.start
        for k in self.sizes:
            if done is None:
                state, metrics = self.run[k](state, hp)
            else:  # the updates done so far: where --eval-every's evaluations fall
                state, metrics = self.run[k](state, hp, np.int32(done))
                done += k
            if pending is not None:
                yield pending
            pending = state, metrics
        if pending is not None:
            yield pending


def _seed_axis(fn: Callable, seeds: int, in_axes: tuple, groups: int = 1,
               mesh: Mesh | None = None) -> Callable:
    """``fn`` over a leading seed axis on the arguments in ``in_axes`` (0) and its outputs.

    One seed: ``fn`` itself between a squeeze and an expand. One group: ``vmap``. Several
    ``groups`` (:func:`~jaxadv.engine.devices.seed_groups`): the seeds in ``groups`` equal blocks,
    each a ``vmap``, one after another (``lax.map``) on each device of ``mesh`` (a 1-D mesh
    whose axis ``"seeds"`` shards the blocks; ``None``: one device) — the same bits for every
    seed whatever the number of devices.
    """
    if seeds == 1:
        squeeze = lambda tree: jax.tree.map(lambda x: x[0], tree)

        def one(*args):
            args = [squeeze(a) if axis == 0 else a for a, axis in zip(args, in_axes)]
            return jax.tree.map(lambda x: x[None], fn(*args))

        return one
    batched = jax.vmap(fn, in_axes)
    if groups == 1:
        return batched
    size = seeds // groups

    def blocks(*args):  # this device's seeds: [n, ...] -> n // size blocks in turn
        mapped = [a for a, axis in zip(args, in_axes) if axis == 0]

        def block(xs):
            it = iter(xs)
            return batched(*[next(it) if axis == 0 else a for a, axis in zip(args, in_axes)])

        xs = jax.tree.map(lambda x: x.reshape(-1, size, *x.shape[1:]), mapped)
        out = jax.lax.map(block, xs)
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)

    if mesh is None:
        return blocks
    specs = tuple(P("seeds") if axis == 0 else P() for axis in in_axes)
    return jax.shard_map(blocks, mesh=mesh, in_specs=specs, out_specs=P("seeds"), check_vma=False)


def compile_chunked(
    config: TrainConfig, hp: HParams, keys: jax.Array, chunk_updates: int, *,
    start: int = 0, debug_nans: bool = False, groups: int = 1, devices: int | None = None,
) -> ChunkedRun:
    """Compile ``init`` and ``run`` over the seed axis of ``keys`` for each distinct chunk
    length, timing it.

    ``start``: updates already done (a resumed run); the calls cover the rest.
    ``debug_nans``: each call is checkified (``checkify.nan_checks``) and raises
    ``FloatingPointError`` naming the first operation that made a NaN.
    ``groups``: the seeds are computed in this many equal groups (:func:`_seed_axis`), spread
    over up to ``devices`` local devices (default: all of them).
    """
    trainer = make_trainer(config)
    seeds = keys.shape[0]
    used = 1 if debug_nans else seed_groups(groups, devices or jax.local_device_count())
    mesh = Mesh(np.array(jax.local_devices()[:used]), ("seeds",)) if used > 1 else None
    sharding = NamedSharding(mesh, P("seeds")) if mesh is not None else None
    sizes = chunk_sizes(config.num_updates - start, min(chunk_updates, config.num_updates))
    seed_axis = lambda fn, axes=(0, None): _seed_axis(fn, seeds, axes, groups, mesh)
    init = jax.jit(seed_axis(trainer.init), out_shardings=sharding)
    run_fn: Callable[..., Any] = lambda state, hp, k: seed_axis(
        functools.partial(trainer.run, num_updates=k))(state, hp)
    evaluates = bool(config.eval_every) and not debug_nans  # (debug: chunk-relative cadence)
    if evaluates:  # the updates done before a call: one int for all seeds (see train.run)
        run_fn = lambda state, hp, done, k: seed_axis(
            lambda state, hp, done: trainer.run(state, hp, k, done), (0, None, None))(state, hp, done)
    if debug_nans:  # vmap of checkify: checkify cannot take the batched loops of vmap
        run_fn = lambda state, hp, k: jax.vmap(checkify.checkify(
            functools.partial(trainer.run, num_updates=k), errors=checkify.nan_checks),
            (0, None))(state, hp)
    run = jax.jit(run_fn, static_argnums=3 if evaluates else 2, out_shardings=sharding)
    if sharding is not None:
        keys = jax.device_put(keys, sharding)
    entries = _cache_entries()
    t0 = time.perf_counter()
    state = jax.eval_shape(init, keys, hp)
    if sharding is not None:
        state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    compiled_init = init.lower(keys, hp).compile()
    done = (jax.ShapeDtypeStruct((), np.int32),) if evaluates else ()
    compiled_run: dict[int, Callable] = {k: run.lower(state, hp, *done, k).compile()
                                         for k in sorted(set(sizes))}
    seconds = time.perf_counter() - t0
    check_memory([compiled_init, *compiled_run.values()], used,
                 "--num-envs, --num-steps or --seeds (or spread the seeds over more devices)")
    if debug_nans:
        compiled_run = {k: _raising_nans(c) for k, c in compiled_run.items()}
    cache = "off" if entries is None else "hit" if _cache_entries() == entries else "miss"
    return ChunkedRun(compiled_init, compiled_run, sizes, seconds, cache, trainer,
                      devices=used, groups=1 if debug_nans else groups, sharding=sharding,
                      start=start if evaluates else None)


def _raising_nans(compiled: Callable) -> Callable:
    """Wrap a checkified call: return its outputs, or raise ``FloatingPointError``."""

    def call(state: TrainState, hp: HParams) -> tuple[TrainState, dict]:
        error, out = compiled(state, hp)
        exc = error.get_exception()
        seeds = ""
        if exc is not None and hasattr(exc, "error_mapping"):  # one error per seed
            seeds = f" (seed(s) {', '.join(str(i[0]) for i in exc.error_mapping)})"
            exc = next(iter(exc.error_mapping.values()))
        if exc is not None:
            frames = [line.strip() for line in str(exc.traceback_info).splitlines()
                      if f"{os.sep}jaxadv{os.sep}" in line]  # innermost first
            where = ", called from ".join(
                line[line.rindex(f"{os.sep}jaxadv{os.sep}") + 1:] for line in frames[:3]
            )
            raise FloatingPointError(f"{exc}".rstrip(".") + (f" at {where}" if where else "") + seeds)
        return out

    return call


class RunStopped(Exception):
    """The run stopped before its end.

    ``reason``: ``"stopped"`` (the caller's ``stop()`` asked), ``"nonfinite"`` (a NaN or
    ±inf in the loss, gradient or parameters) or ``"error"`` (nothing usable to resume).
    ``update``: the updates done when it stopped; ``checkpoint``: the directory of the last
    checkpoint saved (``None``: none, or no checkpoints kept); ``found``: with
    ``debug_nans``, checkify named the operation. ``status`` is the exit status a command
    line would return for it (1 after non-finite values, 2 for an error; the caller sets its
    own for ``"stopped"``). ``str(exc)`` says what happened, in the library's words.
    """

    def __init__(self, message: str, status: int, *, reason: str = "error", update: int = 0,
                 checkpoint: pathlib.Path | None = None, found: bool = False):
        super().__init__(message)
        self.status, self.reason, self.update = status, reason, update
        self.checkpoint, self.found = checkpoint, found


CHECKPOINT_SECONDS = 60.0
"""Without ``checkpoint_every``, a checkpoint is due this many seconds after the last one."""


class _Saver:
    """Checkpoints ``every`` updates apart (``None``: :data:`CHECKPOINT_SECONDS` apart) at call
    ends, and on demand, written by one background thread so that the next call runs
    meanwhile. :meth:`wait` blocks until the last one is on disk (and re-raises its error).
    Without a ``store`` it keeps nothing."""

    def __init__(self, store: CheckpointStore | None, every: int | None, record: dict[str, Any],
                 last: int):
        self.store, self.every, self.record = store, every, record
        self.last = last  # the update of the latest checkpoint (0: none)
        self._since = time.perf_counter()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxadv-save")
        self._pending: concurrent.futures.Future | None = None

    def due(self, done: int) -> bool:
        if self.store is None:
            return False
        if self.every is None:
            return time.perf_counter() - self._since >= CHECKPOINT_SECONDS
        return done - self.last >= self.every

    def save(self, done: int, state: TrainState | None, history: dict[str, np.ndarray],
             seconds: float) -> None:
        if self.store is not None and done > self.last:
            self.wait()
            self._pending = self._pool.submit(self.store.save, done, state, history,
                                              train_seconds=seconds, config=self.record)
            self.last, self._since = done, time.perf_counter()

    def latest(self) -> pathlib.Path | None:
        """The directory of the latest checkpoint saved (``None``: none)."""
        return None if self.store is None or not self.last else self.store.directory / str(self.last)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def _extend(history: dict[str, np.ndarray], metrics: dict[str, np.ndarray],
            wall_seconds: float) -> dict[str, np.ndarray]:
    """``history`` with one call's ``metrics`` (``[seeds, k]`` each) and its wall time."""
    k = np.shape(metrics["episode_return"])[1]
    new = {**{n: np.asarray(v) for n, v in metrics.items()},
           "wall_seconds": np.full(k, wall_seconds)}
    if not history:
        return new
    return {n: np.concatenate([history[n], v], axis=-1) for n, v in new.items()}


def _nonfinite_message(flags: np.ndarray, first_update: int) -> str:
    """Which quantity went non-finite at which update, for which seeds: ``flags [seeds, k]``."""
    bad = flags != 0
    col = int(np.argmax(bad.any(axis=0)))
    seeds = np.flatnonzero(bad[:, col])
    what = [name for i, name in enumerate(NONFINITE) if any(flags[s, col] >> i & 1 for s in seeds)]
    return (f"non-finite {' and '.join(what)} (NaN or inf) at update {first_update + col}, "
            f"seed(s) {', '.join(map(str, seeds))}")


def _nonfinite_stop(what: str, saver: _Saver, found: bool = False) -> RunStopped:
    """The :class:`RunStopped` of a run stopped by non-finite values (``found``: by
    ``debug_nans``), after its last finite state is on disk."""
    saver.wait()
    return RunStopped(what, 1, reason="nonfinite", update=saver.last, checkpoint=saver.latest(),
                      found=found)


@dataclasses.dataclass(frozen=True)
class RunProgress:
    """Where a run stands after a call (and once before the first): ``done`` of ``total``
    updates, ``env_steps`` per seed, all seeds' ``steps_per_second`` since this process
    started it (``None`` before the first call) and the mean over seeds of each seed's latest
    finished-episode return (NaN while none has finished)."""

    done: int
    total: int
    env_steps: int
    total_env_steps: int
    steps_per_second: float | None
    mean_return: float


def _ignore(*_: Any) -> None:
    """A hook left out: nothing happens."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How :func:`drive` runs a configuration (everything but the config and hparams).

    Every output is optional: by default a run keeps no checkpoint, writes no file, prints
    nothing and runs to its end; the result comes back in memory (:class:`RunResult`).
    """

    seed: int = 0
    seeds: int = 1
    chunk_updates: int | None = None
    """updates per compiled call (default :func:`default_chunk_updates`)."""
    checkpoints: pathlib.Path | None = None
    """keep checkpoints in this directory (orbax, :mod:`jaxadv.engine.checkpoint`); ``None``:
    none (and nothing to resume from)."""
    checkpoint_every: int | None = None
    """updates between checkpoints, rounded up to whole calls (default: a minute apart); one
    is also written at the end and when ``stop`` asks."""
    keep_checkpoints: int = 2
    resume: bool = False
    """continue from the latest good checkpoint in ``checkpoints``."""
    debug_nans: bool = False
    """compile each call with checkify's NaN checks (slower): a NaN raises :class:`RunStopped`
    naming the operation."""
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    """the run's JSON description; every checkpoint carries it."""
    seed_groups: int | None = None
    """the seeds are computed in this many equal groups (default:
    :func:`~jaxadv.engine.devices.seed_groups` of the local devices); a resumed run keeps its own."""
    devices: int | None = None
    """spread the groups over at most this many local devices (default: all)."""
    sinks: tuple[Any, ...] = ()
    """where each call's metrics go: objects with ``append(metrics, first_update,
    wall_seconds)`` (metrics ``[seeds, k]``), such as
    :class:`~jaxadv.engine.metrics.MetricsWriter`; once compiled, a resumed run gives a sink
    that has ``resumed(history)`` the metrics it restored, then only the updates it computes."""
    progress: Callable[[RunProgress], Any] = _ignore
    """called before the first call and after each one."""
    log: Callable[[str], Any] = _ignore
    """told what happens: resuming, compiling, compiled."""
    warn: Callable[[str], Any] = _ignore
    """told of anything odd that does not stop the run (a checkpoint passed over on resume)."""
    stop: Callable[[], bool] = lambda: False
    """asked after each call: ``True`` saves a checkpoint and raises :class:`RunStopped`
    (``reason="stopped"``) unless that call was the last."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`drive` returns: the final ``state`` (leaves ``[seeds, ...]``), the metrics
    ``history`` (each ``[seeds, num_updates]``, plus ``wall_seconds [num_updates]``), the
    ``summary`` (:func:`~jaxadv.engine.metrics.summarize` plus the driver's timings), the
    :class:`~jaxadv.engine.train.Trainer` that ran and ``resumed_from``, the updates a resumed run
    had done before (0 for a fresh one)."""

    state: TrainState
    history: dict[str, np.ndarray]
    summary: dict[str, Any]
    trainer: Trainer
    resumed_from: int = 0


def _restore(store: CheckpointStore, trainer: Trainer, keys: jax.Array, hp: HParams,
             warn: Callable[[str], Any]):
    abstract = jax.eval_shape(jax.vmap(trainer.init, (0, None)), keys, hp)
    try:
        return store.restore(abstract, warn=warn)
    except CheckpointError as exc:
        raise RunStopped(f"error: {exc}", 2) from None


def drive(config: TrainConfig, hp: HParams, options: RunOptions = RunOptions()) -> RunResult:
    """Train ``config`` on ``options.seeds`` seeds in compiled chunks, handing each call's
    metrics to ``options.sinks`` and keeping checkpoints in ``options.checkpoints`` as it goes
    (with ``options.resume``: from the latest good one there). Returns the
    :class:`RunResult`; raises :class:`RunStopped` when ``options.stop()`` asks, on
    non-finite values, or with no usable checkpoint to resume. Installs no signal handler
    and prints nothing (``options.log`` / ``warn`` / ``progress`` hear what happens)."""
    if options.resume and options.checkpoints is None:
        raise ValueError("`resume` needs `checkpoints`, the directory to resume from")
    k = min(options.chunk_updates or default_chunk_updates(config.num_updates), config.num_updates)
    keys = jax.random.split(jax.random.key(options.seed), options.seeds)
    with contextlib.ExitStack() as stack:
        store = None if options.checkpoints is None else stack.enter_context(
            CheckpointStore(options.checkpoints, options.keep_checkpoints))
        state, history, seconds = None, {}, 0.0
        if options.resume:
            store = cast(CheckpointStore, store)  # resume needs checkpoints (checked above)
            checkpoint = _restore(store, make_trainer(config), keys, hp, options.warn)
            state, history, seconds = checkpoint.state, checkpoint.history, checkpoint.train_seconds
            resumed = cast(pathlib.Path, options.checkpoints)
            options.log(f"resuming {resumed.parent} after update {checkpoint.step} "
                        f"of {config.num_updates}")
        start = len(history["wall_seconds"]) if history else 0
        options.log(f"compiling {config.algo} on {config.env}: {options.seeds} seed(s), "
                    f"{config.num_updates} updates, {k} per call"
                    f"{', with NaN checks' if options.debug_nans else ''} …")
        groups = options.seed_groups or seed_groups(options.seeds, jax.local_device_count())
        chunked = compile_chunked(config, hp, keys, k, start=start, debug_nans=options.debug_nans,
                                  groups=groups, devices=options.devices)
        cached = " (from the compilation cache)" if chunked.cache == "hit" else ""
        spread = (f"; {chunked.groups} groups of seeds on {chunked.devices} device(s)"
                  if chunked.groups > 1 else "")
        options.log(f"compiled in {chunked.compile_seconds:.1f} s{cached}{spread}")
        for sink in options.sinks:  # after the compile, which a signal may cut short
            getattr(sink, "resumed", _ignore)(history)
        saver = _Saver(store, options.checkpoint_every, options.record, start)
        try:
            state, history, timing = _loop(chunked, keys, hp, config, options, state=state,
                                           history=history, saver=saver, train_seconds=seconds)
        finally:
            saver.close()
    returns = np.asarray(history["episode_return"], np.float64)
    summary = summarize(config, returns, np.asarray(history["episodes"]), seed=options.seed,
                        seeds=options.seeds, chunk_updates=k, train_seconds=timing["train_seconds"],
                        compile_seconds=chunked.compile_seconds)
    summary.update(num_calls=len(chunk_sizes(config.num_updates, k)),
                   host_seconds=timing["host_seconds"], compile_cache=chunked.cache,
                   devices=chunked.devices, seed_groups=chunked.groups)
    return RunResult(state, history, summary, cast(Trainer, chunked.trainer), resumed_from=start)


def _loop(
    chunked: ChunkedRun, keys: jax.Array, hp: HParams, config: TrainConfig, options: RunOptions,
    *, state: TrainState | None, history: dict[str, np.ndarray], saver: _Saver,
    train_seconds: float,
) -> tuple[TrainState, dict[str, np.ndarray], dict[str, float]]:
    """Run every chunk, handing metrics to the sinks, reporting progress and saving
    checkpoints.

    Starts from ``state`` after the updates in ``history`` (a resumed run; ``None``: from
    ``init``), ``train_seconds`` already spent. Returns the final state, the whole
    ``history`` and the timings: ``train_seconds`` (compile excluded) and ``host_seconds``
    (of those, the time the main thread spent on host work between calls, which overlaps
    the next call). Raises :class:`RunStopped` when ``options.stop()`` asks or on non-finite
    values, having saved the last finite state.
    """
    seeds, batch_size = keys.shape[0], config.batch_size
    done = start = len(history["wall_seconds"]) if history else 0
    latest = np.full((seeds, 1), np.nan)  # each seed's latest finished-episode return
    if history:
        latest = forward_fill(np.asarray(history["episode_return"], np.float64))[:, -1:]
    t0 = time.perf_counter()
    host = 0.0
    seconds = lambda: train_seconds + time.perf_counter() - t0
    report = lambda sps: options.progress(RunProgress(
        done, config.num_updates, done * batch_size, config.num_updates * batch_size, sps,
        float(seed_mean_std(latest)[0][0])))
    report(None)
    chunks = chunked.iterate(keys, hp, state)
    while True:
        try:
            new_state, metrics = next(chunks)
            metrics = jax.device_get(metrics)  # waits for this chunk; the next one runs
        except StopIteration:
            break
        except FloatingPointError as exc:  # debug_nans: checkify found a NaN
            saver.save(done, state, history, seconds())
            raise _nonfinite_stop(str(exc), saver, found=True) from None
        t_host = time.perf_counter()
        k, now = np.shape(metrics["episode_return"])[1], seconds()
        for sink in options.sinks:
            sink.append(metrics, done + 1, now)
        if np.any(metrics["nonfinite"]):  # keep the last finite state, not this one
            saver.save(done, state, history, seconds())
            raise _nonfinite_stop(_nonfinite_message(np.asarray(metrics["nonfinite"]), done + 1),
                                  saver)
        state, history, done = new_state, _extend(history, metrics, now), done + k
        chunk_returns = np.asarray(metrics["episode_return"], np.float64)  # [seeds, k]
        latest = forward_fill(np.concatenate([latest, chunk_returns], axis=1))[:, -1:]
        report((done - start) * batch_size * seeds / (time.perf_counter() - t0))
        stopping = options.stop()
        if stopping or saver.due(done) or done == config.num_updates:
            saver.save(done, state, history, seconds())
        host += time.perf_counter() - t_host
        if stopping and done < config.num_updates:
            saver.wait()
            raise RunStopped(f"stopped after update {done} of {config.num_updates}", 1,
                             reason="stopped", update=done, checkpoint=saver.latest())
    saver.wait()  # the last checkpoint is on disk before the run counts as done
    return cast(TrainState, state), history, {"train_seconds": seconds(), "host_seconds": host}
