"""The algorithm table: each algorithm is a row of settings of the one trainer.

==========  ==================  =====================  =====================  ===========
algo        default estimator   policy loss            epochs × minibatches   value loss
==========  ==================  =====================  =====================  ===========
reinforce   ``mc``              ``−log π · A``         1 × 1                  unclipped
a2c         ``gae``             ``−log π · A``         1 × 1                  unclipped
ppo         ``gae``             clipped ratio          4 × 4                  clipped
==========  ==================  =====================  =====================  ===========

PPO also standardises advantages per minibatch by default (not with the sequence-level
estimators, which set their own scale); A2C and REINFORCE do not. Adding an algorithm is a
policy loss (:data:`PolicyLoss`) and one row of :data:`ALGORITHMS`; the trainer's
``--algo`` choices, its defaults and its messages are read from the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv import losses

__all__ = ["ALGORITHMS", "Algorithm", "PolicyLoss", "clipped_ratio_loss", "policy_gradient_loss"]

PolicyLoss = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
"""``loss(log_prob, old_log_prob, advantages, mask, *, clip_eps, reduction) -> (loss, info)``:
``[T, B]`` (or flat ``[batch]``) arrays, ``mask`` optional; ``info`` holds the scalars
``clip_fraction`` and ``approx_kl`` (PPO's k3 estimate of KL(π_old ‖ π))."""


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
    """

    estimator: str
    update_epochs: int
    num_minibatches: int
    policy_loss: PolicyLoss
    clip_value: bool
    normalize_advantages: bool
    summary: str


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("gae", 4, 4, clipped_ratio_loss, True, True,
                     "clipped ratio, epochs x minibatches"),
    "a2c": Algorithm("gae", 1, 1, policy_gradient_loss, False, False, "one policy-gradient step"),
    "reinforce": Algorithm("mc", 1, 1, policy_gradient_loss, False, False,
                           "Monte Carlo returns, one policy-gradient step"),
}
"""Every algorithm by name (see the module's table)."""
