"""What runs leave behind.

``jaxadv train``: ``config.json``, ``metrics.csv``, ``summary.json``, ``returns.png`` (and
``telemetry.png`` with ``--telemetry``); metrics arrive from the trainer as a dict of ``[seeds, updates]`` arrays, one chunk of
updates at a time. ``jaxadv sweep``: ``sweep.csv``, ``summary.json``, ``sweep.png``,
from a :class:`~jaxadv.engine.sweep.SweepResult`.

Host-side only (NumPy, ``csv``, ``json``, matplotlib); nothing here is traced.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from jaxadv.cli.outdir import replace_atomically
from jaxadv.engine.metrics import platform_info
from jaxadv.stats import forward_fill, mean_ci95, seed_mean_std, windowed_returns

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from jaxadv.engine.sweep import SweepResult

__all__ = [
    "jsonable",
    "plot_returns",
    "plot_selection",
    "plot_sweep",
    "plot_telemetry",
    "progress_bar",
    "save_panel",
    "summarize_sweep",
    "summary_table",
    "sweep_table",
    "write_json",
    "write_sweep_csv",
]

def jsonable(value: Any) -> Any:
    """Plain JSON values: dataclasses and tuples unpacked, NumPy scalars as Python, NaN as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, pathlib.Path):
        return str(value)
    if isinstance(value, np.generic | np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: pathlib.Path, data: Any) -> None:
    """Write ``data`` as indented, strict JSON (non-finite floats become ``null``)."""
    text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
    with replace_atomically(path) as tmp:  # the old file or the whole new one, never part
        tmp.write_text(text)


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
    seeds, updates = np.shape(episode_return)
    window = max(1, updates // 50)
    curves = forward_fill(windowed_returns(episode_return, episodes, window))
    mean, std = seed_mean_std(curves)
    steps = np.asarray(env_steps)
    fig, (ax,) = _figure(1)
    ax.plot(steps, mean, lw=1.5, label=f"mean of {seeds} seed(s), episodes of the last {window} update(s)")
    ax.fill_between(steps, mean - std, mean + std, alpha=0.25, lw=0, label="± std across seeds")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("episodic return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)


def plot_telemetry(path: pathlib.Path, env_steps: np.ndarray, history: dict[str, np.ndarray],
                   title: str) -> None:
    """Save the gradient-quality telemetry (``TrainConfig.telemetry``) vs env steps (PNG).

    ``env_steps``: ``[updates]``; ``history``: ``[seeds, updates]`` arrays of ``adv_mean``,
    ``adv_std`` and, where the run has them, ``grad_signal``, ``grad_noise``, ``grad_cosine``
    and ``zero_adv_groups``. Each curve is the mean over seeds of each
    seed's trailing mean over 2% of the updates; the gradient SNR is the ratio of the
    trailing means of ``grad_signal`` and ``grad_noise`` (steadier than a mean of per-update
    ratios), on a log scale where it is positive. Without the gradient metrics (one minibatch
    per epoch) those panels say so.
    """
    updates = np.shape(history["adv_mean"])[1]
    window = max(1, updates // 50)
    smooth = lambda name: windowed_returns(np.asarray(history[name], np.float64),
                                           np.ones(np.shape(history[name])), window)
    steps = np.asarray(env_steps)
    group = "zero_adv_groups" in history
    fig, axes = _figure(4 if group else 3)
    snr_ax, cos_ax, adv_ax = axes[:3]
    if "grad_noise" in history:
        snr = np.mean(smooth("grad_signal") / smooth("grad_noise"), axis=0)
        snr_ax.plot(steps, np.where(snr > 0, snr, np.nan), lw=1.5)
        snr_ax.set_yscale("log")
        if np.any(snr <= 0):
            snr_ax.set_title("gaps: the signal's estimate ≤ 0 (lost in noise)", fontsize="small")
        cos_ax.plot(steps, np.mean(smooth("grad_cosine"), axis=0), lw=1.5)
    else:
        for ax in (snr_ax, cos_ax):
            ax.text(0.5, 0.5, "one minibatch per epoch:\nno spread to measure",
                    ha="center", va="center", transform=ax.transAxes)
    snr_ax.set_ylabel("gradient SNR  ‖E g‖² / tr Σ (per minibatch)")
    cos_ax.set_ylabel("mean cos(minibatch gradient, their mean)")
    mean, std = np.mean(smooth("adv_mean"), axis=0), np.mean(smooth("adv_std"), axis=0)
    adv_ax.plot(steps, mean, lw=1.5, label="mean")
    adv_ax.fill_between(steps, mean - std, mean + std, alpha=0.25, lw=0, label="± std")
    adv_ax.set_ylabel("advantages (before normalisation)")
    adv_ax.legend(loc="best", fontsize="small")
    if group:
        axes[3].plot(steps, np.mean(smooth("zero_adv_groups"), axis=0), lw=1.5)
        axes[3].set_ylim(-0.02, 1.02)
        axes[3].set_ylabel("fraction of groups with all advantages 0")
    for ax in axes:
        ax.set_xlabel("environment steps (per seed)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} · seed means of trailing means over {window} update(s)")
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)


def _figure(panels: int) -> tuple[Figure, list[Axes]]:
    """A row of ``panels`` axes on a bare Agg figure (no pyplot, no global backend state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 if panels == 1 else 5.0 * panels, 4.0), layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(1, panels)))


def summary_table(summary: dict[str, Any]) -> Table:
    """A two-column :class:`rich.table.Table` of the run's headline numbers."""
    return _table(f"{summary['env']} · {summary['algo']}", [
        ("final return (last 10%)",
         _plus_minus(summary["final_return_mean"], summary["final_return_std"])),
        ("seeds", str(summary["seeds"])),
        ("env steps per seed", f"{summary['env_steps']:,}"),
        ("updates (per call)", f"{summary['num_updates']} ({summary['chunk_updates']})"),
        ("compile", f"{summary['compile_seconds']:.1f} s"),
        ("train", f"{summary['train_seconds']:.1f} s"),
        ("steps/s (all seeds)", f"{summary['steps_per_second']:,.0f}"),
        ("device", f"{summary['device']} · jax {summary['jax_version']}"),
    ])


def _table(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    """A two-column (name, value) :class:`rich.table.Table` without a header."""
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def _plus_minus(mean: float | None, spread: float | None) -> str:
    """``"mean ± spread"``; ``n/a`` for a missing mean, the bare mean for a missing spread."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if spread is None or not math.isfinite(spread):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {spread:.2f}"


# --- jaxadv sweep: sweep.csv, summary.json, sweep.png ---



def _hparam_fields() -> list[str]:
    from jaxadv.engine.train import HParams

    return [f.name for f in dataclasses.fields(HParams)]


def _swept(result: SweepResult) -> list[str]:
    """The grid's fields, in the grid's order (every point has the same keys)."""
    return list(result.points[0]) if result.points else []


def _key(value: Any) -> Any:
    """A hashable, comparable stand-in for a grid value (lists, e.g. ``hidden``, as tuples)."""
    return tuple(value) if isinstance(value, list) else value


def _fmt(value: Any) -> str:
    """A short label for a grid value: ``3e-04`` → ``0.0003``, ``0.95`` → ``0.95``."""
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def _csv_value(value: Any) -> str:
    """Exact and NaN-safe: floats as ``repr`` (``nan`` for NaN: ``float()`` and pandas read it)."""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    if isinstance(value, list | tuple):
        return " ".join(_csv_value(v) for v in value)
    return str(value)


def _run_env_steps(result: SweepResult, point: int) -> int:
    """Environment steps of one run (one seed) of ``point``."""
    steps = np.asarray(result.env_steps[point])
    return int(steps[-1]) if steps.size else 0


def write_sweep_csv(path: pathlib.Path, result: SweepResult, hparams: Any) -> None:
    """``sweep.csv``: one row per (point, seed), ``points × seeds`` rows.

    Columns: ``point`` (index into ``result.points``), ``seed`` (index among the seeds),
    the swept ``TrainConfig`` fields if any (e.g. ``num_envs``, ``estimator``), every
    ``HParams`` field (the point's value, or the base ``hparams`` value where it is not
    swept), ``env_steps`` (of that run), ``final_return`` (:func:`final_returns`: the mean
    return of the episodes that ended in the last ``ceil(U / 10)`` of the U updates) and
    ``auc`` (mean of the per-update returns over all updates). A run with no finished
    episode in the window reads ``nan``, which ``float()`` and pandas parse as NaN.
    """
    hp_fields = _hparam_fields()
    static = [f for f in _swept(result) if f not in hp_fields]
    with replace_atomically(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["point", "seed", *static, *hp_fields, "env_steps", "final_return", "auc"])
        for p, point in enumerate(result.points):
            settings = [_csv_value(point[n]) for n in static]
            settings += [_csv_value(point.get(n, getattr(hparams, n))) for n in hp_fields]
            steps = _run_env_steps(result, p)
            for s in range(result.seeds):
                final, auc = float(result.final_return[p, s]), float(result.auc[p, s])
                writer.writerow([p, s, *settings, steps, f"{final:.7g}", f"{auc:.7g}"])


def summarize_sweep(
    result: SweepResult, config: Any, hparams: Any, **run: Any
) -> dict[str, Any]:
    """The sweep's headline numbers for ``summary.json``.

    Per point (``per_point``, in the order of ``result.points``): ``final_return_mean``
    over seeds and ``final_return_ci95``, the half-width of its 95% confidence interval
    (:func:`mean_ci95`; seeds without a finished episode in the window are left out,
    ``final_return_seeds`` counts the rest; ``null`` with fewer than 2), and ``auc_mean``.
    ``best`` is the point with the highest ``final_return_mean`` (the first of equals;
    ``null`` if no point has one), with its interval ``final_return_ci95_low/high``.
    ``train_seconds`` = ``wall_seconds − compile_seconds``; ``agents_per_second`` =
    ``points × seeds / train_seconds``: complete training runs (agents) finished per
    second, compile excluded; ``env_steps_per_second`` counts every run's environment
    steps over the same seconds. ``config`` and ``hparams`` are the base settings;
    ``run`` (the grid, the command's options) is stored as given.
    """
    mean, half, count = mean_ci95(result.final_return.T)
    auc_mean, _ = seed_mean_std(result.auc.T)
    per_point = [
        {"point": point, "final_return_mean": float(mean[i]), "final_return_ci95": float(half[i]),
         "final_return_seeds": int(count[i]), "auc_mean": float(auc_mean[i])}
        for i, point in enumerate(result.points)
    ]
    best = None
    if np.isfinite(mean).any():
        i = int(np.nanargmax(mean))
        best = {"index": i, **per_point[i],
                "final_return_ci95_low": float(mean[i] - half[i]),
                "final_return_ci95_high": float(mean[i] + half[i])}
    runs = len(result.points) * result.seeds
    env_steps = result.seeds * sum(_run_env_steps(result, p) for p in range(len(result.points)))
    train_seconds = max(result.wall_seconds - result.compile_seconds, 1e-9)
    return {
        "env": config.env,
        "algo": config.algo,
        "estimator": config.estimator,
        "swept": _swept(result),
        "best": best,
        "points": len(result.points),
        "seeds": result.seeds,
        "runs": runs,
        "devices": result.devices,
        "processes": result.processes,
        "compile_seconds": result.compile_seconds,
        "wall_seconds": result.wall_seconds,
        "train_seconds": train_seconds,
        "agents_per_second": runs / train_seconds,
        "env_steps": env_steps,
        "env_steps_per_second": env_steps / train_seconds,
        "per_point": per_point,
        "train_config": config,
        "hparams": hparams,
        "run": run,
        **platform_info(),
    }


def sweep_table(summary: dict[str, Any]) -> Table:
    """A two-column :class:`rich.table.Table` of the sweep's headline numbers."""
    best = summary["best"] or {}
    point = ", ".join(f"{k}={_fmt(v)}" for k, v in best.get("point", {}).items()) or "n/a"
    return _table(f"sweep · {summary['env']} · {summary['algo']}", [
        ("best point", point),
        ("its final return (± 95% CI)",
         _plus_minus(best.get("final_return_mean"), best.get("final_return_ci95"))),
        *_selection_rows(summary.get("selection")),
        ("points × seeds", f"{summary['points']} × {summary['seeds']} = {summary['runs']}"),
        ("devices · processes", f"{summary['devices']} · {summary['processes']}"),
        ("compile", f"{summary['compile_seconds']:.1f} s"),
        ("wall (compile included)", f"{summary['wall_seconds']:.1f} s"),
        ("agents/s (compile excluded)", f"{summary['agents_per_second']:,.2f}"),
        ("env steps/s (all runs)", f"{summary['env_steps_per_second']:,.0f}"),
        ("device", f"{summary['device']} · jax {summary['jax_version']}"),
    ])


def _selection_rows(selection: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    """The sweep table's rows for the re-evaluated top point (its fresh-seed IQM, the gap)."""
    if not selection:
        return []
    top = selection[0]
    fresh, gap = top["fresh"], top["optimism_gap"]
    return [
        (f"point {top['index']}, fresh seeds: IQM [95% CI]",
         f"{fresh['iqm']:.2f} [{fresh['ci95']['low']:.2f}, {fresh['ci95']['high']:.2f}]"),
        ("optimism gap (selection − fresh)",
         f"{gap['value']:+.2f} [{gap['ci95']['low']:+.2f}, {gap['ci95']['high']:+.2f}]"),
    ]


def _heat_cells(points: list[dict[str, Any]], fields: list[str]) -> tuple[list, list, np.ndarray] | None:
    """For a full 2-D grid: each field's sorted values and the point index of every cell."""
    rows = sorted({_key(p[fields[0]]) for p in points})
    cols = sorted({_key(p[fields[1]]) for p in points})
    if len(points) != len(rows) * len(cols):
        return None
    index = np.full((len(rows), len(cols)), -1)
    for i, p in enumerate(points):
        cell = rows.index(_key(p[fields[0]])), cols.index(_key(p[fields[1]]))
        if index[cell] >= 0:
            return None
        index[cell] = i
    return rows, cols, index


def _plot_heat(ax: Axes, fields: list[str], cells: tuple, mean: np.ndarray, half: np.ndarray) -> None:
    import matplotlib

    rows, cols, index = cells
    grid = np.ma.masked_invalid(mean[index])
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap)
    ax.figure.colorbar(image, ax=ax, label="mean final return")
    middle = np.nanmean(mean) if np.isfinite(mean).any() else 0.0
    for (r, c), i in np.ndenumerate(index):
        text = _plus_minus(mean[i], half[i]).replace(" ± ", "\n± ")
        color = "black" if np.isfinite(mean[i]) and mean[i] > middle else "white"
        ax.text(c, r, text, ha="center", va="center", fontsize="small", color=color)
    if np.isfinite(mean).any():
        r, c = np.argwhere(index == int(np.nanargmax(mean)))[0]
        ax.add_patch(_rectangle((c - 0.5, r - 0.5)))
    ax.set_xticks(range(len(cols)), [_fmt(v) for v in cols])
    ax.set_yticks(range(len(rows)), [_fmt(v) for v in rows])
    ax.set_xlabel(fields[1])
    ax.set_ylabel(fields[0])
    ax.set_title("mean final return ± 95% CI (best boxed)", fontsize="medium")


def _rectangle(corner: tuple[float, float]):
    from matplotlib.patches import Rectangle

    return Rectangle(corner, 1, 1, fill=False, edgecolor="red", lw=2)


def _plot_field(
    ax: Axes, result: SweepResult, field: str, others: list[str], mean: np.ndarray, half: np.ndarray
) -> None:
    values = [_key(p[field]) for p in result.points]
    numeric = all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values)
    if numeric:
        x = np.asarray(values, dtype=np.float64)
    else:
        categories = sorted(set(values), key=str)
        x = np.asarray([categories.index(v) for v in values], dtype=np.float64)
        ax.set_xticks(range(len(categories)), [_fmt(c) for c in categories])
    ax.scatter(np.repeat(x, result.seeds), result.final_return.ravel(), s=12, lw=0, alpha=0.4,
               color="grey", label="one run (seed)")
    groups: dict[tuple, list[int]] = {}
    for i, point in enumerate(result.points):
        groups.setdefault(tuple(_key(point[o]) for o in others), []).append(i)
    bars = np.nan_to_num(half)  # no bar where the CI is undefined (fewer than 2 seeds)
    gridlike = len(set(values)) <= 8
    if len(groups) <= 6 and any(len(idx) > 1 for idx in groups.values()):
        for setting, idx in groups.items():
            idx = sorted(idx, key=lambda i: x[i])
            label = ", ".join(f"{o}={_fmt(v)}" for o, v in zip(others, setting)) or "mean ± 95% CI"
            ax.errorbar(x[idx], mean[idx], yerr=bars[idx], marker="o", ms=4, capsize=3,
                        ls="-" if gridlike else "none", label=label)
    else:
        ax.errorbar(x, mean, yerr=bars, fmt="o", ms=4, capsize=3, label="point: mean ± 95% CI")
    if numeric and x.min() > 0 and x.max() / x.min() >= 3:
        ax.set_xscale("log")
    if numeric and gridlike:  # tick the grid's values
        ticks = sorted(set(values))
        ax.set_xticks(ticks, [_fmt(v) for v in ticks])
        ax.minorticks_off()
    shown = np.concatenate([result.final_return.ravel(), mean])
    shown = shown[np.isfinite(shown)]
    if shown.size:  # the runs and means set the y-range; a wide CI (few seeds) runs off it
        low, high = shown.min(), shown.max()
        pad = max(0.1 * (high - low), 1.0)
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel(field)
    ax.set_ylabel("final return (last 10% of updates)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="x-small")


def plot_sweep(path: pathlib.Path, result: SweepResult, title: str) -> None:
    """Save final return against each swept field (PNG); for a full 2-D grid, a heat-map first.

    One panel per field that takes more than one value: every run's final return (grey
    dots: the spread over seeds) and each point's mean with its 95% CI (:func:`mean_ci95`),
    one colour per setting of the other swept fields when there are at most six, joined
    by lines when the field takes at most eight values (a grid). A positive field that
    spans 3× or more gets a log x-axis; the y-range fits the runs and the means, so a
    wide CI from few seeds may run off it. With exactly two swept fields crossed in a
    full grid, the heat-map's cell (row i, column j) is the mean final return of the
    point at the first field's i-th value and the second's j-th, annotated with mean ±
    CI; the best cell is boxed.
    """
    fields = [f for f in _swept(result) if len({_key(p[f]) for p in result.points}) > 1]
    fields = fields or _swept(result)[:1]
    mean, half, _ = mean_ci95(result.final_return.T)
    cells = _heat_cells(result.points, fields) if len(fields) == 2 else None
    fig, axes = _figure(len(fields) + (cells is not None))
    if cells is not None:
        _plot_heat(axes[0], fields, cells, mean, half)
    for ax, field in zip(axes[cells is not None:], fields):
        _plot_field(ax, result, field, [f for f in fields if f != field], mean, half)
    fig.suptitle(title)
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)


def plot_selection(path: pathlib.Path, rows: list[dict[str, Any]], title: str) -> None:
    """Save the re-evaluation of a sweep's top points (PNG): per point, the final return of
    each selection seed and each fresh seed (dots), and the interquartile mean of each with
    its bootstrap 95% interval (bars); the optimism gap is the drop from one to the other.
    ``rows``: :func:`~jaxadv.tuning.selection.selection_report`'s."""
    fig, (ax,) = _figure(1)
    for i, row in enumerate(rows):
        for offset, part, colour in ((-0.15, "selected", "tab:blue"), (0.15, "fresh", "tab:orange")):
            values = np.asarray(row[part]["per_seed"], np.float64)
            ax.scatter(np.full(values.size, i + offset), values, s=10, alpha=0.4, color=colour)
            low, high = row[part]["ci95"]["low"], row[part]["ci95"]["high"]
            mid = row[part]["iqm"]
            if np.isfinite([mid, low, high]).all():
                ax.errorbar(i + offset, mid, yerr=[[mid - low], [high - mid]], fmt="o",
                            color=colour, capsize=4,
                            label=None if i else f"{part} seeds: IQM, 95% CI")
    ax.set_xticks(range(len(rows)), [
        f"point {row['index']}\n" + ", ".join(f"{k}={_fmt(v)}" for k, v in row["point"].items())
        for row in rows], fontsize="small")
    save_panel(fig, ax, path, title, ylabel="final return (last 10% of updates)")


def save_panel(fig: Figure, ax: Axes, path: pathlib.Path, title: str, *, ylabel: str) -> None:
    """Label, grid and legend one panel, title the figure and save it (renamed into place)."""
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.suptitle(title)
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)


def progress_bar(console: Console, label: str, *columns: TextColumn) -> Progress:
    """A progress bar: ``label``, the bar, ``columns``, elapsed and remaining time."""
    return Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), *columns, TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    )
