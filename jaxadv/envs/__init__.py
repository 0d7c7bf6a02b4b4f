"""Environments: gymnax envs wrapped for training, and running normalisation statistics.

* :func:`make` builds a registered gymnax environment with float32 (flattened)
  observations and per-env episode statistics in ``info``; :func:`env_spec`
  describes it as an :class:`EnvSpec` of Python values.
* :mod:`jaxadv.envs.normalize`: batch-level running statistics shared by all
  environments — observation normalisation and "NormalizeReward" reward scaling.
* :mod:`jaxadv.envs.tabular`: any :class:`~jaxadv.exact.TabularMDP` as a gymnax
  environment, registered as ``"Tabular-v0"``.
"""

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
from jaxadv.envs.tabular import TabularEnv, make_tabular
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
    "env_spec",
    "make",
    "make_tabular",
    "normalize_obs",
    "register",
    "registered_names",
    "reward_scaler_init",
    "reward_scaler_update",
    "running_mean_std_init",
    "running_mean_std_update",
]

register("Tabular-v0", make_tabular)
register("Sequence-v0", make_sequence)
