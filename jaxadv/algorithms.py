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
==========  ==================  ===========================  ====================  ===========

PPO also standardises advantages per minibatch by default (not with the sequence-level
estimators, which set their own scale); A2C and REINFORCE do not. ``dapo``, ``gspo`` and
``cispo`` take ε = ``clip_eps`` as the lower range and ``clip_eps_high`` as the upper
(:mod:`jaxadv.losses`); ``gspo`` needs whole responses (``episodic``). Adding an algorithm
is a policy loss (:data:`PolicyLoss`) and one row of :data:`ALGORITHMS`; the trainer's
``--algo`` choices, its defaults and its messages are read from the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv import losses

__all__ = ["ALGORITHMS", "Algorithm", "PolicyLoss", "cispo_loss", "clip_higher_loss",
           "clipped_ratio_loss", "gspo_loss", "policy_gradient_loss"]

PolicyLoss = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
"""``loss(log_prob, old_log_prob, advantages, mask, *, clip_eps, reduction, **extra) -> (loss,
info)``: ``[T, B]`` (or flat ``[batch]``) arrays, ``mask`` optional, ``extra`` the
:class:`~jaxadv.train.HParams` fields the row's ``loss_hparams`` names; ``info`` holds the
scalars ``clip_fraction`` and ``approx_kl`` (PPO's k3 estimate of KL(π_old ‖ π))."""


def clipped_ratio_loss(log_prob, old_log_prob, advantages, mask=None, *, clip_eps: Any,
                       reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped surrogate (:func:`jaxadv.losses.ppo_clip_loss`)."""
    return losses.ppo_clip_loss(log_prob, old_log_prob, advantages, mask, clip_eps=clip_eps,
                                reduction=reduction)


def policy_gradient_loss(log_prob, old_log_prob, advantages, mask=None, *, clip_eps: Any = None,
                         reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """``−log π · A`` (:func:`jaxadv.losses.policy_gradient_loss`); ``clip_eps`` is unused.
    ``approx_kl`` is reported as PPO reports it, on the rollout's actions."""
    loss = losses.policy_gradient_loss(log_prob, advantages, mask, reduction=reduction)
    approx_kl = losses.kl_penalty(jax.lax.stop_gradient(old_log_prob),
                                  jax.lax.stop_gradient(log_prob), mask)
    return loss, {"clip_fraction": jnp.zeros(()), "approx_kl": approx_kl}


def clip_higher_loss(log_prob, old_log_prob, advantages, mask=None, *, clip_eps: Any,
                     clip_eps_high: Any, reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """DAPO's decoupled clip (:func:`jaxadv.losses.dapo_clip_loss`), ε_low = ``clip_eps``."""
    return losses.dapo_clip_loss(log_prob, old_log_prob, advantages, mask, clip_low=clip_eps,
                                 clip_high=clip_eps_high, reduction=reduction)


def gspo_loss(log_prob, old_log_prob, advantages, mask=None, *, clip_eps: Any,
              clip_eps_high: Any, reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """GSPO (:func:`jaxadv.losses.gspo_loss`) on ``[T, B]`` responses: each response's
    advantage is the mean of its tokens' (a sequence-level estimator puts the same value on
    every token); ``reduction`` is GSPO's own, a mean over responses."""
    weights = jnp.ones_like(advantages) if mask is None else mask.astype(advantages.dtype)
    per_response = jnp.sum(weights * advantages, axis=0) / jnp.maximum(jnp.sum(weights, axis=0), 1.0)
    return losses.gspo_loss(log_prob, old_log_prob, per_response, mask, clip_low=clip_eps,
                            clip_high=clip_eps_high)


def cispo_loss(log_prob, old_log_prob, advantages, mask=None, *, clip_eps: Any,
               clip_eps_high: Any, reduction: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """CISPO (:func:`jaxadv.losses.cispo_loss`), ε_low = ``clip_eps`` (1: no lower bound)."""
    return losses.cispo_loss(log_prob, old_log_prob, advantages, mask, clip_low=clip_eps,
                             clip_high=clip_eps_high, reduction=reduction)


class Algorithm(NamedTuple):
    """A row of :data:`ALGORITHMS`: the defaults and the loss one algorithm means.

    Attributes:
      estimator: the default advantage estimator (a key of
        :data:`jaxadv.estimators.ESTIMATORS`).
      update_epochs, num_minibatches: default passes over each rollout and minibatches per pass.
      policy_loss: a :data:`PolicyLoss`.
      clip_value: the value loss is clipped around the rollout's values (with
        ``clip_value_loss``).
      normalize_advantages: the default for per-minibatch advantage standardisation (the
        sequence-level estimators never take it by default).
      summary: one line for ``--help``.
      loss_hparams: the :class:`~jaxadv.train.HParams` fields the policy loss also takes, by
        keyword (e.g. ``clip_eps_high``).
      episodic_only: the loss weighs whole responses: ``[T, B]`` minibatches of episodes.
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


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("gae", 4, 4, clipped_ratio_loss, True, True,
                     "clipped ratio, epochs x minibatches"),
    "a2c": Algorithm("gae", 1, 1, policy_gradient_loss, False, False, "one policy-gradient step"),
    "reinforce": Algorithm("mc", 1, 1, policy_gradient_loss, False, False,
                           "Monte Carlo returns, one policy-gradient step"),
    "dapo": Algorithm("gae", 4, 4, clip_higher_loss, True, True,
                      "DAPO: ratio clipped to [1-clip_eps, 1+clip_eps_high]",
                      loss_hparams=("clip_eps_high",)),
    "gspo": Algorithm("grpo", 4, 4, gspo_loss, True, False,
                      "GSPO: per-response geometric-mean ratio, clipped (episodic)",
                      loss_hparams=("clip_eps_high",), episodic_only=True),
    "cispo": Algorithm("gae", 4, 4, cispo_loss, True, True,
                       "CISPO: clipped stop-gradient ratio times log-prob times A",
                       loss_hparams=("clip_eps_high",)),
}
"""Every algorithm by name (see the module's table)."""
