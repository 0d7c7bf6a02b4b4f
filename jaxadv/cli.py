"""The ``jaxadv`` command line, built with tyro from the config dataclasses.

``jaxadv train --env CartPole-v1 --algo ppo --seeds 16 --out runs/cartpole`` trains
one :class:`~jaxadv.train.TrainConfig` on several seeds at once (``vmap``), drives the
fused update in chunks of ``--chunk-updates`` updates per compiled call (a
``lax.scan`` inside each call), shows progress between chunks and writes
``config.json``, ``metrics.csv``, ``summary.json`` and ``returns.png`` under ``--out``.
Between calls it saves checkpoints with orbax under ``--out/checkpoints/`` (see
:mod:`jaxadv.checkpoint`); ``jaxadv train --resume runs/cartpole`` continues a run from
its latest good one, bit for bit as if it had not stopped. Ctrl-C (SIGINT) or SIGTERM
finishes the call in flight, saves, prints the command that resumes and exits with
128 + the signal number (130, 143); a second one quits at once. A NaN or ±inf in the
loss, the gradient or the parameters (the ``nonfinite`` metric) stops the run at the end
of the call in which it appeared, keeping the last finite state as a checkpoint.

``jaxadv sweep --grid.lr 1e-4 3e-4 1e-3 --grid.gae-lambda 0.8 0.95 1.0 --seeds 8`` trains
every point of a grid (or ``--samples`` random draws) on every seed with
:func:`~jaxadv.sweep.run_sweep` — one compile per static group, a progress bar over its
chunks — and writes ``sweep.csv``, ``summary.json`` and ``sweep.png`` under ``--out``.
Each chunk's results are saved under ``--out/chunks/`` as soon as it finishes
(:class:`~jaxadv.checkpoint.SweepChunks`); ``jaxadv sweep --resume runs/sweep`` computes
only the chunks that are missing and writes the same files, bit for bit, as a sweep that
never stopped. Ctrl-C and SIGTERM finish and save the chunk in flight, as for ``train``.

Every flag is checked right after the arguments are parsed — ``TrainConfig.__post_init__``,
``HParams.validate`` and the command's ``check()`` (:meth:`TrainArgs.check`,
:meth:`SweepArgs.check`: every grid value and every static configuration it makes) — so
a bad value is refused with ``error: <message naming the field>`` and exit status 2
before anything compiles.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal

import jax
import numpy as np
import tyro
from jax.experimental import checkify
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from jaxadv.checkpoint import CheckpointError, CheckpointStore, SweepChunks, checkpoint_steps
from jaxadv.report import (
    MetricsWriter,
    forward_fill,
    plot_returns,
    plot_sweep,
    seed_mean_std,
    summarize,
    summarize_sweep,
    summary_table,
    sweep_table,
    write_json,
    write_sweep_csv,
)
from jaxadv.sequence_cli import SequenceArgs, sequence_command
from jaxadv.sweep import ChunkId, ChunkResult, LogUniform, Uniform, expand_grid, run_sweep
from jaxadv.train import NONFINITE, HParams, TrainConfig, TrainState, make_trainer
from jaxadv.variance_cli import VarianceArgs, variance_command

__all__ = [
    "ChunkedRun",
    "Grid",
    "RunStopped",
    "SweepArgs",
    "TrainArgs",
    "chunk_sizes",
    "compile_chunked",
    "default_chunk_updates",
    "main",
    "resume_args",
    "sweep_command",
    "train_command",
]


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """Train one configuration on --seeds seeds at once; write config.json, metrics.csv,
    summary.json, returns.png and checkpoints/ under --out (--resume DIR continues a run)."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")]
    hparams: Annotated[HParams, tyro.conf.arg(name="")]
    seed: int = 0
    """base seed; the seeds' keys are jax.random.split(jax.random.key(seed), seeds)."""
    seeds: int = 4
    """independent runs, vmapped into one program."""
    out: pathlib.Path = pathlib.Path("runs/train")
    """output directory (created; files in it are overwritten)."""
    chunk_updates: int | None = None
    """updates per compiled call; default: about 32 calls per run, all of one length if possible."""
    resume: pathlib.Path | None = None
    """continue the run in this directory (an earlier --out) from its latest good checkpoint, with the settings in its config.json; a flag that would change a TrainConfig or HParams field, --seed or --seeds is refused."""
    checkpoint_every: int | None = None
    """updates between checkpoints, rounded up to whole calls; one is also written at the end and on Ctrl-C/SIGTERM; default: about 8 per run."""
    keep_checkpoints: int = 2
    """how many of the latest checkpoints to keep under --out/checkpoints."""
    debug_nans: bool = False
    """diagnostic rerun (e.g. with --resume after a non-finite stop): compile each call with jax.experimental.checkify NaN checks and report the first operation that makes a NaN, with its source line (slower)."""
    quiet: bool = False
    """no progress bar and no summary table."""

    def check(self) -> TrainArgs:
        """Refuse a bad value with a ``ValueError`` naming the field; compiles nothing.

        With ``resume``: the directory must hold a ``config.json`` and a checkpoint, and
        no static (:class:`TrainConfig`) or :class:`HParams` field, ``seed`` or ``seeds``
        may differ from it. Without: ``out`` must not hold an unfinished run's checkpoints.
        """
        _check_positive(self, "seeds", "chunk_updates", "checkpoint_every", "keep_checkpoints")
        self.hparams.validate()
        if self.resume is None:
            _check_fresh_out(self.out)
            return self
        stored = _stored_args(self.resume)
        _refuse_changes(_changes(stored, self), "run", self.resume / "config.json")
        if self.out.resolve() != self.resume.resolve():
            raise ValueError(f"`out` = {str(self.out)!r}: --resume continues the run in its own "
                             f"directory {str(self.resume)!r}; leave --out out")
        if not checkpoint_steps(self.resume / "checkpoints"):
            raise ValueError(f"`resume`: {self.resume / 'checkpoints'} holds no checkpoint to "
                             "resume from")
        return self


def _stored_args(run_dir: pathlib.Path) -> TrainArgs:
    """The :class:`TrainArgs` that ``run_dir/config.json`` records (``out``, ``resume``: run_dir)."""
    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text())
        run = data["run"]
        return TrainArgs(
            config=TrainConfig(**data["train_config"]), hparams=HParams(**data["hparams"]),
            seed=run["seed"], seeds=run["seeds"], out=run_dir, chunk_updates=run["chunk_updates"],
            resume=run_dir, checkpoint_every=run.get("checkpoint_every"),
            keep_checkpoints=run.get("keep_checkpoints", 2),
        )
    except FileNotFoundError:
        raise ValueError(f"`resume`: {path} not found; --resume takes the --out directory of "
                         "an earlier `jaxadv train`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`resume`: {path} does not describe a train run ({exc})") from None


def _refuse_changes(changes: Iterator[tuple[str, Any, Any]], what: str, where: pathlib.Path) -> None:
    """Raise a ValueError naming the first ``(field, old, new)`` that would change the resumed
    ``what`` ("run" or "sweep") stored in ``where``."""
    for field, old, new in changes:
        raise ValueError(
            f"`{field}` = {new!r} would change the {what} being resumed, which has "
            f"{field} = {old!r} (in {where}); a resumed {what} keeps its settings: leave the "
            f"flag out, or start a new {what} with another --out"
        )


def _changes(stored: TrainArgs, args: TrainArgs) -> Iterator[tuple[str, Any, Any]]:
    """``(field, stored value, new value)`` for each setting a resumed run may not change."""
    yield from _field_changes(stored.config, args.config)
    yield from _field_changes(stored.hparams, args.hparams)
    yield from _field_changes(stored, args, names=("seed", "seeds"))


def _field_changes(old: Any, new: Any, names: Sequence[str] = (),
                   prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(prefix + name, old value, new value)`` for each of ``names`` (default: every field
    of the dataclass ``old``) that differs between ``old`` and ``new``."""
    for name in names or [f.name for f in dataclasses.fields(old)]:
        if getattr(old, name) != getattr(new, name):
            yield prefix + name, getattr(old, name), getattr(new, name)


def _check_fresh_out(out: pathlib.Path) -> None:
    """Refuse to start over in a directory whose checkpoints belong to an unfinished run."""
    steps = checkpoint_steps(out / "checkpoints")
    if not steps:
        return
    try:
        total = _stored_args(out).config.num_updates
    except ValueError:
        total = None
    if total is None or steps[-1] < total:
        of = f" of {total}" if total else ""
        raise ValueError(
            f"`out`: {out} holds checkpoints of an unfinished run (update {steps[-1]}{of}); "
            f"continue it with `jaxadv train --resume {shlex.quote(str(out))}`, or remove "
            f"{out / 'checkpoints'} to start over"
        )


def resume_args(run_dir: pathlib.Path, argv: Sequence[str] = ()) -> TrainArgs:
    """The :class:`TrainArgs` to resume the run in ``run_dir``: its ``config.json``, with the
    ``jaxadv train`` flags in ``argv`` parsed on top (a flag that changes a recorded setting
    is refused by :meth:`TrainArgs.check`; ``--quiet``, ``--chunk-updates``,
    ``--checkpoint-every``, ``--keep-checkpoints`` and ``--debug-nans`` may change).
    """
    run_dir = pathlib.Path(run_dir)
    return tyro.cli(TrainArgs, args=list(argv), default=_stored_args(run_dir),
                    prog="jaxadv train")


def _check_positive(args: Any, *fields: str) -> None:
    for field in fields:
        value = getattr(args, field)
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"`{field}` must be a positive integer, got {value!r}")


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
    updates (metrics ``[seeds, k]``); ``sizes`` lists each call's ``k``.
    """

    init: Callable
    run: dict[int, Callable]
    sizes: list[int]
    compile_seconds: float

    def iterate(
        self, keys: jax.Array, hp: HParams, state: TrainState | None = None
    ) -> Iterator[tuple[TrainState, dict]]:
        """Yield ``(state, metrics)`` after each call; the states equal ``vmap(train)``'s.

        ``state``: where to start (a restored checkpoint); default ``init(keys, hp)``.
        """
        if state is None:
            state = self.init(keys, hp)
        for k in self.sizes:
            state, metrics = self.run[k](state, hp)
            yield state, metrics


def compile_chunked(
    config: TrainConfig, hp: HParams, keys: jax.Array, chunk_updates: int, *,
    start: int = 0, debug_nans: bool = False,
) -> ChunkedRun:
    """Compile ``vmap(init)`` and ``vmap(run)`` for each distinct chunk length, timing it.

    ``run`` is :meth:`Trainer.run` — a ``lax.scan`` over ``k`` updates — so each call is
    one fused program, and chaining the calls gives the same numbers as ``make_train``.
    ``start``: updates already done (a resumed run); the calls cover the rest.
    ``debug_nans``: each call is checkified (``checkify.nan_checks``) and raises
    ``FloatingPointError`` naming the first operation that made a NaN.
    """
    trainer = make_trainer(config)
    sizes = chunk_sizes(config.num_updates - start, min(chunk_updates, config.num_updates))
    init = jax.jit(jax.vmap(trainer.init, (0, None)))
    run_fn = jax.vmap(trainer.run, (0, None, None))
    if debug_nans:  # vmap of checkify: checkify cannot take the batched loops of vmap
        run_fn = lambda state, hp, k: jax.vmap(checkify.checkify(
            functools.partial(trainer.run, num_updates=k), errors=checkify.nan_checks),
            (0, None))(state, hp)
    run = jax.jit(run_fn, static_argnums=2)
    t0 = time.perf_counter()
    state = jax.eval_shape(init, keys, hp)
    compiled_init = init.lower(keys, hp).compile()
    compiled_run = {k: run.lower(state, hp, k).compile() for k in sorted(set(sizes))}
    if debug_nans:
        compiled_run = {k: _raising_nans(c) for k, c in compiled_run.items()}
    return ChunkedRun(compiled_init, compiled_run, sizes, time.perf_counter() - t0)


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


def _progress(console: Console, label: str, *columns: TextColumn) -> Progress:
    """A progress bar: ``label``, the bar, ``columns``, elapsed and remaining time."""
    return Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), *columns, TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    )


class RunStopped(Exception):
    """The run stopped before its end: interrupted, non-finite values, or nothing to resume.

    ``str(exc)`` says why and how to go on; ``status`` is the exit status :func:`main`
    returns (130 / 143 after SIGINT / SIGTERM, 1 after non-finite values, 2 for an error).
    """

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Interrupts:
    """SIGINT and SIGTERM while training or sweeping: the first asks the driver to stop after
    the call in flight (``signum`` is set); a second ends the process at once with status
    128 + the signal. Checkpoints and sweep chunks are only ever renamed into place, so the
    last one stays good. ``stopping`` and ``intact`` word the two messages.

    A watcher thread reads the signal numbers that Python's C-level handler writes to a
    wakeup socket, so the second signal acts even while the main thread waits on XLA.
    Outside the main thread (where signals cannot be caught) it does nothing.
    """

    def __init__(self, console: Console, *,
                 stopping: str = "the call in flight to save a checkpoint",
                 intact: str = "the last finished checkpoint is intact"):
        self.console = console
        self.signum: int | None = None
        self._installed = False
        self._stopping, self._intact = stopping, intact

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
        self._thread = threading.Thread(target=self._watch, name="jaxadv-signals", daemon=True)
        self._thread.start()
        self._installed = True
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
                if self.signum is None:
                    self.signum = signum
                    self.console.print(f"{signal.Signals(signum).name}: stopping after "
                                       f"{self._stopping}; again to quit at once")
                else:
                    os.write(2, f"\nquitting at once; {self._intact}\n".encode())
                    os._exit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        if not self._installed:
            return
        for s, handler in self._old.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(self._old_fd)
        self._writer.close()  # the watcher's recv returns b""
        self._thread.join(timeout=5)
        self._reader.close()


@dataclasses.dataclass
class _Saver:
    """Checkpoints for the driver: ``every`` updates apart (at call ends) and on demand."""

    store: CheckpointStore
    every: int
    config: dict[str, Any]
    last: int  # the update of the latest checkpoint (0: none)

    def due(self, done: int) -> bool:
        return done - self.last >= self.every

    def save(self, done: int, state: TrainState, history: dict[str, np.ndarray],
             seconds: float) -> None:
        if done > self.last:
            self.store.save(done, state, history, train_seconds=seconds, config=self.config)
            self.last = done


def _extend(history: dict[str, np.ndarray], metrics: dict[str, np.ndarray],
            wall_seconds: float) -> dict[str, np.ndarray]:
    """``history`` with one call's ``metrics`` (``[seeds, k]`` each) and its wall time."""
    k = np.shape(metrics["episode_return"])[1]
    new = {**{n: np.asarray(v) for n, v in metrics.items()},
           "wall_seconds": np.full(k, wall_seconds)}
    if not history:
        return new
    return {n: np.concatenate([history[n], v], axis=-1) for n, v in new.items()}


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


def _drive(
    chunked: ChunkedRun, keys: jax.Array, hp: HParams, config: TrainConfig,
    writer: MetricsWriter, console: Console, *, state: TrainState | None,
    history: dict[str, np.ndarray], saver: _Saver, train_seconds: float, out: pathlib.Path,
) -> tuple[dict[str, np.ndarray], float]:
    """Run every chunk, appending metrics, updating the progress bar and saving checkpoints.

    Starts from ``state`` after the updates in ``history`` (a resumed run; ``None``: from
    ``init``), ``train_seconds`` already spent. Returns the whole ``history`` (each metric
    ``[seeds, num_updates]``, ``wall_seconds``) and the training seconds (compile excluded).
    Raises :class:`RunStopped` after a signal or on non-finite values, having saved the
    last finite state.
    """
    seeds, batch_size = keys.shape[0], config.batch_size
    total = config.num_updates * batch_size
    done = start = len(history["wall_seconds"]) if history else 0
    latest = np.full((seeds, 1), np.nan)  # each seed's latest finished-episode return
    if history:
        latest = forward_fill(np.asarray(history["episode_return"], np.float64))[:, -1:]
    t0 = time.perf_counter()
    seconds = lambda: train_seconds + time.perf_counter() - t0
    columns = (  # env steps per seed, steps/s (all seeds), the latest return
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
        TextColumn("{task.fields[sps]}"),
        TextColumn("return {task.fields[ret]}"),
    )
    with _Interrupts(console) as interrupts, _progress(console, "train", *columns) as progress:
        task = progress.add_task("train", total=total, completed=done * batch_size, sps="",
                                 ret="–")
        chunks = chunked.iterate(keys, hp, state)
        while True:
            try:
                new_state, metrics = next(chunks)
                metrics = jax.device_get(metrics)  # waits for this chunk
            except StopIteration:
                break
            except FloatingPointError as exc:  # --debug-nans: checkify found a NaN
                saver.save(done, state, history, seconds())
                raise RunStopped(_nonfinite_stop(str(exc), saver, out, found=True), 1) from None
            k, now = np.shape(metrics["episode_return"])[1], seconds()
            writer.append(metrics, done + 1, now)
            if np.any(metrics["nonfinite"]):  # keep the last finite state, not this one
                saver.save(done, state, history, seconds())
                raise RunStopped(_nonfinite_stop(
                    _nonfinite_message(np.asarray(metrics["nonfinite"]), done + 1),
                    saver, out), 1)
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
            if interrupts.signum and done < config.num_updates:
                name = signal.Signals(interrupts.signum).name
                raise RunStopped(
                    f"{name}: stopped after update {done} of {config.num_updates}; saved "
                    f"checkpoint {saver.store.directory / str(done)} and metrics.csv\n"
                    f"resume with: jaxadv train --resume {shlex.quote(str(out))}",
                    128 + interrupts.signum,
                )
    return history, seconds()


def _nonfinite_stop(what: str, saver: _Saver, out: pathlib.Path, found: bool = False) -> str:
    """The message of a run stopped by non-finite values (``found``: by --debug-nans)."""
    if saver.last:
        kept = (f"The last finite state, after update {saver.last}, is checkpoint "
                f"{saver.store.directory / str(saver.last)}")
        if not found:
            kept += (f"; rerun from it with `jaxadv train --resume {shlex.quote(str(out))} "
                     "--debug-nans` to find the operation")
    else:
        kept = "No checkpoint was written before it"
        if not found:
            kept += "; rerun the same command with --debug-nans to find the operation"
    return f"error: {what}; training stopped. {kept}."


def train_command(args: TrainArgs) -> dict[str, Any]:
    """Run ``args`` in chunks with a progress bar, saving checkpoints; write the outputs;
    return the summary. Raises :class:`RunStopped` when interrupted, on non-finite
    values, or with no usable checkpoint to resume."""
    config, hp = args.check().config, args.hparams
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    k = min(args.chunk_updates or default_chunk_updates(config.num_updates), config.num_updates)
    every = args.checkpoint_every or max(1, math.ceil(config.num_updates / 8))
    run_options = {"seed": args.seed, "seeds": args.seeds, "chunk_updates": k, "out": out,
                   "checkpoint_every": args.checkpoint_every,
                   "keep_checkpoints": args.keep_checkpoints}
    if args.resume is None:  # a finished run's checkpoints (check() refuses an unfinished one)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    write_json(out / "config.json", {"train_config": config, "hparams": hp, "run": run_options})

    err, console = Console(stderr=True, quiet=args.quiet), Console(quiet=args.quiet)
    warn = lambda message: print(message, file=sys.stderr)  # even with --quiet; not wrapped
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    with CheckpointStore(out / "checkpoints", args.keep_checkpoints) as store:
        state, history, seconds = None, {}, 0.0
        if args.resume is not None:
            abstract = jax.eval_shape(jax.vmap(make_trainer(config).init, (0, None)), keys, hp)
            try:
                checkpoint = store.restore(abstract, warn=warn)
            except CheckpointError as exc:
                raise RunStopped(f"error: {exc}", 2) from None
            state, history = checkpoint.state, checkpoint.history
            seconds = checkpoint.train_seconds
            err.print(f"resuming {out} after update {checkpoint.step} of {config.num_updates}")
        start = len(history["wall_seconds"]) if history else 0
        err.print(f"compiling {config.algo} on {config.env}: {args.seeds} seed(s), "
                  f"{config.num_updates} updates, {k} per call"
                  f"{', with NaN checks' if args.debug_nans else ''} …")
        chunked = compile_chunked(config, hp, keys, k, start=start, debug_nans=args.debug_nans)
        err.print(f"compiled in {chunked.compile_seconds:.1f} s")
        saver = _Saver(store, every, json.loads((out / "config.json").read_text()), start)
        with MetricsWriter(out / "metrics.csv", config.batch_size) as writer:
            _replay(writer, history)
            history, train_seconds = _drive(
                chunked, keys, hp, config, writer, err, state=state, history=history,
                saver=saver, train_seconds=seconds, out=out,
            )

    returns = np.asarray(history["episode_return"], np.float64)
    episodes = np.asarray(history["episodes"])
    summary = summarize(config, returns, episodes, seed=args.seed, seeds=args.seeds, chunk_updates=k,
                        train_seconds=train_seconds, compile_seconds=chunked.compile_seconds)
    summary["num_calls"] = len(chunk_sizes(config.num_updates, k))
    write_json(out / "summary.json", summary)
    steps = np.arange(1, config.num_updates + 1) * config.batch_size
    plot_returns(out / "returns.png", steps, returns, episodes,
                 f"{config.algo} · {config.env} · {args.seeds} seed(s)")
    console.print(summary_table(summary))
    console.print(f"wrote config.json, metrics.csv, summary.json, returns.png, checkpoints/ to {out}/")
    return summary


_HPARAM_FIELDS = tuple(f.name for f in dataclasses.fields(HParams))
_STATIC_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_Floats = Annotated[tuple[float, ...] | None, tyro.conf.arg(metavar="FLOAT [FLOAT ...]")]
_Ints = Annotated[tuple[int, ...] | None, tyro.conf.arg(metavar="INT [INT ...]")]
_HParamName = Literal["lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm",
                      "kl_coef"]


@dataclasses.dataclass(frozen=True)
class Grid:
    """Values to sweep: the product of every --grid.FIELD given, crossed in the order listed
    here (with --samples, a float field takes LOW HIGH to draw from). A field left out is not
    swept: its base flag applies."""

    lr: _Floats = None
    """learning rates (HParams.lr, > 0)."""
    gamma: _Floats = None
    """discount factors γ (in [0, 1])."""
    gae_lambda: _Floats = None
    """GAE λ values (in [0, 1]; 0 = one-step TD, 1 = Monte Carlo minus the baseline)."""
    clip_eps: _Floats = None
    """ppo clip ranges ε (> 0)."""
    ent_coef: _Floats = None
    """entropy-bonus weights (>= 0)."""
    vf_coef: _Floats = None
    """value-loss weights (>= 0)."""
    max_grad_norm: _Floats = None
    """gradient-norm clips (> 0)."""
    kl_coef: _Floats = None
    """KL-penalty weights (>= 0; with --kl loss or reward)."""
    num_envs: _Ints = None
    """static: environments per run (each value compiles once)."""
    num_steps: _Ints = None
    """static: rollout windows T (each value compiles once)."""
    estimator: Annotated[
        tuple[Literal["gae", "td", "nstep", "mc", "qv"], ...] | None,
        tyro.conf.arg(metavar="{gae,td,nstep,mc,qv} [...]"),
    ] = None
    """static: advantage estimators (each value compiles once)."""

    def given(self) -> dict[str, tuple]:
        """The fields given on the command line (``()`` for a flag given without values)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


@dataclasses.dataclass(frozen=True)
class SweepArgs:
    """Train every point of --grid.* (or --samples random draws) on --seeds seeds, one
    compile per static group; write sweep.csv, summary.json and sweep.png under --out,
    saving each finished chunk under --out/chunks (--resume DIR continues a sweep)."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")]
    hparams: Annotated[HParams, tyro.conf.arg(name="")]
    grid: Grid = Grid()
    samples: int | None = None
    """random search: draw this many points; every float --grid.FIELD then takes two values LOW HIGH, drawn log-uniformly for the fields in --log-uniform and uniformly otherwise; --grid.num-envs/num-steps/estimator stay lists, crossed with the draws."""
    log_uniform: tuple[_HParamName, ...] = ("lr",)
    """with --samples: the fields drawn log-uniformly."""
    seed: int = 0
    """base seed: seed s of every point uses jax.random.split(jax.random.key(seed), seeds)[s]."""
    seeds: int = 4
    """seeds per point."""
    max_parallel: int | None = None
    """most runs (point × seed) in one compiled call; default: a static group at once."""
    out: pathlib.Path = pathlib.Path("runs/sweep")
    """output directory (created; files in it are overwritten; each finished chunk is saved under OUT/chunks)."""
    resume: pathlib.Path | None = None
    """continue the sweep in this directory (an earlier --out), with the settings in its chunks/manifest.json: the chunks saved there are not computed again; a flag that would change the grid, a TrainConfig or HParams field, --samples, --log-uniform, --seed or --seeds is refused (--max-parallel and --quiet may change)."""
    quiet: bool = False
    """no progress bar and no summary table."""

    def check(self) -> SweepArgs:
        """Refuse a bad value or grid with a ``ValueError`` naming the field; compiles nothing.

        Checks the options, the base ``hparams``, every grid value (unknown field, empty
        list, a value outside its field's domain: :func:`~jaxadv.sweep.expand_grid`) and
        every static configuration the grid makes (``TrainConfig.__post_init__``). With
        ``resume``: the directory must hold a sweep's ``chunks/manifest.json`` and nothing
        but ``max_parallel`` and ``quiet`` may differ from it. Without: ``out`` must not
        hold an unfinished sweep.
        """
        _check_positive(self, "seeds", "max_parallel", "samples")
        self.hparams.validate()
        grid = self.grid_spec()
        if not grid:
            raise ValueError("`grid` is empty: give at least one --grid.FIELD with values to "
                             "sweep, e.g. --grid.lr 1e-4 3e-4 1e-3")
        if self.samples is not None and not any(
            isinstance(v, Uniform | LogUniform) for v in grid.values()
        ):
            raise ValueError("`samples` needs a float --grid.FIELD given as LOW HIGH to draw from")
        self.static_configs()  # every value checked, every static configuration built
        if self.resume is None:
            _check_fresh_sweep(self.out)
            return self
        stored = _stored_sweep_args(self.resume)
        _refuse_changes(_sweep_changes(stored, self), "sweep",
                        self.resume / "chunks" / "manifest.json")
        if self.out.resolve() != self.resume.resolve():
            raise ValueError(f"`out` = {str(self.out)!r}: --resume continues the sweep in its "
                             f"own directory {str(self.resume)!r}; leave --out out")
        return self

    def settings(self) -> dict[str, Any]:
        """What ``chunks/manifest.json`` records: every setting but ``out``, ``resume`` and
        ``quiet`` (JSON values)."""
        return json.loads(json.dumps({
            "train_config": dataclasses.asdict(self.config),
            "hparams": dataclasses.asdict(self.hparams),
            "grid": self.grid.given(), "samples": self.samples,
            "log_uniform": self.log_uniform, "seed": self.seed, "seeds": self.seeds,
            "max_parallel": self.max_parallel,
        }))

    def grid_spec(self) -> dict[str, list | Uniform | LogUniform]:
        """The ``grid`` of :func:`~jaxadv.sweep.run_sweep`: lists, or with ``samples`` a
        :class:`~jaxadv.sweep.Uniform`/:class:`~jaxadv.sweep.LogUniform` per float field."""
        spec: dict[str, list | Uniform | LogUniform] = {}
        for field, values in self.grid.given().items():
            if self.samples is None or field not in _HPARAM_FIELDS:
                spec[field] = list(values)
                continue
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"`grid` field {field!r}: with `samples` give two values "
                                 f"LOW HIGH with LOW < HIGH, got {list(values)}")
            spec[field] = (LogUniform if field in self.log_uniform else Uniform)(*values)
        return spec

    def num_points(self) -> int:
        """Points in the sweep: the product of the list lengths, times ``samples``."""
        lists = [v for v in self.grid_spec().values() if isinstance(v, list)]
        return math.prod(len(v) for v in lists) * (self.samples or 1)

    def static_configs(self) -> list[TrainConfig]:
        """The distinct static configurations, one compile each. Expanding the grid and
        building each config checks every value; nothing is compiled."""
        grid = self.grid_spec()
        configs: list[TrainConfig] = []
        for point in expand_grid(grid, num_samples=1 if self.samples else None):
            static = {f: v for f, v in point.items() if f in _STATIC_FIELDS}
            config = dataclasses.replace(self.config, **static)
            if config not in configs:
                configs.append(config)
        return configs


def _grid_json(grid: dict[str, list | Uniform | LogUniform]) -> dict[str, Any]:
    """Lists as lists; a distribution as ``{"distribution", "low", "high"}``."""
    return {
        field: {"distribution": type(v).__name__, "low": v.low, "high": v.high}
        if isinstance(v, Uniform | LogUniform) else v
        for field, v in grid.items()
    }


def _stored_sweep_args(run_dir: pathlib.Path) -> SweepArgs:
    """The :class:`SweepArgs` that ``run_dir/chunks/manifest.json`` records (``out``,
    ``resume``: run_dir)."""
    store = SweepChunks(run_dir / "chunks", write=False)
    try:
        manifest = store.read()
    except ValueError as exc:
        raise ValueError(f"`resume`: {exc}") from None
    if manifest is None:
        raise ValueError(f"`resume`: {store.path} not found; --resume takes the --out "
                         "directory of an earlier `jaxadv sweep`")
    try:
        s = manifest["settings"]
        return SweepArgs(
            config=TrainConfig(**s["train_config"]), hparams=HParams(**s["hparams"]),
            grid=Grid(**{field: tuple(values) for field, values in s["grid"].items()}),
            samples=s["samples"], log_uniform=tuple(s["log_uniform"]), seed=s["seed"],
            seeds=s["seeds"], max_parallel=s["max_parallel"], out=run_dir, resume=run_dir,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`resume`: {store.path} does not describe a sweep ({exc})") from None


def _sweep_changes(stored: SweepArgs, args: SweepArgs) -> Iterator[tuple[str, Any, Any]]:
    """``(field, stored value, new value)`` for each setting a resumed sweep may not change."""
    yield from _field_changes(stored.config, args.config)
    yield from _field_changes(stored.hparams, args.hparams)
    yield from _field_changes(stored.grid, args.grid, prefix="grid.")
    yield from _field_changes(stored, args, names=("samples", "log_uniform", "seed", "seeds"))


def _check_fresh_sweep(out: pathlib.Path) -> None:
    """Refuse to start over in a directory holding the chunks of an unfinished sweep."""
    chunks = out / "chunks"
    try:
        manifest = SweepChunks(chunks, write=False).read()
    except ValueError as exc:
        raise ValueError(f"`out`: {exc}; remove {chunks} to start a new sweep there") from None
    if manifest is not None and not manifest["complete"]:
        raise ValueError(
            f"`out`: {out} holds an unfinished sweep ({len(manifest['chunks'])} chunk(s) "
            f"saved); continue it with `jaxadv sweep --resume {shlex.quote(str(out))}`, or "
            f"remove {chunks} to start over"
        )


def _sweep_resume_args(run_dir: pathlib.Path, argv: Sequence[str] = ()) -> SweepArgs:
    """The :class:`SweepArgs` to resume the sweep in ``run_dir``: its manifest's settings,
    with the ``jaxadv sweep`` flags in ``argv`` parsed on top (checked by
    :meth:`SweepArgs.check`)."""
    return tyro.cli(SweepArgs, args=list(argv), default=_stored_sweep_args(pathlib.Path(run_dir)),
                    prog="jaxadv sweep")


class _SweepStopped(Exception):
    """Raised from ``run_sweep``'s ``on_result`` to stop after a signal, the chunk saved."""


def sweep_command(args: SweepArgs) -> dict[str, Any]:
    """Run the sweep of ``args`` with a progress bar over its chunks, saving each finished
    chunk under ``--out/chunks`` (:class:`~jaxadv.checkpoint.SweepChunks`); write the
    outputs; return the summary (see :func:`~jaxadv.report.summarize_sweep`).

    With ``resume``, the saved chunks are read back (one that is missing or damaged is
    computed again, with a warning) and only the others are computed; the outputs equal an
    uninterrupted sweep's. After SIGINT/SIGTERM the chunk in flight is finished and saved
    and :class:`RunStopped` (status 130/143) says how to resume. Under
    ``jax.distributed`` only process 0 writes files; every process reads the chunks of a
    resumed sweep, so ``--out`` must be on a filesystem they share, and a signal must
    reach every process (as a job scheduler sends it).
    """
    config, hp, grid = args.check().config, args.hparams, args.grid_spec()
    out = args.out
    writer = jax.process_index() == 0
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    err, console = Console(stderr=True, quiet=args.quiet), Console(quiet=args.quiet)
    warn = lambda message: print(message, file=sys.stderr)  # even with --quiet; not wrapped
    points, compiles = args.num_points(), len(args.static_configs())
    runs = points * args.seeds
    store = SweepChunks(out / "chunks", write=writer)
    saved: dict[ChunkId, ChunkResult] = {}
    if args.resume is None:  # a finished sweep's chunks (check() refuses an unfinished one)
        store.start(args.settings(), jax.device_count())
    else:
        before = store.read()
        cut = (before["settings"]["max_parallel"], before["devices"])
        if cut != (args.max_parallel, jax.device_count()):
            warn(f"warning: the saved chunks were cut for --max-parallel {cut[0]} on {cut[1]} "
                 f"device(s), this sweep cuts for {args.max_parallel} on {jax.device_count()}: "
                 "the runs of saved chunks that no longer line up are computed again")
        saved = store.load(args.settings(), jax.device_count(), warn=warn)
        err.print(f"resuming {out}: {len(saved)} chunk(s) saved, "
                  f"{sum(c.stop - c.start for c in saved)} of {runs} runs")
    err.print(f"sweeping {config.algo} on {config.env}: {points} point(s) × {args.seeds} seed(s) "
              f"= {runs} runs, {compiles} compile(s), {jax.device_count()} device(s) …")
    computed: list[ChunkId] = []
    progress = {"done": 0}  # runs done, saved chunks included
    interrupts = _Interrupts(err, stopping="the chunk in flight to save it",
                             intact="the chunks saved so far are intact")
    bar = _progress(err, "sweep", TextColumn("{task.completed:,.0f}/{task.total:,.0f} runs"))
    with interrupts, bar:
        task = bar.add_task("sweep", total=runs)

        def on_chunk(done: int, total: int) -> None:
            progress["done"] = done
            bar.update(task, completed=done, total=total)

        def on_result(chunk_id: ChunkId, result: ChunkResult) -> None:
            store.save(chunk_id, result)
            computed.append(chunk_id)
            if interrupts.signum and progress["done"] < runs:
                raise _SweepStopped

        try:
            result = run_sweep(
                config, grid, args.seeds, hparams=hp, key=jax.random.key(args.seed),
                num_samples=args.samples, max_parallel=args.max_parallel,
                on_chunk=on_chunk, saved=saved, on_result=on_result,
            )
        except _SweepStopped:
            name = signal.Signals(interrupts.signum).name
            raise RunStopped(
                f"{name}: stopped after {progress['done']} of {runs} runs; saved "
                f"{len(store.manifest['chunks'])} chunk(s) in {store.directory}\n"
                f"resume with: jaxadv sweep --resume {shlex.quote(str(out))}",
                128 + interrupts.signum,
            ) from None
    if args.resume is not None:
        err.print(f"computed {len(computed)} chunk(s), "
                  f"{sum(c.stop - c.start for c in computed)} of {runs} runs")
    summary = summarize_sweep(
        result, config, hp, grid=_grid_json(grid), samples=args.samples,
        log_uniform=args.log_uniform, seed=args.seed, max_parallel=args.max_parallel, out=out,
    )
    if writer:
        write_sweep_csv(out / "sweep.csv", result, hp)
        write_json(out / "summary.json", summary)
        plot_sweep(out / "sweep.png", result,
                   f"{config.algo} · {config.env} · {points} point(s) × {args.seeds} seed(s)")
    store.finish()
    console.print(sweep_table(summary))
    console.print(f"wrote sweep.csv, summary.json, sweep.png, chunks/ to {out}/")
    return summary


_COMMANDS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "train": (TrainArgs, train_command),
    "sweep": (SweepArgs, sweep_command),
    "variance": (VarianceArgs, variance_command),
    "sequence": (SequenceArgs, sequence_command),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return the exit status.

    0: done (or ``--help``); 2: a bad flag or value, reported as ``error: ...`` on
    stderr before anything is compiled.
    """
    try:
        args = tyro.extras.subcommand_cli_from_dict(
            {name: cls for name, (cls, _) in _COMMANDS.items()},
            prog="jaxadv",
            description="Advantage-function policy-gradient training as pure JAX functions.",
            args=argv,
        )
        if isinstance(args, TrainArgs) and args.resume is not None:  # the run's own settings
            args = resume_args(args.resume, _flags_after(argv, "train"))  # under the flags given
        elif isinstance(args, SweepArgs) and args.resume is not None:  # likewise, a sweep's
            args = _sweep_resume_args(args.resume, _flags_after(argv, "sweep"))
        args.check()  # after parsing: tyro would draw its own box around a ValueError
    except SystemExit as exc:  # --help, or tyro's own message about a malformed flag
        return exc.code if isinstance(exc.code, int) else 1
    except ValueError as exc:  # a config check: TrainConfig's own, or the command's check()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = next(fn for cls, fn in _COMMANDS.values() if isinstance(args, cls))
    try:
        command(args)
    except RunStopped as stop:  # interrupted, non-finite values, nothing usable to resume
        print(stop, file=sys.stderr)
        return stop.status
    return 0


def _flags_after(argv: Sequence[str] | None, command: str) -> list[str]:
    """The flags after ``command`` in ``argv`` (default ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return argv[argv.index(command) + 1:] if command in argv else argv


if __name__ == "__main__":
    sys.exit(main())
