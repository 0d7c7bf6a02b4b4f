"""The run driver: a compiled trainer in chunks of updates, with progress, checkpoints,
interruption and non-finite stops; the result comes back in memory.

:func:`drive` compiles ``init`` and ``run(k)`` (:meth:`~jaxadv.engine.train.Trainer.run`, a
``lax.scan`` over ``k`` updates) over a leading seed axis and calls ``run`` once per chunk.
Each call is one fused program and chaining the calls gives the same numbers as
``make_train``: bit for bit ``jax.vmap(train)`` for several seeds, and ``train`` itself for
one seed (whose program has no seed axis at all, so no matrix product becomes a batched one).

The host work never stalls the program: the next call is dispatched before the metrics of
the one before are read, and checkpoints are written by a background thread, so CSV rows,
the progress bar and orbax's writes overlap the computation. Checkpoints are saved at call
ends every ``checkpoint_every`` updates (default: a minute of training apart), at the end
and on SIGINT/SIGTERM (:class:`Interrupts`);
a non-finite loss, gradient or parameter (the ``nonfinite`` metric) stops the run at the end
of the call in which it appeared, keeping the last finite state. :class:`RunStopped` says why
a run stopped and how to go on.

Compiled programs are kept in JAX's persistent compilation cache
(:func:`enable_compile_cache`), so a second run of the same configuration — a resumed run,
a repeated experiment — loads them instead of compiling.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import math
import os
import pathlib
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import jax
import numpy as np
from jax.experimental import checkify
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from jaxadv.engine.checkpoint import CheckpointError, CheckpointStore
from jaxadv.engine.devices import check_memory, seed_groups
from jaxadv.engine.metrics import MetricsWriter, summarize
from jaxadv.engine.train import NONFINITE, HParams, TrainConfig, Trainer, TrainState, make_trainer
from jaxadv.stats import forward_fill, seed_mean_std

__all__ = [
    "CHECKPOINT_SECONDS",
    "ChunkedRun",
    "Interrupts",
    "RunOptions",
    "RunResult",
    "RunStopped",
    "chunk_sizes",
    "compile_chunked",
    "default_chunk_updates",
    "default_compile_cache",
    "drive",
    "enable_compile_cache",
    "progress_bar",
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
    directory = jax.config.jax_compilation_cache_dir
    if not jax.config.jax_enable_compilation_cache or not directory:
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
    run_fn = lambda state, hp, k: seed_axis(functools.partial(trainer.run, num_updates=k))(state, hp)
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
    compiled_run = {k: run.lower(state, hp, *done, k).compile() for k in sorted(set(sizes))}
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


def progress_bar(console: Console, label: str, *columns: TextColumn) -> Progress:
    """A progress bar: ``label``, the bar, ``columns``, elapsed and remaining time."""
    return Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), *columns, TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    )


class RunStopped(Exception):
    """The run stopped before its end: interrupted, non-finite values, or nothing to resume.

    ``str(exc)`` says why and how to go on; ``status`` is the exit status the command line
    returns (130 / 143 after SIGINT / SIGTERM, 1 after non-finite values, 2 for an error).
    """

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class Interrupts:
    """SIGINT and SIGTERM while a command runs: the first asks the driver to stop after the
    call in flight (``signum`` is set); a second ends the process at once with status
    128 + the signal. Checkpoints and sweep chunks are only ever renamed into place, so the
    last one stays good. ``stopping`` and ``intact`` word the two messages.

    ``at_once``: asked on the first signal; where it returns a message (``{signal}`` is
    replaced by the signal's name), the process prints it and ends at once with status
    128 + the signal, as where nothing in flight is worth waiting for (a compile). Where an
    outer guard is installed (the command line's, for a whole command), entering an inner one
    marks the outer ``deferring``: the run has started, so from then on its signal waits
    for the outputs to be written.

    A watcher thread reads the signal numbers that Python's C-level handler writes to a
    wakeup socket, so a signal acts even while the main thread waits on XLA.
    Outside the main thread (where signals cannot be caught) it does nothing.
    """

    _installed_guards: ClassVar[list[Interrupts]] = []

    def __init__(self, console: Console, *,
                 stopping: str = "the call in flight to save a checkpoint",
                 intact: str = "the last finished checkpoint is intact",
                 at_once: Callable[[], str | None] | None = None):
        self.console = console
        self.signum: int | None = None
        self.deferring = False
        self._installed = False
        self._stopping, self._intact, self._at_once = stopping, intact, at_once

    def stopped(self, progress: str, saved: str, resume: str) -> RunStopped:
        """The :class:`RunStopped` for the signal received: ``"<SIGNAL>: stopped after
        <progress>; saved <saved>"`` and the command that resumes, status 128 + the signal."""
        name = signal.Signals(self.signum).name
        return RunStopped(f"{name}: stopped after {progress}; saved {saved}\nresume with: {resume}",
                          128 + self.signum)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        for outer in Interrupts._installed_guards:
            outer.deferring = True
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
        self._thread = threading.Thread(target=self._watch, name="jaxadv-signals", daemon=True)
        self._thread.start()
        self._installed = True
        Interrupts._installed_guards.append(self)
        return self

    def _watch(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                name = signal.Signals(signum).name
                if self.signum is None:
                    message = None if self.deferring or self._at_once is None else self._at_once()
                    if message is not None:
                        os.write(2, f"\n{message.format(signal=name)}\n".encode())
                        os._exit(128 + signum)
                    self.signum = signum
                    self.console.print(f"{name}: stopping after {self._stopping}; again to "
                                       "quit at once")
                else:
                    os.write(2, f"\nquitting at once; {self._intact}\n".encode())
                    os._exit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        if not self._installed:
            return
        Interrupts._installed_guards.remove(self)
        for s, handler in self._old.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(self._old_fd)
        self._writer.close()  # the watcher's recv returns b""
        self._thread.join(timeout=5)
        self._reader.close()


CHECKPOINT_SECONDS = 60.0
"""Without ``checkpoint_every``, a checkpoint is due this many seconds after the last one."""


class _Saver:
    """Checkpoints ``every`` updates apart (``None``: :data:`CHECKPOINT_SECONDS` apart) at call
    ends, and on demand, written by one background thread so that the next call runs
    meanwhile. :meth:`wait` blocks until the last one is on disk (and re-raises its error)."""

    def __init__(self, store: CheckpointStore, every: int | None, record: dict[str, Any],
                 last: int):
        self.store, self.every, self.record = store, every, record
        self.last = last  # the update of the latest checkpoint (0: none)
        self._since = time.perf_counter()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxadv-save")
        self._pending: concurrent.futures.Future | None = None

    def due(self, done: int) -> bool:
        if self.every is None:
            return time.perf_counter() - self._since >= CHECKPOINT_SECONDS
        return done - self.last >= self.every

    def save(self, done: int, state: TrainState, history: dict[str, np.ndarray],
             seconds: float) -> None:
        if done > self.last:
            self.wait()
            self._pending = self._pool.submit(self.store.save, done, state, history,
                                              train_seconds=seconds, config=self.record)
            self.last, self._since = done, time.perf_counter()

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


class _Sinks:
    """Several metrics sinks appended to as one."""

    def __init__(self, sinks: tuple[Any, ...]):
        self._sinks = sinks

    def append(self, metrics: dict[str, np.ndarray], first_update: int, wall_seconds: float) -> None:
        for sink in self._sinks:
            sink.append(metrics, first_update, wall_seconds)


def _replay(writer: MetricsWriter, history: dict[str, np.ndarray]) -> None:
    """Rewrite ``metrics.csv`` rows from a checkpoint's ``history``, one group per call."""
    if not history:
        return
    wall = history["wall_seconds"]
    metrics = {n: v for n, v in history.items() if n != "wall_seconds"}
    cuts = [0, *(int(c) + 1 for c in np.flatnonzero(np.diff(wall) != 0)), len(wall)]
    for i, j in itertools.pairwise(cuts):
        writer.append({n: v[:, i:j] for n, v in metrics.items()}, i + 1, float(wall[i]))


def _nonfinite_message(flags: np.ndarray, first_update: int) -> str:
    """Which quantity went non-finite at which update, for which seeds: ``flags [seeds, k]``."""
    bad = flags != 0
    col = int(np.argmax(bad.any(axis=0)))
    seeds = np.flatnonzero(bad[:, col])
    what = [name for i, name in enumerate(NONFINITE) if any(flags[s, col] >> i & 1 for s in seeds)]
    return (f"non-finite {' and '.join(what)} (NaN or inf) at update {first_update + col}, "
            f"seed(s) {', '.join(map(str, seeds))}")


def _nonfinite_stop(what: str, saver: _Saver, resume: str, found: bool = False) -> str:
    """The message of a run stopped by non-finite values (``found``: by --debug-nans;
    ``resume``: the command that continues the run)."""
    if saver.last:
        kept = (f"The last finite state, after update {saver.last}, is checkpoint "
                f"{saver.store.directory / str(saver.last)}")
        if not found:
            kept += f"; rerun from it with `{resume} --debug-nans` to find the operation"
    else:
        kept = "No checkpoint was written before it"
        if not found:
            kept += "; rerun the same command with --debug-nans to find the operation"
    return f"error: {what}; training stopped. {kept}."


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How :func:`drive` runs a configuration (everything but the config and hparams).

    ``record`` is the run's JSON description (what ``config.json`` holds); every checkpoint
    carries it.
    """

    out: pathlib.Path
    seed: int = 0
    seeds: int = 1
    chunk_updates: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    resume: bool = False
    debug_nans: bool = False
    quiet: bool = False
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed_groups: int | None = None
    """the seeds are computed in this many equal groups (default:
    :func:`~jaxadv.engine.devices.seed_groups` of the local devices); a resumed run keeps its own."""
    devices: int | None = None
    """spread the groups over at most this many local devices (default: all)."""
    loggers: tuple[Any, ...] = ()
    """more sinks of each call's metrics beside ``metrics.csv``, each with
    ``append(metrics, first_update, wall_seconds)`` (:mod:`jaxadv.cli.tracking`); a resumed run
    gives them only the updates it computes."""
    resume_command: str | None = None
    """the command that continues this run, in messages; default ``jaxadv train --resume OUT``."""


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


def drive(config: TrainConfig, hp: HParams, options: RunOptions) -> RunResult:
    """Train ``config`` on ``options.seeds`` seeds in compiled chunks with a progress bar,
    writing ``metrics.csv`` and ``checkpoints/`` under ``options.out`` as it goes (with
    ``options.resume``: from the latest good checkpoint there). Returns the
    :class:`RunResult`; raises :class:`RunStopped` when interrupted, on non-finite values,
    or with no usable checkpoint to resume."""
    out = options.out
    k = min(options.chunk_updates or default_chunk_updates(config.num_updates), config.num_updates)
    err = Console(stderr=True, quiet=options.quiet)
    warn = lambda message: print(message, file=sys.stderr)  # even with --quiet
    keys = jax.random.split(jax.random.key(options.seed), options.seeds)
    with CheckpointStore(out / "checkpoints", options.keep_checkpoints) as store:
        state, history, seconds = None, {}, 0.0
        if options.resume:
            checkpoint = _restore(store, make_trainer(config), keys, hp, warn)
            state, history, seconds = checkpoint.state, checkpoint.history, checkpoint.train_seconds
            err.print(f"resuming {out} after update {checkpoint.step} of {config.num_updates}")
        start = len(history["wall_seconds"]) if history else 0
        err.print(f"compiling {config.algo} on {config.env}: {options.seeds} seed(s), "
                  f"{config.num_updates} updates, {k} per call"
                  f"{', with NaN checks' if options.debug_nans else ''} …")
        groups = options.seed_groups or seed_groups(options.seeds, jax.local_device_count())
        chunked = compile_chunked(config, hp, keys, k, start=start, debug_nans=options.debug_nans,
                                  groups=groups, devices=options.devices)
        cached = " (from the compilation cache)" if chunked.cache == "hit" else ""
        spread = (f"; {chunked.groups} groups of seeds on {chunked.devices} device(s)"
                  if chunked.groups > 1 else "")
        err.print(f"compiled in {chunked.compile_seconds:.1f} s{cached}{spread}")
        saver = _Saver(store, options.checkpoint_every, options.record, start)
        try:
            with MetricsWriter(out / "metrics.csv", config.batch_size) as writer:
                _replay(writer, history)
                sinks = _Sinks((writer, *options.loggers))
                state, history, timing = _loop(chunked, keys, hp, config, sinks, err, state=state,
                                               history=history, saver=saver, train_seconds=seconds,
                                               resume=options.resume_command or
                                               f"jaxadv train --resume {shlex.quote(str(out))}")
        finally:
            saver.close()
    returns = np.asarray(history["episode_return"], np.float64)
    summary = summarize(config, returns, np.asarray(history["episodes"]), seed=options.seed,
                        seeds=options.seeds, chunk_updates=k, train_seconds=timing["train_seconds"],
                        compile_seconds=chunked.compile_seconds)
    summary.update(num_calls=len(chunk_sizes(config.num_updates, k)),
                   host_seconds=timing["host_seconds"], compile_cache=chunked.cache,
                   devices=chunked.devices, seed_groups=chunked.groups)
    return RunResult(state, history, summary, chunked.trainer, resumed_from=start)


def _loop(
    chunked: ChunkedRun, keys: jax.Array, hp: HParams, config: TrainConfig,
    writer: MetricsWriter | _Sinks, console: Console, *, state: TrainState | None,
    history: dict[str, np.ndarray], saver: _Saver, train_seconds: float, resume: str,
) -> tuple[TrainState, dict[str, np.ndarray], dict[str, float]]:
    """Run every chunk, appending metrics, updating the progress bar and saving checkpoints.

    Starts from ``state`` after the updates in ``history`` (a resumed run; ``None``: from
    ``init``), ``train_seconds`` already spent. Returns the final state, the whole
    ``history`` and the timings: ``train_seconds`` (compile excluded) and ``host_seconds``
    (of those, the time the main thread spent on host work between calls, which overlaps
    the next call). ``resume``: the command that continues the run, in messages. Raises
    :class:`RunStopped` after a signal or on non-finite values,
    having saved the last finite state.
    """
    seeds, batch_size = keys.shape[0], config.batch_size
    total = config.num_updates * batch_size
    done = start = len(history["wall_seconds"]) if history else 0
    latest = np.full((seeds, 1), np.nan)  # each seed's latest finished-episode return
    if history:
        latest = forward_fill(np.asarray(history["episode_return"], np.float64))[:, -1:]
    t0 = time.perf_counter()
    host = 0.0
    seconds = lambda: train_seconds + time.perf_counter() - t0
    columns = (  # env steps per seed, steps/s (all seeds), the latest return
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
        TextColumn("{task.fields[sps]}"),
        TextColumn("return {task.fields[ret]}"),
    )
    with Interrupts(console) as interrupts, progress_bar(console, "train", *columns) as progress:
        task = progress.add_task("train", total=total, completed=done * batch_size, sps="",
                                 ret="–")
        chunks = chunked.iterate(keys, hp, state)
        while True:
            try:
                new_state, metrics = next(chunks)
                metrics = jax.device_get(metrics)  # waits for this chunk; the next one runs
            except StopIteration:
                break
            except FloatingPointError as exc:  # --debug-nans: checkify found a NaN
                saver.save(done, state, history, seconds())
                saver.wait()
                raise RunStopped(_nonfinite_stop(str(exc), saver, resume, found=True), 1) from None
            t_host = time.perf_counter()
            k, now = np.shape(metrics["episode_return"])[1], seconds()
            writer.append(metrics, done + 1, now)
            if np.any(metrics["nonfinite"]):  # keep the last finite state, not this one
                saver.save(done, state, history, seconds())
                saver.wait()
                raise RunStopped(_nonfinite_stop(
                    _nonfinite_message(np.asarray(metrics["nonfinite"]), done + 1),
                    saver, resume), 1)
            state, history, done = new_state, _extend(history, metrics, now), done + k
            chunk_returns = np.asarray(metrics["episode_return"], np.float64)  # [seeds, k]
            latest = forward_fill(np.concatenate([latest, chunk_returns], axis=1))[:, -1:]
            mean_return = seed_mean_std(latest)[0][0]
            elapsed = time.perf_counter() - t0
            progress.update(
                task,
                completed=done * batch_size,
                sps=f"{(done - start) * batch_size * seeds / elapsed:,.0f} steps/s",
                ret="–" if np.isnan(mean_return) else f"{mean_return:.1f}",
            )
            if interrupts.signum or saver.due(done) or done == config.num_updates:
                saver.save(done, state, history, seconds())
            host += time.perf_counter() - t_host
            if interrupts.signum and done < config.num_updates:
                saver.wait()
                raise interrupts.stopped(
                    f"update {done} of {config.num_updates}",
                    f"checkpoint {saver.store.directory / str(done)} and metrics.csv",
                    resume)
        saver.wait()  # the last checkpoint is on disk before the run counts as done
    return state, history, {"train_seconds": seconds(), "host_seconds": host}
