"""Honest selection: the configurations a sweep picked, trained again on seeds it never saw.

A sweep that picks its best point by the returns of the seeds it trained reports an
optimistic return: among many points, the one whose seeds happened to do well is picked
(the winner's curse). :func:`reevaluate` retrains the ``top`` points on ``seeds`` fresh
seeds (:func:`fresh_key`: keys split from ``fold_in(key(seed), 2)``, while the sweep's
own seeds are split from ``key(seed)`` and its random draws come from ``fold_in(key, 1)``),
and :func:`selection_report` states, for each, the interquartile mean of the final returns
on the selection seeds and on the fresh ones, each with a bootstrap 95% interval
(:func:`~jaxadv.stats.iqm`, :func:`~jaxadv.stats.bootstrap_ci`), and the optimism gap:
selection minus fresh, with its interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np

from jaxadv.engine.sweep import SweepResult, run_sweep
from jaxadv.engine.train import HParams, TrainConfig
from jaxadv.stats import bootstrap_ci, iqm

__all__ = ["Scored", "fresh_key", "reevaluate", "selection_report", "top_points"]


class Scored(Protocol):
    """What :func:`selection_report` reads: one configuration per point and its final
    returns per seed, ``[P, S]`` (a :class:`~jaxadv.engine.sweep.SweepResult`, a
    :class:`~jaxadv.tuning.halving.HalvingResult`, or :class:`~jaxadv.tuning.replay.Lineages`)."""

    @property
    def points(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def final_return(self) -> np.ndarray: ...


def fresh_key(seed: int) -> jax.Array:
    """The key whose ``split(·, S)`` gives the fresh seeds of :func:`reevaluate`: disjoint
    from the selection seeds ``split(key(seed), seeds)``."""
    return jax.random.fold_in(jax.random.key(seed), 2)


def top_points(result: SweepResult, top: int) -> list[int]:
    """The ``top`` points with the highest interquartile mean of final returns over the
    sweep's seeds (the first of equals; points without a finite return last)."""
    scores = np.array([iqm(result.final_return[p]) for p in range(len(result.points))])
    order = sorted(range(len(scores)), key=lambda p: (not np.isfinite(scores[p]), -np.nan_to_num(scores[p])))
    return order[:top]


def reevaluate(config: TrainConfig, hparams: HParams, result: Any, top: int, seeds: int,
               *, seed: int, max_parallel: int | None = None,
               on_chunk: Callable[[int, int], None] | None = None,
               ranking: list[int] | None = None) -> tuple[list[int], SweepResult]:
    """Train the :func:`top_points` of ``result`` (or the first ``top`` of ``ranking``, a
    search's own order) again on ``seeds`` fresh seeds (:func:`fresh_key` of ``seed``):
    ``(their indices in result.points, the new result)``."""
    chosen = top_points(result, top) if ranking is None else list(ranking[:top])
    fresh = run_sweep(config, {}, seeds, hparams=hparams, key=fresh_key(seed),
                      max_parallel=max_parallel, on_chunk=on_chunk,
                      points=[result.points[p] for p in chosen])
    return chosen, fresh


def _interval(low_high: tuple[float, float]) -> dict[str, float]:
    return {"low": low_high[0], "high": low_high[1]}


def selection_report(result: Scored, chosen: list[int], fresh: Scored,
                     *, reps: int = 2000) -> list[dict[str, Any]]:
    """Per re-evaluated point, in ``chosen``'s order: ``point`` (its configuration),
    ``index`` (in ``result.points``), ``selected`` (interquartile mean, its bootstrap 95%
    interval and the per-seed final returns on the selection seeds), ``fresh`` (the same on
    the fresh seeds) and ``optimism_gap`` (selection minus fresh IQM, with the interval of
    the difference, each sample resampled on its own)."""
    rows = []
    for i, p in enumerate(chosen):
        sel, new = np.asarray(result.final_return[p]), np.asarray(fresh.final_return[i])
        rows.append({
            "index": int(p),
            "point": _plain(result.points[p]),
            "selected": {"iqm": iqm(sel), "ci95": _interval(bootstrap_ci(sel, reps=reps)),
                         "per_seed": sel.tolist()},
            "fresh": {"iqm": iqm(new), "ci95": _interval(bootstrap_ci(new, reps=reps)),
                      "per_seed": new.tolist()},
            "optimism_gap": {"value": iqm(sel) - iqm(new),
                             "ci95": _interval(bootstrap_ci(sel, new, reps=reps))},
        })
    return rows


def _plain(point: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in point.items()}
