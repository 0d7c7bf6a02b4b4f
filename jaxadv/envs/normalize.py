"""Running statistics for observation normalisation and reward scaling.

These are *batch-level* pure functions: the rollout calls them on the whole
``[N, ...]`` batch of environments at each step, outside the per-environment
``jax.vmap``, so all ``N`` environments share one set of statistics (as in
gymnasium's ``NormalizeObservation`` / ``NormalizeReward`` over a vector env).
Called inside the per-env vmap they would keep one set per environment instead.

Reference: Chan, Golub & LeVeque, "Updating Formulae and a Pairwise Algorithm for
Computing Sample Variances" (1979); Huang et al., "The 37 Implementation Details
of Proximal Policy Optimization" (ICLR blog track, 2022).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv.validate import positive_int

__all__ = [
    "RewardScaler",
    "RunningMeanStd",
    "normalize_obs",
    "reward_scaler_init",
    "reward_scaler_update",
    "running_mean_std_init",
    "running_mean_std_update",
]

Array = jax.Array
ArrayLike = Any


class RunningMeanStd(NamedTuple):
    """Mean and (population) variance of every sample seen so far, per feature.

    Attributes:
      mean: float32 ``[*shape]``.
      var: float32 ``[*shape]``, ``ddof = 0``; 1 before any sample.
      count: float32 ``[]``, number of samples seen (0 at init).
    """

    mean: Array
    var: Array
    # mypy takes a field named like tuple.count for an override of the method
    count: Array  # type: ignore[assignment]


def running_mean_std_init(shape: tuple[int, ...] = ()) -> RunningMeanStd:
    """Empty statistics of one sample of shape ``shape``: mean 0, var 1, count 0.

    With count 0 the first update takes the batch's mean and variance exactly, so
    the statistics always equal those of all data seen; before any update
    :func:`normalize_obs` is (nearly) the identity.

    >>> running_mean_std_init((3,)).var
    Array([1., 1., 1.], dtype=float32)
    """
    shape = _check_shape(shape)
    return RunningMeanStd(
        mean=jnp.zeros(shape, jnp.float32),
        var=jnp.ones(shape, jnp.float32),
        count=jnp.zeros((), jnp.float32),
    )


def running_mean_std_update(stats: RunningMeanStd, x: ArrayLike) -> RunningMeanStd:
    """Fold a batch into the running statistics (Chan et al.'s parallel combination).

    With the batch's ``n``, ``x̄``, ``s²`` and ``δ = x̄ − μ``:
    ``μ' = μ + δ·n/(c+n)``, ``σ'² = (σ²·c + s²·n + δ²·c·n/(c+n)) / (c+n)``, ``c' = c + n``.
    Batch-level: every leading axis of ``x`` is a batch axis, so ``N`` environments
    update one shared set of statistics.

    Args:
      stats: the running statistics, ``mean``/``var`` of shape ``[*shape]``.
      x: ``[N, *shape]`` samples (more leading batch axes, e.g. ``[T, N, *shape]``,
        are reduced too).

    Returns:
      The updated :class:`RunningMeanStd`.

    >>> import jax.numpy as jnp
    >>> s = running_mean_std_init(())
    >>> s = running_mean_std_update(s, jnp.array([1.0, 3.0]))
    >>> s = running_mean_std_update(s, jnp.array([5.0]))
    >>> s.mean, s.var, s.count  # of [1, 3, 5]
    (Array(3., dtype=float32), Array(2.6666667, dtype=float32), Array(3., dtype=float32))
    """
    x = jnp.asarray(x, dtype=jnp.float32)
    batch_axes = _batch_axes("x", x, stats.mean)
    n = 1
    for axis in batch_axes:
        n *= x.shape[axis]
    if n == 0:
        raise ValueError(f"`x` has an empty batch (shape {x.shape}); need at least one sample")
    batch_mean = jnp.mean(x, axis=batch_axes)
    batch_var = jnp.var(x, axis=batch_axes)
    count = stats.count
    total = count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * (n / total)
    m2 = stats.var * count + batch_var * n + jnp.square(delta) * (count * n / total)
    return RunningMeanStd(mean=mean, var=m2 / total, count=total)


def normalize_obs(
    stats: RunningMeanStd, x: ArrayLike, *, clip: ArrayLike = 10.0, eps: ArrayLike = 1e-8
) -> Array:
    """Standardise and clip: ``clip((x − μ) / √(σ² + ε), −clip, clip)``.

    Args:
      stats: shared running statistics, ``mean``/``var`` of shape ``[*shape]``.
      x: ``[*B, *shape]`` observations (``B`` may be empty); not added to ``stats``.
      clip: bound on the magnitude of the result; may be traced.
      eps: added to the variance; may be traced.

    Returns:
      float32 ``[*B, *shape]``.

    >>> import jax.numpy as jnp
    >>> stats = running_mean_std_update(running_mean_std_init((1,)), jnp.array([[0.0], [2.0]]))
    >>> normalize_obs(stats, jnp.array([[1.0], [3.0], [100.0]]), clip=5.0)
    Array([[0.],
           [2.],
           [5.]], dtype=float32)
    """
    x = jnp.asarray(x, dtype=jnp.float32)
    lead = x.ndim - stats.mean.ndim
    if lead < 0 or x.shape[lead:] != stats.mean.shape:
        raise ValueError(
            f"`x` must have shape [*B, *{stats.mean.shape}] to match the statistics, got {x.shape}"
        )
    mean = jnp.reshape(stats.mean, (1,) * lead + stats.mean.shape)
    var = jnp.reshape(stats.var, (1,) * lead + stats.var.shape)
    # × rsqrt, not ÷ sqrt: XLA rewrites a ÷ √b into a × rsqrt(b) only where it sees both in
    # one computation, so the quotient's bits would depend on where the statistics are hoisted
    # (e.g. one device or several: jaxadv.engine.devices.map_over_devices)
    return jnp.clip((x - mean) * jax.lax.rsqrt(var + eps), -clip, clip)


class RewardScaler(NamedTuple):
    """State of the "NormalizeReward" reward scaling.

    Attributes:
      returns: float32 ``[N]`` discounted return accumulated so far in each
        environment's current episode.
      stats: :class:`RunningMeanStd` (shape ``()``) of every ``returns`` value seen,
        pooled over the ``N`` environments.
    """

    returns: Array
    stats: RunningMeanStd


def reward_scaler_init(num_envs: int) -> RewardScaler:
    """A reward scaler for ``num_envs`` environments: zero returns, empty statistics.

    >>> reward_scaler_init(2).returns
    Array([0., 0.], dtype=float32)
    """
    positive_int("num_envs", num_envs)
    return RewardScaler(
        returns=jnp.zeros((num_envs,), jnp.float32), stats=running_mean_std_init(())
    )


def reward_scaler_update(
    scaler: RewardScaler,
    rewards: ArrayLike,
    episode_done: ArrayLike,
    *,
    gamma: ArrayLike,
    eps: ArrayLike = 1e-8,
) -> tuple[RewardScaler, Array]:
    """Scale rewards by the running standard deviation of the discounted return.

    ``R ← γ·R + r``; fold ``R`` (all ``N`` envs) into the statistics;
    ``r̃ = r / √(Var[R] + ε)``; then ``R ← 0`` where the episode ended. The reward
    is scaled, not centred (subtracting a mean would change the optimal policy).
    Batch-level: ``N`` environments share one variance.

    Args:
      scaler: the :class:`RewardScaler` state, ``returns`` ``[N]``.
      rewards: ``[N]`` rewards of this step.
      episode_done: ``[N]`` bool, ``terminated or truncated`` at this step
        (``info["episode_done"]`` from :func:`jaxadv.envs.make`).
      gamma: discount of the accumulated return, in [0, 1]; may be traced.
      eps: added to the variance; may be traced.

    Returns:
      ``(scaler, scaled_rewards)`` with ``scaled_rewards`` float32 ``[N]``.

    >>> import jax.numpy as jnp
    >>> scaler = reward_scaler_init(2)
    >>> scaler, scaled = reward_scaler_update(
    ...     scaler, jnp.array([1.0, 3.0]), jnp.array([False, True]), gamma=0.9)
    >>> scaled  # returns [1, 3] have variance 1
    Array([1., 3.], dtype=float32)
    >>> scaler.returns
    Array([1., 0.], dtype=float32)
    """
    if isinstance(gamma, (int, float)) and not 0.0 <= gamma <= 1.0:
        raise ValueError(f"`gamma` must lie in [0, 1], got {gamma}")
    rewards = jnp.asarray(rewards, dtype=jnp.float32)
    episode_done = jnp.asarray(episode_done)
    for arg, value in (("rewards", rewards), ("episode_done", episode_done)):
        if value.shape != scaler.returns.shape:
            raise ValueError(
                f"`{arg}` must have shape {scaler.returns.shape} like `scaler.returns` ([N]), "
                f"got {value.shape}"
            )
    returns = scaler.returns * gamma + rewards
    stats = running_mean_std_update(scaler.stats, returns)
    scaled = rewards / jnp.sqrt(stats.var + eps)
    returns = jnp.where(episode_done.astype(bool), jnp.zeros_like(returns), returns)
    return RewardScaler(returns=returns, stats=stats), scaled


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise ValueError(f"`shape` must be a tuple of ints, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"`shape` must have non-negative dimensions, got {shape}")
    return shape


def _batch_axes(name: str, x: Array, mean: Array) -> tuple[int, ...]:
    lead = x.ndim - mean.ndim
    if lead < 1 or x.shape[lead:] != mean.shape:
        raise ValueError(
            f"`{name}` must have shape [N, *{mean.shape}] (batch axes first, then the "
            f"statistics' shape), got {x.shape}"
        )
    return tuple(range(lead))
