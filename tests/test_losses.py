"""Tests for jaxadv.losses against independent numpy oracles.

Oracles: plain Python loops for the masked means, hand-derived softmax-policy
gradients (∇_logits log softmax(z)[a] = onehot(a) − π), numpy forms of the
clipped objectives and their derivatives, closed-form KL between categoricals.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import losses
from jaxadv.losses import (
    entropy_bonus,
    kl_penalty,
    masked_mean,
    policy_gradient_loss,
    ppo_clip_loss,
    value_loss,
)

pytestmark = pytest.mark.fast_compile  # checks against references and mechanics (conftest.py)

REDUCTIONS = ("token", "sequence", "constant")
T, B = 7, 5


# --------------------------------------------------------------------------- numpy oracles


def np_masked_mean(x, mask, reduction):
    """Plain-loop reference for masked_mean on x, mask of shape [T, B]."""
    x = np.asarray(x, np.float64)
    mask = np.asarray(mask, bool)
    n_t, n_b = x.shape
    if reduction == "token":
        total, count = 0.0, 0
        for t in range(n_t):
            for b in range(n_b):
                if mask[t, b]:
                    total += x[t, b]
                    count += 1
        return total / count if count else 0.0
    if reduction == "sequence":
        sequence_means = []
        for b in range(n_b):
            tokens = [x[t, b] for t in range(n_t) if mask[t, b]]
            if tokens:
                sequence_means.append(sum(tokens) / len(tokens))
        return sum(sequence_means) / len(sequence_means) if sequence_means else 0.0
    assert reduction == "constant"
    total = 0.0
    for t in range(n_t):
        for b in range(n_b):
            if mask[t, b]:
                total += x[t, b]
    return total / (n_t * n_b)


def np_weights(mask, reduction):
    """w[t, b] such that the masked mean is Σ w·x (the weight each entry gets)."""
    m = np.asarray(mask, np.float64)
    if reduction == "token":
        return m / max(m.sum(), 1.0)
    if reduction == "sequence":
        lengths = m.sum(axis=0)
        num_sequences = max((lengths > 0).sum(), 1)
        return m / np.maximum(lengths, 1.0)[None, :] / num_sequences
    return m / m.size


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ragged_mask(rng, n_t=T, n_b=B, empty=True):
    """Prefix mask [T, B] with distinct lengths; one sequence empty when `empty`."""
    lengths = rng.permutation(np.arange(n_t + 1))[:n_b]
    if empty:
        lengths[0] = 0
    lengths[-1] = max(lengths[-1], 1)
    return np.arange(n_t)[:, None] < lengths[None, :]


def softmax_policy_problem(seed, n_t=T, n_b=B, num_states=5, num_actions=3):
    """Random logits [S, A], states/actions [T, B] with a ~ π(·|s), advantages [T, B]."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(num_states, num_actions)).astype(np.float32)
    states = rng.integers(num_states, size=(n_t, n_b))
    pi = np_softmax(logits.astype(np.float64))
    actions = np.array([[rng.choice(num_actions, p=pi[s]) for s in row] for row in states])
    advantages = rng.normal(size=(n_t, n_b)).astype(np.float32)
    return logits, states, actions, advantages


def hand_policy_gradient(logits, states, actions, advantages, weights):
    """−Σ w·A·∇_logits log π(a|s), with ∇_logits log softmax(z)[a] = onehot(a) − π."""
    pi = np_softmax(logits.astype(np.float64))
    grad = np.zeros_like(pi)
    num_actions = pi.shape[1]
    for (t, b), s in np.ndenumerate(states):
        score = np.eye(num_actions)[actions[t, b]] - pi[s]
        grad[s] += -weights[t, b] * advantages[t, b] * score
    return grad


def chosen_log_probs(logits, states, actions):
    return jax.nn.log_softmax(logits)[states, actions]


# --------------------------------------------------------------------------- API hygiene


def test_every_public_name_has_a_docstring_with_an_example():
    assert losses.__doc__ and "Dr. GRPO" in losses.__doc__
    for name in losses.__all__:
        doc = getattr(losses, name).__doc__
        assert doc and ">>>" in doc, name


# --------------------------------------------------------------------------- masked_mean


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_masked_mean_matches_loop_on_ragged_masks(reduction):
    rng = np.random.default_rng(0)
    for trial in range(3):
        x = rng.normal(size=(T, B)).astype(np.float32)
        mask = ragged_mask(rng) if trial < 2 else rng.random((T, B)) < 0.5  # non-prefix too
        expected = np_masked_mean(x, mask, reduction)
        np.testing.assert_allclose(masked_mean(x, mask, reduction=reduction), expected, rtol=1e-5)
        np.testing.assert_allclose(np.sum(np_weights(mask, reduction) * x), expected, rtol=1e-5)
        # Integer 0/1 masks behave like boolean ones.
        np.testing.assert_allclose(
            masked_mean(x, mask.astype(np.int32), reduction=reduction), expected, rtol=1e-5
        )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_masked_mean_ignores_nan_and_inf_in_padding(reduction):
    rng = np.random.default_rng(22)
    x = rng.normal(size=(T, B)).astype(np.float32)
    mask = ragged_mask(rng)
    garbage = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), (T, B))
    padded = np.where(mask, x, garbage)
    value, grad = jax.value_and_grad(lambda x: masked_mean(x, mask, reduction=reduction))(padded)
    np.testing.assert_allclose(value, np_masked_mean(x, mask, reduction), rtol=1e-5)
    # The gradient is each entry's weight: 0 on padding, finite everywhere.
    np.testing.assert_allclose(grad, np_weights(mask, reduction), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_masked_mean_any_batch_rank(reduction):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(T, 2, 3)).astype(np.float32)
    mask = rng.random((T, 2, 3)) < 0.6
    expected = np_masked_mean(x.reshape(T, -1), mask.reshape(T, -1), reduction)
    np.testing.assert_allclose(masked_mean(x, mask, reduction=reduction), expected, rtol=1e-5)
    # One trajectory [T] is one sequence.
    expected_1d = np_masked_mean(x[:, :1, 0], mask[:, :1, 0], reduction)
    np.testing.assert_allclose(
        masked_mean(x[:, 0, 0], mask[:, 0, 0], reduction=reduction), expected_1d, rtol=1e-5
    )


def test_masked_mean_hand_worked():
    # x = [[2, 6], [4, 9]], the 9 is padding: sequence 0 = (2, 4), sequence 1 = (6,).
    # token (2+4+6)/3 = 4; sequence ((2+4)/2 + 6)/2 = 4.5; constant 12/4 = 3.
    x = jnp.array([[2.0, 6.0], [4.0, 9.0]])
    mask = jnp.array([[True, True], [True, False]])
    assert float(masked_mean(x, mask, reduction="token")) == 4.0
    assert float(masked_mean(x, mask, reduction="sequence")) == 4.5
    assert float(masked_mean(x, mask, reduction="constant")) == 3.0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mask_none_is_all_ones_and_plain_mean(reduction):
    x = np.random.default_rng(2).normal(size=(T, B)).astype(np.float32)
    np.testing.assert_allclose(masked_mean(x, reduction=reduction), x.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        masked_mean(x, np.ones((T, B), bool), reduction=reduction), x.mean(), rtol=1e-5
    )


def test_token_and_sequence_differ_on_ragged_and_agree_on_equal_lengths():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(T, B)).astype(np.float32)
    ragged = ragged_mask(rng, empty=False)
    token = float(masked_mean(x, ragged, reduction="token"))
    sequence = float(masked_mean(x, ragged, reduction="sequence"))
    assert abs(token - sequence) > 1e-3
    equal = np.arange(T)[:, None] < np.full((1, B), 4)  # every sequence has 4 tokens
    token = masked_mean(x, equal, reduction="token")
    np.testing.assert_allclose(token, masked_mean(x, equal, reduction="sequence"), rtol=1e-6)
    # "constant" still divides by T·B, not by the 4·B real tokens.
    np.testing.assert_allclose(
        masked_mean(x, equal, reduction="constant"), token * 4 / T, rtol=1e-5
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_masked_mean_all_masked_is_zero_with_finite_gradient(reduction):
    x = jnp.ones((T, B))
    mask = jnp.zeros((T, B), bool)
    assert float(masked_mean(x, mask, reduction=reduction)) == 0.0
    grad = jax.grad(lambda x: masked_mean(x, mask, reduction=reduction))(x)
    np.testing.assert_array_equal(grad, np.zeros((T, B)))


def test_masked_mean_rank_zero():
    assert float(masked_mean(jnp.float32(3.0))) == 3.0
    assert float(masked_mean(jnp.float32(3.0), reduction="constant")) == 3.0
    with pytest.raises(ValueError, match="`x`"):
        masked_mean(jnp.float32(3.0), reduction="sequence")


# --------------------------------------------------------------------------- policy gradient


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_policy_gradient_matches_hand_softmax_gradient(reduction):
    logits, states, actions, advantages = softmax_policy_problem(seed=4)
    mask = ragged_mask(np.random.default_rng(5))

    def loss(logits):
        log_probs = chosen_log_probs(logits, states, actions)
        return policy_gradient_loss(log_probs, advantages, mask, reduction=reduction)

    value, grad = jax.jit(jax.value_and_grad(loss))(logits)
    expected = hand_policy_gradient(
        logits, states, actions, advantages, np_weights(mask, reduction)
    )
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    # The value is −Σ w·A·log π.
    log_pi = np.log(np_softmax(logits.astype(np.float64)))[states, actions]
    np.testing.assert_allclose(
        value, -np_masked_mean(log_pi * advantages, mask, reduction), rtol=1e-5
    )


def test_policy_gradient_holds_advantages_constant():
    log_probs = jnp.log(jnp.array([0.5, 0.25]))
    grad_adv = jax.grad(policy_gradient_loss, argnums=1)(log_probs, jnp.array([1.0, 2.0]))
    np.testing.assert_array_equal(grad_adv, np.zeros(2))


# --------------------------------------------------------------------------- PPO


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ppo_at_ratio_one_is_the_policy_gradient(reduction):
    logits, states, actions, advantages = softmax_policy_problem(seed=6)
    mask = ragged_mask(np.random.default_rng(7))
    old_log_probs = chosen_log_probs(jnp.asarray(logits), states, actions)

    def ppo(logits):
        log_probs = chosen_log_probs(logits, states, actions)
        return ppo_clip_loss(
            log_probs, old_log_probs, advantages, mask, clip_eps=0.2, reduction=reduction
        )

    def pg(logits):
        log_probs = chosen_log_probs(logits, states, actions)
        return policy_gradient_loss(log_probs, advantages, mask, reduction=reduction)

    @jax.jit
    def both(logits):
        return jax.value_and_grad(ppo, has_aux=True)(logits), jax.grad(pg)(logits)

    ((loss, metrics), grad), pg_grad = both(logits)
    np.testing.assert_allclose(
        loss, -np_masked_mean(advantages, mask, reduction), rtol=1e-5, atol=1e-7
    )
    expected = hand_policy_gradient(
        logits, states, actions, advantages, np_weights(mask, reduction)
    )
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad, pg_grad, rtol=1e-5, atol=1e-7)
    assert float(metrics["clip_fraction"]) == 0.0
    assert abs(float(metrics["approx_kl"])) < 1e-7


def test_ppo_clips_exactly_at_one_plus_minus_eps():
    eps, delta = 0.2, 1e-3
    # (ratio, sign of A, clipping active?): A > 0 is clipped above 1+ε only,
    # A < 0 below 1−ε only; just inside the band the gradient is the plain one.
    cases = [
        (1 + eps + delta, +1.0, True),
        (1 + eps - delta, +1.0, False),
        (1 - eps - delta, +1.0, False),
        (1 - eps + delta, +1.0, False),
        (1 - eps - delta, -1.0, True),
        (1 - eps + delta, -1.0, False),
        (1 + eps + delta, -1.0, False),
        (1 + eps - delta, -1.0, False),
    ]
    ratio = np.array([c[0] for c in cases])
    advantages = np.array([c[1] for c in cases], np.float32) * 2.0
    active = np.array([c[2] for c in cases])
    old_log_probs = np.full(len(cases), -1.0, np.float32)
    log_probs = (old_log_probs + np.log(ratio)).astype(np.float32)

    def loss(log_probs):
        return ppo_clip_loss(log_probs, old_log_probs, advantages, clip_eps=eps)

    (_, metrics), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(log_probs)
    # d/dlogπ of −mean(ρA) is −ρA/N where unclipped, 0 where clipped.
    expected = np.where(active, 0.0, -ratio * advantages / len(cases))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-9)
    assert np.all(grad[~active] != 0.0)
    # Outside the band: 1+ε+δ twice and 1−ε−δ twice, whatever the sign of A.
    outside = np.abs(ratio - 1) > eps
    assert outside.sum() == 4
    assert float(metrics["clip_fraction"]) == outside.mean()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ppo_matches_numpy_on_random_inputs(reduction):
    rng = np.random.default_rng(8)
    eps = 0.15
    log_probs = rng.normal(-1.0, 0.3, size=(T, B)).astype(np.float32)
    old_log_probs = (log_probs + rng.normal(0.0, 0.25, size=(T, B))).astype(np.float32)
    advantages = rng.normal(size=(T, B)).astype(np.float32)
    mask = ragged_mask(rng)

    def loss(log_probs):
        return ppo_clip_loss(
            log_probs, old_log_probs, advantages, mask, clip_eps=eps, reduction=reduction
        )

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(log_probs))

    ratio = np.exp(log_probs.astype(np.float64) - old_log_probs)
    objective = np.minimum(ratio * advantages, np.clip(ratio, 1 - eps, 1 + eps) * advantages)
    np.testing.assert_allclose(value, -np_masked_mean(objective, mask, reduction), rtol=1e-5)
    clipped = ((advantages > 0) & (ratio > 1 + eps)) | ((advantages < 0) & (ratio < 1 - eps))
    assert clipped[mask].any() and (~clipped[mask]).any()
    expected_grad = -np_weights(mask, reduction) * np.where(clipped, 0.0, ratio * advantages)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-7)
    # Metrics are token means over real steps, whatever the reduction.
    np.testing.assert_allclose(
        metrics["clip_fraction"], np_masked_mean(np.abs(ratio - 1) > eps, mask, "token")
    )
    approx_kl = np_masked_mean((ratio - 1) - np.log(ratio), mask, "token")
    np.testing.assert_allclose(metrics["approx_kl"], approx_kl, rtol=1e-3)


def test_ppo_holds_old_log_probs_and_advantages_constant_and_metrics_stopped():
    rng = np.random.default_rng(9)
    lp, old, adv = (rng.normal(size=(T, B)).astype(np.float32) for _ in range(3))

    def total(old, adv):
        loss, metrics = ppo_clip_loss(jnp.asarray(lp), old, adv, clip_eps=0.2)
        return loss + metrics["approx_kl"] + metrics["clip_fraction"]

    for g in jax.grad(total, argnums=(0, 1))(jnp.asarray(old), jnp.asarray(adv)):
        np.testing.assert_array_equal(g, np.zeros((T, B)))

    def metrics_only(lp):
        return ppo_clip_loss(lp, old, adv, clip_eps=0.2)[1]["approx_kl"]

    np.testing.assert_array_equal(jax.grad(metrics_only)(jnp.asarray(lp)), np.zeros((T, B)))


def test_ppo_vmaps_over_clip_eps_and_jits():
    rng = np.random.default_rng(10)
    log_probs = rng.normal(-1.0, 0.3, size=(T, B)).astype(np.float32)
    old_log_probs = (log_probs + rng.normal(0.0, 0.3, size=(T, B))).astype(np.float32)
    advantages = rng.normal(size=(T, B)).astype(np.float32)
    mask = ragged_mask(rng)
    eps_grid = jnp.array([0.05, 0.1, 0.2, 0.3])

    def loss(eps):
        return ppo_clip_loss(
            log_probs, old_log_probs, advantages, mask, clip_eps=eps, reduction="sequence"
        )

    batched, batched_metrics = jax.jit(jax.vmap(loss))(eps_grid)
    assert batched.shape == (4,)
    for i, eps in enumerate([0.05, 0.1, 0.2, 0.3]):
        single, single_metrics = loss(eps)
        np.testing.assert_allclose(batched[i], single, rtol=1e-6)
        np.testing.assert_allclose(
            batched_metrics["clip_fraction"][i], single_metrics["clip_fraction"]
        )
    # Larger ε clips less.
    assert np.all(np.diff(np.asarray(batched_metrics["clip_fraction"])) <= 0)


# --------------------------------------------------------------------------- value loss


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_value_loss_unclipped_matches_numpy(reduction):
    rng = np.random.default_rng(11)
    values, targets = (rng.normal(size=(T, B)).astype(np.float32) for _ in range(2))
    mask = ragged_mask(rng)

    def loss(values):
        return value_loss(values, targets, mask, reduction=reduction)

    value, grad = jax.value_and_grad(loss)(jnp.asarray(values))
    error = values.astype(np.float64) - targets
    np.testing.assert_allclose(value, 0.5 * np_masked_mean(error**2, mask, reduction), rtol=1e-5)
    np.testing.assert_allclose(grad, np_weights(mask, reduction) * error, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_value_loss_clipped_matches_numpy(reduction):
    rng = np.random.default_rng(12)
    eps = 0.2
    old_values = rng.normal(size=(T, B)).astype(np.float32)
    values = (old_values + rng.normal(0.0, 0.4, size=(T, B))).astype(np.float32)
    targets = rng.normal(size=(T, B)).astype(np.float32)
    mask = ragged_mask(rng)

    def loss(values):
        return value_loss(
            values, targets, mask, old_values=old_values, clip_eps=eps, reduction=reduction
        )

    value, grad = jax.value_and_grad(loss)(jnp.asarray(values))
    v = values.astype(np.float64)
    unclipped = (v - targets) ** 2
    v_clipped = old_values + np.clip(v - old_values, -eps, eps)
    clipped = (v_clipped - targets) ** 2
    expected = 0.5 * np_masked_mean(np.maximum(unclipped, clipped), mask, reduction)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # d/dv of ½max(a, b): (v − G) where the unclipped term wins; where the clipped
    # one wins, (v_clip − G) inside the band and 0 outside it.
    inside = np.abs(v - old_values) < eps
    clipped_wins = clipped > unclipped
    assert (clipped_wins & mask).any() and (~clipped_wins & mask).any()
    per_step = np.where(clipped_wins, (v_clipped - targets) * inside, v - targets)
    np.testing.assert_allclose(grad, np_weights(mask, reduction) * per_step, rtol=1e-4, atol=1e-7)


def test_value_loss_clipping_needs_both_old_values_and_clip_eps():
    v = jnp.zeros((T, B))
    with pytest.raises(ValueError, match="old_values.*clip_eps"):
        value_loss(v, v, old_values=v)
    with pytest.raises(ValueError, match="old_values.*clip_eps"):
        value_loss(v, v, clip_eps=0.2)


def test_value_loss_holds_targets_and_old_values_constant_and_vmaps_over_clip_eps():
    rng = np.random.default_rng(13)
    values, targets, old_values = (rng.normal(size=(T, B)).astype(np.float32) for _ in range(3))
    grads = jax.jit(
        jax.grad(lambda t, o: value_loss(values, t, old_values=o, clip_eps=0.1), argnums=(0, 1))
    )(targets, old_values)
    for g in grads:
        np.testing.assert_array_equal(g, np.zeros((T, B)))

    def loss(eps):
        return value_loss(values, targets, old_values=old_values, clip_eps=eps)

    eps_grid = [0.01, 0.5, 100.0]
    batched = jax.jit(jax.vmap(loss))(jnp.array(eps_grid))
    single = jax.jit(loss)
    for i, eps in enumerate(eps_grid):
        np.testing.assert_allclose(batched[i], single(eps), rtol=1e-6)
    # A huge ε never clips: the clipped loss is the unclipped one.
    np.testing.assert_allclose(batched[2], value_loss(values, targets), rtol=1e-6)


# --------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_entropy_bonus_is_masked_mean_with_gradient(reduction):
    rng = np.random.default_rng(14)
    entropy = rng.random((T, B)).astype(np.float32)
    mask = ragged_mask(rng)
    value, grad = jax.value_and_grad(lambda h: entropy_bonus(h, mask, reduction=reduction))(
        jnp.asarray(entropy)
    )
    np.testing.assert_allclose(value, np_masked_mean(entropy, mask, reduction), rtol=1e-5)
    np.testing.assert_allclose(grad, np_weights(mask, reduction), rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- KL penalty


def np_kl_estimates(log_probs, ref_log_probs):
    log_r = np.asarray(ref_log_probs, np.float64) - log_probs
    return {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": np.expm1(log_r) - log_r}


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kl_penalty_matches_numpy(reduction):
    rng = np.random.default_rng(15)
    log_probs = rng.normal(-1.5, 0.5, size=(T, B)).astype(np.float32)
    ref_log_probs = (log_probs + rng.normal(0.0, 0.5, size=(T, B))).astype(np.float32)
    mask = ragged_mask(rng)
    for estimator, per_step in np_kl_estimates(log_probs, ref_log_probs).items():
        got = kl_penalty(log_probs, ref_log_probs, mask, estimator=estimator, reduction=reduction)
        np.testing.assert_allclose(got, np_masked_mean(per_step, mask, reduction), rtol=1e-4)
    # Default estimator is k3.
    np.testing.assert_allclose(
        kl_penalty(log_probs, ref_log_probs, mask, reduction=reduction),
        kl_penalty(log_probs, ref_log_probs, mask, estimator="k3", reduction=reduction),
    )


def test_kl_k3_is_never_negative():
    rng = np.random.default_rng(16)
    n = 4000
    log_probs = rng.uniform(-30.0, 0.0, size=n).astype(np.float32)
    ref_log_probs = np.concatenate(
        [
            rng.uniform(-30.0, 0.0, size=n // 4),
            log_probs[n // 4 : n // 2],  # log r = 0 exactly
            log_probs[n // 2 : 3 * n // 4] + rng.normal(0.0, 1e-6, size=n // 4),  # tiny |log r|
            log_probs[3 * n // 4 :] + rng.normal(0.0, 1e-2, size=n // 4),
        ]
    ).astype(np.float32)
    per_step = jax.vmap(lambda lp, ref: kl_penalty(lp[None], ref[None], estimator="k3"))(
        log_probs, ref_log_probs
    )
    assert np.all(np.asarray(per_step) >= 0.0)


def test_kl_k1_and_k3_estimate_the_exact_categorical_kl():
    rng = np.random.default_rng(17)
    num_samples, num_actions = 50_000, 6
    pi = np_softmax(rng.normal(size=num_actions))
    ref = np_softmax(rng.normal(size=num_actions))
    exact = np.sum(pi * (np.log(pi) - np.log(ref)))  # KL(π‖π_ref), closed form
    actions = rng.choice(num_actions, size=(num_samples // 50, 50), p=pi)  # [T, B]
    log_probs = np.log(pi)[actions].astype(np.float32)
    ref_log_probs = np.log(ref)[actions].astype(np.float32)
    per_step = np_kl_estimates(log_probs, ref_log_probs)
    for estimator in ("k1", "k3"):
        estimate = float(kl_penalty(log_probs, ref_log_probs, estimator=estimator))
        standard_error = per_step[estimator].std() / np.sqrt(num_samples)
        assert abs(estimate - exact) < 5 * standard_error + 1e-4, (estimator, estimate, exact)
    # k3 has lower variance than k1 (the point of it).
    assert per_step["k3"].std() < per_step["k1"].std()


def test_kl_estimator_gradients_in_expectation():
    # Exact expectation over a ~ π: Σₐ π(a) ∇k(a), with the sampling weights π(a) fixed.
    rng = np.random.default_rng(18)
    logits = jnp.asarray(rng.normal(size=4), jnp.float32)
    ref_log_probs = jax.nn.log_softmax(jnp.asarray(rng.normal(size=4), jnp.float32))
    actions = jnp.arange(4)

    def expected_estimate(logits, estimator):
        log_pi = jax.nn.log_softmax(logits)
        per_action = jax.vmap(  # k(a): a one-token mean, one action at a time
            lambda a: kl_penalty(log_pi, ref_log_probs, actions == a, estimator=estimator)
        )(actions)
        return jnp.sum(jax.lax.stop_gradient(jnp.exp(log_pi)) * per_action)

    def kl_pi_ref(logits):
        log_pi = jax.nn.log_softmax(logits)
        return jnp.sum(jnp.exp(log_pi) * (log_pi - ref_log_probs))

    def kl_ref_pi(logits):
        log_pi = jax.nn.log_softmax(logits)
        return jnp.sum(jnp.exp(ref_log_probs) * (ref_log_probs - log_pi))

    @jax.jit
    def everything(logits):
        estimates = {
            k: jax.value_and_grad(expected_estimate)(logits, k) for k in ("k1", "k2", "k3")
        }
        return estimates, jax.value_and_grad(kl_pi_ref)(logits), jax.grad(kl_ref_pi)(logits)

    estimates, (kl, grad_kl_pi_ref), grad_kl_ref_pi = everything(logits)
    np.testing.assert_allclose(estimates["k1"][1], np.zeros(4), atol=1e-6)
    np.testing.assert_allclose(estimates["k2"][1], grad_kl_pi_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(estimates["k3"][1], grad_kl_ref_pi, rtol=1e-4, atol=1e-6)
    assert np.abs(grad_kl_pi_ref - grad_kl_ref_pi).max() > 1e-2  # the two really differ
    # And the values: E[k1] = E[k3] = KL(π‖π_ref) exactly.
    np.testing.assert_allclose(estimates["k1"][0], kl, rtol=1e-5)
    np.testing.assert_allclose(estimates["k3"][0], kl, rtol=1e-5)


def test_kl_penalty_holds_reference_constant():
    lp, ref = jnp.log(jnp.array([0.5, 0.3])), jnp.log(jnp.array([0.2, 0.6]))
    for estimator in ("k1", "k2", "k3"):
        g = jax.grad(lambda r, k=estimator: kl_penalty(lp, r, estimator=k))(ref)
        np.testing.assert_array_equal(g, np.zeros(2))


# --------------------------------------------------------------------------- masking, for every loss


def _random_inputs(rng):
    lp = rng.normal(-1.0, 0.3, size=(T, B)).astype(np.float32)
    return {
        "log_probs": lp,
        "other_log_probs": (lp + rng.normal(0.0, 0.3, size=(T, B))).astype(np.float32),
        "advantages": rng.normal(size=(T, B)).astype(np.float32),
        "values": rng.normal(size=(T, B)).astype(np.float32),
        "targets": rng.normal(size=(T, B)).astype(np.float32),
        "old_values": rng.normal(size=(T, B)).astype(np.float32),
        "entropy": rng.random((T, B)).astype(np.float32),
    }


# name -> (differentiable input, loss(arrays, mask, reduction) -> scalar or (scalar, metrics))
LOSSES = {
    "policy_gradient": (
        "log_probs",
        lambda a, m, r: policy_gradient_loss(a["log_probs"], a["advantages"], m, reduction=r),
    ),
    "ppo": (
        "log_probs",
        lambda a, m, r: ppo_clip_loss(
            a["log_probs"], a["other_log_probs"], a["advantages"], m, clip_eps=0.2, reduction=r
        ),
    ),
    "value": ("values", lambda a, m, r: value_loss(a["values"], a["targets"], m, reduction=r)),
    "value_clipped": (
        "values",
        lambda a, m, r: value_loss(
            a["values"], a["targets"], m, old_values=a["old_values"], clip_eps=0.2, reduction=r
        ),
    ),
    "entropy": ("entropy", lambda a, m, r: entropy_bonus(a["entropy"], m, reduction=r)),
    **{
        f"kl_{k}": (
            "log_probs",
            functools.partial(
                lambda a, m, r, k: kl_penalty(
                    a["log_probs"], a["other_log_probs"], m, estimator=k, reduction=r
                ),
                k=k,
            ),
        )
        for k in ("k1", "k2", "k3")
    },
}


def _value_and_grad(name, arrays, mask, reduction):
    wrt, loss = LOSSES[name]

    def scalar(x):
        out = loss({**arrays, wrt: x}, mask, reduction)
        return out if not isinstance(out, tuple) else (out[0], out[1])

    has_aux = name == "ppo"
    out, grad = jax.value_and_grad(scalar, has_aux=has_aux)(jnp.asarray(arrays[wrt]))
    return out, grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_padding_changes_neither_loss_nor_gradient(name, reduction):
    rng = np.random.default_rng(19)
    arrays = _random_inputs(rng)
    mask = ragged_mask(rng)
    garbage = rng.choice(np.array([np.nan, np.inf, -np.inf, 1e30, -7.0], np.float32), (T, B))
    padded = {k: np.where(mask, v, garbage).astype(np.float32) for k, v in arrays.items()}

    out, grad = _value_and_grad(name, arrays, mask, reduction)
    out_padded, grad_padded = _value_and_grad(name, padded, mask, reduction)
    jax.tree.map(np.testing.assert_array_equal, out, out_padded)
    np.testing.assert_array_equal(grad, grad_padded)
    assert np.all(np.isfinite(grad_padded))
    np.testing.assert_array_equal(np.asarray(grad)[~mask], 0.0)
    assert np.any(np.asarray(grad)[mask] != 0.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_masked_gives_zero_and_finite_gradient(name, reduction):
    arrays = _random_inputs(np.random.default_rng(20))
    mask = np.zeros((T, B), bool)
    out, grad = _value_and_grad(name, arrays, mask, reduction)
    for leaf in jax.tree.leaves(out):
        assert float(leaf) == 0.0
    np.testing.assert_array_equal(grad, np.zeros((T, B)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_jit_and_vmap_over_a_batch_of_problems(name):
    rng = np.random.default_rng(21)
    problems = [_random_inputs(rng) for _ in range(3)]
    masks = np.stack([ragged_mask(rng) for _ in range(3)])
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *problems)
    _, loss = LOSSES[name]
    fn = functools.partial(loss, r="sequence")
    batched = jax.jit(jax.vmap(fn))(stacked, masks)
    for i in range(3):
        expected = fn(problems[i], masks[i])
        jax.tree.map(
            lambda b, e, i=i: np.testing.assert_allclose(b[i], e, rtol=1e-5, atol=1e-7),
            batched,
            expected,
        )


# --------------------------------------------------------------------------- bad input

X = np.zeros((T, B), np.float32)
ROW = np.zeros((T, 1), np.float32)  # would broadcast against X; must not


@pytest.mark.parametrize(
    "call, names",
    [
        (lambda: masked_mean(X, np.ones((T,), bool)), ["mask", "(7, 5)", "(7,)"]),
        (lambda: masked_mean(X, reduction="mean"), ["reduction", "token", "sequence", "constant"]),
        (lambda: masked_mean(X, reduction=None), ["reduction"]),
        (lambda: policy_gradient_loss(X, ROW), ["advantages", "(7, 5)", "(7, 1)"]),
        (lambda: policy_gradient_loss(X, X, ROW), ["mask"]),
        (lambda: policy_gradient_loss(X, X, reduction="sum"), ["reduction"]),
        (lambda: ppo_clip_loss(X, ROW, X, clip_eps=0.2), ["old_log_probs"]),
        (lambda: ppo_clip_loss(X, X, ROW, clip_eps=0.2), ["advantages"]),
        (lambda: ppo_clip_loss(X, X, X, ROW, clip_eps=0.2), ["mask"]),
        (lambda: ppo_clip_loss(X, X, X, clip_eps=np.array([0.1, 0.2])), ["clip_eps"]),
        (lambda: ppo_clip_loss(X, X, X, clip_eps=0.2, reduction="x"), ["reduction"]),
        (lambda: value_loss(X, ROW), ["targets"]),
        (lambda: value_loss(X, X, ROW), ["mask"]),
        (lambda: value_loss(X, X, old_values=ROW, clip_eps=0.2), ["old_values"]),
        (lambda: value_loss(X, X, reduction="x"), ["reduction"]),
        (lambda: entropy_bonus(X, ROW), ["mask"]),
        (lambda: entropy_bonus(X, reduction="x"), ["reduction"]),
        (lambda: kl_penalty(X, ROW), ["ref_log_probs"]),
        (lambda: kl_penalty(X, X, ROW), ["mask"]),
        (lambda: kl_penalty(X, X, estimator="k4"), ["estimator", "k1", "k2", "k3"]),
        (lambda: kl_penalty(X, X, reduction="x"), ["reduction"]),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, names):
    with pytest.raises(ValueError) as info:
        call()
    for name in names:
        assert name in str(info.value), (name, str(info.value))
