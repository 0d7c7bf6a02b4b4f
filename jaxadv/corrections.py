"""Off-policy corrections of LLM reinforcement learning, as pure functions of log-probabilities.

The tokens were sampled by a behaviour policy π_b (an inference engine's sampler, or the
parameters of an earlier step) and the gradient is taken for the trained policy π. With
``logp`` = log π(y_t) and ``logp_behaviour`` = log π_b(y_t) of the sampled tokens, the token
ratio is r_t = π/π_b = exp(logp − logp_behaviour). This module offers:

- :func:`token_mis_weights`: token-level masked importance sampling (weight r inside
  [lo, hi], 0 outside);
- :func:`sequence_is_weights`: one weight per sequence, the product or the geometric mean of
  its token ratios, truncated (min(ρ, cap)) or masked (0 outside [lo, hi]);
- :func:`icepop_loss`: IcePop, PPO's clipped surrogate with the train/inference mismatch
  masked per token at [1/α, α];
- :func:`sapo_loss`: SAPO, a sigmoid gate in place of PPO's clip;
- :func:`gmpo_loss`: GMPO, the geometric mean of token ratios clipped in log space.

Conventions are those of :mod:`jaxadv.losses`: arrays are time-major ``[T, *B]`` (axis 0 is
the token, each index into ``B`` one sequence), ``mask`` marks real tokens (nonzero) and
padding (0), padded entries are replaced by neutral values before any arithmetic (so ``nan``
or ``inf`` there changes neither a value nor a gradient), and ``reduction`` is one of
:data:`jaxadv.losses.REDUCTIONS`. Shapes are checked on entry; nothing broadcasts.

Gradients. Importance weights are held constant (``stop_gradient``): the two weight
functions return constants, to multiply a per-token or per-sequence loss. The losses return
``(loss, metrics)`` with a scalar loss to minimise; gradients flow through ``logp`` only
(``logp_behaviour``, ``logp_old`` and ``advantages`` are held constant).

Bounds and numerics. A band [lo, hi] is inclusive at both ends (as verl's rollout
correction), and is tested in log space, log r ∈ [log lo, log hi], so that a ratio too large
for the float type (a sequence's product of ratios, say) is compared without overflowing.
Numeric hyperparameters are keyword-only scalars and may be traced (``jax.vmap`` over them);
a concrete bad value is refused with a ``ValueError`` (a mask range with lo < 0 or lo ≥ hi,
a cap ≤ 0, IcePop's α ≤ 1, a temperature ≤ 0, a negative clip), a traced one is not checked.
``aggregate``, ``mode`` and ``reduction`` are static strings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.losses import (
    _as_float,
    _bool_mask,
    _check_reduction,
    _check_scalar,
    _fill_padding,
    masked_mean,
)
from jaxadv.validate import same_shape

__all__ = [
    "SEQUENCE_AGGREGATES",
    "SEQUENCE_MODES",
    "gmpo_loss",
    "icepop_loss",
    "sapo_loss",
    "sequence_is_weights",
    "token_mis_weights",
]

SEQUENCE_AGGREGATES = ("product", "geometric")
"""How :func:`sequence_is_weights` turns token ratios into one ratio per sequence: their
product exp(Σ_t log r_t), or their geometric mean exp(mean_t log r_t)."""
SEQUENCE_MODES = ("truncate", "mask")
"""What :func:`sequence_is_weights` does with a sequence's ratio ρ: min(ρ, cap), or
ρ·𝟙[lo ≤ ρ ≤ hi]."""

_sg = jax.lax.stop_gradient


# --------------------------------------------------------------------------- argument checks


def _concrete(value) -> float | None:
    """``value`` as a Python float, or ``None`` where it is traced (then it is not checked)."""
    if isinstance(value, jax.core.Tracer):
        return None
    return float(np.asarray(value))


def _check_band(lo, hi) -> None:
    """Refuse a concrete mask range unless 0 ≤ lo < hi (``nan`` is refused too)."""
    _check_scalar("lo", lo)
    _check_scalar("hi", hi)
    low, high = _concrete(lo), _concrete(hi)
    bad = ((low is not None and not low >= 0) or (high is not None and not high > 0)
           or (low is not None and high is not None and not low < high))
    if bad:
        raise ValueError(f"the mask range [lo, hi] needs 0 <= lo < hi, got lo={low}, hi={high}")


def _check_above(name: str, value, bound: float, strict: bool = True) -> None:
    """Refuse a concrete scalar ``value`` unless it is > ``bound`` (≥ if not ``strict``)."""
    _check_scalar(name, value)
    v = _concrete(value)
    if v is not None and not (v > bound if strict else v >= bound):
        raise ValueError(f"`{name}` must be {'>' if strict else '>='} {bound:g}, got {v}")


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}")


# --------------------------------------------------------------------------- helpers


def _log_ratios(logp, logp_behaviour, mask):
    """``(log_ratio, mask)``: checked shapes, log r = logp − sg(logp_behaviour), 0 at padding."""
    logp = _as_float(logp)
    same_shape(logp=logp, logp_behaviour=logp_behaviour)
    mask = _bool_mask(mask, logp, "logp")
    logp = _fill_padding(logp, mask, 0.0)
    logp_behaviour = _fill_padding(_sg(_as_float(logp_behaviour)), mask, 0.0)
    return logp - logp_behaviour, mask


def _in_band(log_ratio: jax.Array, lo, hi) -> jax.Array:
    """𝟙[lo ≤ exp(log_ratio) ≤ hi], compared in log space (lo = 0 is log lo = −inf)."""
    dtype = log_ratio.dtype
    return ((log_ratio >= jnp.log(jnp.asarray(lo, dtype)))
            & (log_ratio <= jnp.log(jnp.asarray(hi, dtype))))


def _masked_exp(log_ratio: jax.Array, keep: jax.Array) -> jax.Array:
    """exp(log_ratio) where ``keep``, else 0 (the excluded entries never reach ``exp``)."""
    zero = jnp.zeros((), log_ratio.dtype)
    return jnp.where(keep, jnp.exp(jnp.where(keep, log_ratio, zero)), zero)


def _max_log(dtype) -> float:
    """A log-ratio above which exp overflows ``dtype``: log(max float) − 1."""
    return float(np.log(np.finfo(dtype).max)) - 1.0


# --------------------------------------------------------------------------- importance weights


def token_mis_weights(logp: jax.Array, logp_behaviour: jax.Array, mask: jax.Array | None = None,
                      *, lo: float | jax.Array, hi: float | jax.Array) -> jax.Array:
    """Token-level masked importance sampling: w_t = r_t·𝟙[lo ≤ r_t ≤ hi], r_t = π/π_b.

    A token whose ratio leaves the band is dropped (weight 0), not clipped to the bound as
    truncated importance sampling would (``min(r, C)``, Yao et al., "Your Efficient RL
    Framework Secretly Brings You Off-Policy RL Training", 2025). This is the masking operator
    M(r; lo, hi) of IcePop ("Every Step Evolves: Scaling Reinforcement Learning for
    Trillion-Scale Thinking Model", Ling Team 2025, arXiv:2510.18855) and the token-level MIS
    of "When Speed Kills Stability: Demystifying RL Collapse from the Training-Inference
    Mismatch" (Liu, Li et al. 2025). Variant: the band is inclusive at both ends (verl's
    rollout correction), and a kept token is weighted by its ratio r (not by 1, which would be
    rejection sampling without correction). The weights are held constant: multiply a
    per-token loss by them. On-policy (r = 1, lo ≤ 1 ≤ hi) every real token weighs 1.

    Args:
      logp: ``[T, *B]`` log π(y_t) of the trained policy.
      logp_behaviour: ``[T, *B]`` log π_b(y_t) of the sampler.
      mask: optional ``[T, *B]``; nonzero = real token, 0 = padding.
      lo, hi: scalars with 0 ≤ lo < hi (``hi = inf``: no upper bound; traceable).

    Returns:
      ``[T, *B]`` stop-gradient weights, 0 at padding and outside the band.

    >>> import jax.numpy as jnp; from jaxadv.corrections import token_mis_weights
    >>> logp_b = jnp.log(jnp.array([0.5, 0.5, 0.5]))
    >>> logp = jnp.log(jnp.array([0.75, 0.5, 0.125]))   # ratios 1.5, 1 and 0.25
    >>> token_mis_weights(logp, logp_b, lo=0.5, hi=2.0)
    Array([1.5, 1. , 0. ], dtype=float32)
    """
    _check_band(lo, hi)
    log_ratio, mask = _log_ratios(logp, logp_behaviour, mask)
    keep = _in_band(log_ratio, lo, hi)
    if mask is not None:
        keep = keep & mask
    return _sg(_masked_exp(log_ratio, keep))


def _check_sequence_args(aggregate, mode, cap, lo, hi) -> None:
    _check_choice("aggregate", aggregate, SEQUENCE_AGGREGATES)
    _check_choice("mode", mode, SEQUENCE_MODES)
    if mode == "truncate":
        if cap is None or lo is not None or hi is not None:
            raise ValueError('mode="truncate" takes `cap` (and not `lo`, `hi`), got '
                             f"cap={cap!r}, lo={lo!r}, hi={hi!r}")
        _check_above("cap", cap, 0.0)
    else:
        if cap is not None or lo is None or hi is None:
            raise ValueError('mode="mask" takes `lo` and `hi` (and not `cap`), got '
                             f"cap={cap!r}, lo={lo!r}, hi={hi!r}")
        _check_band(lo, hi)


def sequence_is_weights(logp: jax.Array, logp_behaviour: jax.Array,
                        mask: jax.Array | None = None, *, aggregate: str = "product",
                        mode: str = "truncate", cap: float | jax.Array | None = None,
                        lo: float | jax.Array | None = None,
                        hi: float | jax.Array | None = None) -> jax.Array:
    """Sequence-level importance weights: truncated (TIS) or masked (MIS) sequence ratios.

    Each sequence b gets one ratio from its n_b real tokens' log-ratios ℓ_tb = log(π/π_b):

    - ``aggregate="product"``: ρ_b = Π_t r_tb = exp(Σ_t m_tb ℓ_tb), the unbiased ratio of the
      whole sequence's probabilities;
    - ``aggregate="geometric"``: ρ_b = (Π_t r_tb)^(1/n_b) = exp(Σ_t m_tb ℓ_tb / n_b), a
      per-token average that does not grow with the length (biased, lower variance);

    and then

    - ``mode="truncate"``: w_b = min(ρ_b, cap) (Seq-TIS);
    - ``mode="mask"``: w_b = ρ_b·𝟙[lo ≤ ρ_b ≤ hi] (Seq-MIS: the whole sequence is dropped).

    Sequence-level TIS and MIS as in "When Speed Kills Stability: Demystifying RL Collapse
    from the Training-Inference Mismatch" (Liu, Li et al. 2025) and verl's rollout
    correction, whose "geometric" level is the geometric mean (Geo-RS). Variant: the masked
    weight keeps ρ_b inside the band (an importance-weighted, not just filtered, sequence),
    the band is inclusive, and everything is computed in log space (min(ρ, cap) as
    exp(min(log ρ, log cap))), so a product of thousands of ratios does not overflow. The
    weights are held constant. A sequence with no real token gets weight 0. On-policy
    (ρ = 1, with cap ≥ 1 or lo ≤ 1 ≤ hi) every non-empty sequence weighs 1.

    Args:
      logp, logp_behaviour: ``[T, *B]`` token log-probabilities under π and π_b.
      mask: optional ``[T, *B]``; nonzero = real token, 0 = padding.
      aggregate: static, "product" or "geometric" (:data:`SEQUENCE_AGGREGATES`).
      mode: static, "truncate" (give ``cap`` > 0) or "mask" (give ``lo``, ``hi`` with
        0 ≤ lo < hi) (:data:`SEQUENCE_MODES`); the numbers are traceable.

    Returns:
      ``[*B]`` stop-gradient weights, one per sequence.

    >>> import jax.numpy as jnp; from jaxadv.corrections import sequence_is_weights
    >>> logp_b = jnp.zeros((2, 2))
    >>> logp = jnp.log(jnp.array([[2.0, 4.0], [2.0, 1.0]]))   # ratios (2, 2) and (4, 1)
    >>> sequence_is_weights(logp, logp_b, cap=3.0)             # products 4, 4; cap 3
    Array([3., 3.], dtype=float32)
    >>> sequence_is_weights(logp, logp_b, aggregate="geometric", mode="mask", lo=0.5,
    ...                     hi=1.5)                          # geometric means 2, 2: dropped
    Array([0., 0.], dtype=float32)
    """
    _check_sequence_args(aggregate, mode, cap, lo, hi)
    if jnp.ndim(logp) < 1:
        raise ValueError("`logp` must be [T, *B], with a time axis")
    log_ratio, mask = _log_ratios(logp, logp_behaviour, mask)
    dtype = log_ratio.dtype
    weights = jnp.ones(log_ratio.shape, dtype) if mask is None else mask.astype(dtype)
    tokens = jnp.sum(weights, axis=0)  # [*B]
    log_rho = jnp.sum(weights * log_ratio, axis=0)  # padding holds 0
    if aggregate == "geometric":
        log_rho = log_rho / jnp.maximum(tokens, 1.0)
    real = tokens > 0
    if mode == "truncate":
        keep = real
        log_rho = jnp.minimum(log_rho, jnp.log(jnp.asarray(cap, dtype)))
    else:
        keep = real & _in_band(log_rho, lo, hi)
    return _sg(_masked_exp(log_rho, keep))


# --------------------------------------------------------------------------- losses


def icepop_loss(logp: jax.Array, logp_old: jax.Array, logp_behaviour: jax.Array,
                advantages: jax.Array, mask: jax.Array | None = None, *,
                alpha: float | jax.Array, clip_low: float | jax.Array,
                clip_high: float | jax.Array, reduction: str = "token",
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """IcePop: PPO's clipped surrogate with the train/inference mismatch masked per token.

    "Every Step Evolves: Scaling Reinforcement Learning for Trillion-Scale Thinking Model"
    (Ling Team, Ring-1T, 2025, arXiv:2510.18855). With k_t = π_train(y_t; θ_old) /
    π_infer(y_t; θ_old) = exp(logp_old − logp_behaviour) the mismatch between the trainer's
    and the inference engine's probabilities of the same parameters, and
    r_t = exp(logp − logp_old) PPO's ratio,

        loss = −mean_t( M(k_t) · min(r_t A_t, clip(r_t, 1−ε_low, 1+ε_high) A_t) ),
        M(k) = k·𝟙[1/α ≤ k ≤ α],

    so a token whose engines disagree by more than a factor α is dropped from the gradient
    and the others are importance-corrected by k. M is held constant. Variant: the report
    writes the band as [α, β]; this function takes the symmetric band [1/α, α] (α > 1) and
    the ratio k at the old parameters, as the report does (implementations that make one
    update per batch use the current logp in place of logp_old: pass
    ``logp_old = stop_gradient(logp)``, then r = 1 and the gradient is M·A·∇log π). A dropped
    token still counts in the reduction's denominator (M sits inside the mean). With
    ``logp_old == logp_behaviour`` (no mismatch) it is :func:`jaxadv.losses.dapo_clip_loss`.

    Args:
      logp: ``[T, *B]`` log π_train(y_t; θ), the parameters being trained.
      logp_old: ``[T, *B]`` log π_train(y_t; θ_old), the trainer's log-probs at rollout time.
      logp_behaviour: ``[T, *B]`` log π_infer(y_t; θ_old), the sampler's log-probs.
      advantages: ``[T, *B]`` advantages A_t.
      mask: optional ``[T, *B]``; nonzero = real token, 0 = padding.
      alpha: scalar α > 1, the band [1/α, α] (traceable).
      clip_low, clip_high: scalars ε_low, ε_high ≥ 0 of PPO's clip (traceable).
      reduction: see :func:`jaxadv.losses.masked_mean`.

    Returns:
      ``(loss, metrics)``: ``masked_fraction`` (real tokens dropped by M), ``clip_fraction``
      (kept tokens with r outside [1−ε_low, 1+ε_high]) and ``approx_kl`` (k3 of r over kept
      tokens), token means.

    >>> import jax.numpy as jnp; from jaxadv.corrections import icepop_loss
    >>> logp_b = jnp.log(jnp.array([0.5, 0.5]))
    >>> old = jnp.log(jnp.array([0.6, 0.1]))    # mismatch 1.2 (kept) and 0.2 (dropped)
    >>> loss, m = icepop_loss(old, old, logp_b, jnp.ones(2), alpha=2.0, clip_low=0.2,
    ...                       clip_high=0.2)
    >>> round(float(loss), 4), float(m["masked_fraction"])   # −(1.2·1 + 0)/2
    (-0.6, 0.5)
    """
    _check_reduction(reduction)
    _check_above("alpha", alpha, 1.0)
    _check_above("clip_low", clip_low, 0.0, strict=False)
    _check_above("clip_high", clip_high, 0.0, strict=False)
    logp = _as_float(logp)
    same_shape(logp=logp, logp_old=logp_old, logp_behaviour=logp_behaviour,
               advantages=advantages)
    mismatch, real = _log_ratios(_sg(_as_float(logp_old)), logp_behaviour, mask)
    dtype = logp.dtype
    alpha = jnp.asarray(alpha, dtype)
    inside = _in_band(mismatch, 1.0 / alpha, alpha)
    keep = inside if real is None else inside & real
    m_weight = _sg(_masked_exp(mismatch, keep))
    # Dropped tokens are treated as padding inside the surrogate (ρ = 1, A = 0).
    log_ratio = (_fill_padding(logp, keep, 0.0)
                 - _fill_padding(_sg(_as_float(logp_old)), keep, 0.0))
    adv = _fill_padding(_sg(_as_float(advantages)), keep, 0.0)
    ratio = jnp.exp(log_ratio)
    low = 1.0 - jnp.asarray(clip_low, dtype)
    high = 1.0 + jnp.asarray(clip_high, dtype)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, low, high) * adv)
    loss = -masked_mean(m_weight * surrogate, real, reduction=reduction)
    ratio_sg, log_ratio_sg = _sg(ratio), _sg(log_ratio)
    metrics = {
        "masked_fraction": masked_mean(~inside, real),
        "clip_fraction": masked_mean((ratio_sg > high) | (ratio_sg < low), keep),
        "approx_kl": masked_mean((ratio_sg - 1.0) - log_ratio_sg, keep),
    }
    return loss, metrics


def sapo_loss(logp: jax.Array, logp_behaviour: jax.Array, advantages: jax.Array,
              mask: jax.Array | None = None, *, tau_pos: float | jax.Array,
              tau_neg: float | jax.Array, reduction: str = "sequence",
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SAPO: a smooth temperature-controlled gate in place of PPO's hard clip.

    "Soft Adaptive Policy Optimization" (Gao, Zheng et al. 2025, arXiv:2511.20347). With
    r_t = exp(logp − logp_behaviour) and τ_t = τ_pos if A_t > 0 else τ_neg,

        loss = −mean_t( f(r_t) A_t ),   f(r) = (4/τ)·σ(τ(r − 1)),

    whose gradient is −mean_t( w_t r_t A_t ∇log π ) with w_t = 4 σ(τ(r−1))(1 − σ(τ(r−1))):
    w = 1 at r = 1 (the policy gradient on-policy) and w decays smoothly as r leaves 1, a
    soft trust region that never drops a token outright. The paper takes τ_neg > τ_pos
    (τ_pos = 1, τ_neg = 1.05), damping tokens with negative advantages faster, and averages
    per sequence and then over sequences (``reduction="sequence"``, the default here). A zero
    advantage uses τ_neg (it contributes nothing either way). Log-ratios above
    log(max float) − 1 are capped before ``exp`` so r stays finite; the gate is flat there,
    so neither value nor gradient changes for any τ that is not minute.

    Args:
      logp, logp_behaviour: ``[T, *B]`` token log-probabilities under π and π_old (or π_b).
      advantages: ``[T, *B]`` advantages A_t.
      mask: optional ``[T, *B]``; nonzero = real token, 0 = padding.
      tau_pos, tau_neg: scalar temperatures > 0 (traceable).
      reduction: see :func:`jaxadv.losses.masked_mean` (default "sequence", as the paper).

    Returns:
      ``(loss, metrics)``: ``gate_weight`` (the mean of w_t, 1 on-policy) and ``approx_kl``
      (k3 of r), token means.

    >>> import jax, jax.numpy as jnp; from jaxadv.corrections import sapo_loss
    >>> logp_b = jnp.log(jnp.array([0.5, 0.5]))
    >>> g = jax.grad(lambda lp: sapo_loss(lp, logp_b, jnp.array([1.0, -1.0]), tau_pos=1.0,
    ...                                    tau_neg=1.05)[0])(logp_b)
    >>> [round(float(x), 4) for x in g]   # on-policy: −A_t / T, the policy gradient
    [-0.5, 0.5]
    """
    _check_reduction(reduction)
    _check_above("tau_pos", tau_pos, 0.0)
    _check_above("tau_neg", tau_neg, 0.0)
    log_ratio, mask = _log_ratios(logp, logp_behaviour, mask)
    same_shape(logp=log_ratio, advantages=advantages)
    dtype = log_ratio.dtype
    adv = _fill_padding(_sg(_as_float(advantages)), mask, 0.0)
    ratio = jnp.exp(jnp.minimum(log_ratio, _max_log(dtype)))
    tau = jnp.where(adv > 0, jnp.asarray(tau_pos, dtype), jnp.asarray(tau_neg, dtype))
    gate = jax.nn.sigmoid(tau * (ratio - 1.0))
    loss = -masked_mean((4.0 / tau) * gate * adv, mask, reduction=reduction)
    gate_sg, ratio_sg = _sg(gate), _sg(ratio)
    metrics = {"gate_weight": masked_mean(4.0 * gate_sg * (1.0 - gate_sg), mask),
               "approx_kl": masked_mean((ratio_sg - 1.0) - _sg(log_ratio), mask)}
    return loss, metrics


def gmpo_loss(logp: jax.Array, logp_behaviour: jax.Array, advantages: jax.Array,
              mask: jax.Array | None = None, *, clip_low: float | jax.Array,
              clip_high: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GMPO: the geometric mean of token ratios, each clipped in log space.

    "Geometric-Mean Policy Optimization" (Zhao et al. 2025, arXiv:2507.20673). GRPO
    maximises the arithmetic mean of the tokens' clipped ρ_t A; GMPO maximises their geometric
    mean, which an outlier ratio moves less:

        loss = −(1/|S|) Σ_b A_b · exp( (1/n_b) Σ_t ℓ̃_tb ),
        ℓ̃_tb = min(ℓ_tb, ε_high) if A_b ≥ 0,  max(ℓ_tb, −ε_low) if A_b < 0,

    with ℓ_tb = logp − logp_behaviour and S the sequences with at least one real token. This
    is the paper's (Π_t |min(ρ_t A, clip(ρ_t, e^−ε_low, e^ε_high) A)|)^(1/n) · sgn(A): PPO's
    pessimistic clip per token, taken in log space (the paper uses ε_low = ε_high = 0.4), as
    in the authors' code (callsys/GMPO). A clipped token passes no gradient; the others get
    −A_b · s_b / (|S| n_b) · ∇log π with s_b the sequence's geometric mean. On-policy the
    gradient is the sequence-averaged policy gradient and the loss is −mean_b A_b.

    Args:
      logp, logp_behaviour: ``[T, *B]`` token log-probabilities under π and π_old (or π_b).
      advantages: ``[*B]``, one per sequence (e.g. GRPO's group-normalised reward).
      mask: optional ``[T, *B]``; nonzero = real token, 0 = padding.
      clip_low, clip_high: scalars ε_low, ε_high ≥ 0, bounds of the log-ratio (traceable).

    Returns:
      ``(loss, metrics)``: ``clip_fraction`` (real tokens whose log-ratio is clipped) and
      ``approx_kl`` (k3 of r), token means.

    >>> import jax.numpy as jnp; from jaxadv.corrections import gmpo_loss
    >>> logp_b = jnp.zeros((2, 1))
    >>> logp = jnp.array([[1.0], [-0.2]])      # log-ratios 1 (clipped to 0.4) and −0.2
    >>> round(float(gmpo_loss(logp, logp_b, jnp.ones(1), clip_low=0.4, clip_high=0.4)[0]), 4)
    -1.1052
    """
    _check_above("clip_low", clip_low, 0.0, strict=False)
    _check_above("clip_high", clip_high, 0.0, strict=False)
    if jnp.ndim(logp) < 1:
        raise ValueError("`logp` must be [T, *B], with a time axis")
    if jnp.shape(advantages) != jnp.shape(logp)[1:]:
        raise ValueError(f"`advantages` must have shape {jnp.shape(logp)[1:]} (one per "
                         f"sequence), got {jnp.shape(advantages)}")
    log_ratio, mask = _log_ratios(logp, logp_behaviour, mask)
    dtype = log_ratio.dtype
    adv = _sg(_as_float(advantages))
    positive = (adv >= 0)[None]  # [1, *B]
    high, low = jnp.asarray(clip_high, dtype), -jnp.asarray(clip_low, dtype)
    clipped = jnp.where(positive, jnp.minimum(log_ratio, high), jnp.maximum(log_ratio, low))
    weights = jnp.ones(log_ratio.shape, dtype) if mask is None else mask.astype(dtype)
    tokens = jnp.sum(weights, axis=0)  # [*B]
    s = jnp.exp(jnp.sum(weights * clipped, axis=0) / jnp.maximum(tokens, 1.0))
    real = tokens > 0
    loss = -masked_mean(jnp.where(real, adv, 0.0) * s, real)
    log_ratio_sg = _sg(log_ratio)
    was_clipped = jnp.where(positive, log_ratio_sg > high, log_ratio_sg < low)
    metrics = {"clip_fraction": masked_mean(was_clipped, mask),
               "approx_kl": masked_mean(jnp.expm1(log_ratio_sg) - log_ratio_sg, mask)}
    return loss, metrics
