"""Pure, vmappable gymnax wrappers: float observations and episode statistics.

Each wrapper keeps gymnax 1.x's interface unchanged, so it drops in wherever a
``gymnax.environments.environment.Environment`` is expected:

* ``reset(key, params) -> (obs, state)``;
* ``step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)``,
  auto-resetting where ``terminated or truncated``, with ``info["final_observation"]``
  the observation the episode ended on (before the reset);
* ``observation_space(params)``, ``action_space(params)``, ``default_params``,
  ``num_actions``; any other attribute is looked up on the wrapped environment.

The wrappers pass the key through untouched, so a wrapped environment follows the
same trajectory as the raw one under the same keys. Everything is a pure function
of ``(key, state, action, params)``: ``jax.vmap`` over environments and
``jax.lax.scan`` over steps work as for any gymnax environment.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

__all__ = [
    "EpisodeStatisticsState",
    "EpisodeStatisticsWrapper",
    "FloatObservationWrapper",
]

Array = jax.Array


class _Wrapper:
    """Delegates every attribute it does not define to the wrapped environment."""

    def __init__(self, env: Any):
        self._env = env

    def __getattr__(self, name: str) -> Any:
        if name == "_env":  # not yet set (e.g. during copy): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self._env, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._env!r})"

    @property
    def unwrapped(self) -> Any:
        """The innermost (raw gymnax) environment."""
        env = self._env
        while isinstance(env, _Wrapper):
            env = env._env
        return env

    @property
    def default_params(self) -> Any:
        """The wrapped environment's default ``EnvParams``."""
        return self._env.default_params

    @property
    def num_actions(self) -> int:
        """The wrapped environment's ``num_actions`` (the action count where discrete)."""
        return self._env.num_actions

    @property
    def name(self) -> str:
        """The wrapped environment's name."""
        return self._env.name

    def action_space(self, params: Any = None) -> Any:
        """The wrapped environment's action space (unchanged); ``None`` means default params."""
        return self._env.action_space(self.default_params if params is None else params)

    def observation_space(self, params: Any = None) -> Any:
        """The wrapped environment's observation space; ``None`` means default params."""
        return self._env.observation_space(self.default_params if params is None else params)


class FloatObservationWrapper(_Wrapper):
    """Observations as float32 vectors: cast, flattened, one-hot where discrete.

    A ``Box`` observation of shape ``S`` becomes float32 ``[prod(S)]`` (``flatten=True``;
    e.g. MinAtar's ``[10, 10, C]`` grid becomes ``[100·C]``) or float32 ``S``
    (``flatten=False``). A ``Discrete(n)`` observation (an integer index, e.g.
    FrozenLake's position) becomes its float32 one-hot ``[n]`` either way.
    ``info["final_observation"]`` is transformed the same way; nothing else changes.

    Args:
      env: a gymnax environment (or wrapper) whose observation space is ``Box`` or
        ``Discrete``.
      flatten: flatten ``Box`` observations to 1-D.

    >>> import gymnax, jax
    >>> env = FloatObservationWrapper(gymnax.make("Breakout-MinAtar")[0])
    >>> obs, state = env.reset(jax.random.key(0))
    >>> obs.shape, obs.dtype
    ((400,), dtype('float32'))
    """

    def __init__(self, env: Any, *, flatten: bool = True):
        super().__init__(env)
        if not isinstance(flatten, bool):
            raise ValueError(
                f"`flatten` must be True or False, got {flatten!r}"
            )
        self._flatten = flatten
        self._num_categories: int | None
        space = env.observation_space(env.default_params)
        if isinstance(space, spaces.Discrete):
            self._num_categories = int(space.n)
        elif isinstance(space, spaces.Box):
            self._num_categories = None
        else:
            raise ValueError(
                f"`env` {env.name} has a {type(space).__name__} observation space; "
                "FloatObservationWrapper supports Box and Discrete observation spaces"
            )

    def observation_space(self, params: Any = None) -> spaces.Box:
        """A float32 ``Box``: ``[prod(S)]`` (flattened), ``S``, or ``[n]`` (one-hot)."""
        space = self._env.observation_space(self.default_params if params is None else params)
        if self._num_categories is not None:
            return spaces.Box(0.0, 1.0, (self._num_categories,), jnp.float32)
        shape = tuple(int(d) for d in space.shape)
        if not self._flatten:
            return spaces.Box(space.low, space.high, shape, jnp.float32)
        flat_shape = (int(np.prod(shape)),)
        return spaces.Box(
            _flatten_bound(space.low, shape),
            _flatten_bound(space.high, shape),
            flat_shape,
            jnp.float32,
        )

    def _transform(self, obs: Array) -> Array:
        if self._num_categories is not None:
            return jax.nn.one_hot(obs, self._num_categories, dtype=jnp.float32)
        obs = jnp.asarray(obs, dtype=jnp.float32)
        return jnp.reshape(obs, (-1,)) if self._flatten else obs

    @partial(jax.jit, static_argnames=("self",))
    def reset(self, key: Array, params: Any = None) -> tuple[Array, Any]:
        """Reset the wrapped environment; the observation is transformed."""
        obs, state = self._env.reset(key, params)
        return self._transform(obs), state

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self, key: Array, state: Any, action: Any, params: Any = None, reset: Any = None
    ) -> tuple[Array, Any, Array, Array, Array, dict[str, Any]]:
        """Step the wrapped environment; ``obs`` and ``info["final_observation"]`` are transformed.

        ``reset``, an ``(obs, state)`` pair from this wrapper's :meth:`reset`, is the state
        to auto-reset to where the episode ends — drawn ahead of time (e.g. for a whole
        rollout in one batched op) instead of inside every step, so a step does not pay
        for a reset draw. Without it (or for an environment that has no
        gymnax ``step_env``/``is_truncated``), the wrapped ``step`` resets as usual.
        """
        inner = self._env
        if reset is None or not (hasattr(inner, "step_env") and hasattr(inner, "is_truncated")):
            obs, state, reward, terminated, truncated, info = inner.step(key, state, action, params)
            info = {**info, "final_observation": self._transform(info["final_observation"])}
            return self._transform(obs), state, reward, terminated, truncated, info
        params = self.default_params if params is None else params
        # gymnax 1.x's Environment.step, with the reset supplied by the caller.
        obs_st, state_st, reward, terminated, info = inner.step_env(key, state, action, params)
        truncated = inner.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        reset_obs, reset_state = reset
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), reset_state, state_st)
        final_obs = self._transform(obs_st)
        obs = jax.lax.select(done, reset_obs, final_obs)
        info = {
            **info,
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": final_obs,
        }
        return obs, state, reward, terminated, truncated, info


def _flatten_bound(bound: Any, shape: tuple[int, ...]) -> Any:
    """A scalar bound stays scalar; an array bound is broadcast to ``shape`` and flattened."""
    array = np.asarray(bound)
    if array.ndim == 0:
        return bound
    return np.broadcast_to(array, shape).reshape(-1).astype(np.float32)


class EpisodeStatisticsState(NamedTuple):
    """State of :class:`EpisodeStatisticsWrapper` for one environment (vmap adds ``[N]``).

    Attributes:
      env_state: the wrapped environment's state.
      running_return: float32 ``[]`` undiscounted return of the current episode so far.
      running_length: int32 ``[]`` steps taken in the current episode so far.
      last_return: float32 ``[]`` return of the last finished episode (0 before any).
      last_length: int32 ``[]`` length of the last finished episode (0 before any).
    """

    env_state: Any
    running_return: Array
    running_length: Array
    last_return: Array
    last_length: Array


class EpisodeStatisticsWrapper(_Wrapper):
    """Track each environment's undiscounted episode return and length.

    With ``done_t = terminated_t ∨ truncated_t`` (an episode ends on termination *and*
    on truncation), per step ``G ← G + r_t``, ``L ← L + 1``; where ``done_t`` the
    finished ``(G, L)`` is recorded and both restart from 0. ``step`` adds to ``info``:

    * ``"episode_done"``: bool ``[]``, ``done_t``;
    * ``"episode_return"``: float32 ``[]``, return of the episode that ended at this
      step — meaningful where ``info["episode_done"]`` (elsewhere: the last finished
      episode's, or 0 before any);
    * ``"episode_length"``: int32 ``[]``, its length, likewise.

    The reward is returned as float32 (the dtype the returns accumulate in; a few
    gymnax environments emit int32 rewards). The state is an
    :class:`EpisodeStatisticsState` of arrays, so the wrapper is pure and vmappable.

    >>> import gymnax, jax
    >>> env = EpisodeStatisticsWrapper(gymnax.make("CartPole-v1")[0])
    >>> obs, state = env.reset(jax.random.key(0))
    >>> obs, state, reward, terminated, truncated, info = env.step(jax.random.key(1), state, 0)
    >>> int(info["episode_length"]), int(state.running_length), bool(info["episode_done"])
    (0, 1, False)
    """

    @partial(jax.jit, static_argnames=("self",))
    def reset(self, key: Array, params: Any = None) -> tuple[Any, EpisodeStatisticsState]:
        """Reset the wrapped environment; all statistics start at 0."""
        obs, env_state = self._env.reset(key, params)
        zero_return, zero_length = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
        state = EpisodeStatisticsState(
            env_state=env_state,
            running_return=zero_return,
            running_length=zero_length,
            last_return=zero_return,
            last_length=zero_length,
        )
        return obs, state

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self,
        key: Array,
        state: EpisodeStatisticsState,
        action: Any,
        params: Any = None,
        reset: Any = None,
    ) -> tuple[Any, EpisodeStatisticsState, Array, Array, Array, dict[str, Any]]:
        """Step the wrapped environment and update the episode statistics.

        ``reset``: optional ``(obs, state)`` from this wrapper's :meth:`reset` to
        auto-reset to (see :meth:`FloatObservationWrapper.step`).
        """
        extra = () if reset is None else ((reset[0], reset[1].env_state),)
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.env_state, action, params, *extra
        )
        reward = jnp.asarray(reward, dtype=jnp.float32)
        done = jnp.logical_or(terminated, truncated)
        episode_return = state.running_return + reward
        episode_length = state.running_length + 1
        state = EpisodeStatisticsState(
            env_state=env_state,
            running_return=jnp.where(done, jnp.zeros_like(episode_return), episode_return),
            running_length=jnp.where(done, jnp.zeros_like(episode_length), episode_length),
            last_return=jnp.where(done, episode_return, state.last_return),
            last_length=jnp.where(done, episode_length, state.last_length),
        )
        info = {
            **info,
            "episode_return": state.last_return,
            "episode_length": state.last_length,
            "episode_done": done,
        }
        return obs, state, reward, terminated, truncated, info
