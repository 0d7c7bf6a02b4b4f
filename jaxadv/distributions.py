"""Categorical and diagonal-Gaussian policies as plain functions of their parameters.

A policy head already outputs its distribution as arrays — ``logits`` for a discrete
policy, ``mean`` and ``log_std`` for a continuous one — and training needs four things
from them: a sample, a log-density, an entropy and a KL. So these are functions of those
arrays, not distribution objects. An object would be one more pytree to build, flatten and
rebuild at every ``jit``/``scan``/``vmap`` boundary of the training loop, would hide which
parameterisation is in use (logits or probabilities, ``σ`` or ``log σ``), and would bring
its own broadcasting and event-shape rules. Each function here is the formula in its
docstring and no more ops than that needs (which matters on CPU, where every op is a
dispatch in un-jitted code and a loop over small arrays is overhead-bound); shapes are
checked in Python at trace time, so the checks cost nothing under ``jit``.

Shapes: ``*B`` is any batch shape (possibly empty); ``A`` is the number of discrete
actions and ``D`` the dimension of a continuous action. Nothing broadcasts: a
state-independent ``log_std`` of shape ``[D]`` is broadcast by the caller,
``jnp.broadcast_to(log_std, mean.shape)``, before it is passed in.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxadv.validate import same_shape

__all__ = [
    "categorical_entropy",
    "categorical_kl",
    "categorical_log_prob",
    "categorical_sample",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "gaussian_sample",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


def _check_event_rank(name: str, x) -> None:
    """Raise ``ValueError`` unless ``x`` has a trailing event axis (rank >= 1)."""
    if jnp.ndim(x) < 1:
        raise ValueError(
            f"{name} must have rank >= 1 (a trailing action axis), got shape {jnp.shape(x)}"
        )


# --------------------------------------------------------------------------------------
# Categorical
# --------------------------------------------------------------------------------------


def categorical_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Sample ``a ~ softmax(logits)`` along the last axis (Gumbel-max).

    ``a = argmaxᵢ (logitsᵢ + gᵢ)``, ``gᵢ ~ Gumbel(0, 1)`` i.i.d., which gives
    ``P(a = i) = exp(logitsᵢ) / Σⱼ exp(logitsⱼ)``. Actions whose logit is ``-inf``
    (masked) are never drawn. One key draws the whole batch. With the default (threefry)
    key this is the same draw as ``jax.random.categorical(key, logits)``; the noise is
    drawn as one flat vector and reshaped: the same bits as multi-dimensional noise, a
    smaller program for XLA to compile.

    Args:
      key: a PRNG key.
      logits: float ``[*B, A]``, unnormalised log-probabilities; ``-inf`` masks an action.

    Returns:
      int32 ``[*B]``, actions in ``[0, A)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxadv.distributions import categorical_sample
      >>> logits = jnp.array([[0.0, -jnp.inf, 5.0], [1.0, 1.0, 1.0]])
      >>> categorical_sample(jax.random.key(0), logits).shape
      (2,)
    """
    _check_event_rank("logits", logits)
    shape = jnp.shape(logits)
    gumbel = jax.random.gumbel(key, (math.prod(shape),), jnp.result_type(logits))
    return jnp.argmax(logits + gumbel.reshape(shape), axis=-1).astype(jnp.int32)


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """Log-probability of ``actions`` under ``softmax(logits)``.

    ``log π(a) = logitsₐ − log Σⱼ exp(logitsⱼ)`` (``log_softmax``, then the entry at ``a``).
    ``∂ log π(a) / ∂ logits = onehot(a) − softmax(logits)``.

    Args:
      logits: float ``[*B, A]``, unnormalised log-probabilities; ``-inf`` masks an action.
      actions: integer ``[*B]`` (exactly ``logits.shape[:-1]``), in ``[0, A)``. An action
        out of range (negative ones included) gives ``nan``, not a wrapped index.

    Returns:
      float ``[*B]``; ``-inf`` for a masked action.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxadv.distributions import categorical_log_prob
      >>> logits = jnp.log(jnp.array([[0.25, 0.75], [0.5, 0.5]]))
      >>> [round(v, 4) for v in categorical_log_prob(logits, jnp.array([1, 0])).tolist()]
      [-0.2877, -0.6931]
    """
    _check_event_rank("logits", logits)
    if jnp.shape(actions) != jnp.shape(logits)[:-1]:
        raise ValueError(
            f"actions must have shape logits.shape[:-1]: actions.shape={jnp.shape(actions)}, "
            f"logits.shape={jnp.shape(logits)}"
        )
    if not jnp.issubdtype(jnp.result_type(actions), jnp.integer):
        raise ValueError(f"actions must be integers, got dtype {jnp.result_type(actions)}")
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    index = actions[..., None]
    return jnp.take_along_axis(log_probs, index, axis=-1, wrap_negative_indices=False)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of ``softmax(logits)``: ``H = −Σᵢ pᵢ log pᵢ``, with ``0 · log 0 = 0``.

    Masked actions (``logits = -inf``, so ``pᵢ = 0``) contribute nothing: the result, and
    its gradient, are finite and equal to the entropy over the remaining actions.
    At least one logit per row must be finite.

    Args:
      logits: float ``[*B, A]``, unnormalised log-probabilities; ``-inf`` masks an action.

    Returns:
      float ``[*B]``, in nats, between ``0`` and ``log A``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxadv.distributions import categorical_entropy
      >>> logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -jnp.inf, -jnp.inf]])
      >>> [round(v, 4) for v in categorical_entropy(logits).tolist()]  # log 4, log 2
      [1.3863, 0.6931]
    """
    _check_event_rank("logits", logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    probs = jnp.exp(log_probs)
    # Zero log p where p = 0 *before* multiplying, so neither the value nor the
    # gradient meets 0 · (−inf).
    return -jnp.sum(probs * jnp.where(probs > 0, log_probs, 0.0), axis=-1)


def categorical_kl(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
    """``KL(p ‖ q) = Σᵢ pᵢ (log pᵢ − log qᵢ)`` for ``p = softmax(logits_p)``, ``q = softmax(logits_q)``.

    Terms with ``pᵢ = 0`` are zero (so an action masked in both is fine); an action with
    ``pᵢ > 0`` but ``qᵢ = 0`` makes the divergence ``+inf``.

    Args:
      logits_p: float ``[*B, A]``, logits of ``p`` (e.g. the new policy).
      logits_q: float ``[*B, A]``, logits of ``q`` (e.g. the old or reference policy).

    Returns:
      float ``[*B]``, ``≥ 0``, in nats.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxadv.distributions import categorical_kl
      >>> p, q = jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.25, 0.75]))
      >>> round(float(categorical_kl(p, q)), 4)  # ½ log 2 + ½ log(2/3)
      0.1438
    """
    _check_event_rank("logits_p", logits_p)
    same_shape(logits_p=logits_p, logits_q=logits_q)
    log_p = jax.nn.log_softmax(logits_p, axis=-1)
    log_q = jax.nn.log_softmax(logits_q, axis=-1)
    p = jnp.exp(log_p)
    return jnp.sum(p * jnp.where(p > 0, log_p - log_q, 0.0), axis=-1)


# --------------------------------------------------------------------------------------
# Diagonal Gaussian
# --------------------------------------------------------------------------------------


def gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Sample a diagonal Gaussian: ``a = μ + exp(log σ) ⊙ ε``, ``ε ~ N(0, I)``.

    With the default (threefry) key, ``ε`` is ``jax.random.normal(key, mean.shape)``,
    drawn flat and reshaped (the same bits, a smaller program; as for
    :func:`categorical_sample`).

    Args:
      key: a PRNG key.
      mean: float ``[*B, D]``, ``μ``.
      log_std: float ``[*B, D]``, ``log σ``, the same shape as ``mean``; broadcast a
        state-independent ``[D]`` parameter first with ``jnp.broadcast_to(log_std, mean.shape)``.

    Returns:
      float ``[*B, D]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxadv.distributions import gaussian_sample
      >>> mean = jnp.zeros((4, 2))
      >>> log_std = jnp.broadcast_to(jnp.array([0.0, -1.0]), mean.shape)
      >>> gaussian_sample(jax.random.key(0), mean, log_std).shape
      (4, 2)
    """
    _check_event_rank("mean", mean)
    same_shape(mean=mean, log_std=log_std)
    shape = jnp.shape(mean)
    noise = jax.random.normal(key, (math.prod(shape),), jnp.result_type(mean))
    return mean + jnp.exp(log_std) * noise.reshape(shape)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """Log-density of a diagonal Gaussian, summed over the action axis.

    ``log π(a) = −Σ_d [ ½ ((a_d − μ_d) / σ_d)² + log σ_d + ½ log 2π ]``.

    Args:
      mean: float ``[*B, D]``, ``μ``.
      log_std: float ``[*B, D]``, ``log σ``, the same shape as ``mean``; broadcast a
        state-independent ``[D]`` parameter first with ``jnp.broadcast_to(log_std, mean.shape)``.
      actions: float ``[*B, D]``, the same shape as ``mean`` (pre-squashing actions).

    Returns:
      float ``[*B]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxadv.distributions import gaussian_log_prob
      >>> mean, log_std = jnp.zeros((1, 2)), jnp.zeros((1, 2))
      >>> [round(v, 4) for v in gaussian_log_prob(mean, log_std, jnp.ones((1, 2))).tolist()]
      [-2.8379]
    """
    _check_event_rank("mean", mean)
    same_shape(mean=mean, log_std=log_std, actions=actions)
    z = (actions - mean) / jnp.exp(log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std, axis=-1) - jnp.shape(mean)[-1] * _HALF_LOG_2PI


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Entropy of a diagonal Gaussian: ``H = Σ_d (log σ_d + ½ log(2πe))``.

    It does not depend on the mean.

    Args:
      log_std: float ``[*B, D]``, ``log σ``.

    Returns:
      float ``[*B]``, in nats.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxadv.distributions import gaussian_entropy
      >>> [round(v, 4) for v in gaussian_entropy(jnp.zeros((2, 3))).tolist()]  # 3 · ½ log(2πe)
      [4.2568, 4.2568]
    """
    _check_event_rank("log_std", log_std)
    return jnp.sum(log_std, axis=-1) + jnp.shape(log_std)[-1] * _HALF_LOG_2PI_E


def gaussian_kl(
    mean_p: jax.Array, log_std_p: jax.Array, mean_q: jax.Array, log_std_q: jax.Array
) -> jax.Array:
    """``KL(p ‖ q)`` between diagonal Gaussians, in closed form, summed over the action axis.

    ``KL = Σ_d [ log(σq_d / σp_d) + (σp_d² + (μp_d − μq_d)²) / (2 σq_d²) − ½ ]``,
    computed as ``Σ_d [ ½ (expm1(2δ_d) + ((μp_d − μq_d) / σq_d)²) − δ_d ]`` with
    ``δ = log σp − log σq``, which keeps precision when ``p ≈ q``.

    Args:
      mean_p: float ``[*B, D]``, ``μp``.
      log_std_p: float ``[*B, D]``, ``log σp``.
      mean_q: float ``[*B, D]``, ``μq``.
      log_std_q: float ``[*B, D]``, ``log σq``. All four have the same shape; broadcast a
        state-independent ``log_std`` with ``jnp.broadcast_to`` first.

    Returns:
      float ``[*B]``, ``≥ 0``, in nats.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxadv.distributions import gaussian_kl
      >>> zeros, ones = jnp.zeros((1, 2)), jnp.ones((1, 2))
      >>> gaussian_kl(ones, zeros, zeros, zeros).tolist()  # Σ_d ½ (μp − μq)² = 1
      [1.0]
    """
    _check_event_rank("mean_p", mean_p)
    same_shape(mean_p=mean_p, log_std_p=log_std_p, mean_q=mean_q, log_std_q=log_std_q)
    delta = log_std_p - log_std_q
    z = (mean_p - mean_q) / jnp.exp(log_std_q)
    return jnp.sum(0.5 * (jnp.expm1(2.0 * delta) + jnp.square(z)) - delta, axis=-1)
