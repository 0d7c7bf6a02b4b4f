"""Successive halving over a sweep's traced hyperparameters, one compiled call per rung.

Every configuration (a point of the grid, or a random draw, on every seed) trains for the
first rung's budget; only the best ``1/eta`` of the points (by the mean over their seeds of
the final return so far: :func:`~jaxadv.stats.final_returns`) go on, *from their own
state*, for ``eta`` times as many updates in all; and so on until the last rung reaches the
configuration's ``num_updates``. A point that reaches rung ``r`` has trained exactly the
first updates of its full run (the learning-rate schedule is the full run's), so what the
last rung trains is what a full run would. Each rung is one ``vmap`` over the surviving
(point, seed) runs of :meth:`~jaxadv.engine.train.Trainer.run`, so a search compiles once for the
initial states and once per rung.

:func:`halving_loop` is the schedule alone (which points go on), given a function that
trains the survivors for some updates and returns their fitness; :func:`successive_halving`
runs it with the trainer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxadv.engine.sweep import LogUniform, Uniform, _stacked_hparams, expand_grid
from jaxadv.engine.train import HParams, TrainConfig, make_trainer
from jaxadv.stats import final_returns, seed_mean_std

__all__ = ["HalvingProgress", "HalvingResult", "Rung", "halving_loop", "rung_budgets",
           "successive_halving"]

_HPARAM_FIELDS = tuple(f.name for f in dataclasses.fields(HParams))


def rung_budgets(num_updates: int, eta: int, min_updates: int) -> list[int]:
    """The updates each rung has trained in all: ``min_updates``, ``eta`` times that, … and
    last ``num_updates`` (a rung that would fall short of ``eta`` times the one before is
    merged into the last).

    >>> rung_budgets(90, 3, 10), rung_budgets(100, 3, 10), rung_budgets(10, 3, 10)
    ([10, 30, 90], [10, 30, 100], [10])
    """
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ValueError(f"`halving.eta` must be an integer >= 2, got {eta!r}")
    if not 1 <= min_updates <= num_updates:
        raise ValueError(f"the first rung's budget ({min_updates} update(s)) must be between 1 "
                         f"and the run's {num_updates} update(s)")
    budgets, budget = [], min_updates
    while budget < num_updates and budget * eta <= num_updates:
        budgets.append(budget)
        budget *= eta
    return [*budgets, num_updates]


@dataclasses.dataclass(frozen=True)
class Rung:
    """One rung: the updates trained in all (``budget``), the points trained (``points``,
    indices) and their ``fitness`` (same order), and the points that go on (``kept``)."""

    budget: int
    points: list[int]
    fitness: list[float]
    kept: list[int]
    seconds: float = 0.0


def halving_loop(num_points: int, budgets: Sequence[int], eta: int,
                 train: Callable[[list[int], int, int], np.ndarray],
                 on_rung: Callable[[Rung], None] | None = None,
                 done_rungs: Sequence[Rung] = ()) -> list[Rung]:
    """The successive-halving schedule: ``train(points, updates, budget)`` trains the listed
    points ``updates`` more updates (to ``budget`` in all) and returns their fitness; after
    each rung but the last, the best ``ceil(n / eta)`` go on (the first of equals; a NaN
    fitness ranks last). ``done_rungs``: the first rungs, already trained (a resumed
    search), which the loop goes on from."""
    rungs = list(done_rungs)
    if [r.budget for r in rungs] != list(budgets[:len(rungs)]):
        raise ValueError(f"the rungs done ({[r.budget for r in rungs]} updates) are not the "
                         f"first of this search's {list(budgets)}")
    alive = sorted(rungs[-1].kept) if rungs else list(range(num_points))
    done = rungs[-1].budget if rungs else 0
    for r, budget in enumerate(budgets):
        if r < len(done_rungs):
            continue
        t0 = time.perf_counter()
        fitness = np.asarray(train(alive, budget - done, budget), np.float64)
        order = sorted(range(len(alive)),
                       key=lambda i: (not np.isfinite(fitness[i]), -np.nan_to_num(fitness[i])))
        last = r == len(budgets) - 1
        kept = [alive[i] for i in order[:len(alive) if last else max(1, math.ceil(len(alive) / eta))]]
        rung = Rung(budget, list(alive), fitness.tolist(), sorted(kept), time.perf_counter() - t0)
        rungs.append(rung)
        if on_rung is not None:
            on_rung(rung)
        alive, done = sorted(kept), budget
    return rungs


@dataclasses.dataclass
class HalvingResult:
    """What :func:`successive_halving` returns: the ``points``, ``seeds``, the ``rungs``,
    each point's ``returns`` and ``episodes`` ``[seeds, updates it trained]``,
    ``final_return [points, seeds]`` (at the budget each point reached), ``ranking`` (points
    by the last rung they reached, then fitness: the first is the search's pick),
    ``env_steps`` (all runs together), ``compiles``, ``wall_seconds`` and the final
    ``state`` of every run (run ``p * seeds + s``: point ``p``, seed ``s``; a point that
    stopped at a rung keeps its state there)."""

    points: list[dict[str, Any]]
    seeds: int
    rungs: list[Rung]
    returns: list[np.ndarray]
    episodes: list[np.ndarray]
    final_return: np.ndarray
    ranking: list[int]
    env_steps: int
    compiles: int
    wall_seconds: float
    state: Any = None


@dataclasses.dataclass
class HalvingProgress:
    """A search between two rungs, what a resumed search goes on from: the ``rungs`` done,
    every run's ``state`` after the last of them (stacked as :class:`HalvingResult`'s), and
    each point's per-update ``returns`` and ``episodes`` so far, ``{point: [seeds,
    updates]}``."""

    rungs: list[Rung]
    state: Any
    returns: dict[int, np.ndarray]
    episodes: dict[int, np.ndarray]


def _programs(trainer: Any, seeds: int, n: int) -> tuple[Callable, Callable[[int], Callable]]:
    """The search's compiled calls: ``init(key, hp)``, every run's initial state (run
    ``p * seeds + s``: point ``p``, seed ``s``), and ``rung(updates)(state, hp, rows)``, the
    runs ``rows`` trained ``updates`` more, the others' states kept."""

    @jax.jit
    def init(key: jax.Array, hp: HParams):
        keys = jax.random.key_data(jax.random.split(key, seeds))
        keys = jax.random.wrap_key_data(jax.numpy.concatenate([keys] * n))
        return jax.vmap(trainer.init)(keys, hp)

    def rung(updates: int) -> Callable:
        @jax.jit
        def run(state, hp, rows):
            pick = lambda x: x[rows]
            new, metrics = jax.vmap(functools.partial(trainer.run, num_updates=updates))(
                jax.tree.map(pick, state), jax.tree.map(pick, hp))
            return jax.tree.map(lambda x, y: x.at[rows].set(y), state, new), metrics
        return run

    return init, rung


def successive_halving(
    config: TrainConfig, grid: Mapping[str, Sequence | Uniform | LogUniform], seeds: int, *,
    hparams: HParams | None = None, key: jax.Array | None = None, eta: int = 3,
    min_updates: int | None = None, num_samples: int | None = None,
    on_rung: Callable[[Rung], None] | None = None,
    resume: HalvingProgress | Callable[[Any], HalvingProgress | None] | None = None,
    on_saved: Callable[[HalvingProgress], None] | None = None,
) -> HalvingResult:
    """Successive halving over the traced ``HParams`` fields of ``grid`` (lists, or
    distributions with ``num_samples`` draws, as :func:`~jaxadv.engine.sweep.run_sweep`) with
    ``seeds`` seeds per point (``split(key, seeds)``: common random numbers across points).
    ``min_updates``: the first rung's budget (default ``num_updates // eta²``, at least 1).
    After each rung, ``on_rung(rung)``, then ``on_saved(progress)`` with what a search
    resumed from it (``resume=progress``, the other arguments the same) needs to end with
    the same bits as one that never stopped. ``resume`` may also be a function of the
    abstract state (``jax.ShapeDtypeStruct`` leaves) that restores the progress, or gives
    ``None`` to start afresh."""
    static = sorted(set(grid) - set(_HPARAM_FIELDS))
    if static:
        raise ValueError(f"`grid`: successive halving continues each run from its own state, "
                         f"so every point must share one program; {static} would change it")
    if config.eval_every:
        raise ValueError("`eval_every`: not available with successive halving")
    key = jax.random.key(0) if key is None else key
    points = expand_grid(grid, num_samples=num_samples, key=jax.random.fold_in(key, 1))
    budgets = rung_budgets(config.num_updates, eta,
                           min_updates or max(1, config.num_updates // eta**2))
    trainer, base = make_trainer(config), (hparams or HParams()).validate()
    n, start = len(points), time.perf_counter()
    hp = _stacked_hparams([p for p in points for _ in range(seeds)], base)
    init, rung = _programs(trainer, seeds, n)
    if callable(resume):
        resume = resume(jax.eval_shape(init, key, hp))
    state = init(key, hp) if resume is None else resume.state
    history: dict[int, dict[str, list[np.ndarray]]] = {p: {"r": [], "e": []} for p in range(n)}
    if resume is not None:
        for p in resume.returns:
            history[p] = {"r": [resume.returns[p]], "e": [resume.episodes[p]]}
    compiles, done = [int(resume is None)], [] if resume is None else list(resume.rungs)

    def train(alive: list[int], updates: int, budget: int) -> np.ndarray:
        nonlocal state
        rows = np.concatenate([np.arange(p * seeds, (p + 1) * seeds) for p in alive])
        compiles[0] += 1
        state, metrics = rung(updates)(state, hp, rows)
        r = np.asarray(metrics["episode_return"], np.float64).reshape(len(alive), seeds, -1)
        e = np.asarray(metrics["episodes"]).reshape(len(alive), seeds, -1)
        fitness = []
        for i, p in enumerate(alive):
            history[p]["r"].append(r[i])
            history[p]["e"].append(e[i])
            finals = final_returns(*_joined(history, p))
            fitness.append(seed_mean_std(finals[:, None])[0][0])
        return np.asarray(fitness)

    def rung_done(finished: Rung) -> None:
        done.append(finished)
        if on_rung is not None:
            on_rung(finished)
        if on_saved is not None:
            trained = [p for p in range(n) if history[p]["r"]]
            on_saved(HalvingProgress(list(done), state,
                                     {p: _joined(history, p)[0] for p in trained},
                                     {p: _joined(history, p)[1] for p in trained}))

    rungs = halving_loop(n, budgets, eta, train, rung_done, done_rungs=list(done))
    return _result(points, seeds, rungs, [_joined(history, p) for p in range(n)],
                   config.batch_size, compiles[0], time.perf_counter() - start, state)


def _joined(history: dict[int, dict[str, list[np.ndarray]]], p: int) -> tuple[np.ndarray, np.ndarray]:
    """Point ``p``'s returns and episodes so far, ``[seeds, updates]`` each."""
    return np.concatenate(history[p]["r"], 1), np.concatenate(history[p]["e"], 1)


def _result(points: list[dict[str, Any]], seeds: int, rungs: list[Rung],
            trained: list[tuple[np.ndarray, np.ndarray]], batch_size: int, compiles: int,
            seconds: float, state: Any) -> HalvingResult:
    returns, episodes = [r for r, _ in trained], [e for _, e in trained]
    reached = {p: r for r, rung in enumerate(rungs) for p in rung.points}
    fitness = {p: f for rung in rungs for p, f in zip(rung.points, rung.fitness)}
    ranking = sorted(range(len(points)), key=lambda p: (
        -reached[p], not np.isfinite(fitness[p]), -np.nan_to_num(fitness[p])))
    updates = sum(len(rung.points) * (rung.budget - prev)
                  for rung, prev in zip(rungs, [0, *[r.budget for r in rungs[:-1]]]))
    return HalvingResult(points, seeds, rungs, returns, episodes,
                         np.stack([final_returns(r, e) for r, e in trained]), ranking,
                         updates * seeds * batch_size, compiles, seconds, state)
