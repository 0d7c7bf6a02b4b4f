"""Population-based training's exploit and explore step, as a pure function to run inside
the compiled program (Jaderberg et al., "Population Based Training of Neural Networks", 2017).

A population is ``M`` members: a :class:`~jaxadv.engine.train.TrainState` and
:class:`~jaxadv.engine.train.HParams` with a leading ``[M]`` axis. :func:`exploit_explore` ranks
the members by fitness (higher is better; NaN ranks last; equal fitness by member index),
and each member of the bottom ``quantile`` copies the parameters, optimiser state and
normalisation statistics (observations, rewards) of a member drawn at random from the top
``quantile`` — its environment state, observations, PRNG key and recurrent state stay its
own — then perturbs each searched hyperparameter of the donor: × 0.8 or × 1.25 (each with
probability 1/2), or, with probability ``resample``, a fresh draw from the field's search
range (log-uniform for the fields in ``log_uniform``), always clipped into the field's valid
range (:data:`VALID`, from :data:`~jaxadv.engine.train.HPARAM_SPECS`). Nothing here leaves the device, so a whole PBT run is one program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxadv.engine.devices import seed_groups
from jaxadv.engine.driver import _seed_axis
from jaxadv.engine.sweep import LogUniform, Uniform, _stacked_hparams, expand_grid
from jaxadv.engine.train import HPARAM_SPECS, HParams, TrainConfig, TrainState, make_trainer

__all__ = ["COPIED", "VALID", "PBTProgress", "PBTResult", "PBTSettings", "exploit_explore",
           "population_based_training", "rank"]

_Pairs = tuple[tuple[str, tuple[float, float]], ...]  # PBTSettings.ranges after __post_init__

COPIED = ("params", "opt_state", "obs_stats", "reward_scaler", "ref_params")
"""The :class:`~jaxadv.engine.train.TrainState` fields a member takes from its donor."""

VALID = {field: spec.bounds for field, spec in HPARAM_SPECS.items()}
"""Each HParams field's range ``(low, high)`` from its :class:`~jaxadv.validate.HParamSpec`
(``inf`` where unbounded): explored values are clipped into it; an open bound (``lr > 0``,
``icepop_alpha > 1``) clips to the bound itself."""


@dataclasses.dataclass(frozen=True)
class PBTSettings:
    """``quantile``: the fraction of the population replaced each time (and the fraction it
    copies from), in (0, 0.5]; ``resample``: the probability that an explored field is drawn
    afresh from its ``ranges`` entry ``(low, high)`` instead of perturbed; ``log_uniform``:
    the fields drawn log-uniformly."""

    ranges: Mapping[str, tuple[float, float]]
    quantile: float = 0.25
    resample: float = 0.25
    log_uniform: tuple[str, ...] = ("lr",)

    def __post_init__(self) -> None:  # kept as sorted tuples: hashable, a static argument
        ranges = self.ranges.items() if isinstance(self.ranges, Mapping) else self.ranges
        object.__setattr__(self, "ranges", tuple(sorted(
            (str(f), (float(lo), float(hi))) for f, (lo, hi) in ranges)))
        object.__setattr__(self, "log_uniform", tuple(self.log_uniform))
        if not 0.0 < self.quantile <= 0.5:
            raise ValueError(f"`pbt.quantile` must be in (0, 0.5], got {self.quantile!r}")
        if not 0.0 <= self.resample <= 1.0:
            raise ValueError(f"`pbt.resample` must be in [0, 1], got {self.resample!r}")
        names = {f.name for f in dataclasses.fields(HParams)}
        for field, (low, high) in cast(_Pairs, self.ranges):
            if field not in names:
                raise ValueError(f"`pbt`: {field!r} is not an HParams field")
            if not low < high:
                raise ValueError(f"`pbt`: the range of {field!r} needs LOW < HIGH, got {low, high}")


def rank(fitness: jax.Array) -> jax.Array:
    """Member indices from the fittest to the least fit: ``[M]`` int32 (NaN last, ties by
    index)."""
    score = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    return jnp.lexsort((jnp.arange(fitness.shape[0]), -score)).astype(jnp.int32)


def _explore(key: jax.Array, value: jax.Array, field: str, settings: PBTSettings) -> jax.Array:
    low, high = dict(settings.ranges)[field]
    k_factor, k_resample, k_draw = jax.random.split(key, 3)
    factor = jnp.where(jax.random.bernoulli(k_factor, 0.5, value.shape), 0.8, 1.25)
    u = jax.random.uniform(k_draw, value.shape)
    if field in settings.log_uniform:
        drawn = jnp.exp(jnp.log(low) + u * (jnp.log(high) - jnp.log(low)))
    else:
        drawn = low + u * (high - low)
    new = jnp.where(jax.random.bernoulli(k_resample, settings.resample, value.shape),
                    drawn, value * factor)
    lo, hi = VALID[field]
    return jnp.clip(new, lo, hi).astype(value.dtype)


def exploit_explore(key: jax.Array, fitness: jax.Array, state: TrainState, hp: HParams,
                    settings: PBTSettings) -> tuple[TrainState, HParams, jax.Array]:
    """One exploit-and-explore step of a population ``[M]``: returns the new state and
    hyperparameters and ``parent [M]`` (the member each one now descends from: itself, or
    its donor)."""
    m = fitness.shape[0]
    bottom_count = max(1, int(m * settings.quantile)) if m > 1 else 0
    order = rank(fitness)
    top, bottom = order[:bottom_count], order[m - bottom_count:]
    k_donor, k_explore = jax.random.split(key)
    donors = top[jax.random.randint(k_donor, (bottom_count,), 0, max(bottom_count, 1))]
    parent = jnp.arange(m, dtype=jnp.int32).at[bottom].set(donors)
    copied = parent != jnp.arange(m)
    take = lambda x: x[parent]
    state = state._replace(**{f: jax.tree.map(take, getattr(state, f)) for f in COPIED
                              if getattr(state, f) is not None})
    changes: dict[str, Any] = {}
    for i, (field, _) in enumerate(cast(_Pairs, settings.ranges)):
        value = getattr(hp, field)[parent]
        explored = _explore(jax.random.fold_in(k_explore, i), value, field, settings)
        changes[field] = jnp.where(copied, explored, getattr(hp, field))
    return state, dataclasses.replace(hp, **changes), parent


@dataclasses.dataclass
class PBTResult:
    """What :func:`population_based_training` returns: the initial ``points`` (one per
    hyperparameter draw; member ``m`` is draw ``m // seeds`` on seed ``m % seeds``),
    ``fitness [intervals, M]``, ``parent [intervals, M]`` (after each interval's exploit;
    the last interval's is the identity), ``hparams [intervals, M]`` per searched field
    (the values each member trained with in each interval), the final ``state`` and the
    per-update ``returns`` and ``episodes`` ``[M, updates]``."""

    points: list[dict[str, Any]]
    seeds: int
    interval: int
    fitness: np.ndarray
    parent: np.ndarray
    hparams: dict[str, np.ndarray]
    state: Any
    returns: np.ndarray
    episodes: np.ndarray

    def lineage(self, member: int) -> list[int]:
        """The member whose state ``member`` carries on in each interval, first to last."""
        path = [member]
        for i in range(self.fitness.shape[0] - 2, -1, -1):
            path.append(int(self.parent[i, path[-1]]))
        return path[::-1]


def _fitness(returns: jax.Array, episodes: jax.Array) -> jax.Array:
    """Mean return of the episodes that ended in an interval (``[M, k]`` each): NaN if none."""
    total = jnp.sum(jnp.where(episodes > 0, jnp.nan_to_num(returns) * episodes, 0.0), axis=1)
    count = jnp.sum(episodes, axis=1)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


@dataclasses.dataclass
class PBTProgress:
    """A PBT run between two compiled calls, what a resumed run goes on from: the
    ``intervals`` done, the population's ``state``, ``hp`` and exploit ``key`` after them,
    and the per-interval outputs so far (``fitness``, ``parent``, ``hparams`` per searched
    field, each ``[intervals, M]``; ``returns`` and ``episodes``, ``[intervals, M, interval]``)."""

    intervals: int
    state: Any
    hp: HParams
    key: jax.Array
    fitness: np.ndarray
    parent: np.ndarray
    hparams: dict[str, np.ndarray]
    returns: np.ndarray
    episodes: np.ndarray


def population_based_training(config: TrainConfig, settings: PBTSettings, population: int,
                              seeds: int, interval: int, *, hparams: HParams | None = None,
                              key: jax.Array | None = None, per_call: int | None = None,
                              resume: PBTProgress | Callable[[Any], PBTProgress | None] | None = None,
                              on_saved: Callable[[PBTProgress], None] | None = None,
                              groups: int = 1, devices: int | None = None) -> PBTResult:
    """Train ``population`` draws from ``settings.ranges`` × ``seeds`` seeds as one
    population: every ``interval`` updates, :func:`exploit_explore` (not after the last
    interval), inside the compiled program. ``config.num_updates`` must be a multiple of
    ``interval``. The intervals run in compiled calls of ``per_call`` intervals each
    (default: all in one); after each, ``on_saved(progress)`` with what a run resumed from
    it (``resume=progress``, the other arguments the same) needs to end with the same bits
    as one that never stopped. ``resume`` may also be a function of the abstract
    ``(state, hp, key)`` that restores the progress, or gives ``None`` to start afresh.

    ``groups``: the members train in this many equal blocks, each a ``vmap``, spread over up
    to ``devices`` local devices (default: all; :func:`~jaxadv.engine.devices.seed_groups`),
    as ``jaxadv train`` spreads its seeds; the ranking and the copies are collectives across
    them. Under ``jax.distributed`` the blocks spread over every process's devices (``groups``
    a multiple of their number), every process calls this with the same arguments, and each
    gets the whole result. The same ``groups`` give the same bits on any number of devices
    and processes."""
    if not 0 < interval <= config.num_updates or config.num_updates % interval:
        raise ValueError(f"`pbt.interval` = {interval} must divide the run's "
                         f"{config.num_updates} updates")
    key = jax.random.key(0) if key is None else key
    grid = {f: (LogUniform if f in settings.log_uniform else Uniform)(lo, hi)
            for f, (lo, hi) in cast(_Pairs, settings.ranges)}
    points = expand_grid(grid, num_samples=population, key=jax.random.fold_in(key, 1))
    hp = _stacked_hparams([p for p in points for _ in range(seeds)],
                          (hparams or HParams()).validate())
    intervals = config.num_updates // interval
    members = population * seeds
    if groups < 1 or members % groups:
        raise ValueError(f"`groups` = {groups} must divide the {members} members")
    spread = lambda fn: _seed_axis(fn, members, (0, 0), groups, _mesh(groups, devices))
    init, calls = _pbt_programs(make_trainer(config), settings, population, seeds, interval,
                                intervals, spread)
    if callable(resume):
        resume = resume(jax.eval_shape(init, key, hp))
    carry = init(key, hp) if resume is None else (resume.state, resume.hp, resume.key)
    done, outs = (0, []) if resume is None else (resume.intervals, [(
        resume.fitness, resume.parent, resume.hparams, resume.returns, resume.episodes)])
    # on the host, gathered from every process if several (once per carry)
    gathered = lambda c: c if jax.process_count() == 1 else jax.tree.map(_host, c)
    saved = None
    while done < intervals:
        count = min(per_call or intervals, intervals - done)
        carry, out = calls(count)(carry, jnp.asarray(done))
        outs.append(jax.tree.map(_host, out))
        done += count
        if on_saved is not None:
            saved = gathered(carry)
            on_saved(PBTProgress(done, *saved, *jax.tree.map(lambda *x: np.concatenate(x), *outs)))
    fitness, parent, used, returns, episodes = jax.tree.map(lambda *x: np.concatenate(x), *outs)
    flat = lambda x: np.moveaxis(x, 0, 1).reshape(x.shape[1], -1)
    state = (saved if saved is not None else gathered(carry))[0]
    return PBTResult(points, seeds, interval, fitness, parent, used, state, flat(returns),
                     flat(episodes))


def _mesh(groups: int, devices: int | None) -> Mesh | None:
    """The 1-D mesh the ``groups`` blocks of members are spread over: up to ``devices``
    local devices (default: all; :func:`~jaxadv.engine.devices.seed_groups`). Under
    ``jax.distributed`` (several processes) it spans every process's devices, so
    ``groups`` must be a multiple of :func:`jax.device_count`."""
    if jax.process_count() > 1:
        if devices is not None or groups % jax.device_count():
            raise ValueError(f"`groups` = {groups} must be a multiple of the "
                             f"{jax.device_count()} devices of the {jax.process_count()} "
                             "processes (and `devices` unset): each process trains its share")
        return Mesh(np.array(jax.devices()), ("seeds",))
    spread_over = seed_groups(groups, devices or jax.local_device_count())
    return Mesh(np.array(jax.local_devices()[:spread_over]), ("seeds",)) if spread_over > 1 else None


def _host(x: jax.Array) -> Any:
    """``x`` as one host array, gathered from every process under ``jax.distributed`` (a
    PRNG key array stays a key array, on this process's default device)."""
    if x.is_fully_addressable:
        return np.asarray(x) if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_host(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _pbt_programs(trainer: Any, settings: PBTSettings, population: int, seeds: int,
                  interval: int, intervals: int, spread: Callable[[Callable], Callable]
                  ) -> tuple[Callable, Callable[[int], Callable]]:
    """PBT's compiled calls: ``init(key, hp)``, the population's ``(state, hp, exploit key)``
    (member ``m`` on seed ``m % seeds``), and ``calls(count)(carry, first)``, intervals
    ``first`` to ``first + count − 1`` trained, each followed by :func:`exploit_explore` but
    the run's last, with their outputs stacked. ``spread(fn)`` maps ``fn`` over the
    members' axis (a ``vmap``, or blocks of one spread over devices)."""
    fields = [f for f, _ in cast(_Pairs, settings.ranges)]
    run = spread(functools.partial(trainer.run, num_updates=interval))

    @jax.jit
    def init(key, hp):
        keys = jax.random.key_data(jax.random.split(key, seeds))
        keys = jax.random.wrap_key_data(jnp.concatenate([keys] * population))
        return spread(trainer.init)(keys, hp), hp, jax.random.fold_in(key, 3)

    def step(carry, i):
        state, hp, k = carry
        state, metrics = run(state, hp)
        fitness = _fitness(metrics["episode_return"], metrics["episodes"])
        k, sub = jax.random.split(k)
        last = i == intervals - 1
        new_state, new_hp, parent = exploit_explore(sub, fitness, state, hp, settings)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(last, b, a), new, old)
        out = (fitness, jnp.where(last, jnp.arange(parent.shape[0]), parent),
               {f: getattr(hp, f) for f in fields},
               metrics["episode_return"], metrics["episodes"])
        return (keep(new_state, state), keep(new_hp, hp), k), out

    @functools.cache
    def calls(count: int) -> Callable:
        return jax.jit(lambda carry, first: jax.lax.scan(step, carry, first + jnp.arange(count)))

    return init, calls
