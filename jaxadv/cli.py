"""The ``jaxadv`` command line, built with tyro from the config dataclasses.

``jaxadv train --env CartPole-v1 --algo ppo --seeds 16 --out runs/cartpole`` trains
one :class:`~jaxadv.train.TrainConfig` on several seeds at once (``vmap``), drives the
fused update in chunks of ``--chunk-updates`` updates per compiled call (a
``lax.scan`` inside each call), shows progress between chunks and writes
``config.json``, ``metrics.csv``, ``summary.json`` and ``returns.png`` under ``--out``.

``jaxadv sweep --grid.lr 1e-4 3e-4 1e-3 --grid.gae-lambda 0.8 0.95 1.0 --seeds 8`` trains
every point of a grid (or ``--samples`` random draws) on every seed with
:func:`~jaxadv.sweep.run_sweep` — one compile per static group, a progress bar over its
chunks — and writes ``sweep.csv``, ``summary.json`` and ``sweep.png`` under ``--out``.

Every flag is checked right after the arguments are parsed — ``TrainConfig.__post_init__``,
``HParams.validate`` and the command's ``check()`` (:meth:`TrainArgs.check`,
:meth:`SweepArgs.check`: every grid value and every static configuration it makes) — so
a bad value is refused with ``error: <message naming the field>`` and exit status 2
before anything compiles.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal

import jax
import numpy as np
import tyro
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
from jaxadv.sweep import LogUniform, Uniform, expand_grid, run_sweep
from jaxadv.train import HParams, TrainConfig, TrainState, make_trainer

__all__ = [
    "ChunkedRun",
    "Grid",
    "SweepArgs",
    "TrainArgs",
    "chunk_sizes",
    "compile_chunked",
    "default_chunk_updates",
    "main",
    "sweep_command",
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

    def check(self) -> TrainArgs:
        """Refuse a bad value with a ``ValueError`` naming the field; compiles nothing."""
        _check_positive(self, "seeds", "chunk_updates")
        self.hparams.validate()
        return self


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


def _progress(console: Console, label: str, *columns: TextColumn) -> Progress:
    """A progress bar: ``label``, the bar, ``columns``, elapsed and remaining time."""
    return Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), *columns, TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
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
    columns = (  # env steps per seed, steps/s (all seeds), the latest return
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
        TextColumn("{task.fields[sps]}"),
        TextColumn("return {task.fields[ret]}"),
    )
    with _progress(console, "train", *columns) as progress:
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
    config, hp = args.check().config, args.hparams
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


_HPARAM_FIELDS = tuple(f.name for f in dataclasses.fields(HParams))
_STATIC_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_Floats = Annotated[tuple[float, ...] | None, tyro.conf.arg(metavar="FLOAT [FLOAT ...]")]
_Ints = Annotated[tuple[int, ...] | None, tyro.conf.arg(metavar="INT [INT ...]")]
_HParamName = Literal["lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm"]


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
    compile per static group; write sweep.csv, summary.json and sweep.png under --out."""

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
    """output directory (created; files in it are overwritten)."""
    quiet: bool = False
    """no progress bar and no summary table."""

    def check(self) -> SweepArgs:
        """Refuse a bad value or grid with a ``ValueError`` naming the field; compiles nothing.

        Checks the options, the base ``hparams``, every grid value (unknown field, empty
        list, a value outside its field's domain: :func:`~jaxadv.sweep.expand_grid`) and
        every static configuration the grid makes (``TrainConfig.__post_init__``).
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
        return self

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


def sweep_command(args: SweepArgs) -> dict[str, Any]:
    """Run the sweep of ``args`` with a progress bar over its chunks; write the outputs;
    return the summary (see :func:`~jaxadv.report.summarize_sweep`)."""
    config, hp, grid = args.check().config, args.hparams, args.grid_spec()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    err, console = Console(stderr=True, quiet=args.quiet), Console(quiet=args.quiet)
    points, compiles = args.num_points(), len(args.static_configs())
    runs = points * args.seeds
    err.print(f"sweeping {config.algo} on {config.env}: {points} point(s) × {args.seeds} seed(s) "
              f"= {runs} runs, {compiles} compile(s), {jax.device_count()} device(s) …")
    with _progress(err, "sweep", TextColumn("{task.completed:,.0f}/{task.total:,.0f} runs")) as bar:
        task = bar.add_task("sweep", total=runs)
        result = run_sweep(
            config, grid, args.seeds, hparams=hp, key=jax.random.key(args.seed),
            num_samples=args.samples, max_parallel=args.max_parallel,
            on_chunk=lambda done, total: bar.update(task, completed=done, total=total),
        )
    write_sweep_csv(out / "sweep.csv", result, hp)
    summary = summarize_sweep(
        result, config, hp, grid=_grid_json(grid), samples=args.samples,
        log_uniform=args.log_uniform, seed=args.seed, max_parallel=args.max_parallel, out=out,
    )
    write_json(out / "summary.json", summary)
    plot_sweep(out / "sweep.png", result,
               f"{config.algo} · {config.env} · {points} point(s) × {args.seeds} seed(s)")
    console.print(sweep_table(summary))
    console.print(f"wrote sweep.csv, summary.json, sweep.png to {out}/")
    return summary


_COMMANDS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "train": (TrainArgs, train_command),
    "sweep": (SweepArgs, sweep_command),
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
        args.check()  # after parsing: tyro would draw its own box around a ValueError
    except SystemExit as exc:  # --help, or tyro's own message about a malformed flag
        return exc.code if isinstance(exc.code, int) else 1
    except ValueError as exc:  # a config check: TrainConfig's own, or the command's check()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = next(fn for cls, fn in _COMMANDS.values() if isinstance(args, cls))
    command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
