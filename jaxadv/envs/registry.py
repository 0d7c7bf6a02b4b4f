"""Construct wrapped gymnax environments by name, and describe them as Python values."""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple, cast

import gymnax
import numpy as np
from gymnax.environments import spaces

from jaxadv.envs.brax_envs import brax_names, make_brax
from jaxadv.envs.wrappers import EpisodeStatisticsWrapper, FloatObservationWrapper

__all__ = ["EnvSpec", "env_spec", "make", "register", "registered_names"]

# Environments added with `register`: name -> factory(**kwargs) -> (gymnax-style env, params).
_CUSTOM: dict[str, Any] = {}


def register(name: str, factory: Any) -> None:
    """Make a gymnax-compatible environment available to :func:`make` (and the trainer) by name.

    ``factory(**env_kwargs) -> (env, env_params)`` must return an object with gymnax
    1.x's ``reset``/``step``/``observation_space``/``action_space`` and its params.
    Registering an existing name replaces it (gymnax's own ids cannot be replaced).

    >>> import gymnax
    >>> register("Doctest-env-v0", lambda: gymnax.make("Acrobot-v1"))
    >>> "Doctest-env-v0" in registered_names()
    True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string, got {name!r}")
    if name in gymnax.registered_envs:
        raise ValueError(f"`name` {name!r} is a gymnax id and cannot be re-registered")
    if not callable(factory):
        raise ValueError(f"`factory` must be callable, got {factory!r}")
    _CUSTOM[name] = factory


def registered_names() -> list[str]:
    """Every name :func:`make` accepts: gymnax's ids, those added with :func:`register`, then
    Brax's (``brax:<name>[:<backend>]``, :mod:`jaxadv.envs.brax_envs`; the ``brax`` extra)."""
    return [*gymnax.registered_envs, *_CUSTOM, *brax_names()]


def make(name: str, *, flatten_obs: bool = True, **env_kwargs: Any) -> tuple[Any, Any]:
    """Build a registered gymnax environment, wrapped for training.

    ``env = EpisodeStatisticsWrapper(FloatObservationWrapper(gymnax_env))``:

    * observations (and ``info["final_observation"]``) are float32 ``[obs_dim]``,
      flattened with ``flatten_obs`` (MinAtar ``[10, 10, C]`` → ``[100·C]``); a
      ``Discrete(n)`` observation becomes its one-hot ``[n]``;
    * ``info`` gains ``"episode_return"``, ``"episode_length"`` (of the episode that
      ended at this step; meaningful where ``info["episode_done"]``) and
      ``"episode_done"`` (``terminated or truncated``); the reward is float32;
    * ``reset(key, params)`` and ``step(key, state, action, params) ->
      (obs, state, reward, terminated, truncated, info)`` are gymnax 1.x's, auto-reset
      included.

    Args:
      name: an id in ``gymnax.registered_envs`` (e.g. ``"CartPole-v1"``) or a name
        added with :func:`register`.
      flatten_obs: flatten ``Box`` observations to 1-D; ``False`` keeps their shape
        (still float32), e.g. for a convolutional torso.
      **env_kwargs: passed to the gymnax environment's constructor.

    Returns:
      ``(env, env_params)``: the wrapped environment and its default ``EnvParams``
      (a ``flax.struct`` dataclass; ``env_params.replace(max_steps_in_episode=...)``).

    Raises:
      ValueError: ``name`` is not a registered gymnax id (the message suggests close
        matches and lists the valid ids), or ``flatten_obs`` is not a bool.

    ``"MNISTBandit-bsuite"`` downloads MNIST when constructed.

    >>> import jax
    >>> env, env_params = make("Breakout-MinAtar")
    >>> obs, state = env.reset(jax.random.key(0), env_params)
    >>> obs.shape, obs.dtype
    ((400,), dtype('float32'))
    """
    valid = registered_names()
    if not isinstance(name, str) or name not in valid:
        close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"env {name!r} is not a registered gymnax environment.{hint} "
            f"Valid env names: {', '.join(valid)}"
        )
    if not isinstance(flatten_obs, bool):
        raise ValueError(
            f"`flatten_obs` must be True or False, got {flatten_obs!r}"
        )
    if name.startswith("brax:"):
        factory = lambda **kw: make_brax(name, **kw)
    else:
        factory = _CUSTOM.get(name, lambda **kw: gymnax.make(name, **kw))
    env, env_params = factory(**env_kwargs)
    wrapped = EpisodeStatisticsWrapper(FloatObservationWrapper(env, flatten=flatten_obs))
    return wrapped, env_params


class EnvSpec(NamedTuple):
    """What a network and a policy head need to know about an environment (Python values).

    Attributes:
      obs_dim: number of float features per observation (``prod`` of its shape; ``n``
        for a ``Discrete(n)`` observation, which :func:`make` one-hot encodes).
      discrete: whether the action space is ``Discrete``.
      num_actions: the number of actions where discrete, else ``None``.
      action_dim: the action vector's length where continuous (``Box``), else ``None``.
      action_low: per-dimension lower action bounds (tuple of ``action_dim`` floats)
        where continuous, else ``None``.
      action_high: upper bounds, likewise.
      obs_shape: the observation's shape as the environment returns it (``(obs_dim,)``
        when flattened).
      image_shape: ``(H, W, C)`` where the unwrapped environment observes an image (a 3-D
        ``Box``, e.g. MinAtar's 10 × 10 × C grids), flattened or not; else ``None``.
    """

    obs_dim: int
    discrete: bool
    num_actions: int | None
    action_dim: int | None
    action_low: tuple[float, ...] | None
    action_high: tuple[float, ...] | None
    obs_shape: tuple[int, ...] | None = None
    image_shape: tuple[int, int, int] | None = None


def env_spec(env: Any, env_params: Any = None) -> EnvSpec:
    """Read an :class:`EnvSpec` off a gymnax environment's spaces.

    Observation: ``Box`` of shape ``S`` → ``obs_dim = prod(S)``; ``Discrete(n)`` →
    ``obs_dim = n`` (one-hot). Action: ``Discrete(n)`` → ``num_actions = n``;
    ``Box`` of shape ``S`` → ``action_dim = prod(S)`` with its bounds broadcast to that
    length. Works on :func:`make`'s wrapped environments and on raw gymnax ones.

    Args:
      env: a gymnax environment or wrapper.
      env_params: its ``EnvParams``; ``None`` means ``env.default_params``.

    Raises:
      ValueError: ``env`` has an observation or action space other than ``Box`` or
        ``Discrete``.

    >>> spec = env_spec(*make("Pendulum-v1"))
    >>> spec.obs_dim, spec.discrete, spec.action_dim, spec.action_low, spec.action_high
    (3, False, 1, (-2.0,), (2.0,))
    >>> env_spec(*make("CartPole-v1")).num_actions
    2
    """
    if env_params is None:
        env_params = env.default_params
    obs_space = env.observation_space(env_params)
    if isinstance(obs_space, spaces.Discrete):
        obs_shape: tuple[int, ...] = (int(obs_space.n),)
    elif isinstance(obs_space, spaces.Box):
        obs_shape = tuple(int(d) for d in obs_space.shape)
    else:
        raise ValueError(
            f"`env` has a {type(obs_space).__name__} observation space; "
            "env_spec supports Box and Discrete"
        )
    obs_dim = int(np.prod(obs_shape))
    raw_space = getattr(env, "unwrapped", env).observation_space(env_params)
    image_shape = (cast("tuple[int, int, int]", tuple(int(d) for d in raw_space.shape))
                   if isinstance(raw_space, spaces.Box) and len(raw_space.shape) == 3 else None)

    action_space = env.action_space(env_params)
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(
            obs_dim=obs_dim,
            discrete=True,
            num_actions=int(action_space.n),
            action_dim=None,
            action_low=None,
            action_high=None,
            obs_shape=obs_shape,
            image_shape=image_shape,
        )
    if isinstance(action_space, spaces.Box):
        shape = tuple(int(d) for d in action_space.shape)
        action_dim = int(np.prod(shape))

        def bounds(b: Any) -> tuple[float, ...]:
            flat = np.broadcast_to(np.asarray(b, dtype=np.float64), shape).reshape(-1)
            return tuple(float(v) for v in flat)

        return EnvSpec(
            obs_dim=obs_dim,
            discrete=False,
            num_actions=None,
            action_dim=action_dim,
            action_low=bounds(action_space.low),
            action_high=bounds(action_space.high),
            obs_shape=obs_shape,
            image_shape=image_shape,
        )
    raise ValueError(
        f"`env` has a {type(action_space).__name__} action space; env_spec supports Box and Discrete"
    )
