"""jaxadv: advantage-function policy-gradient training as pure JAX functions.

Estimators (:mod:`jaxadv.advantages`), losses (:mod:`jaxadv.losses`) and
distributions (:mod:`jaxadv.distributions`) are re-exported here by name;
environments live in :mod:`jaxadv.envs`.
"""

from jaxadv.advantages import (
    discounted_returns,
    gae,
    group_relative,
    lambda_returns,
    leave_one_out,
    n_step_advantages,
    normalize,
    td_errors,
)
from jaxadv.distributions import (
    categorical_entropy,
    categorical_kl,
    categorical_log_prob,
    categorical_sample,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    gaussian_sample,
)
from jaxadv.losses import (
    entropy_bonus,
    kl_penalty,
    masked_mean,
    policy_gradient_loss,
    ppo_clip_loss,
    value_loss,
)

__version__ = "0.1.0"

__all__ = [
    "categorical_entropy",
    "categorical_kl",
    "categorical_log_prob",
    "categorical_sample",
    "discounted_returns",
    "entropy_bonus",
    "gae",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "gaussian_sample",
    "group_relative",
    "kl_penalty",
    "lambda_returns",
    "leave_one_out",
    "masked_mean",
    "n_step_advantages",
    "normalize",
    "policy_gradient_loss",
    "ppo_clip_loss",
    "td_errors",
    "value_loss",
]
