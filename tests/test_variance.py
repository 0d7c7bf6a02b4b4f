"""Estimator bias and variance: the statistics on synthetic samples, the tabular env, and the
estimators against exact and closed-form gradients on random MDPs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.engine.rollout import make_policy
from jaxadv.envs import make
from jaxadv.science import exact, variance

pytestmark = pytest.mark.fast_compile  # estimators against exact gradients (conftest.py)

# ------------------------------------------------------------------ statistics


def _gaussian_samples(rng, m, mean, cov):
    return mean + rng.normal(size=(m, len(mean))) @ np.linalg.cholesky(cov).T


def test_statistics_recover_known_mean_and_covariance():
    rng = np.random.default_rng(0)
    d = 6
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + 0.1 * np.eye(d)
    g = rng.normal(size=d)
    mean = g + 0.5 * rng.normal(size=d)
    s = variance.gradient_statistics(_gaussian_samples(rng, 40000, mean, cov), g)
    bias = np.linalg.norm(mean - g)
    assert s["bias"] == pytest.approx(bias, rel=0.03)
    assert s["bias_lo"] <= bias <= s["bias_hi"]
    assert s["rel_bias"] == pytest.approx(bias / np.linalg.norm(g), rel=0.03)
    assert s["variance"] == pytest.approx(np.trace(cov), rel=0.03)
    assert s["mse"] == pytest.approx(bias**2 + np.trace(cov), rel=0.03)
    assert s["snr"] == pytest.approx(mean @ mean / np.trace(cov), rel=0.05)
    # ⟨ĝ, g⟩ ~ N(⟨μ, g⟩, gᵀΣg): P(ascent) = Φ(⟨μ, g⟩ / √(gᵀΣg))
    p = 0.5 * (1 + math.erf(mean @ g / math.sqrt(2 * g @ cov @ g)))
    assert s["p_ascent"] == pytest.approx(p, abs=0.01)


def test_cosines_match_a_plain_loop():
    rng = np.random.default_rng(1)
    x, g = rng.normal(size=(7, 4)) + 0.5, rng.normal(size=4)
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)
    s = variance.gradient_statistics(x, g)
    assert s["cosine"] == pytest.approx(np.mean([cos(u, g) for u in x]))
    pairs = [cos(x[i], x[j]) for i in range(7) for j in range(7) if i != j]
    assert s["pairwise_cosine"] == pytest.approx(np.mean(pairs))
    assert s["mse"] == pytest.approx(np.mean([np.sum((u - g) ** 2) for u in x]))


def test_bias_interval_has_its_coverage_and_detects_bias():
    rng = np.random.default_rng(2)
    d, m = 40, 60
    scale = np.sqrt(np.linspace(0.5, 2.0, d))
    g = np.ones(d)
    b = np.full(d, 0.9 * np.sqrt(np.sum(scale**2) / m / d))  # ‖b‖ ≈ 3 × its standard error
    stats = lambda mean: variance.gradient_statistics(mean + scale * rng.normal(size=(m, d)), g)
    covered, zero_covered = [], []
    for _ in range(300):
        s = stats(g + b)
        covered.append(s["bias_lo"] <= np.linalg.norm(b) <= s["bias_hi"])
        zero_covered.append(stats(g)["bias_lo"] == 0.0)
    assert 0.9 <= np.mean(covered) <= 0.99  # nominal 0.95
    assert np.mean(zero_covered) >= 0.95  # a one-sided false alarm: nominally 2.5 %
    assert np.mean([stats(g + 2 * b)["bias_lo"] > 0 for _ in range(100)]) > 0.9


def test_statistics_reject_bad_shapes():
    with pytest.raises(ValueError, match="estimates"):
        variance.gradient_statistics(np.zeros((5, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="at least 3"):
        variance.gradient_statistics(np.zeros((2, 3)), np.zeros(3))


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    "text, expected",
    [
        ("return", variance.EstimatorSpec("return")),
        ("mc", variance.EstimatorSpec("mc")),
        ("mcb", variance.EstimatorSpec("mc")),  # the older spelling of mc
        ("td:unweighted", variance.EstimatorSpec("td", None, False)),
        ("nstep:5", variance.EstimatorSpec("nstep", 5)),
        ("gae:0.95", variance.EstimatorSpec("gae", 0.95)),
        ("gae:1:unweighted", variance.EstimatorSpec("gae", 1.0, False)),
    ],
)
def test_parse_estimator_round_trips(text, expected):
    assert variance.parse_estimator(text) == expected
    assert variance.parse_estimator(expected.label) == expected


@pytest.mark.parametrize("text", ["gae", "gae:1.5", "nstep:0", "nstep:x", "mc:3", "return:1", "vtrace", "td:0.9"])
def test_parse_estimator_rejects(text):
    with pytest.raises(ValueError, match="estimator"):
        variance.parse_estimator(text)


@pytest.mark.parametrize("text", ["noisy", "noisy:-1", "fitted:0", "fitted:x", "exact:1", "perfect"])
def test_parse_critic_rejects(text):
    with pytest.raises(ValueError, match="critic"):
        variance.parse_critic(text)


# ------------------------------------------------------------------ tabular environment


def test_tabular_env_samples_the_mdp():
    mdp = exact.random_mdp(jax.random.key(5), 3, 2, termination=0.25)
    env, params = make("Tabular-v0", mdp=mdp, max_steps=1000)
    _, state = env.reset(jax.random.key(0), params)
    n = 20000
    step = jax.jit(jax.vmap(lambda k, s: env.step(k, s, 1, params), in_axes=(0, None)))
    in_state_1 = state._replace(env_state=state.env_state.replace(state=jnp.int32(1)))
    _, _, reward, terminated, truncated, info = step(jax.random.split(jax.random.key(1), n), in_state_1)
    np.testing.assert_allclose(reward, float(mdp.rewards[1, 1]), rtol=1e-6)
    assert not truncated.any()
    p = np.asarray(mdp.transitions[1, 1])
    assert terminated.mean() == pytest.approx(1 - p.sum(), abs=0.015)
    final = np.asarray(info["final_observation"])[~np.asarray(terminated)].argmax(-1)
    freq = np.bincount(final, minlength=3) / n
    np.testing.assert_allclose(freq, p, atol=0.015)


def test_tabular_env_returns_match_exact_objective():
    """Mean discounted return of sampled episodes ≈ μᵀV^π (closes the loop env ↔ exact)."""
    mdp = exact.random_mdp(jax.random.key(6), 4, 3, termination=0.2)
    logits = jax.random.normal(jax.random.key(7), (4, 3))
    horizon = variance.default_horizon(mdp)
    env, params = make("Tabular-v0", mdp=mdp, max_steps=horizon)
    from jaxadv.engine.rollout import rollout

    n = 4000
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(8), n), params)
    apply = lambda p, x: (x @ p, jnp.zeros(x.shape[:-1]))
    traj = jax.jit(
        lambda: rollout(jax.random.key(9), logits, state, obs, None, None, apply_fn=apply,
                        policy=make_policy(True, 3), env=env, env_params=params, num_steps=horizon)
    )().traj
    done = np.asarray(traj.episode_done, np.float64)
    alive = np.cumprod(np.concatenate([np.ones((1, n)), 1 - done[:-1]]), axis=0)
    returns = np.sum(alive * mdp.gamma ** np.arange(horizon)[:, None] * np.asarray(traj.reward), axis=0)
    se = returns.std() / math.sqrt(n)
    assert abs(returns.mean() - float(exact.objective(mdp, logits))) < 4 * se


def test_tabular_env_truncates_and_validates():
    env, params = make("Tabular-v0", mdp=exact.chain_mdp(5), max_steps=2)
    _, state = env.reset(jax.random.key(0), params)
    for t in range(2):
        _, state, _, terminated, truncated, _ = env.step(jax.random.key(t), state, 1, params)
    assert bool(truncated) and not bool(terminated)
    with pytest.raises(ValueError, match="max_steps"):
        make("Tabular-v0", mdp=exact.chain_mdp(5), max_steps=0)


# ------------------------------------------------------------------ estimators vs exact gradients


@pytest.fixture(scope="module")
def random_case():
    mdp = exact.random_mdp(jax.random.key(3), 6, 3, termination=0.1)
    logits = jax.random.normal(jax.random.key(4), (6, 3))
    return mdp, logits


@pytest.fixture(scope="module")
def report(random_case):
    mdp, logits = random_case
    return variance.mdp_report(
        jax.random.key(0), mdp, logits,
        estimators=["return", "mc", "td", "nstep:3", "gae:0.5", "gae:0.9", "gae:1", "gae:0.9:unweighted"],
        batch_sizes=[4, 16], critics=["exact", "zero", "fitted:2000"], num_batches=300, confidence=0.99,
    )


def _row(rows, critic, estimator, n=16):
    (row,) = [r for r in rows if (r["critic"], r["estimator"], r["batch_size"]) == (critic, estimator, n)]
    return row


def test_every_weighted_estimator_is_unbiased_with_the_exact_critic(report):
    rows, info = report
    for r in rows:
        if r["critic"] == "exact" and not r["estimator"].endswith("unweighted"):
            assert r["bias_lo"] == 0.0, r
    assert info["critic_relative_error"]["exact"] == 0.0


def test_zero_critic_keeps_monte_carlo_unbiased_but_not_td(report):
    rows, _ = report
    assert _row(rows, "zero", "return")["bias_lo"] == 0.0
    assert _row(rows, "zero", "mc")["bias_lo"] == 0.0
    td = _row(rows, "zero", "td")
    assert td["bias_lo"] > 0.0 and td["rel_bias"] > 0.05


def test_fitted_critic_approaches_the_exact_one(report):
    _, info = report
    assert info["critic_relative_error"]["fitted:2000"] < 0.1


def test_variance_falls_as_one_over_batch_size(report):
    rows, _ = report
    for est in ("return", "td", "gae:0.9"):
        ratio = _row(rows, "exact", est, 4)["variance"] / _row(rows, "exact", est, 16)["variance"]
        assert 3.0 < ratio < 5.3, (est, ratio)
    steps4, steps16 = _row(rows, "exact", "return", 4)["env_steps"], _row(rows, "exact", "return", 16)["env_steps"]
    assert steps16 == pytest.approx(4 * steps4, rel=0.15)


def test_unweighted_estimator_matches_its_closed_form_not_the_gradient(random_case, report):
    """Without γ^t the estimator's mean is Σ_{t<H} Σ_s Pr(s_t = s) Σ_a π ∇log π (Q − V)."""
    mdp, logits = random_case
    rows, info = report
    p = np.asarray(mdp.transitions, np.float64)
    pi = np.asarray(jax.nn.softmax(logits), np.float64)
    v, q = (np.asarray(x, np.float64) for x in exact.values(mdp, logits))
    p_pi = np.einsum("sa,sat->st", pi, p)
    occupancy, d = np.asarray(mdp.initial, np.float64), np.zeros(len(v))
    for _ in range(info["horizon"]):
        d, occupancy = d + occupancy, occupancy @ p_pi
    expected = d[:, None] * pi * (q - v[:, None])
    samples = _samples(mdp, logits, info["horizon"], ["gae:0.9:unweighted"])
    against_closed = variance.gradient_statistics(samples, expected.reshape(-1), confidence=0.99)
    assert against_closed["bias_lo"] == 0.0
    assert _row(rows, "exact", "gae:0.9:unweighted")["bias_lo"] > 0.0


def _samples(mdp, logits, horizon, estimators):
    env, params = make("Tabular-v0", mdp=mdp, max_steps=horizon)
    policy_fn, critic_fn = (lambda l, x: x @ l), (lambda v, x: x @ v)
    v = exact.values(mdp, logits)[0]
    out = jax.jit(lambda: variance.sample_gradients(
        jax.random.key(11), logits, v, policy_fn=policy_fn, critic_fn=critic_fn,
        policy=make_policy(True, logits.shape[1]), env=env, env_params=params, horizon=horizon,
        gamma=mdp.gamma, estimators=[variance.parse_estimator(e) for e in estimators],
        batch_sizes=(16,), num_batches=300))()
    return np.asarray(out.estimates[0, 0])


def test_baseline_cuts_monte_carlo_variance_under_a_reward_offset():
    mdp = exact.random_mdp(jax.random.key(12), 5, 3, termination=0.1, reward_offset=5.0)
    logits = jax.random.normal(jax.random.key(13), (5, 3))
    rows, _ = variance.mdp_report(jax.random.key(1), mdp, logits, estimators=["return", "mc"],
                                  batch_sizes=[8], critics=["exact"], num_batches=100)
    plain, baselined = _row(rows, "exact", "return", 8), _row(rows, "exact", "mc", 8)
    assert plain["variance"] > 3 * baselined["variance"]  # measured 4.7x
    assert plain["mse"] > 3 * baselined["mse"]


def test_network_report_reference_agrees_with_exact_gradient(random_case):
    """The large-batch reference of :func:`network_report` lies within its stated error of g."""
    mdp, logits = random_case
    horizon = variance.default_horizon(mdp)
    env, params = make("Tabular-v0", mdp=mdp, max_steps=horizon)
    rows, info = variance.network_report(
        jax.random.key(2), logits, policy_fn=lambda l, x: x @ l, critic_fn=lambda v, x: x @ v,
        critic_params=jnp.zeros(6), env=env, env_params=params, policy=make_policy(True, 3),
        gamma=mdp.gamma, horizon=horizon, estimators=["return", "td"], batch_sizes=[8],
        num_batches=50, reference_factor=50,
    )
    g = np.asarray(exact.policy_gradient(mdp, logits)).reshape(-1)
    assert info["reference_trajectories"] >= 50 * 8
    error = np.linalg.norm(info["reference"] - g)
    assert 0.2 * info["reference_error"] < error < 3 * info["reference_error"]
    plain = next(r for r in rows if r["estimator"] == "return")
    assert plain["bias_lo"] == 0.0


def test_train_state_report_sees_observations_normalised_by_the_runs_statistics():
    """``obs_stats``: the estimates equal :func:`network_report`'s for a policy and critic
    that normalise their own input (the run's network as it acted), and differ without."""
    from jaxadv.engine.train import HParams, TrainConfig, make_trainer
    from jaxadv.envs import RunningMeanStd, normalize_obs

    trainer = make_trainer(TrainConfig(normalize_obs=True, hidden=(8,), num_envs=2, num_steps=8,
                                       total_timesteps=16))
    params = jax.jit(trainer.init)(jax.random.key(0), HParams()).params
    stats = RunningMeanStd(mean=jnp.array([0.1, -0.2, 0.05, 0.3]), var=jnp.array([0.5, 2.0, 0.1, 1.5]),
                           count=jnp.array(10.0))
    common = dict(gamma=0.99, estimators=["mc", "td"], batch_sizes=[4], num_batches=4,
                  reference_factor=2, horizon=30)
    rows, info = variance.train_state_report(jax.random.key(1), trainer, params, obs_stats=stats, **common)
    apply = lambda p, x: trainer.network.apply(p, normalize_obs(stats, x))
    want, want_info = variance.network_report(
        jax.random.key(1), params, policy_fn=lambda p, x: apply(p, x)[0],
        critic_fn=lambda p, x: apply(p, x)[1], critic_params=params, env=trainer.env,
        env_params=trainer.env_params, policy=trainer.policy, **common)
    np.testing.assert_allclose(info["reference"], want_info["reference"], rtol=1e-4, atol=1e-6)
    for mine, theirs in zip(rows, want, strict=True):
        assert mine["variance"] == pytest.approx(theirs["variance"], rel=1e-4)
        assert mine["bias_sq"] == pytest.approx(theirs["bias_sq"], rel=1e-3, abs=1e-6)
    raw, _ = variance.train_state_report(jax.random.key(1), trainer, params, obs_stats=RunningMeanStd(
        jnp.zeros(4), jnp.ones(4), jnp.array(1.0)), **common)
    assert raw[0]["variance"] != pytest.approx(rows[0]["variance"], rel=1e-3)
