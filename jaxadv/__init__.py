"""jaxadv: advantage-function policy-gradient training as pure JAX functions.

Estimators (:mod:`jaxadv.advantages`), losses (:mod:`jaxadv.losses`) and
distributions (:mod:`jaxadv.distributions`) are re-exported here by name,
each module imported on first use of one of its names (so that ``import jaxadv.tracking``,
which the W&B logger's process does, never imports jax); environments live in
:mod:`jaxadv.envs`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_MODULES = {  # each re-exported name's module
    **dict.fromkeys((
        "discounted_returns", "gae", "group_relative", "lambda_returns", "leave_one_out",
        "n_step_advantages", "normalize", "td_errors",
    ), "jaxadv.advantages"),
    **dict.fromkeys((
        "categorical_entropy", "categorical_kl", "categorical_log_prob", "categorical_sample",
        "gaussian_entropy", "gaussian_kl", "gaussian_log_prob", "gaussian_sample",
    ), "jaxadv.distributions"),
    **dict.fromkeys((
        "entropy_bonus", "kl_penalty", "masked_mean", "policy_gradient_loss", "ppo_clip_loss",
        "value_loss",
    ), "jaxadv.losses"),
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    """``jaxadv.<name>`` of a re-exported name: imports its module (once)."""
    if name not in _MODULES:
        raise AttributeError(f"module 'jaxadv' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_MODULES[name]), name)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})
