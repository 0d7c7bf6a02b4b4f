"""``jaxadv sweep --search halving``: successive halving, one compiled call per rung.

``jaxadv sweep --search halving --grid.lr 1e-4 3e-4 1e-3 3e-3 --halving.eta 3`` trains every
point for the first rung, then only the best third from their own state for three times as
many updates, and so on (:func:`~jaxadv.tuning.halving.successive_halving`), printing each rung as
it ends. It writes ``search.csv`` (one row per rung and point: the updates and env steps
trained, the point's settings, its fitness and whether it went on), ``summary.json`` (the
rungs, the pick, the env steps spent and the compiles) and ``search.png`` (each point's
fitness against the env steps it was trained for) under ``--out``; with ``--reeval.top K``
the search's K best are trained again on fresh seeds (:mod:`jaxadv.tuning.selection`). Other
searches (``grid``, and ``--samples`` random draws) are :func:`~jaxadv.cli.sweep.grid_command`'s;
:func:`~jaxadv.cli.sweep.sweep_command` dispatches.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import shlex
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from rich.console import Console

from jaxadv.cli.interrupts import Interrupts
from jaxadv.cli.outdir import OutputLock, replace_atomically
from jaxadv.cli.report import _figure, jsonable, plot_selection, save_panel, write_json
from jaxadv.cli.sweep_args import SweepArgs, prepare_sweep_out
from jaxadv.engine.checkpoint import CheckpointStore
from jaxadv.engine.devices import seed_groups
from jaxadv.engine.metrics import platform_info
from jaxadv.engine.policies import policy_leaves, save_policies
from jaxadv.tuning.halving import (
    HalvingProgress,
    HalvingResult,
    Rung,
    rung_budgets,
    successive_halving,
)
from jaxadv.tuning.pbt import PBTProgress, PBTResult, PBTSettings, population_based_training
from jaxadv.tuning.replay import reevaluate_members
from jaxadv.tuning.selection import reevaluate, selection_report

__all__ = ["halving_command", "pbt_command"]


def pbt_command(args: SweepArgs) -> dict[str, Any]:
    """Population-based training for ``args`` (exploit and explore inside the compiled calls,
    the population saved after each under ``--out/search``); writes ``pbt.csv``, ``best.npz``,
    ``summary.json`` and ``pbt.png`` (and, with ``--reeval.top K``, the top K members'
    schedules replayed on fresh seeds: ``selection`` and ``selection.png``); returns the
    summary. Under ``jax.distributed`` every process runs it: one block of members per
    device of all processes, and process 0 alone locks ``--out`` and writes there (a
    filesystem they share), the checkpoints gathered from every process."""
    writer = jax.process_index() == 0
    with OutputLock(args.out) if writer else contextlib.nullcontext():
        args.check()
        prepare_sweep_out(args, writer=writer)
        config, out = args.config, args.out
        quiet = args.quiet or not writer
        err, console = Console(stderr=True, quiet=quiet), Console(quiet=quiet)
        settings, interval = args.pbt_settings(), args.pbt_interval()
        members = args.population * args.seeds
        groups = (seed_groups(members, jax.local_device_count()) if jax.process_count() == 1
                  else jax.device_count())  # one block per device (at most, in one process)
        err.print(f"population-based training of {config.algo} on {config.env}: {members} "
                  f"members, exploit/explore every {interval} updates inside the compiled "
                  f"calls of {args.pbt_save_every()} interval(s) each …")
        result = _train_population(args, settings, interval, groups, err)
        selection = None
        if args.reeval.top:
            seeds = args.reeval.seeds or args.seeds
            err.print(f"replaying the top {args.reeval.top} member(s)' schedules on {seeds} "
                      "fresh seed(s) …")
            chosen, population, fresh = reevaluate_members(
                config, result, args.reeval.top, seeds, seed=args.seed, hparams=args.hparams)
            selection = selection_report(population, chosen, fresh)
        summary = summarize_pbt(args, result, config.batch_size, groups, selection)
        if writer:  # under jax.distributed, process 0 (every process has the whole result)
            _write_pbt(args, result, summary, selection, members)
        best = summary["best"]
        console.print(f"best member {best['member']}: fitness {best['fitness']:.2f} in the last "
                      f"interval; its lineage's final {', '.join(best['hparams'])}")
        if selection is not None:
            row = selection[0]
            console.print(f"member {row['index']}'s schedule on fresh seeds: IQM "
                          f"{row['fresh']['iqm']:.2f} (its own run: {row['selected']['iqm']:.2f})")
        console.print(f"wrote pbt.csv, best.npz, summary.json, pbt.png"
                      f"{', selection.png' if selection else ''} to {out}/")
        return summary


def _write_pbt(args: SweepArgs, result: PBTResult, summary: dict[str, Any],
               selection: list[dict[str, Any]] | None, members: int) -> None:
    """``pbt.csv``, ``best.npz``, ``summary.json``, ``pbt.png`` (and ``selection.png``)."""
    config, out = args.config, args.out
    write_pbt_csv(out / "pbt.csv", result)
    save_policies(out / "best.npz", policy_leaves(result.state, summary["best"]["member"]))
    write_json(out / "summary.json", summary)
    plot_pbt(out / "pbt.png", result, config.batch_size,
             f"PBT · {config.algo} · {config.env} · {members} members")
    if selection is not None:
        plot_selection(out / "selection.png", selection,
                       f"{config.algo} · {config.env}: PBT members vs their schedules "
                       "on fresh seeds")


def _train_population(args: SweepArgs, settings: PBTSettings, interval: int, groups: int,
                      err: Console) -> PBTResult:
    """The PBT run of ``args``, saved after each compiled call under ``--out/search``; a
    signal stops it after the call in flight (:class:`~jaxadv.engine.driver.RunStopped`),
    and ``--resume`` goes on from the last call saved."""
    interrupts, on_saved, resume = _saved_search(
        args, err, "interval", args.config.num_updates // interval, save_population,
        restore_population, lambda progress: progress.intervals)
    with interrupts:  # members in equal groups, one device each where there are several
        return population_based_training(
            args.config, settings, args.population, args.seeds, interval, hparams=args.hparams,
            key=jax.random.key(args.seed), per_call=args.pbt_save_every(), resume=resume,
            on_saved=on_saved, groups=groups)


def save_population(store: CheckpointStore, progress: PBTProgress) -> None:
    """Checkpoint ``progress`` as step ``progress.intervals``: the population's state,
    hyperparameters and exploit key, and in its history the outputs so far."""
    history = {"fitness": progress.fitness, "parent": progress.parent,
               "returns": progress.returns, "episodes": progress.episodes,
               **{f"hparam_{f}": v for f, v in progress.hparams.items()}}
    store.save(progress.intervals, (progress.state, progress.hp, progress.key), history,
               train_seconds=0.0, config={})


def restore_population(store: CheckpointStore, abstract: Any) -> PBTProgress | None:
    """The progress of the latest intact checkpoint of :func:`save_population`; ``None`` if
    the run saved none (it stopped during its first call)."""
    if not store.steps():
        return None
    checkpoint = store.restore(abstract, warn=lambda message: print(message, file=sys.stderr))
    h, (state, hp, key) = checkpoint.history, checkpoint.state
    return PBTProgress(checkpoint.step, state, hp, key, h["fitness"], h["parent"],
                       {k.removeprefix("hparam_"): v for k, v in h.items()
                        if k.startswith("hparam_")}, h["returns"], h["episodes"])


def summarize_pbt(args: SweepArgs, result: PBTResult, batch_size: int, groups: int,
                  selection: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``summary.json`` of a PBT run: the best member of the last interval, its lineage and
    hyperparameter schedule, the population's fitness per interval, the settings, and
    ``selection`` (the top members' schedules replayed on fresh seeds) where there is one."""
    last = result.fitness[-1]
    member = int(np.nanargmax(np.where(np.isfinite(last), last, -np.inf)))
    path = result.lineage(member)
    schedule = {f: [float(v[i, m]) for i, m in enumerate(path)] for f, v in result.hparams.items()}
    return jsonable({
        "search": "pbt", "env": args.config.env, "algo": args.config.algo,
        "population": args.population, "seeds": args.seeds, "members": len(last),
        "seed_groups": groups,
        "interval": result.interval, "quantile": args.pbt.quantile, "resample": args.pbt.resample,
        "best": {"member": member, "fitness": float(last[member]), "lineage": path,
                 "schedule": schedule,
                 "hparams": {f: values[-1] for f, values in schedule.items()}},
        "fitness_mean": np.nanmean(result.fitness, axis=1).tolist(),
        "env_steps": int(result.returns.size * batch_size),
        "train_config": args.config, "hparams": args.hparams, "grid": args.grid.given(),
        "seed": args.seed, **platform_info(),
        **({} if selection is None else {"selection": selection}),
    })


def write_pbt_csv(path: Any, result: PBTResult) -> None:
    """One row per interval and member: its fitness, the member it then descends from, and
    each searched field before (``<field>``) and after (``<field>_next``) the step."""
    fields = sorted(result.hparams)
    intervals, members = result.fitness.shape
    with replace_atomically(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["interval", "update", "member", "parent", "fitness", *fields,
                         *(f"{name}_next" for name in fields)])
        for i in range(intervals):
            for m in range(members):
                after = [result.hparams[name][i + 1, m] if i + 1 < intervals
                         else result.hparams[name][i, m] for name in fields]
                writer.writerow([i, (i + 1) * result.interval, m, int(result.parent[i, m]),
                                 f"{result.fitness[i, m]:.7g}",
                                 *(f"{result.hparams[name][i, m]:.7g}" for name in fields),
                                 *(f"{v:.7g}" for v in after)])


def plot_pbt(path: Any, result: PBTResult, batch_size: int, title: str) -> None:
    """The population's fitness per interval (every member, and the mean) and each searched
    field's schedule along the best member's lineage."""
    fields = sorted(result.hparams)
    fig, axes = _figure(1 + len(fields))
    steps = (np.arange(result.fitness.shape[0]) + 1) * result.interval * batch_size
    axes[0].plot(steps, result.fitness, color="grey", alpha=0.3, lw=0.8)
    axes[0].plot(steps, np.nanmean(result.fitness, axis=1), color="black", lw=2,
                 label="population mean")
    axes[0].set_xlabel("env steps per member")
    last = result.fitness[-1]
    lineage = result.lineage(int(np.nanargmax(np.where(np.isfinite(last), last, -np.inf))))
    for ax, name in zip(axes[1:], fields):
        ax.plot(steps, [result.hparams[name][i, m] for i, m in enumerate(lineage)], "o-")
        ax.set_yscale("log")
        ax.set_xlabel("env steps per member")
        ax.set_title(f"{name} along the best lineage")
        ax.grid(alpha=0.3)
    save_panel(fig, axes[0], path, title, ylabel="fitness (mean return in the interval)")


def halving_command(args: SweepArgs) -> dict[str, Any]:
    """Run successive halving for ``args``, write its outputs, return the summary."""
    with OutputLock(args.out):
        args.check()
        prepare_sweep_out(args, writer=True)
        return _halving(args)


def _halving(args: SweepArgs) -> dict[str, Any]:
    config, hp = args.config, args.hparams
    err, console = Console(stderr=True, quiet=args.quiet), Console(quiet=args.quiet)
    min_updates = args.halving_min_updates()
    budgets = rung_budgets(config.num_updates, args.halving.eta, min_updates)
    err.print(f"successive halving of {config.algo} on {config.env}: {args.num_points()} "
              f"point(s) × {args.seeds} seed(s), eta {args.halving.eta}, first rung "
              f"{min_updates} update(s) …")
    interrupts, on_saved, resume = _saved_search(
        args, err, "rung", len(budgets), save_rungs, restore_rungs,
        lambda progress: len(progress.rungs))

    def on_rung(rung: Rung) -> None:
        best = max((f for f in rung.fitness if np.isfinite(f)), default=float("nan"))
        err.print(f"rung at {rung.budget} update(s): {len(rung.points)} point(s), best fitness "
                  f"{best:.2f}, {len(rung.kept)} go on ({rung.seconds:.1f} s)")

    with interrupts:
        result = successive_halving(config, args.grid_spec(), args.seeds, hparams=hp,
                                    key=jax.random.key(args.seed), eta=args.halving.eta,
                                    min_updates=min_updates, num_samples=args.samples,
                                    on_rung=on_rung, resume=resume, on_saved=on_saved)
    return _halving_outputs(args, result, err, console)


def _saved_search(args: SweepArgs, err: Console, unit: str, total: int,
                  save: Callable[[CheckpointStore, Any], None],
                  restore: Callable[[CheckpointStore, Any], Any],
                  done: Callable[[Any], int]) -> tuple[Interrupts, Callable, Callable]:
    """A search saved under ``--out/search`` after each of its ``total`` rungs or calls
    (``unit``): its interrupts, ``on_saved(progress)`` (``save`` it; after a signal, stop
    with the resume command unless it was the last) and ``resume(abstract)`` (with
    ``--resume``, ``restore`` the last saved; ``done(progress)`` counts what it holds)."""
    store = _search_store(args)
    interrupts = Interrupts(err, stopping=f"the {unit} in flight to save it",
                            intact=f"the search saved after its last {unit} is intact")

    def on_saved(progress: Any) -> None:
        save(store, progress)
        if interrupts.signum and done(progress) < total:
            raise interrupts.stopped(
                f"{unit} {done(progress)} of {total}", f"the search in {store.directory}",
                f"jaxadv sweep --resume {shlex.quote(str(args.out))}")

    def resume(abstract: Any) -> Any:
        progress = None if args.resume is None else restore(store, abstract)
        if progress is not None:
            err.print(f"resuming {args.out}: {done(progress)} of {total} {unit}(s) saved")
        return progress

    return interrupts, on_saved, resume


def _search_store(args: SweepArgs) -> CheckpointStore:
    """``--out/search``: the search's settings (``settings.json``, what ``--resume`` reads)
    and a checkpoint after each rung (:func:`save_rungs`) or PBT call
    (:func:`save_population`)."""
    directory = args.out / "search"
    if args.resume is None and jax.process_index() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "settings.json", args.search_settings())
    return CheckpointStore(directory)


def save_rungs(store: CheckpointStore, progress: HalvingProgress) -> None:
    """Checkpoint ``progress`` as step ``len(progress.rungs)``: every run's state, and in its
    history each point's returns and episodes so far and each rung's fields."""
    history: dict[str, np.ndarray] = {}
    for p in progress.returns:
        history[f"returns_{p}"], history[f"episodes_{p}"] = progress.returns[p], progress.episodes[p]
    for r, rung in enumerate(progress.rungs):
        for name, value in dataclasses.asdict(rung).items():
            history[f"rung_{r}_{name}"] = np.asarray(value, np.float64 if name in (
                "fitness", "seconds") else np.int64)
    store.save(len(progress.rungs), progress.state, history, train_seconds=0.0, config={})


def restore_rungs(store: CheckpointStore, abstract: Any) -> HalvingProgress | None:
    """The progress of the latest intact checkpoint of :func:`save_rungs`; ``None`` if the
    search saved none (it stopped during its first rung)."""
    if not store.steps():
        return None
    checkpoint = store.restore(abstract, warn=lambda message: print(message, file=sys.stderr))
    h = checkpoint.history
    rungs = [Rung(int(h[f"rung_{r}_budget"]), h[f"rung_{r}_points"].tolist(),
                  h[f"rung_{r}_fitness"].tolist(), h[f"rung_{r}_kept"].tolist(),
                  float(h[f"rung_{r}_seconds"])) for r in range(checkpoint.step)]
    points = [int(k.removeprefix("returns_")) for k in h if k.startswith("returns_")]
    return HalvingProgress(rungs, checkpoint.state, {p: h[f"returns_{p}"] for p in points},
                           {p: h[f"episodes_{p}"] for p in points})


def _halving_outputs(args: SweepArgs, result: HalvingResult, err: Console,
                     console: Console) -> dict[str, Any]:
    config, hp, out = args.config, args.hparams, args.out
    selection = None
    if args.reeval.top:
        seeds = args.reeval.seeds or args.seeds
        err.print(f"re-evaluating the top {args.reeval.top} point(s) on {seeds} fresh seed(s) …")
        chosen, fresh = reevaluate(config, hp, result, args.reeval.top, seeds, seed=args.seed,
                                   ranking=result.ranking)
        selection = selection_report(result, chosen, fresh)
    summary = summarize_halving(args, result, selection)
    write_search_csv(out / "search.csv", result, config.batch_size)
    pick = result.ranking[0]
    save_policies(out / "best.npz", policy_leaves(
        result.state, np.arange(pick * args.seeds, (pick + 1) * args.seeds)))
    write_json(out / "summary.json", summary)
    plot_search(out / "search.png", result, config.batch_size,
                f"successive halving · {config.algo} · {config.env}")
    if selection is not None:
        plot_selection(out / "selection.png", selection,
                       f"{config.algo} · {config.env}: selection vs fresh seeds")
    best = summary["best"]
    console.print(f"pick: point {best['index']} ({best['point']}), final return "
                  f"{best['final_return_mean']:.2f} over {args.seeds} seed(s); "
                  f"{result.env_steps:,} env steps, {result.compiles} compile(s), "
                  f"{result.wall_seconds:.1f} s")
    console.print(f"wrote search.csv, best.npz, summary.json, search.png to {out}/")
    return summary


def summarize_halving(args: SweepArgs, result: HalvingResult,
                      selection: list[dict[str, Any]] | None) -> dict[str, Any]:
    """``summary.json`` of a halving search: the rungs, the pick (``best``), the env steps
    spent, the compiles, the settings, and ``selection`` where there is one."""
    pick = result.ranking[0]
    finals = result.final_return[pick]
    summary = {
        "search": "halving", "eta": args.halving.eta, "env": args.config.env,
        "algo": args.config.algo, "points": len(result.points), "seeds": result.seeds,
        "best": {"index": pick, "point": result.points[pick],
                 "final_return_mean": float(np.nanmean(finals)) if np.isfinite(finals).any()
                 else None},
        "rungs": [dataclasses.asdict(r) for r in result.rungs],
        "env_steps": result.env_steps, "compiles": result.compiles,
        "wall_seconds": result.wall_seconds, "train_config": args.config, "hparams": args.hparams,
        "grid": args.grid.given(), "samples": args.samples, "seed": args.seed,
        **platform_info(),
    }
    if selection is not None:
        summary["selection"] = selection
    return jsonable(summary)


def write_search_csv(path: Any, result: HalvingResult, batch_size: int) -> None:
    """One row per rung and point trained in it."""
    fields = sorted({f for p in result.points for f in p})
    with replace_atomically(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rung", "updates", "env_steps", "point", *fields, "fitness", "kept"])
        for r, rung in enumerate(result.rungs):
            for p, fitness in zip(rung.points, rung.fitness):
                writer.writerow([r, rung.budget, rung.budget * batch_size, p,
                                 *(f"{float(result.points[p][k]):.7g}" for k in fields),
                                 f"{fitness:.7g}", int(p in rung.kept)])


def plot_search(path: Any, result: HalvingResult, batch_size: int, title: str) -> None:
    """Each point's fitness against the env steps (per run) it was trained for: a line
    through the rungs it reached, the pick in bold."""
    fig, (ax,) = _figure(1)
    by_point: dict[int, list[tuple[int, float]]] = {}
    for rung in result.rungs:
        for p, fitness in zip(rung.points, rung.fitness):
            by_point.setdefault(p, []).append((rung.budget * batch_size, fitness))
    for p, line in by_point.items():
        steps, fitnesses = zip(*line)
        pick = p == result.ranking[0]
        ax.plot(steps, fitnesses, "o-", lw=2.5 if pick else 1, alpha=1 if pick else 0.5,
                label=f"pick: point {p}" if pick else None)
    ax.set_xscale("log")
    ax.set_xlabel("env steps per run")
    save_panel(fig, ax, path, title, ylabel="fitness (final return, mean over seeds)")
