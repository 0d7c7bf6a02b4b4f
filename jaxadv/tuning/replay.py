"""A PBT member's hyperparameter schedule, replayed from scratch on other seeds.

Population-based training (:mod:`jaxadv.tuning.pbt`) picks a member, not a configuration: its
final state carries parameters inherited along its lineage and hyperparameters that changed
at every exploit. What a user can take away is the *schedule*, the searched hyperparameters
that the member's lineage trained with in each interval. :func:`replay` trains that schedule
from scratch, with no population and no copying, on seeds that no selection step saw, so the
PBT pick can be reported as honestly as a grid point (:mod:`jaxadv.tuning.selection`).

On the member's own seed, a lineage that never copied from another member replays to the
same bits as the member's training in the population; one that copied does not (its
parameters came from another member's runs), which is the point of re-measuring it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.engine.train import HParams, TrainConfig, make_trainer
from jaxadv.stats import final_returns
from jaxadv.tuning.pbt import PBTResult, rank
from jaxadv.tuning.selection import fresh_key

__all__ = ["Lineages", "reevaluate_members", "replay", "schedule"]


def schedule(hparams: Mapping[str, np.ndarray], lineage: Sequence[int]) -> dict[str, np.ndarray]:
    """Each searched field's values along ``lineage`` (the member whose state a member
    carries on, per interval: :meth:`~jaxadv.tuning.pbt.PBTResult.lineage`): ``{field:
    [intervals]}`` from ``hparams`` ``{field: [intervals, M]}``."""
    return {f: np.asarray([v[i, m] for i, m in enumerate(lineage)]) for f, v in hparams.items()}


def replay(config: TrainConfig, schedules: Sequence[Mapping[str, np.ndarray]], interval: int,
           keys: jax.Array, *, hparams: HParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train each schedule (``{field: [intervals]}``, ``intervals × interval`` updates; the
    fields it leaves out are ``hparams``') from scratch on each of ``keys`` ``[S]``, all in
    one compiled call: per-update ``(episode_return, episodes)``, ``[K, S, updates]`` each."""
    base = (hparams or HParams()).validate()
    intervals = {len(np.asarray(s[f])) for s in schedules for f in s}
    if len(intervals) != 1 or intervals.pop() * interval != config.num_updates:
        raise ValueError(f"every schedule needs {config.num_updates} // {interval} intervals")
    count, seeds = config.num_updates // interval, keys.shape[0]
    # every HParams field as float32 [K * S, intervals], one row per (schedule, seed), as the
    # population has them (jaxadv.engine.sweep stacks points the same way)
    table = {f.name: np.repeat(np.stack([np.broadcast_to(np.asarray(
        s.get(f.name, getattr(base, f.name)), np.float32), (count,)) for s in schedules]),
        seeds, axis=0) for f in dataclasses.fields(HParams)}
    trainer = make_trainer(config)
    at = lambda values, i: HParams(**{f: v[:, i] for f, v in values.items()})

    @jax.jit
    def program(keys, values):
        state = jax.vmap(trainer.init)(keys, at(values, 0))
        run = jax.vmap(functools.partial(trainer.run, num_updates=interval))

        def step(state, i):
            state, metrics = run(state, at(values, i))
            return state, (metrics["episode_return"], metrics["episodes"])

        _, outs = jax.lax.scan(step, state, jnp.arange(count))
        return outs

    all_keys = jnp.concatenate([keys] * len(schedules))
    returns, episodes = program(all_keys, table)
    shape = (len(schedules), seeds, config.num_updates)
    flat = lambda x: np.moveaxis(np.asarray(x), 0, 1).reshape(shape)
    return flat(returns), flat(episodes)


@dataclasses.dataclass
class Lineages:
    """PBT members as :func:`~jaxadv.tuning.selection.selection_report` reads a sweep:
    ``points[i]`` is ``{"member": m, "schedule": {field: [intervals]}}`` and
    ``final_return[i]`` its final returns, ``[seeds]``: the member's own run in the
    population (one seed), or its schedule replayed on fresh seeds."""

    points: list[dict]
    final_return: np.ndarray


def reevaluate_members(config: TrainConfig, result: PBTResult, top: int, seeds: int, *,
                       seed: int, hparams: HParams | None = None
                       ) -> tuple[list[int], Lineages, Lineages]:
    """The ``top`` members of the last interval (by fitness, :func:`~jaxadv.tuning.pbt.rank`),
    each lineage's schedule replayed on ``seeds`` fresh seeds
    (:func:`~jaxadv.tuning.selection.fresh_key` of ``seed``), in one compiled call:
    ``(chosen members, every member in the population, the replays of the chosen)``."""
    chosen = np.asarray(rank(jnp.asarray(result.fitness[-1])))[:top].tolist()
    points = [{"member": m, "schedule": {f: v.tolist() for f, v in schedule(
        result.hparams, result.lineage(m)).items()}} for m in range(result.fitness.shape[1])]
    population = Lineages(points, final_returns(result.returns, result.episodes)[:, None])
    returns, episodes = replay(config, [points[m]["schedule"] for m in chosen], result.interval,
                               jax.random.split(fresh_key(seed), seeds), hparams=hparams)
    fresh = Lineages([points[m] for m in chosen],
                     np.stack([final_returns(r, e) for r, e in zip(returns, episodes)]))
    return chosen, population, fresh
