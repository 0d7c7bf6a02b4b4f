"""``jaxadv sweep``: every point of a grid (or random draws) on every seed.

``jaxadv sweep --grid.lr 1e-4 3e-4 1e-3 --grid.gae-lambda 0.8 0.95 1.0 --seeds 8`` trains
every point with :func:`~jaxadv.engine.sweep.run_sweep` — one compile per static group, a
progress bar over its chunks — and writes ``sweep.csv``, ``summary.json`` and ``sweep.png``
under ``--out``. Each chunk's results are saved under ``--out/chunks/`` as soon as it
finishes (:class:`~jaxadv.engine.checkpoint.SweepChunks`); ``jaxadv sweep --resume runs/sweep``
computes only the chunks that are missing and writes the same files, bit for bit, as a
sweep that never stopped. Ctrl-C and SIGTERM finish and save the chunk in flight.
With ``--search halving`` or ``--search pbt`` it runs that search instead
(:mod:`jaxadv.cli.search`). The arguments are :class:`~jaxadv.cli.sweep_args.SweepArgs`.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import jax
from rich.console import Console
from rich.progress import TextColumn

from jaxadv.cli.interrupts import Interrupts
from jaxadv.cli.outdir import OutputLock
from jaxadv.cli.report import (
    plot_selection,
    plot_sweep,
    progress_bar,
    summarize_sweep,
    sweep_table,
    write_json,
    write_sweep_csv,
)
from jaxadv.cli.search import halving_command, pbt_command
from jaxadv.cli.sweep_args import SweepArgs, grid_json, prepare_sweep_out
from jaxadv.cli.tracking import log_sweep_wandb
from jaxadv.engine.checkpoint import SweepChunks
from jaxadv.engine.sweep import (
    ChunkId,
    ChunkResult,
    LogUniform,
    SweepResult,
    Uniform,
    run_sweep,
)
from jaxadv.tuning.selection import reevaluate, selection_report

__all__ = ["SweepArgs", "grid_command", "sweep_command"]


class _SweepStopped(Exception):
    """Raised from ``run_sweep``'s ``on_result`` to stop after a signal, the chunk saved."""


def _open_chunks(
    args: SweepArgs, *, writer: bool, runs: int, err: Console, warn: Callable[[str], None]
) -> tuple[SweepChunks, dict[ChunkId, ChunkResult]]:
    """The chunk store under ``--out/chunks`` and the chunks it already holds: none for a
    new sweep (its manifest started), the readable saved ones with ``--resume`` (a warning
    when they were cut for another ``--max-parallel`` or device count)."""
    store = SweepChunks(args.out / "chunks", write=writer)
    if args.resume is None:  # a finished sweep's chunks (check() refuses an unfinished one)
        store.start(args.settings(), jax.device_count())
        return store, {}
    before = cast(dict[str, Any], store.read())  # check() found the sweep's manifest
    cut = (before["settings"]["max_parallel"], before["devices"])
    if cut != (args.max_parallel, jax.device_count()):
        warn(f"warning: the saved chunks were cut for --max-parallel {cut[0]} on {cut[1]} "
             f"device(s), this sweep cuts for {args.max_parallel} on {jax.device_count()}: "
             "the runs of saved chunks that no longer line up are computed again")
    saved = store.load(args.settings(), jax.device_count(), warn=warn)
    err.print(f"resuming {args.out}: {len(saved)} chunk(s) saved, "
              f"{sum(c.stop - c.start for c in saved)} of {runs} runs")
    return store, saved


def _write_outputs(
    args: SweepArgs,
    grid: dict[str, list | Uniform | LogUniform],
    result: SweepResult,
    *,
    points: int,
    writer: bool,
    selection: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The sweep's summary (:func:`~jaxadv.cli.report.summarize_sweep`, with ``selection``, the
    re-evaluation of its top points, where there is one); when ``writer``, also
    ``sweep.csv``, ``summary.json`` and ``sweep.png`` under ``--out`` (and ``selection.png``)."""
    config, hp, out = args.config, args.hparams, args.out
    summary = summarize_sweep(
        result, config, hp, grid=grid_json(grid), samples=args.samples,
        log_uniform=args.log_uniform, seed=args.seed, max_parallel=args.max_parallel, out=out,
    )
    if selection is not None:
        summary["selection"] = selection
    if writer and selection is not None:
        plot_selection(out / "selection.png", selection,
                       f"{config.algo} · {config.env}: selection vs fresh seeds")
    if writer:
        write_sweep_csv(out / "sweep.csv", result, hp)
        write_json(out / "summary.json", summary)
        plot_sweep(out / "sweep.png", result,
                   f"{config.algo} · {config.env} · {points} point(s) × {args.seeds} seed(s)")
    return summary


def _reevaluate(args: SweepArgs, result: SweepResult, err: Console) -> list[dict[str, Any]] | None:
    """With ``--reeval.top K``: the top K points trained again on fresh seeds, as
    :func:`~jaxadv.tuning.selection.selection_report` rows (``None`` without)."""
    top, seeds = args.reeval.top, args.reeval.seeds or args.seeds
    if not top:
        return None
    err.print(f"re-evaluating the top {top} point(s) on {seeds} fresh seed(s) …")
    chosen, fresh = reevaluate(args.config, args.hparams, result, top, seeds, seed=args.seed,
                               max_parallel=args.max_parallel)
    rows = selection_report(result, chosen, fresh)
    for row in rows:
        err.print(f"point {row['index']}: IQM {row['selected']['iqm']:.2f} on the selection "
                  f"seeds, {row['fresh']['iqm']:.2f} on fresh seeds (optimism gap "
                  f"{row['optimism_gap']['value']:+.2f})")
    return rows


def sweep_command(args: SweepArgs) -> dict[str, Any]:
    """``jaxadv sweep``: :func:`~jaxadv.cli.search.halving_command` for ``--search halving``,
    :func:`~jaxadv.cli.search.pbt_command` for ``--search pbt``, else :func:`grid_command`."""
    if args.search == "halving":
        return halving_command(args)
    if args.search == "pbt":
        return pbt_command(args)
    return grid_command(args)


def grid_command(args: SweepArgs) -> dict[str, Any]:
    """Run the sweep of ``args`` with a progress bar over its chunks, saving each finished
    chunk under ``--out/chunks`` (:class:`~jaxadv.engine.checkpoint.SweepChunks`); write the
    outputs; return the summary (see :func:`~jaxadv.cli.report.summarize_sweep`).

    With ``resume``, the saved chunks are read back (one that is missing or damaged is
    computed again, with a warning) and only the others are computed; the outputs equal an
    uninterrupted sweep's. After SIGINT/SIGTERM the chunk in flight is finished and saved
    and :class:`RunStopped` (status 130/143) says how to resume. Under
    ``jax.distributed`` only process 0 writes files; every process reads the chunks of a
    resumed sweep, so ``--out`` must be on a filesystem they share, and a signal must
    reach every process (as a job scheduler sends it).
    """
    writer = jax.process_index() == 0
    with OutputLock(args.out) if writer else contextlib.nullcontext():
        return _sweep(args.check(), writer)


def _sweep(args: SweepArgs, writer: bool) -> dict[str, Any]:
    config, hp, grid = args.config, args.hparams, args.grid_spec()
    out = args.out
    prepare_sweep_out(args, writer)
    err, console = Console(stderr=True, quiet=args.quiet), Console(quiet=args.quiet)
    warn = lambda message: print(message, file=sys.stderr)  # even with --quiet; not wrapped
    points, compiles = args.num_points(), len(args.static_configs())
    runs = points * args.seeds
    store, saved = _open_chunks(args, writer=writer, runs=runs, err=err, warn=warn)
    err.print(f"sweeping {config.algo} on {config.env}: {points} point(s) × {args.seeds} seed(s) "
              f"= {runs} runs, {compiles} compile(s), {jax.device_count()} device(s) …")
    computed: list[ChunkId] = []
    progress = {"done": 0}  # runs done, saved chunks included
    in_flight = {"last": False}  # whether the chunk being computed is the sweep's last

    def at_once() -> str | None:  # waiting for the last chunk would be waiting for the end
        if not in_flight["last"]:
            return None
        saved = len(cast(dict[str, Any], store.manifest)["chunks"])
        return (f"{{signal}}: stopped during the sweep's last chunk; "
                f"{saved} chunk(s) saved in {store.directory} are "
                f"intact\nresume with: jaxadv sweep --resume {shlex.quote(str(out))}")

    interrupts = Interrupts(err, stopping="the chunk in flight to save it",
                             intact="the chunks saved so far are intact", at_once=at_once)
    bar = progress_bar(err, "sweep", TextColumn("{task.completed:,.0f}/{task.total:,.0f} runs"))
    with interrupts, bar:
        task = bar.add_task("sweep", total=runs)

        def on_chunk(done: int, total: int) -> None:
            progress["done"] = done
            bar.update(task, completed=done, total=total)

        def on_start(chunk_id: ChunkId) -> None:
            in_flight["last"] = progress["done"] + chunk_id.stop - chunk_id.start >= runs

        def on_result(chunk_id: ChunkId, result: ChunkResult) -> None:
            in_flight["last"] = False
            store.save(chunk_id, result)
            computed.append(chunk_id)
            if interrupts.signum and progress["done"] < runs:
                raise _SweepStopped

        try:
            result = run_sweep(
                config, grid, args.seeds, hparams=hp, key=jax.random.key(args.seed),
                num_samples=args.samples, max_parallel=args.max_parallel,
                on_chunk=on_chunk, saved=saved, on_result=on_result, on_start=on_start,
            )
        except _SweepStopped:
            raise interrupts.stopped(
                f"{progress['done']} of {runs} runs",
                f"{len(cast(dict[str, Any], store.manifest)['chunks'])} chunk(s) in {store.directory}",
                f"jaxadv sweep --resume {shlex.quote(str(out))}") from None
    if args.resume is not None and not computed and (out / "summary.json").is_file():
        err.print(f"{out} holds a finished sweep: nothing to resume, no output rewritten")
        store.finish()
        return json.loads((out / "summary.json").read_text())
    if args.resume is not None:
        err.print(f"computed {len(computed)} chunk(s), "
                  f"{sum(c.stop - c.start for c in computed)} of {runs} runs")
    selection = _reevaluate(args, result, err)
    summary = _write_outputs(args, grid, result, points=points, writer=writer, selection=selection)
    store.finish()
    if writer and args.log:
        err.print(f"logging {runs} runs to Weights & Biases …")
        t0 = time.perf_counter()
        log_sweep_wandb(out, result, args.settings(), args.wandb)
        summary["log_seconds"] = time.perf_counter() - t0
        write_json(out / "summary.json", summary)
    console.print(sweep_table(summary))
    also = ", selection.png" if selection is not None else ""
    console.print(f"wrote sweep.csv, summary.json, sweep.png{also}, chunks/ to {out}/")
    return summary
