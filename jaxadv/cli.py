"""The ``jaxadv`` command line, built with tyro from the config dataclasses.

``jaxadv train --env CartPole-v1 --algo ppo --seeds 16 --out runs/cartpole`` trains
one :class:`~jaxadv.train.TrainConfig` on several seeds at once (``vmap``), drives the
fused update in chunks of ``--chunk-updates`` updates per compiled call (a
``lax.scan`` inside each call), shows progress between chunks and writes
``config.json``, ``metrics.csv``, ``summary.json`` and ``returns.png`` under ``--out``.

Every flag is checked while the arguments are parsed — ``TrainConfig.__post_init__``,
``HParams.validate`` and :class:`TrainArgs` — so a bad value is refused with
``error: <message naming the field>`` and exit status 2 before anything compiles.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

import jax
import numpy as np
import tyro
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from jaxadv.report import (
    MetricsWriter,
    forward_fill,
    plot_returns,
    seed_mean_std,
    summarize,
    summary_table,
    write_json,
)
from jaxadv.train import HParams, TrainConfig, TrainState, make_trainer

__all__ = [
    "ChunkedRun",
    "TrainArgs",
    "chunk_sizes",
    "compile_chunked",
    "default_chunk_updates",
    "main",
    "train_command",
]

@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """Train one configuration on --seeds seeds at once; write config.json, metrics.csv,
    summary.json and returns.png under --out."""

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
    quiet: bool = False
    """no progress bar and no summary table."""

    def __post_init__(self) -> None:
        for field in ("seeds", "chunk_updates"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"`{field}` must be a positive integer, got {value!r}")
        self.hparams.validate()


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

    def iterate(self, keys: jax.Array, hp: HParams) -> Iterator[tuple[TrainState, dict]]:
        """Yield ``(state, metrics)`` after each call; the states equal ``vmap(train)``'s."""
        state = self.init(keys, hp)
        for k in self.sizes:
            state, metrics = self.run[k](state, hp)
            yield state, metrics


def compile_chunked(
    config: TrainConfig, hp: HParams, keys: jax.Array, chunk_updates: int
) -> ChunkedRun:
    """Compile ``vmap(init)`` and ``vmap(run)`` for each distinct chunk length, timing it.

    ``run`` is :meth:`Trainer.run` — a ``lax.scan`` over ``k`` updates — so each call is
    one fused program, and chaining the calls gives the same numbers as ``make_train``.
    """
    trainer = make_trainer(config)
    sizes = chunk_sizes(config.num_updates, min(chunk_updates, config.num_updates))
    init = jax.jit(jax.vmap(trainer.init, (0, None)))
    run = jax.jit(jax.vmap(trainer.run, (0, None, None)), static_argnums=2)
    start = time.perf_counter()
    state = jax.eval_shape(init, keys, hp)
    compiled_init = init.lower(keys, hp).compile()
    compiled_run = {k: run.lower(state, hp, k).compile() for k in sorted(set(sizes))}
    return ChunkedRun(compiled_init, compiled_run, sizes, time.perf_counter() - start)


def _progress(console: Console) -> Progress:
    """A progress bar over env steps per seed, with steps/s (all seeds) and the latest return."""
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
        TextColumn("{task.fields[sps]}"),
        TextColumn("return {task.fields[ret]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _drive(
    chunked: ChunkedRun, keys: jax.Array, hp: HParams, batch_size: int,
    writer: MetricsWriter, console: Console,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Run every chunk, appending metrics and updating the progress bar after each.

    Returns ``episode_return`` and ``episodes``, each ``[seeds, num_updates]``, and the
    seconds spent (compile excluded: ``chunked`` is compiled already).
    """
    seeds, total = keys.shape[0], sum(chunked.sizes) * batch_size
    returns, episodes, done = [], [], 0
    latest = np.full((seeds, 1), np.nan)  # each seed's latest finished-episode return
    start = time.perf_counter()
    with _progress(console) as progress:
        task = progress.add_task("train", total=total, sps="", ret="–")
        for _, metrics in chunked.iterate(keys, hp):
            metrics = jax.device_get(metrics)  # waits for this chunk
            elapsed = time.perf_counter() - start
            writer.append(metrics, done + 1, elapsed)
            chunk_returns = np.asarray(metrics["episode_return"], np.float64)  # [seeds, k]
            returns.append(chunk_returns)
            episodes.append(np.asarray(metrics["episodes"]))
            done += chunk_returns.shape[1]
            latest = forward_fill(np.concatenate([latest, chunk_returns], axis=1))[:, -1:]
            mean_return = seed_mean_std(latest)[0][0]
            progress.update(
                task,
                completed=done * batch_size,
                sps=f"{done * batch_size * seeds / elapsed:,.0f} steps/s",
                ret="–" if np.isnan(mean_return) else f"{mean_return:.1f}",
            )
    seconds = time.perf_counter() - start
    return np.concatenate(returns, axis=1), np.concatenate(episodes, axis=1), seconds


def train_command(args: TrainArgs) -> dict[str, Any]:
    """Run ``args`` in chunks with a progress bar; write the outputs; return the summary."""
    config, hp = args.config, args.hparams.validate()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    k = min(args.chunk_updates or default_chunk_updates(config.num_updates), config.num_updates)
    run_options = {"seed": args.seed, "seeds": args.seeds, "chunk_updates": k, "out": out}
    write_json(out / "config.json", {"train_config": config, "hparams": hp, "run": run_options})

    err, console = Console(stderr=True, quiet=args.quiet), Console(quiet=args.quiet)
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    err.print(f"compiling {config.algo} on {config.env}: {args.seeds} seed(s), "
              f"{config.num_updates} updates, {k} per call …")
    chunked = compile_chunked(config, hp, keys, k)
    err.print(f"compiled in {chunked.compile_seconds:.1f} s")
    with MetricsWriter(out / "metrics.csv", config.batch_size) as writer:
        returns, episodes, train_seconds = _drive(chunked, keys, hp, config.batch_size, writer, err)

    summary = summarize(config, returns, episodes, seed=args.seed, seeds=args.seeds, chunk_updates=k,
                        train_seconds=train_seconds, compile_seconds=chunked.compile_seconds)
    summary["num_calls"] = len(chunked.sizes)
    write_json(out / "summary.json", summary)
    steps = np.arange(1, config.num_updates + 1) * config.batch_size
    plot_returns(out / "returns.png", steps, returns, episodes,
                 f"{config.algo} · {config.env} · {args.seeds} seed(s)")
    console.print(summary_table(summary))
    console.print(f"wrote config.json, metrics.csv, summary.json, returns.png to {out}/")
    return summary


_COMMANDS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "train": (TrainArgs, train_command),
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
    except SystemExit as exc:  # --help, or tyro's own message about a malformed flag
        return exc.code if isinstance(exc.code, int) else 1
    except ValueError as exc:  # a config check, raised while tyro builds the dataclasses
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = next(fn for cls, fn in _COMMANDS.values() if isinstance(args, cls))
    command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
