"""Advantage estimators as pure functions of time-major arrays.

Every per-step argument is ``[T, *B]``: ``T`` steps of any batch shape ``B`` (a
single trajectory is ``B = ()``). Step ``t`` is the transition
``(s_t, a_t, r_t, s_{t+1})`` and

* ``rewards[t]`` is ``r_t``; ``values[t]`` is ``V(s_t)``;
* ``next_values[t]`` is ``V(s_{t+1})`` — where the episode ended at ``t`` it is
  the value of the *final* observation, not of the observation the environment
  reset to;
* ``terminated[t]``: the episode ended at ``t`` in a terminal state, so nothing
  is bootstrapped: the discount is ``γ (1 − terminated_t)``;
* ``truncated[t]``: the episode was cut at ``t`` (a time limit) and continues in
  principle, so the return bootstraps from ``next_values[t]``.

Termination *or* truncation cuts every multi-step trace, because step ``t + 1``
belongs to the next episode. The end of the window (``t = T − 1``) is always a
cut that bootstraps from ``next_values[T − 1]``.

Numeric hyperparameters (``gamma``, ``lambda_``) are keyword-only and may be
traced, so every estimator can be ``jax.vmap``-ed over them; ``n`` changes the
computation's structure and must be a Python ``int``. The recursive estimators
run a reverse :func:`jax.lax.scan` over axis 0. Flags may be bool, int or float.

References: Sutton & Barto (2018), ch. 7 and 12; Schulman et al., "High-Dimensional
Continuous Control Using Generalized Advantage Estimation" (2016); Shao et al.,
"DeepSeekMath" (2024) for GRPO; Kool et al. (2019) / Ahmadian et al. (2024) for RLOO.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxadv.validate import positive_int, same_shape

__all__ = [
    "SEQUENCE_ESTIMATORS",
    "batchmean_advantages",
    "discounted_returns",
    "drgrpo_advantages",
    "gae",
    "group_relative",
    "grpo_advantages",
    "informative_groups",
    "lambda_returns",
    "leave_one_out",
    "length_adaptive_lambda",
    "n_step_advantages",
    "normalize",
    "overlong_penalty",
    "remax_advantages",
    "rfpp_advantages",
    "rloo_advantages",
    "sequence_advantages",
    "td_errors",
]

Array = jax.Array
ArrayLike = Any

_UNROLL = 1  # reverse scans are not unrolled (benchmarks/estimators.py compares unroll factors)


def _time_major_shape(**arrays: ArrayLike) -> tuple:
    """The common ``[T, *B]`` shape of ``arrays`` (:func:`~jaxadv.validate.same_shape`, then
    rank >= 1 and T >= 1), or a ValueError naming the array."""
    shape = same_shape(**arrays)
    first_name = next(iter(arrays))
    if len(shape) < 1:
        raise ValueError(f"`{first_name}` must be time-major [T, *B] with rank >= 1, got shape {shape}")
    if shape[0] < 1:
        raise ValueError(f"`{first_name}` has an empty time axis (shape {shape}); T must be >= 1")
    return shape


def _check_unit_interval(name: str, value: ArrayLike) -> None:
    """Reject a concrete ``value`` outside [0, 1]; traced values pass unchecked."""
    if isinstance(value, (int, float)) and not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {value}")


def _float(x: ArrayLike, dtype) -> Array:
    return jnp.asarray(x).astype(dtype)


def _dtype(*arrays: ArrayLike):
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


def _scan_param(value: ArrayLike, dtype, shape: tuple) -> tuple[Array | None, Array | None]:
    """A hyperparameter of a reverse scan as ``(constant, stream)``: a scalar (possibly
    traced) is cast to ``dtype`` and closed over; an array is broadcast to ``shape`` and
    scanned with the data. Exactly one of the two is ``None``."""
    value = _float(value, dtype)
    if value.ndim == 0:
        return value, None
    return None, jnp.broadcast_to(value, shape)


def _reverse_scan(step, init: Array, xs: tuple) -> Array:
    """``lax.scan(step, init, xs, reverse=True)``'s stacked outputs.

    The estimators below scan the raw inputs (flags in their own dtype, unconverted) and do
    every elementwise computation in the scan's body, so one pass reads each input once and
    writes the output once: no ``[T, *B]`` temporaries (each a fresh allocation that the
    CPU pays in page faults), ``benchmarks/estimators.py`` measures it against the bandwidth
    roofline."""
    _, out = jax.lax.scan(step, init, xs, reverse=True, unroll=_UNROLL)
    return out


def td_errors(
    rewards: ArrayLike,
    values: ArrayLike,
    next_values: ArrayLike,
    terminated: ArrayLike,
    *,
    gamma: ArrayLike,
) -> Array:
    """One-step temporal-difference errors.

    ``δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)``.

    Args:
      rewards: ``[T, *B]`` float rewards ``r_t``.
      values: ``[T, *B]`` ``V(s_t)``.
      next_values: ``[T, *B]`` ``V(s_{t+1})`` (the final observation's value where
        the episode ended at ``t``).
      terminated: ``[T, *B]`` flags; no bootstrap where set.
      gamma: discount in [0, 1]; may be traced.

    Returns:
      ``[T, *B]`` TD errors ``δ_t``.

    >>> import jax.numpy as jnp
    >>> r, v, nv = jnp.array([1.0, 1.0]), jnp.array([0.5, 0.5]), jnp.array([0.5, 2.0])
    >>> td_errors(r, v, nv, jnp.array([False, True]), gamma=0.5)
    Array([0.75, 0.5 ], dtype=float32)
    """
    _time_major_shape(rewards=rewards, values=values, next_values=next_values, terminated=terminated)
    _check_unit_interval("gamma", gamma)
    dtype = _dtype(rewards, values, next_values)
    discount = _float(gamma, dtype) * (1.0 - _float(terminated, dtype))
    return _float(rewards, dtype) + discount * _float(next_values, dtype) - _float(values, dtype)


def discounted_returns(
    rewards: ArrayLike,
    next_values: ArrayLike,
    terminated: ArrayLike,
    truncated: ArrayLike,
    *,
    gamma: ArrayLike,
) -> Array:
    """Discounted reward-to-go within each episode, bootstrapped at truncation.

    ``G_t = r_t + γ (1 − terminated_t) · (truncated_t ? V(s_{t+1}) : G_{t+1})``,
    with ``G_T = next_values[T − 1]`` (the end of the window is a truncation).
    Pass ``next_values = 0`` for pure Monte Carlo returns that never bootstrap.

    Args:
      rewards: ``[T, *B]`` rewards.
      next_values: ``[T, *B]`` ``V(s_{t+1})``; only read where a trace is cut by
        truncation or by the end of the window.
      terminated: ``[T, *B]`` flags: the return stops, nothing is bootstrapped.
      truncated: ``[T, *B]`` flags: the return stops and bootstraps from ``next_values``.
      gamma: discount in [0, 1]; may be traced.

    Returns:
      ``[T, *B]`` returns ``G_t``.

    >>> import jax.numpy as jnp
    >>> r, nv = jnp.ones(3), jnp.full(3, 10.0)
    >>> no = jnp.zeros(3, bool)
    >>> discounted_returns(r, nv, no, no.at[0].set(True), gamma=0.5)  # cut after step 0
    Array([6., 4., 6.], dtype=float32)
    """
    _time_major_shape(
        rewards=rewards, next_values=next_values, terminated=terminated, truncated=truncated
    )
    _check_unit_interval("gamma", gamma)
    shape = jnp.shape(rewards)
    dtype = _dtype(rewards, next_values)
    rewards, next_values = jnp.asarray(rewards), jnp.asarray(next_values)
    gamma_, gamma_t = _scan_param(gamma, dtype, shape)

    def step(ret_next, xs):
        r, nv, te, tr, g = xs
        r, nv, c = _float(r, dtype), _float(nv, dtype), _float(tr, dtype)
        d = (gamma_ if g is None else g) * (1.0 - _float(te, dtype))
        ret = r + d * (c * nv + (1.0 - c) * ret_next)
        return ret, ret

    xs = (rewards, next_values, jnp.asarray(terminated), jnp.asarray(truncated), gamma_t)
    return _reverse_scan(step, _float(next_values[-1], dtype), xs)


def gae(
    rewards: ArrayLike,
    values: ArrayLike,
    next_values: ArrayLike,
    terminated: ArrayLike,
    truncated: ArrayLike,
    *,
    gamma: ArrayLike,
    lambda_: ArrayLike,
) -> Array:
    """Generalised advantage estimation, GAE(γ, λ).

    ``A_t = δ_t + γ λ (1 − terminated_t)(1 − truncated_t) A_{t+1}``, ``A_T = 0``,
    where ``δ_t`` is :func:`td_errors`. ``λ = 0`` gives ``δ_t``; ``λ = 1`` gives
    ``discounted_returns − values`` (Schulman et al., 2016, eq. 16).

    Args:
      rewards: ``[T, *B]`` rewards.
      values: ``[T, *B]`` ``V(s_t)``.
      next_values: ``[T, *B]`` ``V(s_{t+1})`` (final observation's value at episode ends).
      terminated: ``[T, *B]`` flags: no bootstrap, trace cut.
      truncated: ``[T, *B]`` flags: bootstrap from ``next_values``, trace cut.
      gamma: discount in [0, 1]; may be traced.
      lambda_: trace decay in [0, 1]; may be traced.

    Returns:
      ``[T, *B]`` advantages ``A_t``.

    >>> import jax, jax.numpy as jnp
    >>> r, v = jnp.ones(3), jnp.zeros(3)
    >>> no = jnp.zeros(3, bool)
    >>> gae(r, v, v, no, no, gamma=0.5, lambda_=1.0)
    Array([1.75, 1.5 , 1.  ], dtype=float32)
    """
    return _gae(rewards, values, next_values, terminated, truncated, gamma, lambda_, False)


def _gae(rewards, values, next_values, terminated, truncated, gamma, lambda_, plus_values: bool):
    """:func:`gae` (``plus_values``: :func:`lambda_returns`) as one reverse scan over the raw
    inputs, δ_t and the decay ``γλ(1 − terminated_t)(1 − truncated_t)`` computed in its body
    with the same operations, in the same order, as :func:`td_errors` and the recursion."""
    shape = _time_major_shape(
        rewards=rewards,
        values=values,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
    )
    _check_unit_interval("gamma", gamma)
    _check_unit_interval("lambda_", lambda_)
    dtype = _dtype(rewards, values, next_values)
    gamma_, gamma_t = _scan_param(gamma, dtype, shape)
    decay_, decay_t = _scan_param(gamma * lambda_, dtype, shape)

    def step(adv_next, xs):
        r, v, nv, te, tr, g, gl = xs
        r, v, nv, te = _float(r, dtype), _float(v, dtype), _float(nv, dtype), _float(te, dtype)
        delta = r + (gamma_ if g is None else g) * (1.0 - te) * nv - v
        k = (decay_ if gl is None else gl) * ((1.0 - te) * (1.0 - _float(tr, dtype)))
        adv = delta + k * adv_next
        return adv, (adv + v if plus_values else adv)

    xs = tuple(jnp.asarray(a) for a in (rewards, values, next_values, terminated, truncated))
    return _reverse_scan(step, jnp.zeros(shape[1:], dtype), (*xs, gamma_t, decay_t))


def lambda_returns(
    rewards: ArrayLike,
    values: ArrayLike,
    next_values: ArrayLike,
    terminated: ArrayLike,
    truncated: ArrayLike,
    *,
    gamma: ArrayLike,
    lambda_: ArrayLike,
) -> Array:
    """TD(λ) returns, the critic's regression targets: ``G^λ_t = A^{GAE}_t + V(s_t)``.

    Equivalently ``G^λ_t = r_t + γ(1 − terminated_t)[(1 − λ c_t) V(s_{t+1}) + λ c_t G^λ_{t+1}]``
    with ``c_t = 1 − truncated_t`` (Sutton & Barto, eq. 12.3). Arguments as for :func:`gae`.

    Returns:
      ``[T, *B]`` λ-returns.

    >>> import jax.numpy as jnp
    >>> r, v, no = jnp.ones(2), jnp.ones(2), jnp.zeros(2, bool)
    >>> lambda_returns(r, v, v, no, no, gamma=0.5, lambda_=0.0)
    Array([1.5, 1.5], dtype=float32)
    """
    return _gae(rewards, values, next_values, terminated, truncated, gamma, lambda_, True)


def n_step_advantages(
    rewards: ArrayLike,
    values: ArrayLike,
    next_values: ArrayLike,
    terminated: ArrayLike,
    truncated: ArrayLike,
    *,
    gamma: ArrayLike,
    n: int,
) -> Array:
    """n-step advantages: the n-step return minus ``V(s_t)``.

    ``A_t = Σ_{k<m} γ^k r_{t+k} + γ^m (1 − terminated_{t+m−1}) V(s_{t+m}) − V(s_t)``,
    where ``m ≤ n`` stops early at the first termination, truncation or end of the
    window; ``V(s_{t+m})`` is read from ``next_values[t + m − 1]``. ``n = 1`` gives
    :func:`td_errors`; ``n ≥ T`` gives ``discounted_returns − values``
    (Sutton & Barto, eq. 7.1).

    Computed by one reverse scan whose carry holds the 1- … n-step returns from
    ``s_{t+1}``, rather than a windowed sum over the ``n`` offsets (``n`` passes over
    ``[T, *B]``); ``benchmarks/estimators.py`` compares the two.

    Args:
      rewards, values, next_values, terminated, truncated: ``[T, *B]``, as for :func:`gae`.
      gamma: discount in [0, 1]; may be traced.
      n: Python ``int >= 1``, the largest number of rewards summed.

    Returns:
      ``[T, *B]`` advantages.

    >>> import jax.numpy as jnp
    >>> r, v, no = jnp.ones(3), jnp.zeros(3), jnp.zeros(3, bool)
    >>> n_step_advantages(r, v, v, no, no, gamma=0.5, n=2)
    Array([1.5, 1.5, 1. ], dtype=float32)
    """
    shape = _time_major_shape(
        rewards=rewards,
        values=values,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
    )
    positive_int("n", n)
    _check_unit_interval("gamma", gamma)
    dtype = _dtype(rewards, values, next_values)
    n = min(n, shape[0])
    rewards, values, next_values = (jnp.asarray(a) for a in (rewards, values, next_values))
    gamma_, gamma_t = _scan_param(gamma, dtype, shape)

    def step(later, xs):
        # later[j] = (j+1)-step return from s_{t+1}; its 0-step return is V(s_{t+1}) = nv.
        r, v, nv, te, tr, g = xs
        r, nv, te = _float(r, dtype), _float(nv, dtype), _float(te, dtype)
        # A trace stops where the episode ends; it then bootstraps.
        st = jnp.maximum(te, _float(tr, dtype))
        shorter = jnp.concatenate([nv[None], later[:-1]], axis=0)  # j-step returns, j < n
        discount = (gamma_ if g is None else g) * (1.0 - te)
        returns = (r + discount * st * nv)[None] + (discount * (1.0 - st))[None] * shorter
        return returns, returns[-1] - _float(v, dtype)

    # The window's end is a cut too: every return from s_T is V(s_T) = next_values[T − 1],
    # so at t = T − 1 each return is r + γ(1 − terminated) next_values[T − 1], cut or not.
    init = jnp.broadcast_to(_float(next_values[-1], dtype), (n, *shape[1:]))
    xs = (rewards, values, next_values, jnp.asarray(terminated), jnp.asarray(truncated), gamma_t)
    return _reverse_scan(step, init, xs)


def normalize(advantages: ArrayLike, mask: ArrayLike | None = None, eps: float = 1e-8) -> Array:
    """Standardise advantages over all (unmasked) entries: ``(A − mean) / (std + eps)``.

    Mean and (population) standard deviation are taken over every entry where
    ``mask`` is true; masked entries are returned as 0. A single entry, or a
    constant batch, gives exactly 0, never NaN.

    Args:
      advantages: array of any shape.
      mask: optional array of the same shape; true/1 marks real entries.
      eps: added to the standard deviation.

    Returns:
      Array of the shape of ``advantages``.

    >>> import jax.numpy as jnp
    >>> normalize(jnp.array([1.0, 2.0, 3.0]))
    Array([-1.2247448,  0.       ,  1.2247448], dtype=float32)
    """
    advantages = jnp.asarray(advantages)
    dtype = _dtype(advantages)
    advantages = advantages.astype(dtype)
    if mask is None:
        mask = jnp.ones_like(advantages)
    else:
        same_shape(advantages=advantages, mask=mask)
    m = _float(mask, dtype)
    count = jnp.maximum(m.sum(), 1.0)
    mean = (m * advantages).sum() / count
    centred = m * (advantages - mean)
    scale = jnp.sqrt((centred**2).sum() / count) + eps
    return centred / jnp.where(scale > 0, scale, 1.0)  # a constant batch stays 0 even at eps = 0


def _check_groups(rewards: ArrayLike, min_size: int, fn: str) -> Array:
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 2:
        raise ValueError(
            f"`rewards` for {fn} must be [G, K] (G groups of K samples), got shape {rewards.shape}"
        )
    if rewards.shape[1] < min_size:
        raise ValueError(
            f"`rewards` for {fn} needs groups of at least {min_size} samples, "
            f"got K = {rewards.shape[1]} (shape {rewards.shape})"
        )
    return rewards.astype(_dtype(rewards))


def _centre(rewards: Array) -> Array:
    """``r − mean(r)`` per group, computed around the group's first sample.

    Subtracting a member first is exact for nearby floats, so rewards of size 1e6
    keep their small differences and a constant group gives exact zeros.
    """
    shifted = rewards - rewards[:, :1]
    return shifted - shifted.mean(axis=1, keepdims=True)


def group_relative(
    rewards: ArrayLike, *, normalize_std: bool = True, eps: ArrayLike = 1e-6
) -> Array:
    """Group-relative advantages (GRPO): ``A_{g,i} = (r_{g,i} − mean_g r) / (std_g r + eps)``.

    Each row is a group of K samples for the same prompt; the group mean is the
    baseline. ``std_g`` is the population standard deviation of the group. With
    ``normalize_std=False`` (a structural switch) the advantage is ``r − mean_g r``
    (as in "Dr. GRPO", which drops the std's difficulty bias). A group whose rewards
    are all equal gets advantages of exactly 0.

    Args:
      rewards: ``[G, K]`` sequence-level rewards, K ≥ 1 samples per group.
      normalize_std: divide by the group's standard deviation.
      eps: added to the standard deviation; may be traced.

    Returns:
      ``[G, K]`` advantages, zero mean per group.

    >>> import jax.numpy as jnp
    >>> group_relative(jnp.array([[1.0, 0.0], [1.0, 1.0]]))
    Array([[ 0.999998, -0.999998],
           [ 0.      ,  0.      ]], dtype=float32)
    """
    rewards = _check_groups(rewards, 1, "group_relative")
    centred = _centre(rewards)
    if not normalize_std:
        return centred
    scale = jnp.sqrt((centred**2).mean(axis=1, keepdims=True)) + eps
    return centred / jnp.where(scale > 0, scale, 1.0)  # a constant group stays 0 even at eps = 0


def leave_one_out(rewards: ArrayLike) -> Array:
    """Leave-one-out advantages (RLOO): each sample's baseline is the mean of the others.

    ``A_{g,i} = r_{g,i} − (1 / (K − 1)) Σ_{j≠i} r_{g,j} = K / (K − 1) · (r_{g,i} − mean_g r)``.
    The baseline excludes the sample itself, so the estimate stays unbiased; a group
    whose rewards are all equal gets advantages of exactly 0.

    Args:
      rewards: ``[G, K]`` sequence-level rewards, K ≥ 2 samples per group.

    Returns:
      ``[G, K]`` advantages, zero mean per group.

    >>> import jax.numpy as jnp
    >>> leave_one_out(jnp.array([[1.0, 0.0, 0.0]]))
    Array([[ 1. , -0.5, -0.5]], dtype=float32)
    """
    rewards = _check_groups(rewards, 2, "leave_one_out")
    shifted = rewards - rewards[:, :1]  # exact for nearby floats; zeros for a constant group
    others = (shifted.sum(axis=1, keepdims=True) - shifted) / (rewards.shape[1] - 1)
    return shifted - others



def informative_groups(rewards: ArrayLike) -> Array:
    """DAPO's dynamic-sampling filter: ``[G]`` True for the groups whose rewards are not all
    equal (Yu et al. 2025, arXiv:2503.14476, eq. 11: keep 0 < accuracy < 1).

    A group whose K rewards are equal has group-relative advantages of 0, so it adds no
    gradient but still counts in a token-mean loss's denominator; DAPO drops such groups
    and samples more. In a fixed-shape program the batch is sampled as usual and these
    groups are masked out of the loss (the effective batch is their count).

    Args:
      rewards: ``[G, K]`` sequence-level rewards.

    >>> import jax.numpy as jnp
    >>> informative_groups(jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    Array([ True, False, False], dtype=bool)
    """
    rewards = _check_groups(rewards, 1, "informative_groups")
    return jnp.any(rewards != rewards[:, :1], axis=1)


def overlong_penalty(lengths: ArrayLike, *, max_length: ArrayLike, buffer: ArrayLike) -> Array:
    """DAPO's soft overlong punishment (arXiv:2503.14476, eq. 13), added to the reward:
    0 for ``|y| ≤ L_max − L_cache``, ``((L_max − L_cache) − |y|) / L_cache`` inside the last
    ``L_cache = buffer`` tokens before ``L_max = max_length``, and −1 beyond ``L_max``.

    Args:
      lengths: response lengths ``|y|``, any shape.
      max_length: ``L_max``; buffer: ``L_cache`` > 0 (may be traced).

    >>> import jax.numpy as jnp
    >>> overlong_penalty(jnp.array([4, 6, 8, 9]), max_length=8, buffer=4)
    Array([ 0. , -0.5, -1. , -1. ], dtype=float32)
    """
    lengths = jnp.asarray(lengths, jnp.float32)
    start = jnp.asarray(max_length, jnp.float32) - buffer
    inside = (start - lengths) / jnp.asarray(buffer, jnp.float32)
    return jnp.where(lengths <= start, 0.0, jnp.where(lengths <= max_length, inside, -1.0))


def length_adaptive_lambda(lengths: ArrayLike, *, alpha: ArrayLike) -> Array:
    """VAPO's length-adaptive GAE λ for the policy: ``λ = 1 − 1/(α·|y|)`` per response
    (Yue et al. 2025, arXiv:2504.05118, eq. 7; α = 0.05 there), clipped to [0, 1], so that
    a long response's advantage sums the TD errors over about α·|y| more steps. Broadcast
    it over the tokens (``[T, B]``) as :func:`gae`'s ``lambda_``.

    >>> import jax.numpy as jnp
    >>> length_adaptive_lambda(jnp.array([10, 100, 1000]), alpha=0.05)
    Array([0.  , 0.8 , 0.98], dtype=float32)
    """
    lengths = jnp.asarray(lengths, jnp.float32)
    return jnp.clip(1.0 - 1.0 / (jnp.asarray(alpha, jnp.float32) * jnp.maximum(lengths, 1.0)), 0.0, 1.0)


SEQUENCE_ESTIMATORS = ("grpo", "drgrpo", "rloo", "batchmean", "rfpp", "remax")
"""The names :func:`sequence_advantages` reads, each the function ``<name>_advantages``."""


def _sequence_returns(returns: ArrayLike, group_size: int, greedy_returns: ArrayLike | None,
                      greedy: bool) -> Array:
    """``returns`` as an array ``[N]``, or a ``ValueError`` naming the bad argument; ``greedy``:
    the estimator takes ``greedy_returns`` (and only such an estimator does)."""
    returns = jnp.asarray(returns)
    if returns.ndim != 1:
        raise ValueError(f"`returns` must be [N], got shape {returns.shape}")
    if not isinstance(group_size, int) or group_size < 1 or returns.shape[0] % group_size:
        raise ValueError(f"`group_size` must be a positive int dividing N = {returns.shape[0]}, got {group_size!r}")
    if greedy != (greedy_returns is not None):
        raise ValueError("`greedy_returns` is required for 'remax' and only for it")
    return returns


def grpo_advantages(returns: ArrayLike, *, group_size: int = 1,
                    greedy_returns: ArrayLike | None = None, eps: ArrayLike = 1e-6) -> Array:
    """GRPO: :func:`group_relative` (std-normalised) within each group of ``group_size``
    adjacent responses; ``returns [N]`` -> ``[N]``."""
    returns = _sequence_returns(returns, group_size, greedy_returns, greedy=False)
    return group_relative(returns.reshape(-1, group_size), normalize_std=True, eps=eps).reshape(-1)


def drgrpo_advantages(returns: ArrayLike, *, group_size: int = 1,
                      greedy_returns: ArrayLike | None = None, eps: ArrayLike = 1e-6) -> Array:
    """Dr. GRPO: :func:`group_relative` without the std (``R − mean`` of each group)."""
    returns = _sequence_returns(returns, group_size, greedy_returns, greedy=False)
    return group_relative(returns.reshape(-1, group_size), normalize_std=False, eps=eps).reshape(-1)


def rloo_advantages(returns: ArrayLike, *, group_size: int = 1,
                    greedy_returns: ArrayLike | None = None, eps: ArrayLike = 1e-6) -> Array:
    """RLOO: :func:`leave_one_out` within each group (``eps`` unused)."""
    returns = _sequence_returns(returns, group_size, greedy_returns, greedy=False)
    return leave_one_out(returns.reshape(-1, group_size)).reshape(-1)


def batchmean_advantages(returns: ArrayLike, *, group_size: int = 1,
                         greedy_returns: ArrayLike | None = None, eps: ArrayLike = 1e-6) -> Array:
    """``R − mean(R)`` over the whole batch (REINFORCE with a mean baseline; ``group_size``
    is checked, ``eps`` unused)."""
    returns = _sequence_returns(returns, group_size, greedy_returns, greedy=False)
    return returns - jnp.mean(returns)


def rfpp_advantages(returns: ArrayLike, *, group_size: int = 1,
                    greedy_returns: ArrayLike | None = None, eps: ArrayLike = 1e-6) -> Array:
    """REINFORCE++'s global normalisation ``(R − mean(R)) / (std(R) + eps)`` over the whole
    batch (``group_size`` is checked)."""
    returns = _sequence_returns(returns, group_size, greedy_returns, greedy=False)
    centred = returns - jnp.mean(returns)
    scale = jnp.std(returns) + eps
    return centred / jnp.where(scale > 0, scale, 1.0)


def remax_advantages(returns: ArrayLike, *, group_size: int = 1,
                     greedy_returns: ArrayLike | None = None, eps: ArrayLike = 1e-6) -> Array:
    """ReMax: ``R − R_greedy`` with ``greedy_returns [N]`` (required) the return of the greedy
    response to the same prompt (``group_size`` is checked, ``eps`` unused)."""
    returns = _sequence_returns(returns, group_size, greedy_returns, greedy=True)
    greedy = jnp.asarray(greedy_returns)
    dtype = _dtype(returns, greedy)
    return returns.astype(dtype) - greedy.astype(dtype)


_SEQUENCE_FUNCTIONS = dict(zip(SEQUENCE_ESTIMATORS, (
    grpo_advantages, drgrpo_advantages, rloo_advantages, batchmean_advantages, rfpp_advantages,
    remax_advantages), strict=True))


def sequence_advantages(
    estimator: str,
    returns: ArrayLike,
    *,
    group_size: int = 1,
    greedy_returns: ArrayLike | None = None,
    eps: ArrayLike = 1e-6,
) -> Array:
    """One advantage per response from the responses' returns, by a critic-free baseline:
    the function of :data:`SEQUENCE_ESTIMATORS` named ``estimator``.

    ``returns [N]`` holds ``N = G · K`` responses, ordered group by group (the ``K =
    group_size`` samples of a prompt are adjacent):

    * ``"grpo"``: :func:`group_relative` (std-normalised); ``"drgrpo"``: without the std
      (:func:`grpo_advantages`, :func:`drgrpo_advantages`);
    * ``"rloo"``: :func:`leave_one_out` (:func:`rloo_advantages`);
    * ``"batchmean"``: ``R − mean(R)`` over the whole batch (REINFORCE with a mean baseline;
      :func:`batchmean_advantages`);
    * ``"rfpp"``: ``(R − mean(R)) / (std(R) + eps)`` over the whole batch (REINFORCE++'s
      global normalisation; :func:`rfpp_advantages`);
    * ``"remax"``: ``R − R_greedy``, with ``greedy_returns [N]`` the return of the greedy
      response to the same prompt (ReMax; :func:`remax_advantages`).

    Args:
      estimator: one of :data:`SEQUENCE_ESTIMATORS` (static).
      returns: ``[N]`` sequence-level returns.
      group_size: ``K`` (static); must divide ``N``.
      greedy_returns: ``[N]``, for ``"remax"`` only.
      eps: stabiliser of the std normalisations; may be traced.

    Returns:
      ``[N]`` advantages, to broadcast over each response's tokens.

    >>> import jax.numpy as jnp
    >>> sequence_advantages("rloo", jnp.array([1.0, 0.0, 0.0, 2.0]), group_size=2)
    Array([ 1., -1., -2.,  2.], dtype=float32)
    """
    if estimator not in _SEQUENCE_FUNCTIONS:
        raise ValueError(f"`estimator` must be one of {SEQUENCE_ESTIMATORS}, got {estimator!r}")
    return _SEQUENCE_FUNCTIONS[estimator](returns, group_size=group_size,
                                          greedy_returns=greedy_returns, eps=eps)
