"""Rollouts: time alignment of values, the Q-critic's V, observation normalisation, actions.

Truncation at a time limit (``next_value`` = V(final observation)) is tested with a
purpose-built environment in ``test_train.py``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import distributions as dist
from jaxadv.engine.rollout import make_policy, rollout
from jaxadv.envs import env_spec, make, running_mean_std_init, running_mean_std_update
from jaxadv.nets.networks import make_network

pytestmark = pytest.mark.fast_compile  # checks against references and mechanics (conftest.py)

N, T = 4, 64


@functools.cache
def _setup(name, q_critic=False):
    """Environment, network and one jitted rollout for ``name`` (built once per test session)."""
    env, env_params = make(name)
    spec = env_spec(env, env_params)
    size = spec.num_actions if spec.discrete else spec.action_dim
    net = make_network(size, discrete=spec.discrete, hidden=(16,), q_critic=q_critic)
    policy = make_policy(spec.discrete, size, spec.action_low, spec.action_high)
    key_reset, key_net = jax.random.split(jax.random.key(0))
    obs, env_state = jax.vmap(env.reset, (0, None))(jax.random.split(key_reset, N), env_params)
    params = net.init(key_net, obs[0])

    @jax.jit
    def run(key, obs_stats):
        return rollout(key, params, env_state, obs, obs_stats, None, apply_fn=net.apply,
                       policy=policy, env=env, env_params=env_params, num_steps=T,
                       q_critic=q_critic)

    return run, net, params, obs


def _collect(name, *, q_critic=False, obs_stats=None, seed=0):
    run, net, params, obs = _setup(name, q_critic)
    return run(jax.random.key(100 + seed), obs_stats), net, params, obs


def test_cartpole_transition_shapes_and_value_alignment():
    roll, net, params, obs0 = _collect("CartPole-v1")
    last_obs, scaler, traj, raw_obs = roll.obs, roll.reward_scaler, roll.traj, roll.raw_obs
    assert scaler is None
    for name in ("log_prob", "value", "q_value", "next_value", "reward", "episode_return"):
        assert getattr(traj, name).shape == (T, N) and getattr(traj, name).dtype == jnp.float32
    assert traj.obs.shape == raw_obs.shape == (T, N, 4)
    assert traj.action.shape == (T, N) and traj.action.dtype == jnp.int32
    assert traj.terminated.dtype == traj.truncated.dtype == traj.episode_done.dtype == jnp.bool_
    np.testing.assert_array_equal(raw_obs, traj.obs)  # no normalisation
    np.testing.assert_array_equal(raw_obs[0], obs0)
    done = np.asarray(traj.episode_done)
    assert done.any(), "a random CartPole policy ends episodes within 64 steps"
    np.testing.assert_array_equal(done, np.asarray(traj.terminated | traj.truncated))
    # value and log-prob are the network's on the stored observations
    logits, values = net.apply(params, traj.obs)
    np.testing.assert_allclose(traj.value, values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traj.q_value, traj.value)
    np.testing.assert_allclose(traj.log_prob, dist.categorical_log_prob(logits, traj.action),
                               rtol=1e-5, atol=1e-6)
    # within an episode the next state's value is the next step's value
    nv, v = np.asarray(traj.next_value), np.asarray(traj.value)
    np.testing.assert_allclose(nv[:-1][~done[:-1]], v[1:][~done[:-1]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nv[-1], net.apply(params, last_obs)[1], rtol=1e-5, atol=1e-6)
    # where an episode ended, next_value is not the reset observation's value
    assert not np.allclose(nv[:-1][done[:-1]], v[1:][done[:-1]])
    # episode statistics: a finished CartPole episode's return is its length
    np.testing.assert_array_equal(traj.episode_return[done], traj.episode_length[done])


def test_rollout_is_a_pure_function_of_its_key():
    first = _collect("CartPole-v1")[0]
    again = _collect("CartPole-v1")[0]
    other = _collect("CartPole-v1", seed=1)[0]
    for a, b in zip(jax.tree.leaves(first[3]), jax.tree.leaves(again[3])):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[3].action, other[3].action)


def test_q_critic_value_is_policy_weighted_q():
    roll, net, params, _ = _collect("CartPole-v1", q_critic=True)
    traj = roll.traj
    logits, q = net.apply(params, traj.obs)
    assert q.shape == (T, N, 2)
    np.testing.assert_allclose(traj.value, jnp.sum(jax.nn.softmax(logits) * q, -1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traj.q_value, jnp.take_along_axis(q, traj.action[..., None], -1)[..., 0],
                               rtol=1e-5, atol=1e-6)


def test_observation_normalisation_uses_the_given_statistics():
    stats = running_mean_std_update(running_mean_std_init((4,)),
                                    jnp.array([[0.0, 1.0, -1.0, 2.0], [2.0, 3.0, 1.0, 6.0]]))
    roll = _collect("CartPole-v1", obs_stats=stats)[0]
    traj, raw_obs = roll.traj, roll.raw_obs
    raw, mean, var = np.asarray(raw_obs), np.asarray(stats.mean), np.asarray(stats.var)
    expected = np.clip((raw - mean) / np.sqrt(var + 1e-8), -10, 10)
    np.testing.assert_allclose(traj.obs, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(traj.obs, raw)


@pytest.mark.parametrize("name", ["Pendulum-v1"])
def test_gaussian_actions_are_scored_unclipped(name):
    roll, net, params, _ = _collect(name)
    traj = roll.traj
    (mean, log_std), _ = net.apply(params, traj.obs)
    assert traj.action.shape == (T, N, 1) and traj.action.dtype == jnp.float32
    np.testing.assert_allclose(traj.log_prob, dist.gaussian_log_prob(mean, log_std, traj.action),
                               rtol=1e-5, atol=1e-5)
    # the initial policy has σ = 1, so |a| > 2 (outside Pendulum's bounds) happens in 256 draws
    assert (np.abs(traj.action) > 2.0).any()
