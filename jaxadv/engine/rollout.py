"""Rollouts: ``lax.scan`` over ``T`` steps of ``N`` vmapped environments.

One call returns a time-major :class:`Transition` ``[T, N, ...]``. Per step it
runs actor and critic in one network call, samples actions and steps every
environment; after the scan one batched critic call values every step's *final*
observation (``info["final_observation"]``: the next observation, or the one the
episode ended on before the automatic reset), which gives ``next_value``. The end
of the window is a truncation for the estimators (they bootstrap from the last
``next_value``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp

from jaxadv import distributions as dist
from jaxadv.envs import RewardScaler, RunningMeanStd, normalize_obs, reward_scaler_update

__all__ = ["Episodes", "Policy", "Rollout", "Transition", "first_episode_mask", "group_resets",
           "make_policy", "play_episodes", "rollout"]


class Transition(NamedTuple):
    """One rollout, time-major: every leaf is ``[T, N, ...]``.

    Attributes:
      obs: ``[T, N, obs_dim]`` observations fed to the network (normalised if enabled).
      action: ``[T, N]`` int32 (discrete) or ``[T, N, D]`` float32 (unclipped sample).
      log_prob: ``[T, N]`` log π(a_t | s_t) under the acting parameters.
      value: ``[T, N]`` V(s_t) (for a Q critic: Σ_a π(a|s_t) Q(s_t, a)).
      q_value: ``[T, N]`` Q(s_t, a_t) for a Q critic, else equal to ``value``.
      next_value: ``[T, N]`` V(s_{t+1}), of the final observation where the episode ended.
      reward: ``[T, N]`` reward used for learning (scaled if enabled).
      terminated: ``[T, N]`` bool.
      truncated: ``[T, N]`` bool (time limits; the window's end is added by the estimators).
      episode_return: ``[T, N]`` undiscounted return of the episode ending at t (raw reward).
      episode_length: ``[T, N]`` its length.
      episode_done: ``[T, N]`` bool, an episode ended at t.
      extras: ``{name: [T, N]}`` of the ``info`` entries asked for with ``info_keys``
        (e.g. a sequence task's ``exact_match``), else ``None``.
      hidden: ``[T, N, H]`` a recurrent network's hidden state entering step t (zero at an
        episode's first step), else ``None``.
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    q_value: jax.Array
    next_value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    episode_done: jax.Array
    extras: Any = None
    hidden: Any = None


class Policy(NamedTuple):
    """The action distribution's functions for one action space (no objects in the hot loop).

    ``noise(key, batch_shape)`` draws the sampling noise for a whole batch at once
    (Gumbel ``[*batch, A]`` or normal ``[*batch, D]``), ``sample(policy, noise) -> action``
    turns one slice of it into actions (Gumbel-max or ``μ + σ ε``), so a rollout draws
    all its randomness in one op before the scan. ``log_prob(policy, action)``,
    ``entropy(policy)``; ``to_env(action)`` maps a sampled action into the env's bounds.
    """

    noise: Any
    sample: Any
    log_prob: Any
    entropy: Any
    to_env: Any


def make_policy(discrete: bool, size: int, low: Any = None, high: Any = None) -> Policy:
    """Categorical (``policy = logits [*B, A]``) or diagonal Gaussian (``(mean, log_std) [*B, D]``).

    ``size`` is A (discrete) or D (continuous); ``low``/``high`` clip continuous actions
    sent to the environment (the unclipped sample is what is scored).

    >>> import jax, jax.numpy as jnp
    >>> pol = make_policy(True, 2)
    >>> float(pol.log_prob(jnp.zeros(2), jnp.array(1)))  # log ½
    -0.6931471824645996
    >>> noise = pol.noise(jax.random.key(0), (3,))  # [3, 2] Gumbel noise
    >>> pol.sample(jnp.array([0.0, -jnp.inf]), noise[0])  # only action 0 is allowed
    Array(0, dtype=int32)
    """
    if discrete:
        return Policy(
            noise=lambda key, batch: jax.random.gumbel(key, (*batch, size)),
            sample=lambda logits, g: jnp.argmax(logits + g, axis=-1).astype(jnp.int32),
            log_prob=dist.categorical_log_prob,
            entropy=dist.categorical_entropy,
            to_env=lambda a: a,
        )
    lo = None if low is None else jnp.asarray(low, jnp.float32)
    hi = None if high is None else jnp.asarray(high, jnp.float32)
    return Policy(
        noise=lambda key, batch: jax.random.normal(key, (*batch, size)),
        sample=lambda p, eps: p[0] + jnp.exp(p[1]) * eps,
        log_prob=lambda p, a: dist.gaussian_log_prob(p[0], p[1], a),
        entropy=lambda p: dist.gaussian_entropy(p[1]),
        to_env=(lambda a: a)
        if lo is None
        else (lambda a: jnp.clip(a, jnp.broadcast_to(lo, a.shape),
                                 jnp.broadcast_to(cast(jax.Array, hi), a.shape))),
    )


def _state_values(policy_out: Any, critic: jax.Array, q_critic: bool) -> jax.Array:
    """V(s): the critic's output, or Σ_a π(a|s) Q(s, a) for a Q critic."""
    if not q_critic:
        return critic
    return jnp.sum(jax.nn.softmax(policy_out, axis=-1) * critic, axis=-1)


class Rollout(NamedTuple):
    """What :func:`rollout` returns.

    Attributes:
      env_state: the vmapped environment state ``[N]`` after the last step.
      obs: ``[N, obs_dim]`` raw observations after the last step (where the next window starts).
      reward_scaler: the reward scaler after the window (``None`` without scaling).
      traj: the :class:`Transition` ``[T, N, ...]``.
      raw_obs: ``[T, N, obs_dim]`` the unnormalised observations of each step, for updating
        the observation statistics.
      hidden: ``[N, H]`` a recurrent network's hidden state after the last step (where the
        next window starts), else ``None``.
    """

    env_state: Any
    obs: jax.Array
    reward_scaler: RewardScaler | None
    traj: Transition
    raw_obs: jax.Array
    hidden: Any = None


def rollout(
    key: jax.Array,
    params: Any,
    env_state: Any,
    obs: jax.Array,
    obs_stats: RunningMeanStd | None,
    reward_scaler: RewardScaler | None,
    *,
    apply_fn: Any,
    policy: Policy,
    env: Any,
    env_params: Any,
    num_steps: int,
    gamma: Any = 0.99,
    q_critic: bool = False,
    greedy: bool = False,
    info_keys: tuple[str, ...] = (),
    hidden: jax.Array | None = None,
) -> Rollout:
    """Collect ``num_steps`` steps from ``N`` environments with the current policy.

    Args:
      key: PRNG key.
      params: network parameters for ``apply_fn(params, obs) -> (policy, critic)``.
      env_state: vmapped environment state ``[N]``.
      obs: ``[N, obs_dim]`` raw current observations.
      obs_stats: shared observation statistics (``None``: no normalisation); held fixed
        during the rollout.
      reward_scaler: reward-scaling state (``None``: raw rewards); updated per step.
      apply_fn, policy, env, env_params: the network, action distribution and environment.
      num_steps: T (static).
      gamma: discount for the reward scaler's running return; may be traced.
      q_critic: the critic outputs Q(s, ·).
      greedy: act with the most likely action (zero sampling noise), e.g. ReMax's baseline.
      info_keys: ``info`` entries to keep in ``Transition.extras``.
      hidden: ``[N, H]`` a recurrent network's hidden state at the window's start; then
        ``apply_fn(params, obs, h) -> ((policy, critic), h')`` (``Network.step``), and ``h``
        is set to zero after each step that ends an episode (terminated or truncated).
        ``next_value`` of a step is the critic's at the final observation with the
        episode's own state ``h'`` (before that reset), so truncations bootstrap from it.

    Returns:
      a :class:`Rollout`: the carried state after the last step, the :class:`Transition`
      ``[T, N, ...]`` and the raw observations.
    """
    num_envs = obs.shape[0]
    norm = (lambda x: x) if obs_stats is None else (lambda x: normalize_obs(obs_stats, x))
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None, 0))

    def step(carry, xs):
        env_state, obs, scaler, h = carry
        noise, env_keys, reset = xs
        x = norm(obs)
        if h is None:
            pi, critic = apply_fn(params, x)
            h_out = None
        else:
            (pi, critic), h_out = apply_fn(params, x, h)
        action = policy.sample(pi, noise)
        log_prob = policy.log_prob(pi, action)
        value = _state_values(pi, critic, q_critic)
        q_value = (
            jnp.take_along_axis(critic, action[:, None], axis=-1)[:, 0] if q_critic else value
        )
        next_obs, env_state, reward, terminated, truncated, info = step_envs(
            env_keys, env_state, policy.to_env(action), env_params, reset
        )
        done = info["episode_done"]
        if scaler is not None:
            scaler, reward = reward_scaler_update(scaler, reward, done, gamma=gamma)
        out = (
            Transition(
                obs=x,
                action=action,
                log_prob=log_prob,
                value=value,
                q_value=q_value,
                next_value=jnp.zeros_like(value),  # filled in below
                reward=reward,
                terminated=terminated,
                truncated=truncated,
                episode_return=info["episode_return"],
                episode_length=info["episode_length"],
                episode_done=done,
                extras={k: info[k] for k in info_keys} if info_keys else None,
                hidden=h,
            ),
            info["final_observation"],
            obs,
            h_out,
        )
        if h is not None:  # the next observation starts a new episode
            h_out = jnp.where(done[:, None], jnp.zeros_like(h_out), h_out)
        return (env_state, next_obs, scaler, h_out), out

    # All randomness of the window is drawn outside the loop, in a few batched ops:
    # action noise, env keys, and the states each env would auto-reset to at each step
    # (so no step draws a reset of its own).
    key_act, key_env, key_reset = jax.random.split(key, 3)
    noise = policy.noise(key_act, (num_steps, num_envs))
    if greedy:
        noise = jnp.zeros_like(noise)
    env_keys = jax.random.split(key_env, (num_steps, num_envs))
    resets = jax.vmap(jax.vmap(env.reset, in_axes=(0, None)), in_axes=(0, None))(
        jax.random.split(key_reset, (num_steps, num_envs)), env_params
    )
    (env_state, obs, reward_scaler, hidden), (traj, final_obs, raw_obs, h_out) = jax.lax.scan(
        step, (env_state, obs, reward_scaler, hidden), (noise, env_keys, resets), unroll=2
    )
    if hidden is None:
        pi, critic = apply_fn(params, norm(final_obs))
    else:  # each step's final observation, with the state its episode had reached
        (pi, critic), _ = apply_fn(params, norm(final_obs), h_out)
    traj = traj._replace(next_value=_state_values(pi, critic, q_critic))
    return Rollout(env_state, obs, reward_scaler, traj, raw_obs, hidden)


def group_resets(key: jax.Array, env: Any, env_params: Any, num_envs: int,
                 group_size: int = 1) -> tuple[jax.Array, Any]:
    """``(obs [N, ...], env_state [N])``: fresh episodes for ``N = num_envs`` environments,
    identical within each of the ``N / group_size`` consecutive groups (one prompt, ``K``
    samples: the groups of GRPO and RLOO)."""
    if num_envs % group_size:
        raise ValueError(f"`group_size` = {group_size} must divide `num_envs` = {num_envs}")
    keys = jax.random.split(key, num_envs // group_size)[jnp.arange(num_envs) // group_size]
    return jax.vmap(env.reset, in_axes=(0, None))(keys, env_params)


def first_episode_mask(episode_done: jax.Array) -> jax.Array:
    """``[T, N]`` float32: 1 on each env's steps up to and including its first episode end.

    >>> import jax.numpy as jnp
    >>> first_episode_mask(jnp.array([[False], [True], [False], [True]]))[:, 0]
    Array([1., 1., 0., 0.], dtype=float32)
    """
    done = episode_done.astype(jnp.float32)
    return jnp.cumprod(jnp.concatenate([jnp.ones_like(done[:1]), 1.0 - done[:-1]]), axis=0)


class Episodes(NamedTuple):
    """Each environment's first episode from :func:`play_episodes` (``[N]`` each; ``jax.vmap``
    adds leading axes).

    Attributes:
      returns: float32 undiscounted return (raw rewards), 0 where it did not end.
      lengths: int32 steps, 0 where it did not end.
      finished: bool, the episode ended within ``max_steps``.
      metrics: ``{name: float32 [N]}`` the environment's ``info_keys`` at the episode's end.
      final_observation: ``[N, ...]`` the observation each episode ended on (asked for with
        ``final_observation=True``, else ``None``), e.g. a token task's prompt and response.
    """

    returns: jax.Array
    lengths: jax.Array
    finished: jax.Array
    metrics: dict[str, jax.Array]
    final_observation: jax.Array | None = None


def play_episodes(key: jax.Array, params: Any, obs_stats: RunningMeanStd | None, *, apply_fn: Any,
                  policy: Policy, env: Any, env_params: Any, episodes: int, max_steps: int,
                  greedy: bool = True, info_keys: tuple[str, ...] = (),
                  final_observation: bool = False, hidden_size: int = 0) -> Episodes:
    """Play ``episodes`` fresh episodes (static), one environment each, for at most
    ``max_steps`` steps (static) with :func:`rollout`, acting greedily or by sampling, and
    keep each environment's first episode (:class:`Episodes`). ``hidden_size`` H > 0: the
    network is recurrent (``apply_fn`` is its ``step``), started from ``h = 0``."""
    key_reset, key_roll = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, episodes),
                                                       env_params)
    traj = rollout(key_roll, params, state, obs, obs_stats, None, apply_fn=apply_fn, policy=policy,
                   env=env, env_params=env_params, num_steps=max_steps, greedy=greedy,
                   info_keys=(*info_keys, "final_observation"),
                   hidden=jnp.zeros((episodes, hidden_size)) if hidden_size else None).traj
    done = traj.episode_done
    finished = jnp.any(done, axis=0)
    end = jnp.argmax(done, axis=0), jnp.arange(episodes)  # each env's first episode end
    at_end = lambda x: jnp.where(finished.reshape(-1, *[1] * (x.ndim - 2)), x[end],
                                 jnp.zeros_like(x[end]))
    extras = dict(traj.extras)
    final = extras.pop("final_observation")
    metrics = {k: at_end(v).astype(jnp.float32) for k, v in extras.items()}
    return Episodes(at_end(traj.episode_return), at_end(traj.episode_length), finished, metrics,
                    at_end(final) if final_observation else None)
