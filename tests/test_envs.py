"""Wrapped gymnax environments and running statistics against plain-Python/numpy oracles."""

import inspect

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.utils import load_mnist

from jaxadv import envs
from jaxadv.envs import (
    EnvSpec,
    env_spec,
    make,
    normalize_obs,
    reward_scaler_init,
    reward_scaler_update,
    running_mean_std_init,
    running_mean_std_update,
)

pytestmark = pytest.mark.fast_compile  # checks against references and mechanics (conftest.py)

# ---------------------------------------------------------------- make


_N = 8  # envs in the vmapped tests


def _reset_and_step(env, env_params, key, batch):
    """Reset and take one random step; ``batch=(8,)`` vmaps both over 8 envs."""
    key_reset, key_action, key_step = jax.random.split(key, 3)
    reset, sample, step = env.reset, env.action_space(env_params).sample, env.step
    if batch:
        reset, sample = jax.vmap(reset, (0, None)), jax.vmap(sample)
        step = jax.vmap(step, (0, 0, 0, None))
    split = (lambda k: jax.random.split(k, batch)) if batch else (lambda k: k)
    obs0, state = reset(split(key_reset), env_params)
    return obs0, step(split(key_step), state, sample(split(key_action)), env_params)


# vmapped where it adds something (continuous actions; MinAtar's flattening under vmap);
# CartPole's scan-of-vmap is the `cartpole_run` fixture below
@pytest.mark.parametrize(
    "name, obs_dim, batch",
    [
        ("CartPole-v1", 4, ()),
        ("Acrobot-v1", 6, ()),
        ("Pendulum-v1", 3, (_N,)),
        ("MountainCarContinuous-v0", 2, ()),
        ("Breakout-MinAtar", 10 * 10 * 4, (_N,)),
    ],
    ids=lambda v: f"vmap{v[0]}" if isinstance(v, tuple) and v else None,
)
def test_make_resets_and_steps_under_jit(name, obs_dim, batch):
    env, env_params = make(name)
    assert env.observation_space(env_params).shape == (obs_dim,)
    obs0, out = jax.jit(lambda key: _reset_and_step(env, env_params, key, batch))(jax.random.key(0))
    assert len(out) == 6  # gymnax 1.x: obs, state, reward, terminated, truncated, info
    obs, _, reward, terminated, truncated, info = out
    assert obs0.shape == obs.shape == (*batch, obs_dim)
    assert obs0.dtype == obs.dtype == jnp.float32
    assert info["final_observation"].shape == (*batch, obs_dim)
    assert info["final_observation"].dtype == jnp.float32
    assert reward.shape == batch and reward.dtype == jnp.float32
    assert terminated.dtype == truncated.dtype == info["episode_done"].dtype == jnp.bool_
    assert info["episode_return"].dtype == jnp.float32
    assert info["episode_length"].dtype == jnp.int32
    assert info["episode_done"].shape == info["episode_length"].shape == batch
    assert {"terminated", "truncated", "discount"} <= set(info)  # gymnax's keys survive


def test_make_unflattened_minatar_keeps_grid_shape():
    env, env_params = make("Breakout-MinAtar", flatten_obs=False)
    obs, _ = env.reset(jax.random.key(0), env_params)
    assert obs.shape == (10, 10, 4) and obs.dtype == jnp.float32
    spec = env_spec(env, env_params)
    assert spec.obs_dim == 400 and spec.obs_shape == (10, 10, 4)


def test_make_discrete_observation_is_one_hot():
    env, env_params = make("FrozenLake-misc")
    obs, _ = env.reset(jax.random.key(0), env_params)
    assert obs.shape == (16,) and obs.dtype == jnp.float32
    assert float(obs.sum()) == 1.0
    assert env_spec(env, env_params).obs_dim == 16


@pytest.mark.parametrize("name", list(gymnax.registered_envs))
def test_make_every_registered_env(name, monkeypatch):
    # MNISTBandit-bsuite downloads MNIST when constructed: give it a tiny fake data set
    fake = (np.zeros((4, 28, 28), np.int8), np.arange(4, dtype=np.uint8))
    monkeypatch.setattr(load_mnist, "load_mnist", lambda *a, **k: (fake, fake))
    env, env_params = make(name)
    spec = env_spec(env, env_params)
    assert env.observation_space(env_params).shape == (spec.obs_dim,)
    assert spec.obs_shape == (spec.obs_dim,)
    assert spec.discrete == (spec.num_actions is not None)
    assert spec.discrete == (spec.action_dim is None)
    if spec.discrete:
        assert env.num_actions == spec.num_actions
    else:
        assert len(spec.action_low) == len(spec.action_high) == spec.action_dim


def test_make_unknown_name_suggests_and_lists():
    with pytest.raises(ValueError, match=r"env 'CartPole'.*Did you mean 'CartPole-v1'") as info:
        make("CartPole")
    assert "Acrobot-v1" in str(info.value)  # lists the valid names
    with pytest.raises(ValueError, match=r"env 'no-such-env'.*Valid env names: CartPole-v1"):
        make("no-such-env")


def test_make_rejects_non_bool_flatten_obs():
    with pytest.raises(ValueError, match="flatten_obs"):
        make("CartPole-v1", flatten_obs="yes")


# ---------------------------------------------------------------- env_spec


def test_env_spec_cartpole():
    assert env_spec(*make("CartPole-v1")) == EnvSpec(
        obs_dim=4,
        discrete=True,
        num_actions=2,
        action_dim=None,
        action_low=None,
        action_high=None,
        obs_shape=(4,),
    )


def test_env_spec_pendulum():
    assert env_spec(*make("Pendulum-v1")) == EnvSpec(
        obs_dim=3,
        discrete=False,
        num_actions=None,
        action_dim=1,
        action_low=(-2.0,),
        action_high=(2.0,),
        obs_shape=(3,),
    )


def test_env_spec_raw_gymnax_env_and_default_params():
    env, _ = gymnax.make("MountainCarContinuous-v0")
    spec = env_spec(env)
    assert (spec.obs_dim, spec.discrete, spec.action_dim) == (2, False, 1)
    assert (spec.action_low, spec.action_high) == ((-1.0,), (1.0,))
    assert all(isinstance(v, int) for v in (spec.obs_dim, spec.action_dim))
    assert all(isinstance(v, float) for v in spec.action_low + spec.action_high)


# ---------------------------------------------------------------- episode statistics

_NUM_ENVS, _T, _MAX_STEPS = 8, 40, 12  # CartPole cut at 12 steps ends episodes both ways


def _inputs(key):
    """Fixed key sequences: reset keys [N], step keys [T, N], actions [T, N] (mostly "push right")."""
    key_reset, key_steps, key_actions = jax.random.split(key, 3)
    actions = jax.random.bernoulli(key_actions, 0.75, (_T, _NUM_ENVS)).astype(jnp.int32)
    step_keys = jax.random.split(key_steps, (_T, _NUM_ENVS))
    return jax.random.split(key_reset, _NUM_ENVS), step_keys, actions


def _rollout(env, env_params, reset_keys, step_keys, actions):
    """The rollout's layout: a lax.scan over steps of a vmap over envs; outputs [T, N, ...]."""
    obs, state = jax.vmap(env.reset, (0, None))(reset_keys, env_params)
    step = jax.vmap(env.step, (0, 0, 0, None))

    def body(state, xs):
        keys, actions = xs
        obs, state, reward, terminated, truncated, info = step(keys, state, actions, env_params)
        out = {
            "obs": obs,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": info["final_observation"],
            "episode_done": info["episode_done"],
            "episode_return": info["episode_return"],
            "episode_length": info["episode_length"],
        }
        return state, out

    _, out = jax.lax.scan(body, state, (step_keys, actions))
    return obs, out


@pytest.fixture(scope="module")
def cartpole_run():
    """8 wrapped CartPoles, scanned and vmapped under jit: (env_params, inputs, outputs [T, N])."""
    env, env_params = make("CartPole-v1")
    env_params = env_params.replace(max_steps_in_episode=_MAX_STEPS)
    inputs = _inputs(jax.random.key(0))
    obs0, out = jax.jit(lambda *a: _rollout(env, env_params, *a))(*inputs)
    assert obs0.shape == (_NUM_ENVS, 4)
    return env_params, inputs, jax.tree.map(np.asarray, out)


def _python_loop_raw(env, env_params, key_reset, step_keys, actions):
    """Oracle: the raw gymnax env stepped one call at a time; episodes summed in Python."""
    obs, state = env.reset(key_reset, env_params)
    episodes, observations, final_observations = [], [], []
    ret, length = 0.0, 0
    for key, action in zip(step_keys, np.asarray(actions)):
        obs, state, reward, terminated, truncated, info = env.step(
            key, state, int(action), env_params
        )
        observations.append(np.asarray(obs))
        final_observations.append(np.asarray(info["final_observation"]))
        ret += float(reward)
        length += 1
        if bool(terminated) or bool(truncated):
            episodes.append((ret, length, bool(terminated), bool(truncated)))
            ret, length = 0.0, 0
    return episodes, np.stack(observations), np.stack(final_observations)


def test_vmapped_episode_statistics_match_python_loop_per_env(cartpole_run):
    env_params, inputs, out = cartpole_run
    assert out["obs"].shape == (_T, _NUM_ENVS, 4)
    assert out["episode_return"].shape == out["episode_done"].shape == (_T, _NUM_ENVS)
    out = {k: np.swapaxes(v, 0, 1) for k, v in out.items()}  # env-major, for the per-env oracle
    reset_keys, step_keys, actions = inputs
    raw_env, _ = gymnax.make("CartPole-v1")  # one instance: its jitted step compiles once
    all_episodes = []
    for i in range(_NUM_ENVS):
        episodes, observations, final_observations = _python_loop_raw(
            raw_env, env_params, reset_keys[i], step_keys[:, i], actions[:, i]
        )
        all_episodes += episodes
        done = out["episode_done"][i]
        np.testing.assert_array_equal(done, out["terminated"][i] | out["truncated"][i])
        got = list(
            zip(
                out["episode_return"][i][done].tolist(),
                out["episode_length"][i][done].tolist(),
                out["terminated"][i][done].tolist(),
                out["truncated"][i][done].tolist(),
            )
        )
        assert got == episodes, i  # CartPole rewards are 1.0, so the float sums are exact
        # wrapping leaves the trajectory alone: same keys, same observations
        # (float32 rounding differs between the fused scan and one call per step)
        np.testing.assert_allclose(out["obs"][i], observations, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            out["final_observation"][i], final_observations, rtol=1e-5, atol=1e-5
        )
    # the scenarios are all there: ended by termination, by truncation (time limit), by both
    kinds = {(term, trunc) for _, _, term, trunc in all_episodes}
    assert {(True, False), (False, True)} <= kinds
    assert any(length == _MAX_STEPS and not term for _, length, term, _ in all_episodes)


def test_final_observation_differs_from_reset_observation_at_episode_end(cartpole_run):
    _, _, out = cartpole_run
    done, obs, final = out["episode_done"], out["obs"], out["final_observation"]
    assert done.any() and (~done).any()
    assert np.all(np.any(obs[done] != final[done], axis=-1))  # obs is the reset observation
    np.testing.assert_array_equal(obs[~done], final[~done])  # otherwise they coincide


def test_episode_statistics_before_any_episode_ends_are_zero_and_running_counts_grow():
    env, env_params = make("CartPole-v1")
    _, state = env.reset(jax.random.key(0), env_params)
    assert (float(state.running_return), int(state.running_length)) == (0.0, 0)
    for t in range(1, 4):
        _, state, _, _, _, info = env.step(jax.random.key(t), state, 0, env_params)
        assert not bool(info["episode_done"])
        assert (float(info["episode_return"]), int(info["episode_length"])) == (0.0, 0)
        assert (float(state.running_return), int(state.running_length)) == (float(t), t)


# ---------------------------------------------------------------- running statistics


def test_running_mean_std_matches_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)).astype(np.float32) for n in (5, 1, 7, 16)]
    update = jax.jit(running_mean_std_update)
    stats = running_mean_std_init((3,))
    for batch in batches:
        stats = update(stats, batch)
    data = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(np.asarray(stats.mean), data.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), data.var(axis=0), rtol=1e-5)
    assert float(stats.count) == len(data)


def test_running_mean_std_reduces_all_leading_axes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 2)).astype(np.float32)  # [T, N, obs]
    stats = running_mean_std_update(running_mean_std_init((2,)), x)
    flat = x.reshape(-1, 2).astype(np.float64)
    np.testing.assert_allclose(np.asarray(stats.mean), flat.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(stats.var), flat.var(0), rtol=1e-5)
    assert float(stats.count) == 20


def test_running_mean_std_shape_errors():
    stats = running_mean_std_init((3,))
    with pytest.raises(ValueError, match="`x`"):
        running_mean_std_update(stats, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="`x`"):
        running_mean_std_update(stats, jnp.zeros((3,)))  # no batch axis
    with pytest.raises(ValueError, match="`shape`"):
        running_mean_std_init(3)


def test_normalize_obs_standardises_and_clips():
    rng = np.random.default_rng(2)
    data = rng.normal(1.0, 3.0, size=(64, 2)).astype(np.float32)
    stats = running_mean_std_update(running_mean_std_init((2,)), data)
    x = np.array([[1.0, -2.0], [1e3, -1e3]], dtype=np.float32)
    got = np.asarray(jax.jit(lambda s, x: normalize_obs(s, x, clip=5.0))(stats, x))
    expected = (x - data.mean(0)) / np.sqrt(data.var(0) + 1e-8)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4)
    np.testing.assert_array_equal(got[1], [5.0, -5.0])
    default = np.asarray(normalize_obs(stats, x))
    np.testing.assert_array_equal(default[1], [10.0, -10.0])
    assert normalize_obs(stats, x[0]).shape == (2,)  # an unbatched observation
    with pytest.raises(ValueError, match="`x`"):
        normalize_obs(stats, jnp.zeros((2, 3)))


# ---------------------------------------------------------------- reward scaling


def _reward_scaler_numpy(rewards, dones, gamma, eps=1e-8):
    """Oracle: the NormalizeReward loop, variance taken over every return seen so far."""
    T, N = rewards.shape
    returns, seen, scaled = np.zeros(N), [], np.zeros((T, N))
    for t in range(T):
        returns = returns * gamma + rewards[t]
        seen.extend(returns.tolist())
        scaled[t] = rewards[t] / np.sqrt(np.var(seen) + eps)
        returns[dones[t]] = 0.0
    return scaled, returns


def _reward_scaler_scan(rewards, dones, gamma):
    def body(scaler, xs):
        return reward_scaler_update(scaler, *xs, gamma=gamma)

    return jax.lax.scan(body, reward_scaler_init(rewards.shape[1]), (rewards, dones))


def test_reward_scaler_matches_numpy_loop():
    rng = np.random.default_rng(3)
    T, N, gamma = 30, 4, 0.9
    rewards = rng.normal(0.5, 2.0, size=(T, N)).astype(np.float32)
    dones = rng.random((T, N)) < 0.15
    scaler, scaled = jax.jit(_reward_scaler_scan)(rewards, dones, gamma)
    expected, expected_returns = _reward_scaler_numpy(rewards.astype(np.float64), dones, gamma)
    np.testing.assert_allclose(np.asarray(scaled), expected, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(scaler.returns), expected_returns, rtol=1e-5, atol=1e-6)
    assert float(scaler.stats.count) == T * N


def test_reward_scaler_gamma_is_traceable():
    rng = np.random.default_rng(4)
    rewards = rng.normal(size=(10, 3)).astype(np.float32)
    dones = rng.random((10, 3)) < 0.2
    gammas = jnp.array([0.0, 0.5, 0.99])
    _, scaled = jax.jit(jax.vmap(_reward_scaler_scan, (None, None, 0)))(rewards, dones, gammas)
    for i, gamma in enumerate([0.0, 0.5, 0.99]):
        expected, _ = _reward_scaler_numpy(rewards.astype(np.float64), dones, gamma)
        np.testing.assert_allclose(np.asarray(scaled[i]), expected, rtol=1e-4)


def test_reward_scaler_errors():
    scaler = reward_scaler_init(3)
    with pytest.raises(ValueError, match="`rewards`"):
        reward_scaler_update(scaler, jnp.zeros(2), jnp.zeros(3, bool), gamma=0.9)
    with pytest.raises(ValueError, match="`episode_done`"):
        reward_scaler_update(scaler, jnp.zeros(3), jnp.zeros((3, 1), bool), gamma=0.9)
    with pytest.raises(ValueError, match="`gamma`"):
        reward_scaler_update(scaler, jnp.zeros(3), jnp.zeros(3, bool), gamma=1.5)
    with pytest.raises(ValueError, match="`num_envs`"):
        reward_scaler_init(0)


# ---------------------------------------------------------------- API


def test_public_names_have_docstrings():
    for name in envs.__all__:
        obj = getattr(envs, name)
        assert inspect.getdoc(obj), name


def test_step_with_reset_drawn_ahead_matches_gymnax_semantics():
    """With `reset` given, the env auto-resets to exactly that state; otherwise the step is gymnax's."""
    env, params = make("CartPole-v1")
    params = params.replace(max_steps_in_episode=3)  # truncation after 3 steps
    raw, raw_params = gymnax.make("CartPole-v1")
    raw_params = raw_params.replace(max_steps_in_episode=3)
    obs, state = env.reset(jax.random.key(0), params)
    reset = env.reset(jax.random.key(99), params)
    raw_obs, raw_state = raw.reset(jax.random.key(0), raw_params)
    for t in range(3):
        key = jax.random.key(t + 1)
        obs, state, r, term, trunc, info = env.step(key, state, 1, params, reset)
        raw_obs, raw_state, raw_r, raw_term, raw_trunc, raw_info = raw.step(key, raw_state, 1, raw_params)
        np.testing.assert_array_equal(info["final_observation"], raw_info["final_observation"])
        assert (bool(term), bool(trunc), float(r)) == (bool(raw_term), bool(raw_trunc), float(raw_r))
        if bool(term | trunc):
            np.testing.assert_array_equal(obs, reset[0])  # the state drawn ahead, not gymnax's
            assert int(state.env_state.time) == int(reset[1].env_state.time) == 0
            assert float(info["episode_return"]) == t + 1 and bool(info["episode_done"])
        else:
            np.testing.assert_array_equal(obs, raw_obs)
    assert bool(trunc)  # the third step hit the time limit
