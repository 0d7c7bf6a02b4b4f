"""Brax through ``jaxadv.envs.make("brax:<name>")``: the adapter against Brax's own ``step``,
time limits surfaced as truncations with the final observation, diverged simulations ending
the episode, and PPO learning ``brax:inverted_pendulum``."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax import envs as brax_envs

from jaxadv.engine.train import HParams, TrainConfig, make_train
from jaxadv.envs import env_spec, make
from jaxadv.envs.brax_envs import BraxEnv, BraxState, make_brax

NAME = "brax:inverted_pendulum"


def _play(env, env_params, action, steps, key):
    """``steps`` steps of one env with a constant ``action``: the stacked outputs of ``step``."""
    obs, state = env.reset(key, env_params)

    def step(state, k):
        out = env.step(k, state, action, env_params)
        return out[1], out

    return obs, jax.lax.scan(step, state, jax.random.split(jax.random.key(9), steps))[1]


@pytest.mark.fast_compile  # compares with Brax's own step (conftest.py)
def test_spec_and_the_brax_env_own_step():
    env, env_params = make(NAME)
    spec = env_spec(env, env_params)
    assert (spec.obs_dim, spec.discrete, spec.action_dim) == (4, False, 1)
    assert (spec.action_low, spec.action_high) == ((-1.0,), (1.0,))
    assert env_params.max_steps_in_episode == 1000

    key = jax.random.key(0)
    action = jnp.array([0.3])
    obs0, (obs, _, reward, terminated, truncated, info) = jax.jit(
        lambda: _play(env, env_params.replace(max_steps_in_episode=6), action, 6, key))()
    # the same steps with Brax's own environment (spring backend), no wrapper
    raw = brax_envs.get_environment("inverted_pendulum", backend="spring")
    with jax.numpy_rank_promotion("allow"):  # Brax's code relies on it
        state = jax.jit(raw.reset)(key)
        np.testing.assert_allclose(obs0, state.obs, atol=1e-6)
        step = jax.jit(raw.step)
        for t in range(6):
            state = step(state, action)
            np.testing.assert_allclose(info["final_observation"][t], state.obs, atol=1e-5)
            np.testing.assert_allclose(reward[t], state.reward, atol=1e-6)
    # six steps upright: the time limit is a truncation, not a termination
    np.testing.assert_array_equal(truncated, [False] * 5 + [True])
    assert not np.asarray(terminated).any()
    np.testing.assert_allclose(info["episode_return"][5], 6.0)
    assert np.abs(obs[5] - info["final_observation"][5]).max() > 1e-4  # reset after the limit


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_falling_terminates_and_is_not_a_truncation():
    env, env_params = make(NAME)
    _, (_, _, _, terminated, truncated, info) = jax.jit(
        lambda: _play(env, env_params, jnp.array([1.0]), 200, jax.random.key(1)))()
    terminated = np.asarray(terminated)
    assert terminated.any() and not np.asarray(truncated).any()
    first = int(np.argmax(terminated))
    assert abs(float(info["final_observation"][first][1])) > 0.2  # the pole's angle passed 0.2


@dataclasses.dataclass(frozen=True)
class _Diverging:
    """A stand-in for a Brax env whose simulation blows up at its second step."""

    observation_size: int = 3
    action_size: int = 1

    def reset(self, key):
        return _Fake(jnp.zeros(3), jnp.zeros(()), jnp.zeros(()), jnp.zeros((), jnp.int32))

    def step(self, state, action):
        n = state.n + 1
        bad = jnp.where(n >= 2, jnp.nan, 1.0)
        return _Fake(jnp.full(3, bad), bad, jnp.zeros(()), n)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Fake:
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    n: jax.Array


def test_a_diverged_simulation_ends_the_episode_with_finite_values():
    env = BraxEnv.__new__(BraxEnv)
    env._env, env._obs_size, env._action_size = _Diverging(), 3, 1
    env.brax_name, env.backend, env.episode_length = "fake", "spring", 1000
    params = env.default_params
    _, state = env.reset(jax.random.key(0), params)
    assert isinstance(state, BraxState)
    out = [env.step(jax.random.key(1), state, jnp.zeros(1), params)]
    out.append(env.step(jax.random.key(2), out[0][1], jnp.zeros(1), params))
    (_, _, r1, term1, _, _), (_, _, r2, term2, _, info2) = out
    assert float(r1) == 1.0 and not bool(term1)
    assert bool(term2) and float(r2) == 0.0
    np.testing.assert_array_equal(info2["final_observation"], 0.0)


def test_unknown_brax_names_are_refused():
    with pytest.raises(ValueError, match="brax:cartpole"):
        TrainConfig(env="brax:cartpole")
    with pytest.raises(ValueError, match="backend"):
        make_brax("brax:ant:warp")


def _pendulum_returns(updates: int) -> tuple[float, float]:
    """PPO, 32 envs × 64 steps, normalised observations and rewards, lr 3e-4, γ 0.97, key 0: the
    mean return of the first and of the last 5 updates (a random policy scores about 24)."""
    config = TrainConfig(env=NAME, num_envs=32, num_steps=64, total_timesteps=32 * 64 * updates,
                         normalize_obs=True, scale_rewards=True)
    _, metrics = jax.jit(make_train(config))(jax.random.key(0), HParams(lr=3e-4, gamma=0.97))
    returns = np.asarray(metrics["episode_return"])
    return np.nanmean(returns[:5]), np.nanmean(returns[-5:])


def test_ppo_learns_inverted_pendulum():
    """25 updates: keys 0–7 (vmapped) ended at 127–277 (key 0: 240), from 23–27."""
    first, last = _pendulum_returns(25)
    assert first < 40 and last >= 100, (first, last)


@pytest.mark.slow
def test_ppo_learns_inverted_pendulum_at_50_updates():
    first, last = _pendulum_returns(50)
    assert first < 60 and last >= 200, (first, last)
