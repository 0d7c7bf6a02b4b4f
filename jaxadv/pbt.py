"""Population-based training's exploit and explore step, as a pure function to run inside
the compiled program (Jaderberg et al., "Population Based Training of Neural Networks", 2017).

A population is ``M`` members: a :class:`~jaxadv.train.TrainState` and
:class:`~jaxadv.train.HParams` with a leading ``[M]`` axis. :func:`exploit_explore` ranks
the members by fitness (higher is better; NaN ranks last; equal fitness by member index),
and each member of the bottom ``quantile`` copies the parameters, optimiser state and
normalisation statistics (observations, rewards) of a member drawn at random from the top
``quantile`` — its environment state, observations, PRNG key and recurrent state stay its
own — then perturbs each searched hyperparameter of the donor: × 0.8 or × 1.25 (each with
probability 1/2), or, with probability ``resample``, a fresh draw from the field's search
range (log-uniform for the fields in ``log_uniform``), always clipped into the field's valid
range (:data:`VALID`). Nothing here leaves the device, so a whole PBT run is one program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxadv.train import HParams, TrainState

__all__ = ["COPIED", "VALID", "PBTSettings", "exploit_explore", "rank"]

COPIED = ("params", "opt_state", "obs_stats", "reward_scaler", "ref_params")
"""The :class:`~jaxadv.train.TrainState` fields a member takes from its donor."""

VALID = {"gamma": (0.0, 1.0), "gae_lambda": (0.0, 1.0), "critic_lambda": (0.0, 1.0)}
"""Fields with an upper bound: explored values are clipped into it (every other field is
positive or non-negative, which × 0.8 / × 1.25 and draws from a positive range keep)."""


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
        for field, (low, high) in self.ranges:
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
    lo, hi = VALID.get(field, (0.0, jnp.inf))
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
    for i, (field, _) in enumerate(settings.ranges):
        value = getattr(hp, field)[parent]
        explored = _explore(jax.random.fold_in(k_explore, i), value, field, settings)
        changes[field] = jnp.where(copied, explored, getattr(hp, field))
    return state, dataclasses.replace(hp, **changes), parent
