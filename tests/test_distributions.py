"""Tests for jaxadv.distributions: distrax as the oracle, plus hand-worked cases.

Speed: eager JAX compiles every primitive for every new shape, so random parameters come
from numpy and each check runs as one jitted function (one compile) where it can. The
eager path is covered by the doctests, which call every function with values.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import distributions as dist
from jaxadv.distributions import (
    categorical_entropy,
    categorical_kl,
    categorical_log_prob,
    categorical_sample,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    gaussian_sample,
)

pytestmark = pytest.mark.fast_compile  # checks against references and mechanics (conftest.py)

BATCH_SHAPES = [(), (5,), (3, 4)]
NUM_ACTIONS = 6
ACTION_DIM = 3
RTOL, ATOL = 1e-5, 1e-6
LOG_2PI = np.log(2 * np.pi)


def _categorical_params(seed, batch_shape, num_actions=NUM_ACTIONS):
    rng = np.random.default_rng(seed)
    shape = (*batch_shape, num_actions)
    logits_p = (2.0 * rng.standard_normal(shape)).astype(np.float32)
    logits_q = (2.0 * rng.standard_normal(shape)).astype(np.float32)
    actions = rng.integers(0, num_actions, batch_shape).astype(np.int32)
    return logits_p, logits_q, actions


def _gaussian_params(seed, batch_shape, dim=ACTION_DIM):
    rng = np.random.default_rng(seed)
    shape = (*batch_shape, dim)
    mean_p, mean_q = rng.standard_normal((2, *shape)).astype(np.float32)
    log_std_p, log_std_q = (0.5 * rng.standard_normal((2, *shape))).astype(np.float32)
    actions = (mean_p + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    return mean_p, log_std_p, mean_q, log_std_q, actions


# --------------------------------------------------------------------------------------
# Oracle: distrax
# --------------------------------------------------------------------------------------


@jax.jit
def _categorical_vs_distrax(logits_p, logits_q, actions):
    p, q = distrax.Categorical(logits=logits_p), distrax.Categorical(logits=logits_q)
    ours = (
        categorical_log_prob(logits_p, actions),
        categorical_entropy(logits_p),
        categorical_kl(logits_p, logits_q),
    )
    return ours, (p.log_prob(actions), p.entropy(), p.kl_divergence(q))


@jax.jit
def _gaussian_vs_distrax(mean_p, log_std_p, mean_q, log_std_q, actions):
    p = distrax.MultivariateNormalDiag(mean_p, jnp.exp(log_std_p))
    q = distrax.MultivariateNormalDiag(mean_q, jnp.exp(log_std_q))
    ours = (
        gaussian_log_prob(mean_p, log_std_p, actions),
        gaussian_entropy(log_std_p),
        gaussian_kl(mean_p, log_std_p, mean_q, log_std_q),
    )
    return ours, (p.log_prob(actions), p.entropy(), p.kl_divergence(q))


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_categorical_matches_distrax(batch_shape):
    ours, theirs = _categorical_vs_distrax(*_categorical_params(0, batch_shape))
    for name, a, b in zip(("log_prob", "entropy", "kl"), ours, theirs):
        assert a.shape == batch_shape, name
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_gaussian_matches_distrax(batch_shape):
    ours, theirs = _gaussian_vs_distrax(*_gaussian_params(1, batch_shape))
    for name, a, b in zip(("log_prob", "entropy", "kl"), ours, theirs):
        assert a.shape == batch_shape, name
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=name)


def test_gaussian_kl_of_identical_is_zero_and_small_kl_is_precise():
    mean, log_std, _, _, _ = _gaussian_params(2, (4,))
    eps = np.float32(1e-3)
    same, near = jax.jit(
        lambda m, s: (gaussian_kl(m, s, m, s), gaussian_kl(m, s + eps, m + eps, s))
    )(mean, log_std)
    np.testing.assert_array_equal(same, np.zeros(4))
    # Nearly equal distributions (KL ~ 1e-6): the float64 closed form as reference.
    s = log_std.astype(np.float64)
    sp, sq = np.exp(s + 1e-3), np.exp(s)
    ref = np.sum(np.log(sq / sp) + (sp**2 + 1e-6) / (2 * sq**2) - 0.5, axis=-1)
    np.testing.assert_allclose(near, ref, rtol=1e-3)


# --------------------------------------------------------------------------------------
# Hand-worked cases (eager)
# --------------------------------------------------------------------------------------


def _hand_worked(quarter_logits, zero, one):
    return [
        categorical_log_prob(quarter_logits, jnp.zeros(1, jnp.int32)),
        categorical_entropy(quarter_logits),
        categorical_kl(jnp.zeros_like(quarter_logits), quarter_logits),
        gaussian_log_prob(zero, zero, one),
        gaussian_log_prob(zero, one, zero),
        gaussian_entropy(one),
        gaussian_kl(zero, one, zero, zero),
    ]


def test_hand_worked_values():
    expected = [
        np.log(0.25),  # p = (¼, ¾): log p₀
        -0.25 * np.log(0.25) - 0.75 * np.log(0.75),  # H(p) ≈ 0.562335
        0.5 * np.log(2) + 0.5 * np.log(2 / 3),  # KL((½, ½) ‖ (¼, ¾)) ≈ 0.143841
        -0.5 - 0.5 * LOG_2PI,  # N(0, 1) at a = 1
        -1.0 - 0.5 * LOG_2PI,  # N(0, e²) at its mean
        1.5 + 0.5 * LOG_2PI,  # H(N(0, e²)) = 1 + ½ log 2πe
        np.e**2 / 2 - 1.5,  # KL(N(0, e²) ‖ N(0, 1)) = −1 + e²/2 − ½
    ]
    args = (
        np.log([[0.25, 0.75]]).astype(np.float32),
        np.zeros((1, 1), np.float32),
        np.ones((1, 1), np.float32),
    )
    for i, (got, want) in enumerate(zip(jax.jit(_hand_worked)(*args), expected)):
        assert got.shape == (1,), i
        np.testing.assert_allclose(got, [want], rtol=1e-6, err_msg=str(i))


# --------------------------------------------------------------------------------------
# Masked actions (−inf logits)
# --------------------------------------------------------------------------------------


def _entropy_and_grad(logits):
    return categorical_entropy(logits), jax.grad(lambda x: categorical_entropy(x).sum())(logits)


def test_entropy_with_masked_actions_is_finite_and_ignores_them():
    inf = np.inf
    logits = np.array(
        [[0.3, -inf, 1.2, -inf, -0.5], [-inf, 2.0, -inf, 0.0, 1.0], [-inf, 0.7, -inf, -inf, -inf]],
        np.float32,
    )
    kept = logits[np.isfinite(logits)]
    entropy, grad = jax.jit(_entropy_and_grad)(logits)
    assert np.all(np.isfinite(entropy)) and np.all(np.isfinite(grad))

    # Reference: the entropy (and its gradient) over the unmasked actions only.
    ref = [jax.jit(_entropy_and_grad)(kept[:3]), jax.jit(_entropy_and_grad)(kept[3:6])]
    np.testing.assert_allclose(entropy[:2], [r[0] for r in ref], rtol=RTOL)
    np.testing.assert_allclose(entropy[2], 0.0, atol=1e-7)  # one action left: deterministic
    p = np.exp(kept[:3] - np.log(np.sum(np.exp(kept[:3].astype(np.float64)))))
    np.testing.assert_allclose(entropy[0], -np.sum(p * np.log(p)), rtol=RTOL)
    np.testing.assert_array_equal(grad[~np.isfinite(logits)], 0.0)
    np.testing.assert_allclose(
        grad[np.isfinite(logits)], np.concatenate([ref[0][1], ref[1][1], [0.0]]), atol=1e-6
    )


def test_kl_with_masked_actions():
    inf = np.inf
    logits_p = np.array([0.5, -inf, 1.0, -inf], np.float32)
    logits_q = np.array([0.0, -inf, -1.0, 2.0], np.float32)  # action 1 masked in both
    kl, grads, kl_inf = jax.jit(
        lambda a, b: (
            categorical_kl(a, b),
            jax.grad(categorical_kl, argnums=(0, 1))(a, b),
            categorical_kl(jnp.zeros(2), jnp.array([0.0, -jnp.inf])),
        )
    )(logits_p, logits_q)
    # Σ over p's support {0, 2} only: p = softmax(0.5, 1.0), log q from the float64 softmax.
    logit_q64 = logits_q.astype(np.float64)
    log_q = logit_q64 - np.log(np.sum(np.exp(logit_q64[[0, 2, 3]])))
    log_p = np.array([0.5, 1.0]) - np.log(np.exp(0.5) + np.exp(1.0))
    ref = np.sum(np.exp(log_p) * (log_p - log_q[[0, 2]]))
    assert np.isfinite(kl)
    np.testing.assert_allclose(kl, ref, rtol=RTOL)
    assert all(np.all(np.isfinite(g)) for g in grads)
    # q rules out an action that p can take: the divergence is infinite.
    assert kl_inf == np.inf


def test_log_prob_of_masked_and_out_of_range_actions():
    logits = jnp.array([[0.0, -jnp.inf, 1.0]] * 4)
    log_prob = categorical_log_prob(logits, jnp.array([1, 3, -1, 2]))
    assert log_prob[0] == -np.inf
    assert np.isnan(log_prob[1]) and np.isnan(log_prob[2])  # no silent wrap-around
    np.testing.assert_allclose(log_prob[3], -np.log1p(np.exp(-1.0)), rtol=1e-6)


# --------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_shape", [(), (3, 4)])
def test_log_prob_gradient_is_onehot_minus_softmax(batch_shape):
    logits, _, actions = _categorical_params(3, batch_shape)
    grad = jax.jit(jax.grad(lambda x, a: categorical_log_prob(x, a).sum()))(logits, actions)
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    expected = np.eye(NUM_ACTIONS)[actions] - softmax
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_gaussian_log_prob_gradient():
    mean, log_std, _, _, actions = _gaussian_params(4, (5,))
    g_mean, g_log_std = jax.jit(
        jax.grad(lambda m, s, a: gaussian_log_prob(m, s, a).sum(), argnums=(0, 1))
    )(mean, log_std, actions)
    # ∂/∂μ = z / σ,  ∂/∂ log σ = z² − 1,  with z = (a − μ) / σ.
    z = (actions - mean) / np.exp(log_std)
    np.testing.assert_allclose(g_mean, z / np.exp(log_std), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_log_std, z**2 - 1.0, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------

NUM_SAMPLES = 20_000


def test_categorical_sample_frequencies_match_softmax():
    logits = np.array([1.0, -0.5, 0.0, 2.0, -np.inf], np.float32)
    keys = jax.random.split(jax.random.key(5), NUM_SAMPLES)
    actions = jax.jit(jax.vmap(categorical_sample, in_axes=(0, None)))(keys, logits)
    assert actions.shape == (NUM_SAMPLES,) and actions.dtype == jnp.int32
    counts = np.bincount(np.asarray(actions), minlength=logits.shape[0])
    assert counts[4] == 0  # the masked action is never drawn
    probs = np.exp(logits[:4].astype(np.float64))
    expected = NUM_SAMPLES * probs / probs.sum()
    chi2 = np.sum((counts[:4] - expected) ** 2 / expected)
    assert chi2 < 25.0, (chi2, counts, expected)  # 3 dof: P(χ² > 25) ≈ 2e-5


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_samples_are_the_jax_random_draws(shape):
    # Flat noise, reshaped, is the same bits as jax.random's shaped noise (threefry key).
    logits, _, _ = _categorical_params(16, shape[:-1], num_actions=shape[-1])
    key = jax.random.key(16)
    ours = jax.jit(lambda k, x: (categorical_sample(k, x), gaussian_sample(k, x, 0.5 * x)))
    theirs = jax.jit(
        lambda k, x: (
            jax.random.categorical(k, x),
            x + jnp.exp(0.5 * x) * jax.random.normal(k, x.shape),
        )
    )
    (cat, gauss), (cat_ref, gauss_ref) = ours(key, logits), theirs(key, logits)
    np.testing.assert_array_equal(cat, cat_ref)
    np.testing.assert_allclose(gauss, gauss_ref, rtol=1e-6)


def test_categorical_sample_batched_with_one_key():
    inf = np.inf
    logits = np.broadcast_to(
        np.array([[0.0, -inf, -inf], [-inf, -inf, 0.0]], np.float32), (7, 2, 3)
    )
    actions = jax.jit(categorical_sample)(jax.random.key(6), logits)
    assert actions.shape == (7, 2) and actions.dtype == jnp.int32
    np.testing.assert_array_equal(actions, np.broadcast_to([0, 2], (7, 2)))


def test_gaussian_sample_moments():
    mean = np.array([2.0, -1.0, 0.5], np.float32)
    log_std = np.array([0.0, -1.0, 0.7], np.float32)
    keys = jax.random.split(jax.random.key(7), NUM_SAMPLES)
    samples = jax.jit(jax.vmap(gaussian_sample, in_axes=(0, None, None)))(keys, mean, log_std)
    assert samples.shape == (NUM_SAMPLES, 3) and samples.dtype == jnp.float32
    samples, std = np.asarray(samples, np.float64), np.exp(log_std.astype(np.float64))
    # 5 standard errors: σ/√N for the mean, ≈ 1/√(2N) for the relative std.
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * std / np.sqrt(NUM_SAMPLES))
    np.testing.assert_array_less(np.abs(samples.std(0) / std - 1.0), 5 / np.sqrt(2 * NUM_SAMPLES))


@jax.jit
def _draw(key, logits, mean, log_std):
    return categorical_sample(key, logits), gaussian_sample(key, mean, log_std)


def test_same_key_same_sample_and_different_keys_differ():
    logits, mean, log_std = _categorical_params(8, (16,))[0], *_gaussian_params(8, (4,))[:2]
    key_a, key_b = jax.random.key(8), jax.random.key(9)
    (cat_a, gauss_a), (cat_a2, gauss_a2) = (_draw(key_a, logits, mean, log_std) for _ in "ab")
    cat_b, gauss_b = _draw(key_b, logits, mean, log_std)
    np.testing.assert_array_equal(cat_a, cat_a2)
    np.testing.assert_array_equal(gauss_a, gauss_a2)
    assert np.any(cat_a != cat_b) and np.any(gauss_a != gauss_b)


def test_gaussian_sample_with_broadcast_state_independent_log_std():
    log_std = np.array([0.0, -30.0], np.float32)  # a [D] parameter, broadcast by the caller
    samples = jax.jit(lambda key, m, s: gaussian_sample(key, m, jnp.broadcast_to(s, m.shape)))(
        jax.random.key(9), np.zeros((4, 2), np.float32), log_std
    )
    assert samples.shape == (4, 2)
    np.testing.assert_allclose(samples[:, 1], 0.0, atol=1e-10)  # σ = e⁻³⁰


# --------------------------------------------------------------------------------------
# jit and vmap
# --------------------------------------------------------------------------------------

_FUNCTIONS = (
    categorical_log_prob,
    categorical_entropy,
    categorical_kl,
    gaussian_log_prob,
    gaussian_entropy,
    gaussian_kl,
    categorical_sample,
    gaussian_sample,
)


def _apply_all(args):
    return [fn(*a) for fn, a in zip(_FUNCTIONS, args)]


def test_vmap_agrees_with_the_batched_call():
    batch = 4
    logits_p, logits_q, actions = _categorical_params(10, (batch, 16))
    mean_p, log_std_p, mean_q, log_std_q, a = _gaussian_params(11, (batch, 4))
    keys = jax.random.split(jax.random.key(12), batch)
    args = [
        (logits_p, actions),
        (logits_p,),
        (logits_p, logits_q),
        (mean_p, log_std_p, a),
        (log_std_p,),
        (mean_p, log_std_p, mean_q, log_std_q),
        (keys, logits_p),
        (keys, mean_p, log_std_p),
    ]
    batched = jax.jit(_apply_all)(args[:6])  # non-sampling functions take the batch directly
    vmapped = jax.jit(jax.vmap(_apply_all))(args)  # every function, one row at a time
    for fn, x, y in zip(_FUNCTIONS, batched, vmapped):
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=fn.__name__)
    # Row i of a vmapped sample uses key i: the same draw as that row on its own.
    cat, gauss = _draw(keys[2], logits_p[2], mean_p[2], log_std_p[2])
    np.testing.assert_array_equal(cat, vmapped[6][2])
    np.testing.assert_allclose(gauss, vmapped[7][2], rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------
# Shape and dtype contract
# --------------------------------------------------------------------------------------

_L = np.zeros((3, 4), np.float32)
_M = np.zeros((3, 2), np.float32)
_S = np.zeros((), np.float32)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda key: categorical_sample(key, _S), "logits"),
        (lambda key: categorical_log_prob(_S, np.int32(0)), "logits"),
        (lambda key: categorical_log_prob(_L, np.zeros(4, np.int32)), "actions"),
        (lambda key: categorical_log_prob(_L, np.zeros((3, 1), np.int32)), "actions"),
        (lambda key: categorical_log_prob(_L, np.zeros(3, np.float32)), "actions"),
        (lambda key: categorical_entropy(_S), "logits"),
        (lambda key: categorical_kl(_L, np.zeros((3, 5), np.float32)), "logits_q"),
        (lambda key: categorical_kl(_S, _S), "logits_p"),
        (lambda key: gaussian_sample(key, _M, np.zeros(2, np.float32)), "log_std"),
        (lambda key: gaussian_sample(key, _S, _S), "mean"),
        (lambda key: gaussian_log_prob(_M, np.zeros(2, np.float32), _M), "log_std"),
        (lambda key: gaussian_log_prob(_M, _M, np.zeros(3, np.float32)), "actions"),
        (lambda key: gaussian_entropy(_S), "log_std"),
        (lambda key: gaussian_kl(_M, _M, np.zeros((3, 3), np.float32), _M), "mean_q"),
        (lambda key: gaussian_kl(_M, _M, _M, np.zeros(2, np.float32)), "log_std_q"),
        (lambda key: gaussian_kl(_M, np.zeros((2, 3), np.float32), _M, _M), "log_std_p"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        jax.jit(call)(jax.random.key(0))  # raised at trace time: nothing is compiled


def test_bad_shapes_raise_eagerly_too():
    with pytest.raises(ValueError, match=r"actions must have shape logits.shape\[:-1\]"):
        categorical_log_prob(_L, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match=r"log_std must have the same shape as mean"):
        gaussian_log_prob(_M, np.zeros(2, np.float32), _M)


def test_public_names_have_docstrings_with_examples():
    assert dist.__doc__
    for name in dist.__all__:
        doc = getattr(dist, name).__doc__
        assert doc and ">>>" in doc, name
