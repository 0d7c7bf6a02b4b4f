"""Policy-gradient, PPO, value, entropy and KL losses over time-major arrays.

Every per-step array is ``[T, *B]``: axis 0 is time, and each index into ``B``
is one sequence (trajectory, episode window, or generated completion). Each
loss is a pure function of arrays that returns a scalar to *minimise* (the
entropy bonus is the exception: it is a quantity to maximise, and the trainer
subtracts ``ent_coef ×`` it). Quantities that come from the rollout
(advantages, value targets, old log-probabilities and values, reference
log-probabilities) are wrapped in ``jax.lax.stop_gradient``, so gradients flow
only through the arrays produced by the parameters being trained.

Masks. ``mask`` is optional and has the same shape as the per-step arrays;
nonzero/``True`` marks a real step or token and ``0``/``False`` marks padding
(nonzero entries count as 1: a mask is not a weight). Padded entries are
replaced by neutral values *before* any arithmetic, so whatever they hold —
even ``nan`` or ``inf`` — changes neither the loss nor its gradient.

Reductions. How a masked mean over ``[T, *B]`` is taken is a real modelling
choice in sequence RL (it decides how tokens of long and short sequences are
weighed), so every loss takes an explicit static ``reduction`` string. With
mᵗᵇ ∈ {0, 1} the mask, xᵗᵇ the per-step loss, b ranging over the sequences in
``B`` and 𝟙[·] the indicator:

- ``"token"``:    Σₜ,ᵦ m·x / Σₜ,ᵦ m. Every real token weighs the same, so long
  sequences dominate (PPO's usual mean; DAPO's "token-level" loss).
- ``"sequence"``: (1/|S|) Σ_{b∈S} (Σₜ mₜᵦ xₜᵦ / Σₜ mₜᵦ), with S = {b : Σₜ mₜᵦ > 0}
  the sequences that hold at least one token. Every sequence weighs the same,
  so tokens of short sequences weigh more (GRPO, Shao et al. 2024,
  arXiv:2402.03300).
- ``"constant"``: Σₜ,ᵦ m·x / (T · prod(B)). A fixed normaliser that does not
  depend on the lengths, hence no length bias ("Dr. GRPO", Liu et al. 2025,
  arXiv:2503.20783).

All three give exactly 0 (never ``nan``) when every entry is masked: the
denominators are guarded with ``max(·, 1)``, which is exact because they count
whole tokens or sequences. Without padding, all three are the plain mean.

Shapes are checked on entry: arrays that must align must have equal shapes
(nothing broadcasts), else a ``ValueError`` names the argument and both shapes.
Numeric hyperparameters (``clip_eps``) are keyword-only and traceable, so a
loss can be ``jax.vmap``-ed over them; ``reduction`` and ``estimator`` are
static Python strings.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxadv.validate import same_shape

Array = jax.Array
ArrayLike = Any  # an array or anything jnp.asarray takes (a scalar, a NumPy array, a tracer)
Metrics = dict[str, Array]

__all__ = [
    "cispo_loss",
    "dapo_clip_loss",
    "entropy_bonus",
    "gspo_loss",
    "kl_penalty",
    "masked_mean",
    "policy_gradient_loss",
    "ppo_clip_loss",
    "value_loss",
]

REDUCTIONS = ("token", "sequence", "constant")
"""The ways a masked loss is averaged (:func:`masked_mean`)."""
KL_ESTIMATORS = ("k1", "k2", "k3")
"""Schulman's estimators of KL(π ‖ π_ref) that :func:`kl_penalty` offers."""

_sg = jax.lax.stop_gradient


# --------------------------------------------------------------------------- helpers


def _as_float(x):
    """``x`` as an array with an inexact dtype (bool/int become float32)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)
    return x


def _check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")


def _check_scalar(name, value):
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}")


def _bool_mask(mask, ref, ref_name):
    """``None`` or a boolean mask with ``ref``'s shape (``ValueError`` naming ``mask``)."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    same_shape(**{ref_name: ref, "mask": mask})
    return mask.astype(bool)


def _fill_padding(x, mask, fill):
    """``x`` with its padded entries replaced by ``fill`` (the first half of the
    double-``where`` trick, so that padding cannot put ``nan`` into gradients)."""
    if mask is None:
        return x
    return jnp.where(mask, x, jnp.asarray(fill, x.dtype))


# --------------------------------------------------------------------------- reductions


def masked_mean(x: ArrayLike, mask: ArrayLike | None = None, *, reduction: str = "token") -> Array:
    """Mean of ``x`` over its real (unmasked) entries, reduced as ``reduction`` says.

    token: Σ m·x / Σ m;  sequence: mean over non-empty sequences b of
    Σₜ mₜᵦxₜᵦ / Σₜ mₜᵦ;  constant: Σ m·x / (T·prod(B)). See the module docstring
    for what each choice does to the weight of long and short sequences.
    All-masked input gives 0.

    Args:
      x: ``[T, *B]`` values (bool/int are promoted to float32). Rank 0 is
        allowed for "token" and "constant" but not for "sequence", which needs
        a time axis.
      mask: optional ``[T, *B]`` (same shape as ``x``); nonzero = real,
        0 = padding. ``None`` means every entry is real.
      reduction: static string, one of "token", "sequence", "constant".

    Returns:
      A scalar with ``x``'s float dtype.

    >>> import jax.numpy as jnp; from jaxadv.losses import masked_mean
    >>> x = jnp.array([[2., 6.], [4., 9.]])   # [T=2, B=2]
    >>> mask = jnp.array([[1, 1], [1, 0]])     # sequence 1 has one token
    >>> [float(masked_mean(x, mask, reduction=r)) for r in ("token", "sequence", "constant")]
    [4.0, 4.5, 3.0]
    """
    _check_reduction(reduction)
    x = _as_float(x)
    if reduction == "sequence" and x.ndim == 0:
        raise ValueError(
            '`x` must have a time axis (rank >= 1) for reduction="sequence", got a scalar'
        )
    mask = _bool_mask(mask, x, "x")
    if mask is None:
        mask = jnp.ones(x.shape, bool)
    weights = mask.astype(x.dtype)
    x = jnp.where(mask, x, jnp.zeros((), x.dtype))
    one = jnp.ones((), x.dtype)

    if reduction == "token":
        return jnp.sum(x) / jnp.maximum(jnp.sum(weights), one)
    if reduction == "sequence":
        tokens = jnp.sum(weights, axis=0)  # [*B]
        per_sequence = jnp.sum(x, axis=0) / jnp.maximum(tokens, one)  # 0 where empty
        num_sequences = jnp.sum((tokens > 0).astype(x.dtype))
        return jnp.sum(per_sequence) / jnp.maximum(num_sequences, one)
    # "constant"
    return jnp.sum(x) / jnp.asarray(max(x.size, 1), x.dtype)


# --------------------------------------------------------------------------- policy losses


def policy_gradient_loss(log_probs: ArrayLike, advantages: ArrayLike,
                         mask: ArrayLike | None = None, *, reduction: str = "token") -> Array:
    """Vanilla policy-gradient (REINFORCE / A2C) loss: −mean(log π(aₜ|sₜ) · Aₜ).

    ∇θ loss = −mean(Aₜ ∇θ log π(aₜ|sₜ)), the score-function estimator of −∇θ J
    (Williams 1992; Sutton et al. 2000). ``advantages`` are held constant
    (``stop_gradient``).

    Args:
      log_probs: ``[T, *B]`` log π(aₜ|sₜ) of the taken actions, a function of θ.
      advantages: ``[T, *B]`` advantage estimates Aₜ.
      mask: optional ``[T, *B]``; nonzero = real step, 0 = padding.
      reduction: "token", "sequence" or "constant" (see ``masked_mean``).

    Returns:
      The scalar loss.

    >>> import jax.numpy as jnp; from jaxadv.losses import policy_gradient_loss
    >>> log_probs = jnp.log(jnp.array([0.5, 0.25]))
    >>> round(float(policy_gradient_loss(log_probs, jnp.array([1.0, -1.0]))), 4)
    -0.3466
    """
    log_probs = _as_float(log_probs)
    same_shape(log_probs=log_probs, advantages=advantages)
    mask = _bool_mask(mask, log_probs, "log_probs")
    log_probs = _fill_padding(log_probs, mask, 0.0)
    advantages = _fill_padding(_sg(_as_float(advantages)), mask, 0.0)
    return masked_mean(-log_probs * advantages, mask, reduction=reduction)


def ppo_clip_loss(log_probs: ArrayLike, old_log_probs: ArrayLike, advantages: ArrayLike,
                  mask: ArrayLike | None = None, *, clip_eps: ArrayLike,
                  reduction: str = "token") -> tuple[Array, Metrics]:
    """PPO's clipped surrogate loss: −mean(min(ρₜAₜ, clip(ρₜ, 1−ε, 1+ε)Aₜ)).

    ρₜ = exp(log π(aₜ|sₜ) − log π_old(aₜ|sₜ)) (Schulman et al. 2017,
    arXiv:1707.06347). The minimum makes the objective a pessimistic bound: for
    Aₜ > 0 the gradient vanishes once ρₜ > 1+ε, for Aₜ < 0 once ρₜ < 1−ε; at
    ρ = 1 it equals the policy gradient. ``old_log_probs`` and ``advantages``
    are held constant.

    Args:
      log_probs: ``[T, *B]`` log π(aₜ|sₜ) under the current parameters.
      old_log_probs: ``[T, *B]`` log π_old(aₜ|sₜ) recorded at rollout time.
      advantages: ``[T, *B]`` advantage estimates Aₜ.
      mask: optional ``[T, *B]``; nonzero = real step, 0 = padding.
      clip_eps: scalar ε > 0 (traceable: may be vmapped over).
      reduction: "token", "sequence" or "constant" (see ``masked_mean``), for
        the loss.

    Returns:
      ``(loss, metrics)``: the scalar loss and a dict of stop-gradient scalars,
      ``"clip_fraction"`` = mean of 𝟙[|ρₜ − 1| > ε] and ``"approx_kl"`` =
      mean of (ρₜ − 1) − log ρₜ (Schulman's k3 estimate of KL(π_old‖π) from
      samples of π_old). Both metrics are "token" means over the real steps,
      whatever the loss's ``reduction``, so the fraction is a true fraction.

    >>> import jax.numpy as jnp; from jaxadv.losses import ppo_clip_loss
    >>> old = jnp.log(jnp.array([0.5, 0.5]))
    >>> new = jnp.log(jnp.array([0.75, 0.5]))   # ratios 1.5 and 1.0
    >>> loss, m = ppo_clip_loss(new, old, jnp.array([1.0, 1.0]), clip_eps=0.2)
    >>> round(float(loss), 4), float(m["clip_fraction"])
    (-1.1, 0.5)
    """
    log_probs = _as_float(log_probs)
    same_shape(log_probs=log_probs, old_log_probs=old_log_probs, advantages=advantages)
    _check_scalar("clip_eps", clip_eps)
    _check_reduction(reduction)
    mask = _bool_mask(mask, log_probs, "log_probs")
    # Padding becomes ρ = 1, A = 0: finite, and contributes no gradient.
    log_probs = _fill_padding(log_probs, mask, 0.0)
    old_log_probs = _fill_padding(_sg(_as_float(old_log_probs)), mask, 0.0)
    advantages = _fill_padding(_sg(_as_float(advantages)), mask, 0.0)
    clip_eps = jnp.asarray(clip_eps, log_probs.dtype)

    log_ratio = log_probs - old_log_probs
    ratio = jnp.exp(log_ratio)
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    surrogate = jnp.minimum(ratio * advantages, clipped_ratio * advantages)
    loss = -masked_mean(surrogate, mask, reduction=reduction)

    ratio_sg, log_ratio_sg = _sg(ratio), _sg(log_ratio)
    metrics = {
        "clip_fraction": masked_mean(jnp.abs(ratio_sg - 1.0) > clip_eps, mask),
        "approx_kl": masked_mean((ratio_sg - 1.0) - log_ratio_sg, mask),
    }
    return loss, metrics


def _ratio_inputs(log_probs, old_log_probs, advantages, mask, advantages_shape=None):
    """Check shapes and fill padding for a ratio loss: ``(log_probs, old_log_probs,
    advantages, mask)`` with padding at ρ = 1, A = 0 (``advantages_shape``: its own shape
    where it is not per token)."""
    log_probs = _as_float(log_probs)
    same_shape(log_probs=log_probs, old_log_probs=old_log_probs)
    if advantages_shape is None:
        same_shape(log_probs=log_probs, advantages=advantages)
    elif jnp.shape(advantages) != advantages_shape:
        raise ValueError(f"`advantages` must have shape {advantages_shape} (one per sequence), "
                         f"got {jnp.shape(advantages)}")
    mask = _bool_mask(mask, log_probs, "log_probs")
    log_probs = _fill_padding(log_probs, mask, 0.0)
    old_log_probs = _fill_padding(_sg(_as_float(old_log_probs)), mask, 0.0)
    advantages = _sg(_as_float(advantages))
    if advantages_shape is None:
        advantages = _fill_padding(advantages, mask, 0.0)
    return log_probs, old_log_probs, advantages, mask


def _clip_range(clip_low, clip_high, dtype):
    """``(1 − ε_low, 1 + ε_high)`` as ``dtype`` scalars (ε may be ``inf``: no bound)."""
    _check_scalar("clip_low", clip_low)
    _check_scalar("clip_high", clip_high)
    return 1.0 - jnp.asarray(clip_low, dtype), 1.0 + jnp.asarray(clip_high, dtype)


def _clipped_ratios(log_probs, old_log_probs, advantages, mask, clip_low, clip_high, reduction):
    """The inputs of a token-level clipped-ratio loss, checked and padded, with
    ``ratio = exp(log_ratio)`` and the bounds ``(low, high)``."""
    _check_reduction(reduction)
    log_probs, old_log_probs, advantages, mask = _ratio_inputs(log_probs, old_log_probs,
                                                               advantages, mask)
    low, high = _clip_range(clip_low, clip_high, log_probs.dtype)
    log_ratio = log_probs - old_log_probs
    return log_probs, advantages, mask, jnp.exp(log_ratio), log_ratio, low, high


def _ratio_metrics(ratio, log_ratio, low, high, mask):
    """``clip_fraction`` (ρ outside [low, high]) and ``approx_kl`` (k3), token means."""
    ratio, log_ratio = _sg(ratio), _sg(log_ratio)
    return {"clip_fraction": masked_mean((ratio > high) | (ratio < low), mask),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask)}


def dapo_clip_loss(log_probs: ArrayLike, old_log_probs: ArrayLike, advantages: ArrayLike,
                   mask: ArrayLike | None = None, *, clip_low: ArrayLike, clip_high: ArrayLike,
                   reduction: str = "token") -> tuple[Array, Metrics]:
    """DAPO's decoupled ("clip-higher") surrogate: −mean(min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A)).

    Yu et al. 2025 (arXiv:2503.14476), eq. 8: PPO's clipped objective with a wider upper
    range (ε_high = 0.28 against ε_low = 0.2 in the paper), so that unlikely tokens with
    A > 0 can gain probability before the clip stops them, which keeps the policy's entropy
    from collapsing. DAPO averages over all tokens of the batch (``reduction="token"``, its
    "token-level policy gradient loss"). With ε_low = ε_high = ε it is
    :func:`ppo_clip_loss` (GRPO's clipped loss when reduced per token).

    Args:
      log_probs, old_log_probs, advantages: ``[T, *B]``, as in :func:`ppo_clip_loss`.
      mask: optional ``[T, *B]``; nonzero = real token.
      clip_low, clip_high: scalars ε_low, ε_high ≥ 0 (traceable).
      reduction: see :func:`masked_mean`.

    Returns:
      ``(loss, metrics)`` with ``clip_fraction`` (ρ outside [1−ε_low, 1+ε_high]) and
      ``approx_kl``, token means.

    >>> import jax.numpy as jnp; from jaxadv.losses import dapo_clip_loss
    >>> old = jnp.log(jnp.array([0.5, 0.5]))
    >>> new = jnp.log(jnp.array([0.75, 0.5]))   # ratios 1.5 and 1.0, A = 1: 1.28 and 1.0
    >>> round(float(dapo_clip_loss(new, old, jnp.ones(2), clip_low=0.2, clip_high=0.28)[0]), 4)
    -1.14
    """
    log_probs, advantages, mask, ratio, log_ratio, low, high = _clipped_ratios(
        log_probs, old_log_probs, advantages, mask, clip_low, clip_high, reduction)
    surrogate = jnp.minimum(ratio * advantages, jnp.clip(ratio, low, high) * advantages)
    loss = -masked_mean(surrogate, mask, reduction=reduction)
    return loss, _ratio_metrics(ratio, log_ratio, low, high, mask)


def gspo_loss(log_probs: ArrayLike, old_log_probs: ArrayLike, advantages: ArrayLike,
              mask: ArrayLike | None = None, *, clip_low: ArrayLike, clip_high: ArrayLike,
              token_level: bool = False) -> tuple[Array, Metrics]:
    """GSPO's sequence-level clipped surrogate (Zheng et al. 2025, arXiv:2507.18071).

    The importance ratio of a whole response is the geometric mean of its token ratios,
    ``s_b = (π(y_b)/π_old(y_b))^(1/|y_b|) = exp(mean_t log ρ_tb)``, clipped per sequence:
    loss = −(1/|S|) Σ_b min(s_b A_b, clip(s_b, 1−ε_low, 1+ε_high) A_b), over the sequences
    S with at least one token. The paper's ranges are small (ε_low = 3e-4, ε_high = 4e-4)
    because s is a per-token average. ``token_level=True`` is GSPO-token: each token gets
    ``s_tb = sg(s_b) · π(y_tb)/sg(π(y_tb))`` (equal to s_b in value) and the per-sequence
    means of min(s_tb A_b, clip(s_tb) A_b) are averaged over sequences; with the same A for
    every token of a response it has GSPO's gradient. With one token per sequence both are
    :func:`ppo_clip_loss` with ``reduction="sequence"``.

    Args:
      log_probs, old_log_probs: ``[T, *B]`` token log-probabilities (current, rollout).
      advantages: ``[*B]``, one per sequence (e.g. GRPO's group-normalised reward).
      mask: optional ``[T, *B]``; nonzero = real token.
      clip_low, clip_high: scalars ε_low, ε_high ≥ 0 (traceable).
      token_level: static; GSPO-token instead of GSPO.

    Returns:
      ``(loss, metrics)``: ``clip_fraction`` is the fraction of sequences whose s_b is
      clipped, ``approx_kl`` the token mean of k3.

    >>> import jax.numpy as jnp; from jaxadv.losses import gspo_loss
    >>> old = jnp.log(jnp.full((2, 1), 0.5))
    >>> new = jnp.log(jnp.array([[1.0], [0.25]]))  # token ratios 2 and 0.5: s = 1
    >>> float(gspo_loss(new, old, jnp.ones(1), clip_low=0.1, clip_high=0.1)[0])
    -1.0
    """
    if jnp.ndim(log_probs) < 1:
        raise ValueError("`log_probs` must be [T, *B], with a time axis")
    log_probs, old_log_probs, advantages, mask = _ratio_inputs(
        log_probs, old_log_probs, advantages, mask, advantages_shape=jnp.shape(log_probs)[1:])
    low, high = _clip_range(clip_low, clip_high, log_probs.dtype)
    weights = jnp.ones_like(log_probs) if mask is None else mask.astype(log_probs.dtype)
    tokens = jnp.maximum(jnp.sum(weights, axis=0), 1.0)  # [*B]
    log_ratio = log_probs - old_log_probs
    log_s = jnp.sum(weights * log_ratio, axis=0) / tokens  # [*B]
    s = jnp.exp(log_s)
    real = jnp.sum(weights, axis=0) > 0  # [*B]: sequences with at least one token
    if token_level:
        s_t = _sg(s)[None] * jnp.exp(log_probs - _sg(log_probs))  # [T, *B], = s_b in value
        a_t = advantages[None]
        surrogate = jnp.minimum(s_t * a_t, jnp.clip(s_t, low, high) * a_t)
        loss = -masked_mean(surrogate, mask, reduction="sequence")
    else:
        surrogate = jnp.minimum(s * advantages, jnp.clip(s, low, high) * advantages)  # [*B]
        loss = -masked_mean(surrogate, real)
    ratio = jnp.exp(log_ratio)
    metrics = {"clip_fraction": masked_mean((_sg(s) > high) | (_sg(s) < low), real),
               "approx_kl": masked_mean((_sg(ratio) - 1.0) - _sg(log_ratio), mask)}
    return loss, metrics


def cispo_loss(log_probs: ArrayLike, old_log_probs: ArrayLike, advantages: ArrayLike,
               mask: ArrayLike | None = None, *, clip_low: ArrayLike, clip_high: ArrayLike,
               reduction: str = "token") -> tuple[Array, Metrics]:
    """CISPO (MiniMax-M1, arXiv:2506.13585): −mean(sg(clip(ρ, 1−ε_low, 1+ε_high)) · A · log π).

    The importance weight is clipped and held constant, and multiplies a REINFORCE term on
    every token, so no token's gradient is dropped (PPO's min drops the gradient of a
    token whose ratio left the range); ∇loss = −mean(clip(ρ) A ∇log π). MiniMax-M1 uses no
    lower bound (``clip_low = inf``) and a token-level mean. Without clipping (both
    ``inf``) the gradient is importance-weighted REINFORCE, −mean(ρ A ∇log π), which is
    also the gradient of the unclipped surrogate −mean(ρA).

    Args:
      log_probs, old_log_probs, advantages: ``[T, *B]``, as in :func:`ppo_clip_loss`.
      mask: optional ``[T, *B]``; nonzero = real token.
      clip_low, clip_high: scalars ε_low, ε_high ≥ 0 (``inf``: no bound; traceable).
      reduction: see :func:`masked_mean`.

    Returns:
      ``(loss, metrics)``: ``clip_fraction`` (weights clipped) and ``approx_kl``.

    >>> import jax, jax.numpy as jnp; from jaxadv.losses import cispo_loss
    >>> old = jnp.log(jnp.array([0.5]))
    >>> g = jax.grad(lambda lp: cispo_loss(lp, old, jnp.ones(1), clip_low=jnp.inf,
    ...                                     clip_high=0.2)[0])(jnp.log(jnp.array([1.0])))
    >>> round(float(g[0]), 4)   # ratio 2 clipped to 1.2: −1.2 · A · ∂log π/∂log π
    -1.2
    """
    log_probs, advantages, mask, ratio, log_ratio, low, high = _clipped_ratios(
        log_probs, old_log_probs, advantages, mask, clip_low, clip_high, reduction)
    weight = _sg(jnp.clip(ratio, low, high))
    loss = -masked_mean(weight * advantages * log_probs, mask, reduction=reduction)
    return loss, _ratio_metrics(ratio, log_ratio, low, high, mask)


# --------------------------------------------------------------------------- critic


def value_loss(values: ArrayLike, targets: ArrayLike, mask: ArrayLike | None = None, *,
               old_values: ArrayLike | None = None, clip_eps: ArrayLike | None = None,
               reduction: str = "token") -> Array:
    """Squared-error critic loss ½·mean((vₜ − Gₜ)²), optionally PPO-clipped.

    Clipped form (OpenAI baselines ``ppo2``), with v_old the rollout's values:
    ½·mean(max((vₜ − Gₜ)², (v_oldₜ + clip(vₜ − v_oldₜ, −ε, ε) − Gₜ)²)). It is
    used when both ``old_values`` and ``clip_eps`` are given (a structural,
    Python-level choice); giving only one of them is an error. ``targets`` and
    ``old_values`` are held constant.

    Args:
      values: ``[T, *B]`` critic outputs vₜ = V_θ(sₜ).
      targets: ``[T, *B]`` regression targets Gₜ (e.g. λ-returns).
      mask: optional ``[T, *B]``; nonzero = real step, 0 = padding.
      old_values: optional ``[T, *B]`` values recorded at rollout time.
      clip_eps: optional scalar ε (traceable: may be vmapped over).
      reduction: "token", "sequence" or "constant" (see ``masked_mean``).

    Returns:
      The scalar loss.

    >>> import jax.numpy as jnp; from jaxadv.losses import value_loss
    >>> v, g = jnp.array([1.0, 3.0]), jnp.array([2.0, 1.0])
    >>> old = jnp.array([0.0, 3.0])   # v[0] moved by 1 > ε towards its target
    >>> float(value_loss(v, g)), float(value_loss(v, g, old_values=old, clip_eps=0.5))
    (1.25, 1.5625)
    """
    if (old_values is None) != (clip_eps is None):
        raise ValueError(
            "`old_values` and `clip_eps` must be given together (clipped value loss) "
            "or both left as None (unclipped); got "
            f"old_values={'None' if old_values is None else 'an array'}, "
            f"clip_eps={'None' if clip_eps is None else 'a value'}"
        )
    values = _as_float(values)
    same_shape(values=values, targets=targets)
    mask = _bool_mask(mask, values, "values")
    values = _fill_padding(values, mask, 0.0)
    targets = _fill_padding(_sg(_as_float(targets)), mask, 0.0)
    squared_error = jnp.square(values - targets)
    if old_values is not None:
        same_shape(values=values, old_values=old_values)
        _check_scalar("clip_eps", clip_eps)
        old_values = _fill_padding(_sg(_as_float(old_values)), mask, 0.0)
        clip_eps = jnp.asarray(clip_eps, values.dtype)
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        squared_error = jnp.maximum(squared_error, jnp.square(clipped - targets))
    return 0.5 * masked_mean(squared_error, mask, reduction=reduction)


# --------------------------------------------------------------------------- regularisers


def entropy_bonus(entropy: ArrayLike, mask: ArrayLike | None = None, *,
                  reduction: str = "token") -> Array:
    """Mean per-step policy entropy, mean(H[π(·|sₜ)]) — a bonus to maximise.

    The trainer's loss subtracts ``ent_coef × entropy_bonus(...)`` (Williams &
    Peng 1991; Mnih et al. 2016). Gradients flow through ``entropy``.

    Args:
      entropy: ``[T, *B]`` per-step entropies H[π(·|sₜ)].
      mask: optional ``[T, *B]``; nonzero = real step, 0 = padding.
      reduction: "token", "sequence" or "constant" (see ``masked_mean``).

    Returns:
      The scalar mean entropy.

    >>> import jax.numpy as jnp; from jaxadv.losses import entropy_bonus
    >>> entropy = jnp.array([[1.0, 3.0], [2.0, 0.0]])
    >>> float(entropy_bonus(entropy, jnp.array([[1, 1], [1, 0]])))
    2.0
    """
    entropy = _as_float(entropy)
    mask = _bool_mask(mask, entropy, "entropy")
    entropy = _fill_padding(entropy, mask, 0.0)
    return masked_mean(entropy, mask, reduction=reduction)


def kl_penalty(log_probs: ArrayLike, ref_log_probs: ArrayLike, mask: ArrayLike | None = None, *,
               estimator: str = "k3", reduction: str = "token") -> Array:
    """Monte Carlo estimate of KL(π‖π_ref) from actions sampled from π.

    With log rₜ = log π_ref(aₜ|sₜ) − log π(aₜ|sₜ), aₜ ~ π (Schulman,
    "Approximating KL Divergence", 2020, http://joschu.net/blog/kl-approx.html):
    k1 = −log r (unbiased, high variance, can be negative);
    k2 = ½(log r)² (biased, low variance);
    k3 = (r − 1) − log r (unbiased, low variance, always ≥ 0).
    As values all three estimate KL(π‖π_ref). As losses (samples held fixed,
    gradient through ``log_probs``) they differ: in expectation over aₜ ~ π,
    ∇k2 is ∇KL(π‖π_ref), ∇k3 is ∇KL(π_ref‖π) and ∇k1 is 0.
    ``ref_log_probs`` are held constant.

    Args:
      log_probs: ``[T, *B]`` log π(aₜ|sₜ) of the sampled actions.
      ref_log_probs: ``[T, *B]`` log π_ref(aₜ|sₜ) of the same actions.
      mask: optional ``[T, *B]``; nonzero = real step, 0 = padding.
      estimator: static string, one of "k1", "k2", "k3".
      reduction: "token", "sequence" or "constant" (see ``masked_mean``).

    Returns:
      The scalar KL estimate (a penalty: add ``kl_coef ×`` it to the loss).

    >>> import jax.numpy as jnp; from jaxadv.losses import kl_penalty
    >>> log_p, log_ref = jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25]))
    >>> [round(float(kl_penalty(log_p, log_ref, estimator=k)), 4) for k in ("k1", "k2", "k3")]
    [0.6931, 0.2402, 0.1931]
    """
    if not isinstance(estimator, str) or estimator not in KL_ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {KL_ESTIMATORS}, got {estimator!r}")
    log_probs = _as_float(log_probs)
    same_shape(log_probs=log_probs, ref_log_probs=ref_log_probs)
    mask = _bool_mask(mask, log_probs, "log_probs")
    log_probs = _fill_padding(log_probs, mask, 0.0)
    ref_log_probs = _fill_padding(_sg(_as_float(ref_log_probs)), mask, 0.0)
    log_r = ref_log_probs - log_probs
    if estimator == "k1":
        per_step = -log_r
    elif estimator == "k2":
        per_step = 0.5 * jnp.square(log_r)
    else:
        per_step = jnp.expm1(log_r) - log_r
    return masked_mean(per_step, mask, reduction=reduction)
