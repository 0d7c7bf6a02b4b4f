"""Environments: gymnax envs wrapped for training, and running normalisation statistics.

* :func:`make` builds a registered gymnax environment with float32 (flattened)
  observations and per-env episode statistics in ``info``; :func:`env_spec`
  describes it as an :class:`EnvSpec` of Python values.
* :mod:`jaxadv.envs.normalize`: batch-level running statistics shared by all
  environments — observation normalisation and "NormalizeReward" reward scaling.
* :mod:`jaxadv.envs.tabular`: any :class:`~jaxadv.science.exact.TabularMDP` as a gymnax
  environment, registered as ``"Tabular-v0"`` (its gridworld as ``"Gridworld-v0"``).
* :mod:`jaxadv.envs.token`: :class:`TokenEnv`, the protocol of token environments
  (``vocab_size``, ``tokens.pad``; optionally ``response_length``, ``demonstration``,
  ``decode``, ``metric_keys``) that a transformer policy acts in, e.g. ``"Sequence-v0"``
  (:mod:`jaxadv.envs.sequence`); :func:`token_env` and :func:`check_token_env` find one.
"""

from jaxadv.envs import _gymnax  # noqa: F401  (first: imports gymnax, seaborn deferred)
from jaxadv.envs.normalize import (
    RewardScaler,
    RunningMeanStd,
    normalize_obs,
    reward_scaler_init,
    reward_scaler_update,
    running_mean_std_init,
    running_mean_std_update,
)
from jaxadv.envs.registry import EnvSpec, env_spec, make, register, registered_names
from jaxadv.envs.sequence import make_sequence
from jaxadv.envs.tabular import TabularEnv, make_gridworld, make_tabular
from jaxadv.envs.token import TokenEnv, check_token_env, metric_keys, token_env
from jaxadv.envs.wrappers import (
    EpisodeStatisticsState,
    EpisodeStatisticsWrapper,
    FloatObservationWrapper,
)

__all__ = [
    "EnvSpec",
    "EpisodeStatisticsState",
    "EpisodeStatisticsWrapper",
    "FloatObservationWrapper",
    "RewardScaler",
    "RunningMeanStd",
    "TabularEnv",
    "TokenEnv",
    "check_token_env",
    "env_spec",
    "make",
    "make_gridworld",
    "make_tabular",
    "metric_keys",
    "normalize_obs",
    "register",
    "registered_names",
    "reward_scaler_init",
    "reward_scaler_update",
    "running_mean_std_init",
    "running_mean_std_update",
    "token_env",
]

register("Tabular-v0", make_tabular)
register("Gridworld-v0", make_gridworld)
register("Sequence-v0", make_sequence)
