"""The algorithm table: each algorithm is a row of settings of the one trainer.

==========  ==================  ===========================  ====================  ===========
algo        default estimator   policy loss                  epochs × minibatches  value loss
==========  ==================  ===========================  ====================  ===========
reinforce   ``mc``              ``−log π · A``               1 × 1                 unclipped
a2c         ``gae``             ``−log π · A``               1 × 1                 unclipped
ppo         ``gae``             clipped ratio                4 × 4                 clipped
dapo        ``gae``             ratio clipped to             4 × 4                 clipped
                                [1−ε, 1+ε_high] (clip-higher)
gspo        ``grpo``            a response's geometric-mean  4 × 4                 clipped
                                ratio, clipped per response
cispo       ``gae``             clipped, stop-gradient ρ     4 × 4                 clipped
                                times ``log π · A``
sapo        ``gae``             a sigmoid gate of the ratio  4 × 4                 clipped
                                in place of the clip
gmpo        ``grpo``            the geometric mean of the    4 × 4                 clipped
                                token ratios, clipped in
                                log space, per response
icepop      ``gae``             clip-higher, the sampler     4 × 4                 clipped
                                mismatch masked per token
==========  ==================  ===========================  ====================  ===========

PPO also standardises advantages per minibatch by default (not with the sequence-level
estimators, which set their own scale); A2C and REINFORCE do not. ``dapo``, ``gspo`` and
``cispo`` take ε = ``clip_eps`` as the lower range and ``clip_eps_high`` as the upper
(:mod:`jaxadv.losses`); ``gspo`` and ``gmpo`` need whole responses (``episodic``). ``sapo``,
``gmpo`` and ``icepop`` are the losses of :mod:`jaxadv.corrections` (``gmpo`` takes
ε_low = ``clip_eps`` and ε_high = ``clip_eps_high`` as bounds of the log-ratio; ``icepop`` also
takes the sampler's log-probabilities, ``behaviour_log_prob``). Adding an algorithm
is a policy loss (:data:`PolicyLoss`) and one row of :data:`ALGORITHMS`; the trainer's
``--algo`` choices, its defaults and its messages are read from the table.

Off-policy corrections. Where the rollouts come from a behaviour policy π_b other than the
policy trained (an inference engine's sampler: another temperature, lower-precision logits),
each token's advantage is multiplied by an importance weight of the ratio of the trained
policy's log-probabilities at rollout time to the sampler's, held constant. The weights are
rows of :data:`CORRECTIONS`, each at one *level*: a token's ratio r_t = π/π_b or a response's
ρ = Π_t r_t (or their geometric mean); :func:`correction_weights` multiplies the weights of
the corrections a configuration names (at most one per level).

==========  ========  ===============================================  ==================
correction  level     weight                                           setting
==========  ========  ===============================================  ==================
tis         token     min(r_t, C) (truncated IS)                       ``tis_cap``
token_mis   token     r_t·𝟙[lo ≤ r_t ≤ hi] (masked IS)                 ``mis_range``
seq_tis     sequence  min(ρ, C) on every token of the response         ``seq_cap``
seq_mis     sequence  ρ·𝟙[lo ≤ ρ ≤ hi]: the response kept or dropped   ``seq_range``
==========  ========  ===============================================  ==================

``seq_aggregate`` = ``"geometric"`` takes ρ as the geometric mean of the response's token
ratios (:func:`jaxadv.corrections.sequence_is_weights`). IcePop's row masks the token ratio
itself, so it takes no token-level correction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv import corrections, losses

__all__ = ["ALGORITHMS", "CORRECTIONS", "Algorithm", "Correction", "PolicyLoss",
           "cispo_policy_loss", "clip_higher_loss", "clipped_ratio_loss", "correction_weights",
           "gmpo_policy_loss", "gspo_policy_loss", "icepop_policy_loss", "pg_policy_loss",
           "sapo_policy_loss"]

_DEPRECATED = {"policy_gradient_loss": "pg_policy_loss", "gspo_loss": "gspo_policy_loss",
               "cispo_loss": "cispo_policy_loss", "sapo_loss": "sapo_policy_loss",
               "gmpo_loss": "gmpo_policy_loss", "icepop_loss": "icepop_policy_loss"}


def __getattr__(name: str) -> Any:
    """The policy losses' names of 0.3.0, which :mod:`jaxadv.losses` and
    :mod:`jaxadv.corrections` use for their own functions (:data:`_DEPRECATED`), with a
    ``DeprecationWarning``."""
    if name in _DEPRECATED:
        import warnings

        warnings.warn(f"jaxadv.engine.algorithms.{name} is deprecated: use {_DEPRECATED[name]}",
                      DeprecationWarning, stacklevel=2)
        return globals()[_DEPRECATED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

PolicyLoss = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
"""``loss(log_prob, old_log_prob, advantages, mask, *, clip_eps, reduction, **extra) -> (loss,
info)``: ``[T, B]`` (or flat ``[batch]``) arrays, ``mask`` optional, ``extra`` the
:class:`~jaxadv.engine.train.HParams` fields the row's ``loss_hparams`` names; ``info`` holds the
scalars ``clip_fraction`` and ``approx_kl`` (PPO's k3 estimate of KL(π_old ‖ π))."""


def clipped_ratio_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                       mask: jax.Array | None = None, *, clip_eps: Any,
                       reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped surrogate (:func:`jaxadv.losses.ppo_clip_loss`)."""
    return losses.ppo_clip_loss(log_prob, old_log_prob, advantages, mask, clip_eps=clip_eps,
                                reduction=reduction)


def pg_policy_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                   mask: jax.Array | None = None, *, clip_eps: Any = None,
                   reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """``−log π · A`` (:func:`jaxadv.losses.policy_gradient_loss`); ``clip_eps`` is unused.
    ``approx_kl`` is reported as PPO reports it, on the rollout's actions."""
    loss = losses.policy_gradient_loss(log_prob, advantages, mask, reduction=reduction)
    approx_kl = losses.kl_penalty(jax.lax.stop_gradient(old_log_prob),
                                  jax.lax.stop_gradient(log_prob), mask)
    return loss, {"clip_fraction": jnp.zeros(()), "approx_kl": approx_kl}


def clip_higher_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                     mask: jax.Array | None = None, *, clip_eps: Any,
                     clip_eps_high: Any, reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """DAPO's decoupled clip (:func:`jaxadv.losses.dapo_clip_loss`), ε_low = ``clip_eps``."""
    return losses.dapo_clip_loss(log_prob, old_log_prob, advantages, mask, clip_low=clip_eps,
                                 clip_high=clip_eps_high, reduction=reduction)


def _per_response(advantages, mask):
    """``[B]``: each response's mean advantage over its real tokens."""
    weights = jnp.ones_like(advantages) if mask is None else mask.astype(advantages.dtype)
    return jnp.sum(weights * advantages, axis=0) / jnp.maximum(jnp.sum(weights, axis=0), 1.0)


def gspo_policy_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                     mask: jax.Array | None = None, *, clip_eps: Any,
                     clip_eps_high: Any, reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """GSPO (:func:`jaxadv.losses.gspo_loss`) on ``[T, B]`` responses: each response's
    advantage is the mean of its tokens' (a sequence-level estimator puts the same value on
    every token); ``reduction`` is GSPO's own, a mean over responses."""
    per_response = _per_response(advantages, mask)
    return losses.gspo_loss(log_prob, old_log_prob, per_response, mask, clip_low=clip_eps,
                            clip_high=clip_eps_high)


def cispo_policy_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                      mask: jax.Array | None = None, *, clip_eps: Any,
                      clip_eps_high: Any, reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """CISPO (:func:`jaxadv.losses.cispo_loss`), ε_low = ``clip_eps`` (1: no lower bound)."""
    return losses.cispo_loss(log_prob, old_log_prob, advantages, mask, clip_low=clip_eps,
                             clip_high=clip_eps_high, reduction=reduction)


def sapo_policy_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                     mask: jax.Array | None = None, *, clip_eps: Any = None,
                     sapo_tau_pos: Any, sapo_tau_neg: Any,
                     reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """SAPO (:func:`jaxadv.corrections.sapo_loss`): a sigmoid gate of temperatures
    ``sapo_tau_pos`` / ``sapo_tau_neg`` in place of the clip; ``clip_eps`` is unused. SAPO
    never drops a token: ``clip_fraction`` is 0 (the gate's mean weight is not reported)."""
    loss, info = corrections.sapo_loss(log_prob, old_log_prob, advantages, mask,
                                       tau_pos=sapo_tau_pos, tau_neg=sapo_tau_neg,
                                       reduction=reduction)
    return loss, {"clip_fraction": jnp.zeros(()), "approx_kl": info["approx_kl"]}


def gmpo_policy_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                     mask: jax.Array | None = None, *, clip_eps: Any,
                     clip_eps_high: Any, reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """GMPO (:func:`jaxadv.corrections.gmpo_loss`) on ``[T, B]`` responses, the log-ratio
    clipped to [−``clip_eps``, ``clip_eps_high``]: each response's advantage is the mean of its
    tokens' (as :func:`gspo_policy_loss`); ``reduction`` is GMPO's own, a mean over responses."""
    return corrections.gmpo_loss(log_prob, old_log_prob, _per_response(advantages, mask), mask,
                                 clip_low=clip_eps, clip_high=clip_eps_high)


def icepop_policy_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                       mask: jax.Array | None = None, *, clip_eps: Any,
                       clip_eps_high: Any, icepop_alpha: Any, behaviour_log_prob: jax.Array | None = None,
                       reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """IcePop (:func:`jaxadv.corrections.icepop_loss`): DAPO's clip-higher (ε_low =
    ``clip_eps``) with each token weighted by the mismatch k = π_old/π_b inside
    [1/``icepop_alpha``, ``icepop_alpha``] and dropped outside it. ``old_log_prob`` is the
    trained policy's at rollout time, ``behaviour_log_prob`` the sampler's (``None``: the
    same, no mismatch)."""
    behaviour = old_log_prob if behaviour_log_prob is None else behaviour_log_prob
    return corrections.icepop_loss(log_prob, old_log_prob, behaviour, advantages, mask,
                                   alpha=icepop_alpha, clip_low=clip_eps, clip_high=clip_eps_high,
                                   reduction=reduction)


class Algorithm(NamedTuple):
    """A row of :data:`ALGORITHMS`: the defaults and the loss one algorithm means.

    Attributes:
      estimator: the default advantage estimator (a key of
        :data:`jaxadv.engine.estimators.ESTIMATORS`).
      update_epochs, num_minibatches: default passes over each rollout and minibatches per pass.
      policy_loss: a :data:`PolicyLoss`.
      clip_value: the value loss is clipped around the rollout's values (with
        ``clip_value_loss``).
      normalize_advantages: the default for per-minibatch advantage standardisation (the
        sequence-level estimators never take it by default).
      summary: one line for ``--help``.
      loss_hparams: the :class:`~jaxadv.engine.train.HParams` fields the policy loss also takes, by
        keyword (e.g. ``clip_eps_high``).
      episodic_only: the loss weighs whole responses: ``[T, B]`` minibatches of episodes.
      behaviour_loss: the loss also takes the sampler's log-probabilities
        (``behaviour_log_prob=``) and corrects the train/inference mismatch of each token
        itself, so it takes no token-level correction (:data:`CORRECTIONS`).
      response_mean: the loss is a mean over responses of each response's own mean over its
        tokens (not a mean over tokens), as the exact objectives
        (:mod:`jaxadv.science.objective_exact`) normalise it.
    """

    estimator: str
    update_epochs: int
    num_minibatches: int
    policy_loss: PolicyLoss
    clip_value: bool
    normalize_advantages: bool
    summary: str
    loss_hparams: tuple[str, ...] = ()
    episodic_only: bool = False
    behaviour_loss: bool = False
    response_mean: bool = False


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("gae", 4, 4, clipped_ratio_loss, True, True,
                     "clipped ratio, epochs x minibatches"),
    "a2c": Algorithm("gae", 1, 1, pg_policy_loss, False, False, "one policy-gradient step"),
    "reinforce": Algorithm("mc", 1, 1, pg_policy_loss, False, False,
                           "Monte Carlo returns, one policy-gradient step"),
    "dapo": Algorithm("gae", 4, 4, clip_higher_loss, True, True,
                      "DAPO: ratio clipped to [1-clip_eps, 1+clip_eps_high]",
                      loss_hparams=("clip_eps_high",)),
    "gspo": Algorithm("grpo", 4, 4, gspo_policy_loss, True, False,
                      "GSPO: per-response geometric-mean ratio, clipped (episodic)",
                      loss_hparams=("clip_eps_high",), episodic_only=True,
                      response_mean=True),
    "cispo": Algorithm("gae", 4, 4, cispo_policy_loss, True, True,
                       "CISPO: clipped stop-gradient ratio times log-prob times A",
                       loss_hparams=("clip_eps_high",)),
    "sapo": Algorithm("gae", 4, 4, sapo_policy_loss, True, True,
                      "SAPO: a sigmoid gate of the ratio (sapo_tau_pos/neg) in place of the clip",
                      loss_hparams=("sapo_tau_pos", "sapo_tau_neg")),
    "gmpo": Algorithm("grpo", 4, 4, gmpo_policy_loss, True, False,
                      "GMPO: geometric mean of the token ratios, clipped in log space (episodic)",
                      loss_hparams=("clip_eps_high",), episodic_only=True,
                      response_mean=True),
    "icepop": Algorithm("gae", 4, 4, icepop_policy_loss, True, True,
                        "IcePop: clip-higher, tokens whose sampler mismatch leaves "
                        "[1/icepop_alpha, icepop_alpha] dropped",
                        loss_hparams=("clip_eps_high", "icepop_alpha"), behaviour_loss=True),
}
"""Every algorithm by name (see the module's table)."""


class Correction(NamedTuple):
    """A row of :data:`CORRECTIONS`: an importance weight of the sampler mismatch.

    Attributes:
      level: ``"token"`` (a weight per token, of r_t) or ``"sequence"`` (one per response,
        of ρ, on each of its tokens; needs whole responses).
      summary: one line for ``--help``.
      weights: ``(log_prob, behaviour_log_prob, mask, settings) -> [T, *B]`` held-constant
        weights; ``settings`` maps the names of :func:`correction_weights`'s keywords to values.
    """

    level: str
    summary: str
    weights: Callable[..., jax.Array]


def _tis(log_prob, behaviour_log_prob, mask, settings):
    # The trainer's historical TIS (train.truncated_importance_weights), op for op.
    return jax.lax.stop_gradient(jnp.minimum(jnp.exp(log_prob - behaviour_log_prob),
                                             settings["tis_cap"]))


def _token_mis(log_prob, behaviour_log_prob, mask, settings):
    lo, hi = settings["mis_range"]
    return corrections.token_mis_weights(log_prob, behaviour_log_prob, mask, lo=lo, hi=hi)


def _sequence(mode):
    def weights(log_prob, behaviour_log_prob, mask, settings):
        if mode == "truncate":
            kw = {"cap": settings["seq_cap"]}
        else:
            kw = dict(zip(("lo", "hi"), settings["seq_range"], strict=True))
        w = corrections.sequence_is_weights(log_prob, behaviour_log_prob, mask,
                                            aggregate=settings["seq_aggregate"], mode=mode, **kw)
        return jnp.broadcast_to(w[None], log_prob.shape)
    return weights


CORRECTIONS: dict[str, Correction] = {
    "tis": Correction("token", "truncated IS: min(r, tis_cap) per token", _tis),
    "token_mis": Correction("token", "masked IS: r per token inside mis_range, else 0",
                            _token_mis),
    "seq_tis": Correction("sequence", "min(rho, seq_cap) per response (episodic)",
                          _sequence("truncate")),
    "seq_mis": Correction("sequence", "rho per response inside seq_range, else 0 (episodic)",
                          _sequence("mask")),
}
"""Every off-policy correction by name (see the module's second table)."""


def correction_weights(names: tuple[str, ...], log_prob: jax.Array,
                       behaviour_log_prob: jax.Array, mask: jax.Array | None = None, *,
                       tis_cap: Any = 2.0, mis_range: tuple[Any, Any] = (0.5, 2.0),
                       seq_cap: Any = 2.0, seq_range: tuple[Any, Any] = (0.5, 2.0),
                       seq_aggregate: str = "product") -> jax.Array | None:
    """The product of the weights of the :data:`CORRECTIONS` ``names``, ``[T, *B]`` held
    constant (``None`` for no name), of the trained policy's ``log_prob`` at rollout time and
    the sampler's ``behaviour_log_prob`` (``[T, *B]``, ``mask`` marking real tokens; the
    sequence-level ones need it, or take every token as real). One name gives its weights
    unchanged (``"tis"``: ``min(exp(log_prob − behaviour_log_prob), tis_cap)``, the trainer's
    truncated importance sampling).

    >>> import jax.numpy as jnp
    >>> lp, b = jnp.log(jnp.array([[0.5], [0.9]])), jnp.log(jnp.array([[0.25], [0.9]]))
    >>> correction_weights(("seq_tis",), lp, b, seq_cap=1.5)[:, 0].tolist()   # ρ = 2
    [1.5, 1.5]
    """
    settings = {"tis_cap": tis_cap, "mis_range": mis_range, "seq_cap": seq_cap,
                "seq_range": seq_range, "seq_aggregate": seq_aggregate}
    total = None
    for name in names:
        w = CORRECTIONS[name].weights(log_prob, behaviour_log_prob, mask, settings)
        total = w if total is None else total * w
    return total
