"""The trainer: learning bars, truncation, determinism, purity, no hangs, config validation.

Learning bars run a few fixed seeds in one ``jax.jit(jax.vmap(train, (0, None)))``
call. "Final return" is the mean undiscounted episode return over the last 10% of
updates, averaged over seeds. The budgets were found by vmapped sweeps over
``HParams`` on 2 CPU cores; each test docstring records what was measured.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from jaxadv import envs
from jaxadv.engine import train as engine
from jaxadv.engine.rollout import make_policy, rollout
from jaxadv.engine.train import HParams, TrainConfig, make_train, make_trainer, permutations
from jaxadv.nets.networks import make_network


def run_seeds(config: TrainConfig, hp: HParams, seeds: int, first_seed: int = 0):
    """Train ``seeds`` seeds in one vmapped, jitted call; returns (state, numpy metrics)."""
    keys = jax.random.split(jax.random.key(first_seed), seeds)
    state, metrics = jax.jit(jax.vmap(make_train(config), (0, None)))(keys, hp)
    return state, jax.tree.map(np.asarray, metrics)


def final_returns(metrics, fraction: float = 0.1) -> np.ndarray:
    """Per-seed mean episode return over the last ``fraction`` of updates."""
    returns = metrics["episode_return"]  # [seeds, updates]
    last = max(1, round(returns.shape[-1] * fraction))
    return np.nanmean(returns[..., -last:], axis=-1)


def curve(metrics, points: int = 10) -> list[int]:
    """Mean return (over seeds) in ``points`` equal stretches of training, for messages."""
    returns = metrics["episode_return"]
    return [int(np.nanmean(c)) for c in np.array_split(returns, points, axis=-1)]


def assert_trees_equal(a, b):
    """Bitwise equality of two pytrees (typed PRNG keys compared by their data; NaN == NaN)."""
    unkey = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    leaves_a, tree_a = jax.tree.flatten(jax.tree.map(unkey, a))
    leaves_b, tree_b = jax.tree.flatten(jax.tree.map(unkey, b))
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------- learning bars


def _assert_final(metrics, bar: float, above: bool = True) -> np.ndarray:
    """The seeds' mean final return is at least ``bar``; prints the per-seed figures."""
    final = final_returns(metrics)
    print("final returns per seed:", np.round(final, 1), "curve:", curve(metrics))
    assert final.mean() >= bar, f"final returns {final}, curve {curve(metrics)}"
    return final


def test_ppo_gae_cartpole_learns():
    """Default TrainConfig/HParams (PPO, GAE, 4 envs × 128 steps, 4 × 4 minibatches) at
    1.5×10⁵ steps, 4 seeds. Measured on 8 seeds split from key(0): 343, 295, 291, 353, 284,
    248, 299, 349 (means of 4: 321, 295); from key(1): 365, 347, 345, 313, 342, 284, 292, 269
    (342, 297). Random policy: about 22. (At 2.5×10⁵ steps: 471, 468, 457, 358 on keys
    split from key(0).)"""
    config = TrainConfig(total_timesteps=150_000)
    assert (config.env, config.algo, config.estimator) == ("CartPole-v1", "ppo", "gae")
    _, metrics = run_seeds(config, HParams(), seeds=4)
    _assert_final(metrics, 250)


@pytest.mark.slow
def test_ppo_gae_cartpole_reaches_475():
    """The defaults' full budget (5×10⁵ steps): measured 500, 500, 500, 500 over seeds 0–3
    (~7 s compile + ~11 s run)."""
    _, metrics = run_seeds(TrainConfig(), HParams(), seeds=4)
    assert metrics["env_steps"][0, -1] <= 500_000
    _assert_final(metrics, 475)


A2C_CARTPOLE = TrainConfig(algo="a2c", num_envs=16, num_steps=16, total_timesteps=250_000,
                           normalize_advantages=False)
A2C_HP = HParams(lr=2.5e-3)


def test_a2c_cartpole_learns():
    """A2C (GAE λ = 0.95, 1 × 1 update, 16 envs × 16 steps, lr 2.5e-3 annealed, raw
    advantages) at 2.5×10⁵ steps: measured 500, 164, 500, 500 (mean 416); keys split from
    key(1): 500, 500, 243, 500 (mean 436). (At 4×10⁵ steps the means were lower, 310 and
    350: the annealed learning rate stays high for longer.)"""
    _, metrics = run_seeds(A2C_CARTPOLE, A2C_HP, seeds=4)
    _assert_final(metrics, 300)


@pytest.mark.slow
def test_a2c_cartpole_reaches_400():
    """A2C as above at 10⁶ steps. Measured 492, 476, 495, 500. Sweeps (8 seeds each): lr
    1.5e-3 → all 8 in 479–500; 2.5e-3 → 15 of 16 seeds in 479–500, one at 201; 7.5×10⁵
    steps → one or two seeds in 8 stuck near 150–300. With advantages normalised per update
    (256 transitions), or at 5×10⁵ steps, A2C means were 150–430 with seeds stuck at 150–250.
    """
    config = A2C_CARTPOLE.replace(total_timesteps=1_000_000)
    _, metrics = run_seeds(config, A2C_HP, seeds=4)
    _assert_final(metrics, 400)


REINFORCE_CARTPOLE = TrainConfig(algo="reinforce", num_envs=8, num_steps=128,
                                 total_timesteps=150_000, normalize_advantages=False)
REINFORCE_HP = HParams(lr=4e-3)


def test_reinforce_with_baseline_cartpole_learns():
    """REINFORCE: Monte Carlo returns (bootstrapped only at the window's end) minus a learned
    baseline, 8 envs × 128 steps, lr 4e-3 annealed, raw advantages, 1.5×10⁵ steps. Measured
    on 8 seeds split from key(0): 466, 493, 277, 496, 474, 446, 480, 491 (means of 4: 433,
    473); from key(1): 207, 477, 472, 237, 352, 443, 456, 365 (348, 404). (At 2.5×10⁵
    steps: 492, 208, 494, 498.)"""
    _, metrics = run_seeds(REINFORCE_CARTPOLE, REINFORCE_HP, seeds=4)
    _assert_final(metrics, 250)


@pytest.mark.slow
def test_reinforce_with_baseline_cartpole_reaches_400():
    """REINFORCE as above at 5×10⁵ steps. Measured 499, 500, 500, 500. Sweep (8 seeds): lr
    4e-3 → all 8 in 498–500; 2e-3 → mean 469; 1e-3 → mean 399. With 32-step windows (mostly
    bootstrapped) results were erratic."""
    config = REINFORCE_CARTPOLE.replace(total_timesteps=500_000)
    _, metrics = run_seeds(config, REINFORCE_HP, seeds=4)
    _assert_final(metrics, 400)


def test_ppo_acrobot_learns():
    """PPO, 8 envs × 64 steps, 4 × 4 minibatches, lr 2e-3 annealed, 6×10⁴ steps. Measured
    on 8 seeds split from key(0): −90, −100, −102, −104, −86, −91, −103, −108 (means of 4:
    −99, −97); from key(1): −86, −93, −187, −101, −92, −101, −90, −94 (−117, −94). Random
    policy: −500. (At 10⁵ steps: −88, −85, −84, −88; at 2×10⁵: −81 to −89 on 12 seeds.)"""
    config = TrainConfig(env="Acrobot-v1", num_envs=8, num_steps=64, total_timesteps=60_000)
    _, metrics = run_seeds(config, HParams(lr=2e-3), seeds=4)
    _assert_final(metrics, -150)


def test_ppo_pendulum_learns():
    """Continuous actions (diagonal Gaussian): PPO, 16 envs × 64 steps, 4 epochs × 8
    minibatches, running observation normalisation and reward scaling, γ = 0.95, lr 2e-3,
    no entropy bonus, 8×10⁴ steps. Measured on 8 seeds split from key(0): −237, −258, −247,
    −287, −211, −333, −362, −211 (means of 4: −257, −279); from key(1): −193, −328, −357,
    −153, −333, −236, −197, −243 (−258, −252). Random policy ≈ −1200. (At 1.2×10⁵ steps:
    −190, −224, −191, −334; at 2×10⁵: −185, −213, −201, −170.)"""
    config = TrainConfig(env="Pendulum-v1", num_envs=16, num_steps=64, num_minibatches=8,
                         normalize_obs=True, scale_rewards=True, total_timesteps=80_000)
    _, metrics = run_seeds(config, HParams(lr=2e-3, gamma=0.95, ent_coef=0.0), seeds=4)
    _assert_final(metrics, -350)
    assert np.nanmean(metrics["episode_return"][:, :5]) < -900  # it did start from random


def test_pbt_learns_cartpole_from_a_population_with_bad_learning_rates():
    """Population-based training (:mod:`jaxadv.tuning.pbt`): 8 PPO members on CartPole, lr
    drawn log-uniformly from [1e-5, 1e-1] (here 3e-5, 4e-5 and 8e-5 among them, too small to
    learn in this budget), 4 envs × 128 steps, 96 updates, exploit/explore every 12. The
    best member of the last interval ends at ≥ 475. Measured with keys 0–3: the best
    member's final return 500 on each; the members' finals 475–500 (key 0), 481–500,
    293–500 and 488–500. (At 192 updates, interval 24, keys 0–2: every member 446–500.)"""
    from jaxadv.stats import final_returns as finals
    from jaxadv.tuning.pbt import PBTSettings, population_based_training

    config = TrainConfig(total_timesteps=4 * 128 * 96)
    result = population_based_training(config, PBTSettings(ranges={"lr": (1e-5, 1e-1)}), 8, 1,
                                       12, key=jax.random.key(0))
    assert np.min(result.hparams["lr"][0]) < 1e-4 < np.max(result.hparams["lr"][0])
    best = int(np.nanargmax(np.where(np.isfinite(result.fitness[-1]), result.fitness[-1], -np.inf)))
    assert finals(result.returns, result.episodes)[best] >= 475


@pytest.mark.slow
def test_ppo_2048_envs_micro_batched_cartpole_reaches_475():
    """Thousands of envs: PPO, 2048 envs × 16 steps (32,768 transitions per update), 4 epochs
    × 8 minibatches of 4,096 samples, each minibatch's gradient summed over two micro-batches
    of 2,048 (the CPU default), lr 4e-3 annealed, 2×10⁶ steps (61 updates), 2 seeds.
    Measured 496, 499; over 8 pairs of seeds (keys split from key(0)–key(7)) the pair means
    were 495–499 and every seed ≥ 490. At 2.5×10⁶ steps: pairs 498–500 (key(0)–key(3));
    at 1.5×10⁶: 365–471. (lr 2.5e-3 at 2×10⁶ steps with 4 minibatches: 363, 420; lr 5e-3
    at 2×10⁶: 489, 500.) That micro-batching gives the whole minibatch's gradient is
    checked exactly, in seconds, by test_micro_batched_gradient_equals_the_whole_minibatch_gradient."""
    config = TrainConfig(num_envs=2048, num_steps=16, num_minibatches=8, total_timesteps=2_000_000)
    assert engine.make_setup(config).micro_batch == 2048
    _, metrics = run_seeds(config, HParams(lr=4e-3), seeds=2)
    _assert_final(metrics, 475)


def test_ppo_qv_cartpole_reaches_400():
    """The ``qv`` estimator (Q critic, expected-SARSA targets, A = Q(s, a) − Σπ Q(s, ·)) with
    PPO's defaults plus reward scaling and raw advantages, lr 4e-3, 10⁵ steps. Measured on
    8 seeds split from key(0): 500 but one 454 (means of 4: 488, 500); from key(1): 500 but
    one 438 (500, 484). At 1.5×10⁵ steps: 500 on all 4 seeds. At 2.25×10⁵ steps:
    500, 478, 489, 500; 8 sets of 4 seeds (keys split from key(0)–key(7)): set means
    487–500, every seed ≥ 464.
    Without reward scaling, or with per-minibatch advantage normalisation, 25–75% of seeds
    collapse to a deterministic policy (return 9) within the first few updates: the Q of
    the less-sampled action lags far behind while the values climb from 0 to ~1/(1 − γ).
    """
    config = TrainConfig(estimator="qv", scale_rewards=True, normalize_advantages=False,
                         total_timesteps=100_000)
    _, metrics = run_seeds(config, HParams(lr=4e-3), seeds=4)
    _assert_final(metrics, 400)


# ---------------------------------------------------------------- truncation


@struct.dataclass
class ClockState:
    time: jax.Array


class ConstantRewardClock(environment.Environment):
    """Reward 1 every step; the episode ends after ``k`` steps.

    The observation is ``[1, 0]`` at reset and ``[0, 1]`` after any step, so it
    carries no clock: every state's value is Σ γᵗ = 1/(1 − γ) when the time limit
    is a truncation (``truncate=True``, gymnax's ``max_steps_in_episode = k``).
    The final observation ``[0, 1]`` differs from the reset observation ``[1, 0]``.

    With ``truncate=False`` step k *terminates* instead (the time limit mistaken for
    a termination). TD's fixed point is then, with γ = 0.9 and k = 5: state [0, 1] is
    left four times per episode, once into the terminal, so
    V₁ = 1 + γ·¾·V₁ = 1/(1 − 0.675) ≈ 3.08 and V₀ = 1 + γV₁ ≈ 3.77.
    """

    def __init__(self, k: int = 5, truncate: bool = True):
        self.k, self.truncate = k, truncate

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=self.k if self.truncate else 10**9)

    def reset_env(self, key, params):
        return jnp.array([1.0, 0.0]), ClockState(time=jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        state = ClockState(time=state.time + 1)
        terminated = jnp.logical_and(not self.truncate, state.time >= self.k)
        return jnp.array([0.0, 1.0]), state, jnp.ones(()), terminated, {}

    def observation_space(self, params):
        return spaces.Box(0.0, 1.0, (2,), jnp.float32)

    def action_space(self, params):
        return spaces.Discrete(2)

    @property
    def num_actions(self) -> int:
        return 2


CLOCK_K = 5
RESET_OBS, LATER_OBS = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
TRUNCATED, TERMINATED = "ConstantRewardClock-truncated-v0", "ConstantRewardClock-terminated-v0"


@pytest.fixture(scope="module")
def clock_envs():
    """Register the clock environments (once, when first needed; not at collection time)."""
    envs.register(TRUNCATED, lambda: (env := ConstantRewardClock(CLOCK_K, True), env.default_params))
    envs.register(TERMINATED,
                  lambda: (env := ConstantRewardClock(CLOCK_K, False), env.default_params))


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_rollout_bootstraps_truncation_from_final_observation(clock_envs):
    env, env_params = envs.make(TRUNCATED)
    net = make_network(2, hidden=(8,))
    params = net.init(jax.random.key(1), RESET_OBS)
    value = lambda obs: net.apply(params, obs)[1]
    v_reset, v_final = float(value(RESET_OBS)), float(value(LATER_OBS))
    assert abs(v_reset - v_final) > 1e-2  # a random critic tells the two apart

    num_envs, num_steps = 3, 12
    obs, env_state = jax.vmap(env.reset, (0, None))(
        jax.random.split(jax.random.key(2), num_envs), env_params
    )

    @jax.jit
    def collect(key):
        return rollout(key, params, env_state, obs, None, None, apply_fn=net.apply,
                       policy=make_policy(True, 2), env=env, env_params=env_params,
                       num_steps=num_steps)

    roll = collect(jax.random.key(3))
    last_obs, traj = roll.obs, roll.traj
    truncated = np.asarray(traj.truncated)
    expected = np.zeros((num_steps, num_envs), bool)
    expected[CLOCK_K - 1 :: CLOCK_K] = True  # steps 4 and 9: the 5th step of each episode
    np.testing.assert_array_equal(truncated, expected)
    assert not np.asarray(traj.terminated).any()
    np.testing.assert_array_equal(np.asarray(traj.episode_done), expected)
    np.testing.assert_array_equal(np.asarray(traj.episode_return)[expected], float(CLOCK_K))

    next_value, value_t = np.asarray(traj.next_value), np.asarray(traj.value)
    # at truncation: V(final observation), not V(reset observation), not 0
    np.testing.assert_allclose(next_value[expected], v_final, rtol=1e-6)
    # the step after a truncation starts from the reset observation
    np.testing.assert_array_equal(np.asarray(traj.obs)[CLOCK_K], np.tile(RESET_OBS, (num_envs, 1)))
    np.testing.assert_allclose(value_t[CLOCK_K], v_reset, rtol=1e-6)
    # elsewhere: next_value[t] = value[t + 1]; at the window's end, V of the carried obs
    np.testing.assert_allclose(next_value[:-1][~expected[:-1]], value_t[1:][~expected[:-1]],
                               rtol=1e-6)
    np.testing.assert_allclose(next_value[-1], np.asarray(value(last_obs)), rtol=1e-6)


CLOCK_HP = HParams(lr=1e-2, gamma=0.9)


def _clock_values(env_name: str, algo: str, estimator: str, seeds: int = 2):
    """Train on the clock env; the critic's V(reset obs) and V(later obs) per seed."""
    config = TrainConfig(env=env_name, algo=algo, estimator=estimator, num_envs=8,
                         num_steps=16, total_timesteps=8 * 16 * 250, hidden=(16,))
    state, metrics = run_seeds(config, CLOCK_HP, seeds)
    net = make_network(2, hidden=(16,), q_critic=estimator == "qv")
    pi, critic = jax.vmap(net.apply, (0, None))(state.params, jnp.stack([RESET_OBS, LATER_OBS]))
    if estimator == "qv":  # V(s) = Σ_a π(a|s) Q(s, a)
        critic = jnp.sum(jax.nn.softmax(pi, axis=-1) * critic, axis=-1)
    return np.asarray(critic), metrics


@pytest.mark.parametrize(
    "algo, estimator",
    [("a2c", "td"), ("a2c", "gae"), ("a2c", "nstep"), ("reinforce", "mc"), ("a2c", "qv")],
)
@pytest.mark.fast_compile  # a fixed point (10.0 ± 0.05 measured) against a 0.5 tolerance
def test_critic_bootstraps_through_truncation(clock_envs, algo, estimator):
    """Every estimator, through the trainer, learns V = 1/(1 − γ) = 10 on the clock env.

    Treating the time limit as termination would give ≈ 3.1–3.8 (TD) or less (MC);
    bootstrapping from zero likewise. Measured (2 seeds, 250 updates, lr 1e-2): 10.0 ± 0.05.
    """
    values, metrics = _clock_values(TRUNCATED, algo, estimator)
    np.testing.assert_allclose(values, 1.0 / (1.0 - CLOCK_HP.gamma), atol=0.5)
    np.testing.assert_array_equal(metrics["episode_return"][:, -1], float(CLOCK_K))
    may_be_nan = {"episode_return", "episode_length", "explained_variance"}
    for name, m in metrics.items():
        assert name in may_be_nan or np.isfinite(m).all(), name


@pytest.mark.fast_compile  # a fixed point, as above
def test_truncation_as_termination_control(clock_envs):
    """The same env with the limit as a termination: TD converges to ≈ (3.77, 3.08), not 10,
    so the test above can tell the two apart."""
    values, _ = _clock_values(TERMINATED, "a2c", "td")
    v_later = 1.0 / (1.0 - 0.9 * 0.75)
    np.testing.assert_allclose(values, np.tile([1.0 + 0.9 * v_later, v_later], (2, 1)), atol=0.3)


# ---------------------------------------------------------------- determinism and purity

SMALL = TrainConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 12, hidden=(32, 32))


@pytest.fixture(scope="module")
def small_train():
    """One compile of the small PPO config, single seed, shared by the tests below."""
    return jax.jit(make_train(SMALL))


@pytest.mark.fast_compile
def test_same_key_and_hparams_give_bitwise_identical_results(small_train):
    key, hp = jax.random.key(42), HParams(lr=1e-3)
    first = small_train(key, hp)
    assert_trees_equal(first, small_train(key, hp))
    # and the run is not degenerate: a different key gives different parameters
    other = small_train(jax.random.key(43), hp)
    assert not np.array_equal(other[0].params["params"]["actor_0"]["kernel"],
                              first[0].params["params"]["actor_0"]["kernel"])


@pytest.mark.fast_compile
def test_vmap_over_seeds_matches_each_seed_alone(small_train):
    keys = jax.random.split(jax.random.key(0), 4)
    hp = HParams()
    batched = jax.jit(jax.vmap(make_train(SMALL), (0, None)))(keys, hp)
    for i, key in enumerate(keys):
        single_state, single_metrics = small_train(key, hp)
        row = jax.tree.map(lambda x, i=i: x[i], (batched[0].params, batched[1]))
        chex.assert_trees_all_close(row, (single_state.params, single_metrics),
                                    rtol=1e-5, atol=1e-5)


@pytest.mark.fast_compile
def test_hparam_grid_compiles_once_and_maps_each_row(small_train):
    chex.clear_trace_counter()
    train = chex.assert_max_traces(make_train(SMALL), n=1)
    sweep = jax.jit(jax.vmap(jax.vmap(train, (0, None)), (None, 0)))
    keys = jax.random.split(jax.random.key(0), 2)

    def grid(lrs, ents):  # every leaf gets the sweep axis
        full = jax.tree.map(lambda x: jnp.full(len(lrs), x, jnp.float32), HParams())
        return full.replace(lr=jnp.array(lrs), ent_coef=jnp.array(ents))

    _, metrics = sweep(keys, grid([1e-3, 3e-4, 1e-4], [0.0, 0.01, 0.02]))
    _, again = sweep(keys, grid([2e-3, 5e-4, 5e-5], [0.05, 0.0, 0.0]))  # new values, same shapes
    assert metrics["policy_loss"].shape == again["policy_loss"].shape == (3, 2, SMALL.num_updates)
    # row j of the grid is the run with those hyperparameters (and the default gamma, ...)
    _, one = small_train(keys[1], HParams(lr=3e-4, ent_coef=0.01))
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[1, 1], metrics), one, rtol=1e-5, atol=1e-5)


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_train_returns_state_and_per_update_metrics():
    """``train(key, hp) -> (TrainState, metrics)``: the state ``init`` builds, metrics ``[num_updates]``."""
    trainer = make_trainer(SMALL)
    state = trainer.init(jax.random.key(0), HParams())
    shapes = jax.eval_shape(trainer.train, jax.random.key(0), HParams())
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(state)
    assert set(shapes[1]) >= {"episode_return", "episode_length", "episodes", "env_steps",
                              "policy_loss", "value_loss", "entropy", "approx_kl",
                              "clip_fraction", "explained_variance", "grad_norm", "nonfinite"}
    assert shapes[1]["nonfinite"].dtype == jnp.int32
    assert all(v.shape == (SMALL.num_updates,) for v in shapes[1].values())


# ---------------------------------------------------------------- no hangs

_HANG_SCRIPT = textwrap.dedent(
    """
    import jax
    from jaxadv.engine.train import HParams, TrainConfig, make_train

    config = TrainConfig(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 4)
    train16 = jax.jit(jax.vmap(make_train(config), (0, None)))
    for i in range(5):
        keys = jax.random.split(jax.random.key(i), 16)
        jax.block_until_ready(train16(keys, HParams()))
        print("run", i, "done", flush=True)
    """
)


@pytest.mark.fast_compile
@pytest.mark.timeout(240)
def test_16_seed_vmapped_train_never_hangs():
    """docs/design.md, "Batched LAPACK under vmap": batched LAPACK can deadlock jaxlib 0.10
    on CPU at 0% CPU.

    A 16-seed vmapped train (default (64, 64) orthogonal-initialised networks) runs five
    times in a subprocess; a hang fails the test after the timeout instead of stalling CI.
    """
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    try:
        done = subprocess.run([sys.executable, "-c", _HANG_SCRIPT], capture_output=True,
                              text=True, timeout=150, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"16-seed vmapped train hung; output so far: {e.stdout!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done") == 5


def test_vmapped_train_contains_no_lapack():
    """The whole 16-seed program, init included, lowers without LAPACK custom calls."""
    keys = jax.random.split(jax.random.key(0), 16)
    lowered = jax.jit(jax.vmap(make_train(SMALL), (0, None))).lower(keys, HParams())
    assert "lapack" not in lowered.as_text()


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"env": "CartPole-v2"}, r"`env`.*Did you mean 'CartPole-v1'"),
        ({"env": "cartpole"}, r"`env`"),
        ({"algo": "ppo2"}, r"`algo`.*Did you mean 'ppo'"),
        ({"estimator": "gea"}, r"`estimator`.*Did you mean 'gae'"),
        ({"num_envs": 3, "num_steps": 5, "num_minibatches": 4}, r"`num_minibatches` = 4 must divide.*15"),
        ({"env": "Pendulum-v1", "estimator": "qv"}, r"`estimator` = 'qv'.*`env` = 'Pendulum-v1'"),
        ({"algo": "reinforce", "estimator": "gae", "baseline": False}, r"`estimator` = 'gae'.*`baseline`"),
        ({"algo": "a2c", "baseline": False}, r"`baseline`"),
        ({"num_envs": 4, "num_steps": 128, "total_timesteps": 500}, r"`total_timesteps` = 500.*512"),
        ({"num_envs": 0}, r"`num_envs`"),
        ({"num_steps": 2.5}, r"`num_steps`"),
        ({"update_epochs": True}, r"`update_epochs`"),
        ({"n_step": -1}, r"`n_step`"),
        ({"hidden": ()}, r"`hidden`"),
        ({"hidden": (64, 0)}, r"`hidden`"),
        ({"activation": "gelu"}, r"`activation`"),
        ({"micro_batch_size": 48}, r"`micro_batch_size` = 48 must divide.*128"),
        ({"micro_batch_size": -2}, r"`micro_batch_size`"),
        ({"micro_batch_size": 32, "episodic": True, "num_steps": 500}, r"`micro_batch_size`.*episodic"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_config_defaults_per_algo():
    assert (TrainConfig(algo="ppo").update_epochs, TrainConfig(algo="ppo").num_minibatches) == (4, 4)
    a2c = TrainConfig(algo="a2c")
    assert (a2c.estimator, a2c.update_epochs, a2c.num_minibatches) == ("gae", 1, 1)
    assert TrainConfig(algo="reinforce").estimator == "mc"
    assert TrainConfig(algo="reinforce", baseline=False).estimator == "mc"
    assert TrainConfig(hidden=[8, 8]).hidden == (8, 8)  # lists become hashable tuples
    assert hash(TrainConfig()) == hash(TrainConfig())
    config = TrainConfig(num_envs=4, num_steps=128, total_timesteps=500_000)
    assert (config.batch_size, config.num_updates) == (512, 976)


@pytest.mark.parametrize(
    "field, value", [("lr", 0.0), ("gamma", 1.5), ("gae_lambda", -0.1), ("clip_eps", 0.0),
                     ("ent_coef", -1.0), ("vf_coef", float("nan")), ("max_grad_norm", 0.0)]
)
def test_bad_hparams_raise_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        HParams(**{field: value}).validate()
    # a sweep axis is checked element by element
    with pytest.raises(ValueError, match=f"`{field}`"):
        HParams(**{field: jnp.array([getattr(HParams(), field), value])}).validate()


# --- minibatch permutations -------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 4, 512, 8192, 70_000, 2**18 + 3])
def test_permutations_are_permutations(size):
    """Packed single-operand sorts: key ranks up to 2¹⁶ items, a radix sort beyond. Each row
    is numpy's stable argsort of its 32-bit random keys (ties in index order)."""
    rows = np.asarray(permutations(jax.random.key(1), 2, size))
    keys = np.asarray(jax.random.bits(jax.random.key(1), (2, size), jnp.uint32))
    np.testing.assert_array_equal(rows, np.argsort(keys, axis=1, kind="stable"))
    np.testing.assert_array_equal(np.sort(rows, axis=1), np.broadcast_to(np.arange(size), rows.shape))
    assert size < 4 or not np.array_equal(rows[0], rows[1])


@pytest.mark.parametrize("size", [4, 300])
def test_permutations_are_uniform(size):
    """All 24 orders of the first 4 items are equally likely (chi-square, 24,000 draws)."""
    from scipy import stats

    rows = np.asarray(permutations(jax.random.key(0), 24_000, size))
    first = np.stack([np.argmax(rows == item, axis=1) for item in range(4)], axis=1)  # positions
    # of items 0-3 (for size 4, the inverse permutation: as uniform as the permutation)
    codes = np.argsort(np.argsort(first, axis=1), axis=1) @ np.array([64, 16, 4, 1])
    counts = np.array([np.sum(codes == c) for c in np.unique(codes)])
    assert len(counts) == 24
    assert stats.chisquare(counts).pvalue > 1e-3


# ---------------------------------------------------------------- micro-batched gradients


def _minibatch(config: TrainConfig, hp: HParams):
    """A real first minibatch of ``config`` (one rollout of a fresh run, estimated and
    flattened as ``update`` does) with the setup and raveled parameters."""
    setup = engine.make_setup(config)
    state = engine.init(setup, jax.random.key(5), hp)
    batch = engine.collect(setup, state, hp, jax.random.key(6), (state.env_state, state.obs))
    advantages, targets = engine.estimate(setup, batch.traj, hp)
    data = (batch.traj._replace(extras=None), advantages, targets, None, batch.ref_log_prob)
    mb = config.minibatch_size
    data = jax.tree.map(lambda x: x.reshape(config.batch_size, *x.shape[2:])[:mb], data)
    flat, unravel = jax.flatten_util.ravel_pytree(state.params)
    return setup, flat, unravel, data


@pytest.mark.parametrize("config", [
    TrainConfig(num_envs=8, num_steps=64),  # ppo: clipped losses, advantages normalised per minibatch
    TrainConfig(algo="a2c", env="Pendulum-v1", num_envs=8, num_steps=32, normalize_advantages=True),
    TrainConfig(estimator="qv", num_envs=8, num_steps=64, kl="loss"),
])
@pytest.mark.fast_compile
def test_micro_batched_gradient_equals_the_whole_minibatch_gradient(config):
    """Summing gradients over 8 micro-batches after standardising the advantages over the
    whole minibatch gives jax.grad of the whole minibatch's loss, up to float reassociation."""
    hp = HParams()
    setup, flat, unravel, data = _minibatch(config, hp)
    loss = lambda p, batch, normalize: engine.loss_fn(setup, unravel(p), batch, hp,
                                                      normalize=normalize)
    (whole_loss, whole_metrics), whole = jax.jit(jax.value_and_grad(
        lambda p: loss(p, data, None), has_aux=True))(flat)
    micro = config.minibatch_size // 8
    (total, metrics), grads = jax.jit(lambda p: engine.minibatch_gradient(
        dataclasses.replace(setup, micro_batch=micro), loss, p, data))(flat)
    assert np.linalg.norm(whole) > 1e-3
    np.testing.assert_allclose(grads, whole, rtol=2e-4, atol=2e-6 * np.abs(whole).max())
    np.testing.assert_allclose(total, whole_loss, rtol=1e-5, atol=1e-7)
    for name in whole_metrics:
        np.testing.assert_allclose(metrics[name], whole_metrics[name], rtol=1e-4, atol=1e-7)


def test_micro_batch_size_is_automatic_on_cpu_only():
    big = TrainConfig(num_envs=2048, num_steps=16)  # minibatches of 8192 samples
    assert engine.micro_batch_size(big, "cpu") == engine.AUTO_MICRO_BATCH == 2048
    assert engine.micro_batch_size(big, "gpu") == 0
    assert engine.micro_batch_size(TrainConfig(), "cpu") == 0  # 128 samples: whole
    assert engine.micro_batch_size(TrainConfig(num_envs=24, num_steps=1000), "cpu") == 0  # 6000: no 2048 divisor
    assert engine.micro_batch_size(big.replace(micro_batch_size=0), "cpu") == 0
    assert engine.micro_batch_size(big.replace(micro_batch_size=512), "gpu") == 512
