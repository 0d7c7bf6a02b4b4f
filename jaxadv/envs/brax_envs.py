"""Brax continuous-control environments as gymnax environments (the ``brax`` extra).

``jaxadv.envs.make("brax:<name>")`` (or ``"brax:<name>:<backend>"``) builds Brax's
``<name>`` on one of its physics pipelines — ``spring`` by default, the fastest on a CPU
here; ``generalized``, ``positional`` or ``mjx`` on request — and adapts it to gymnax 1.x's
interface (:class:`BraxEnv`), so the trainer's wrappers, auto-reset, episode statistics and
normalisation apply unchanged:

* observations are Brax's ``obs`` (float32 ``[observation_size]``), actions a ``Box(−1, 1,
  [action_size])`` that the trainer clips the Gaussian's sample to;
* ``terminated`` is Brax's own ``done`` (e.g. the pendulum falling past 0.2 rad), or a
  non-finite observation or reward (a diverged simulation: the episode ends there and the
  observation is reported as zeros rather than NaN);
* the time limit (``max_steps_in_episode``, 1000 as Brax's training wrappers) is a
  *truncation*: gymnax's ``truncated``, with the final observation in
  ``info["final_observation"]``, never folded into ``terminated``;
* reset draws a fresh initial state from the key (Brax's own ``AutoResetWrapper`` replays
  one initial state per env instead).
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

__all__ = ["BACKENDS", "BRAX_ENVS", "BraxEnv", "brax_names", "make_brax"]

BRAX_ENVS = ("ant", "halfcheetah", "hopper", "humanoid", "humanoidstandup",
             "inverted_pendulum", "inverted_double_pendulum", "pusher", "reacher", "walker2d")
"""The Brax environments ``make("brax:<name>")`` builds."""
BACKENDS = ("spring", "generalized", "positional", "mjx")
"""Brax's physics pipelines; the first is the default (``brax:<name>``)."""


def brax_names() -> list[str]:
    """Every Brax name :func:`jaxadv.envs.make` accepts: ``brax:<env>`` and
    ``brax:<env>:<backend>``."""
    return [f"brax:{e}" for e in BRAX_ENVS] + [f"brax:{e}:{b}" for e in BRAX_ENVS for b in BACKENDS]


@struct.dataclass
class BraxState:
    """gymnax's ``EnvState``: Brax's ``State`` and the step count of the episode."""

    brax: Any
    time: jax.Array


class BraxEnv(environment.Environment):
    """Brax environment ``name`` on ``backend``, with gymnax 1.x's ``reset_env``/``step_env``
    (see the module docstring)."""

    def __init__(self, name: str, backend: str = BACKENDS[0], episode_length: int = 1000):
        super().__init__()
        # MuJoCo prints "Failed to import warp" (a GPU backend) on import; Brax warns that
        # its pipelines are "not actively maintained"
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from brax import envs as brax_envs

            self._env = brax_envs.get_environment(name, backend=backend)
            # the size of a reset's observation, traced without running it (Brax's
            # observation_size runs a reset op by op: about 140 small compiles)
            with jax.numpy_rank_promotion("allow"):
                first = jax.eval_shape(self._env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32))
            self._obs_size = int(first.obs.shape[-1])
            self._action_size = int(self._env.action_size)
        self.brax_name, self.backend, self.episode_length = name, backend, episode_length

    @property
    def name(self) -> str:
        return f"brax:{self.brax_name}:{self.backend}"

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=self.episode_length)

    def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, BraxState]:
        with jax.numpy_rank_promotion("allow"):  # Brax's own code relies on it
            state = self._env.reset(key)
        return state.obs, BraxState(state, jnp.zeros((), jnp.int32))

    def step_env(self, key: jax.Array, state: BraxState, action: jax.Array, params: Any):
        with jax.numpy_rank_promotion("allow"):
            nxt = self._env.step(state.brax, action)
        finite = jnp.all(jnp.isfinite(nxt.obs)) & jnp.isfinite(nxt.reward)
        obs = jnp.where(finite, nxt.obs, jnp.zeros_like(nxt.obs))
        reward = jnp.where(finite, nxt.reward, 0.0).astype(jnp.float32)
        terminated = (nxt.done > 0) | ~finite
        return obs, BraxState(nxt, state.time + 1), reward, terminated, {}

    def observation_space(self, params: Any) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self._obs_size,), jnp.float32)

    def action_space(self, params: Any) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self._action_size,), jnp.float32)


@functools.cache
def _brax_env(name: str, backend: str) -> BraxEnv:
    """One :class:`BraxEnv` per (name, backend): building one parses its model."""
    return BraxEnv(name, backend)


def make_brax(name: str) -> tuple[BraxEnv, Any]:
    """``(env, env_params)`` of ``"brax:<name>[:<backend>]"``. Raises ``ValueError`` for an
    unknown name or backend, or when Brax is not installed (the ``brax`` extra)."""
    parts = name.split(":")
    if len(parts) not in (2, 3) or parts[0] != "brax" or parts[1] not in BRAX_ENVS:
        raise ValueError(f"`env` {name!r}: Brax environments are brax:<name>[:<backend>], "
                         f"<name> one of {', '.join(BRAX_ENVS)}")
    backend = parts[2] if len(parts) == 3 else BACKENDS[0]
    if backend not in BACKENDS:
        raise ValueError(f"`env` {name!r}: backend {backend!r}; choose from {', '.join(BACKENDS)}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # MuJoCo's "Failed to import warp"
            import brax  # noqa: F401
    except ImportError:
        raise ValueError(f"`env` {name!r} needs Brax: pip install 'jaxadv[brax]'") from None
    env = _brax_env(parts[1], backend)
    return env, env.default_params
