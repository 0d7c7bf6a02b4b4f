"""Tests for jaxadv.corrections against plain-numpy loop references.

Oracles: float64 Python loops over tokens and sequences for every weight and loss, and
hand-derived gradients (closed forms of ∂loss/∂logp for IcePop, SAPO and GMPO, and central
finite differences for SAPO). Batches are [T, B] with ragged lengths, one all-padding
sequence, ``nan``/``inf`` garbage in the padding, and tokens whose ratio is exactly 1 so that
bands with an end at 1 test the inclusive bounds.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.corrections import (
    gmpo_loss,
    icepop_loss,
    sapo_loss,
    sequence_is_weights,
    token_mis_weights,
)
from jaxadv.losses import dapo_clip_loss, policy_gradient_loss

pytestmark = pytest.mark.fast_compile  # mechanics against references, no learning bars

T, B = 6, 5
LENGTHS = (6, 0, 3, 1, 5)  # sequence 1 is all padding
REDUCTIONS = ("token", "sequence", "constant")


def make_batch(seed, scale=0.6):
    """A batch with padding garbage; token (0, 0), all of sequence 3 and token (1, 2) are
    on-policy (ratio exactly 1)."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(T)[:, None] < np.array(LENGTHS)[None]).astype(np.int32)
    logp = rng.normal(-1.0, 0.5, (T, B)).astype(np.float32)
    logp_b = (logp + rng.normal(0.0, scale, (T, B))).astype(np.float32)
    logp_old = (logp + rng.normal(0.0, scale, (T, B))).astype(np.float32)
    for t, b in ((0, 0), (0, 3), (1, 2)):
        logp_b[t, b] = logp_old[t, b] = logp[t, b]
    adv = rng.normal(0.0, 1.0, (T, B)).astype(np.float32)
    pad = mask == 0
    logp[pad], logp_b[pad], logp_old[pad], adv[pad] = np.nan, np.inf, -np.inf, np.nan
    seq_adv = rng.normal(0.0, 1.0, B).astype(np.float32)
    return {"logp": logp, "logp_b": logp_b, "logp_old": logp_old, "adv": adv,
            "seq_adv": seq_adv, "mask": mask}


BATCH = make_batch(0)


# --------------------------------------------------------------------------- numpy oracles


def real_tokens(mask, b):
    return [t for t in range(mask.shape[0]) if mask[t, b]]


def np_reduce(x, mask, reduction):
    """Loop reference of masked_mean; returns (value, ∂value/∂x)."""
    n_t, n_b = mask.shape
    grad = np.zeros((n_t, n_b))
    if reduction == "sequence":
        sequences = [b for b in range(n_b) if real_tokens(mask, b)]
        for b in sequences:
            for t in real_tokens(mask, b):
                grad[t, b] = 1.0 / (len(sequences) * len(real_tokens(mask, b)))
    else:
        count = sum(len(real_tokens(mask, b)) for b in range(n_b))
        denominator = max(count, 1) if reduction == "token" else n_t * n_b
        for b in range(n_b):
            for t in real_tokens(mask, b):
                grad[t, b] = 1.0 / denominator
    value = sum(grad[t, b] * x[t][b] for b in range(n_b) for t in real_tokens(mask, b))
    return value, grad


def np_token_mis(logp, logp_b, mask, lo, hi):
    w = np.zeros(mask.shape)
    for b in range(mask.shape[1]):
        for t in real_tokens(mask, b):
            r = math.exp(float(logp[t, b]) - float(logp_b[t, b]))
            w[t, b] = r if lo <= r <= hi else 0.0
    return w


def np_sequence_weights(logp, logp_b, mask, aggregate, mode, cap=None, lo=None, hi=None):
    w = np.zeros(mask.shape[1])
    for b in range(mask.shape[1]):
        tokens = real_tokens(mask, b)
        if not tokens:
            continue
        log_rho = sum(float(logp[t, b]) - float(logp_b[t, b]) for t in tokens)
        if aggregate == "geometric":
            log_rho /= len(tokens)
        rho = math.exp(log_rho)
        w[b] = min(rho, cap) if mode == "truncate" else (rho if lo <= rho <= hi else 0.0)
    return w


def np_icepop(d, alpha, clip_low, clip_high, reduction):
    """(loss, ∂loss/∂logp) of IcePop by loops."""
    mask = d["mask"]
    x, dx = np.zeros(mask.shape), np.zeros(mask.shape)
    for b in range(B):
        for t in real_tokens(mask, b):
            k = math.exp(float(d["logp_old"][t, b]) - float(d["logp_b"][t, b]))
            if not 1.0 / alpha <= k <= alpha:
                continue
            a = float(d["adv"][t, b])
            r = math.exp(float(d["logp"][t, b]) - float(d["logp_old"][t, b]))
            clipped_r = min(max(r, 1.0 - clip_low), 1.0 + clip_high)
            x[t, b] = k * min(r * a, clipped_r * a)
            stopped = (a > 0 and r > 1.0 + clip_high) or (a < 0 and r < 1.0 - clip_low)
            dx[t, b] = 0.0 if stopped else k * a * r
    value, grad = np_reduce(x, mask, reduction)
    return -value, -grad * dx


def np_sapo(d, tau_pos, tau_neg, reduction):
    mask = d["mask"]
    x, dx = np.zeros(mask.shape), np.zeros(mask.shape)
    for b in range(B):
        for t in real_tokens(mask, b):
            a = float(d["adv"][t, b])
            tau = tau_pos if a > 0 else tau_neg
            r = math.exp(float(d["logp"][t, b]) - float(d["logp_b"][t, b]))
            gate = 1.0 / (1.0 + math.exp(-tau * (r - 1.0)))
            x[t, b] = 4.0 / tau * gate * a
            dx[t, b] = 4.0 * gate * (1.0 - gate) * r * a
    value, grad = np_reduce(x, mask, reduction)
    return -value, -grad * dx


def np_gmpo(d, clip_low, clip_high):
    mask = d["mask"]
    sequences = [b for b in range(B) if real_tokens(mask, b)]
    loss, grad = 0.0, np.zeros(mask.shape)
    for b in sequences:
        a = float(d["seq_adv"][b])
        tokens = real_tokens(mask, b)
        clipped, passes = [], []
        for t in tokens:
            ell = float(d["logp"][t, b]) - float(d["logp_b"][t, b])
            clipped.append(min(ell, clip_high) if a >= 0 else max(ell, -clip_low))
            passes.append(ell <= clip_high if a >= 0 else ell >= -clip_low)
        s = math.exp(sum(clipped) / len(tokens))
        loss -= a * s / len(sequences)
        for t, ok in zip(tokens, passes):
            grad[t, b] = -a * s / (len(sequences) * len(tokens)) if ok else 0.0
    return loss, grad


def padding_is_inert(grad):
    """Gradients are finite everywhere and exactly 0 at padding."""
    grad = np.asarray(grad)
    return np.all(np.isfinite(grad)) and np.all(grad[BATCH["mask"] == 0] == 0.0)


# --------------------------------------------------------------------------- importance weights


@pytest.mark.parametrize("lo, hi", [(0.5, 2.0), (0.8, 1.25), (1.0, 2.0), (0.5, 1.0),
                                    (0.0, np.inf)])
def test_token_mis_matches_loop_reference(lo, hi):
    d = BATCH
    w = np.asarray(token_mis_weights(d["logp"], d["logp_b"], d["mask"], lo=lo, hi=hi))
    expected = np_token_mis(d["logp"], d["logp_b"], d["mask"], lo, hi)
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert w[0, 0] == 1.0 and w[1, 2] == 1.0  # ratio exactly 1 sits inside every band here
    if (lo, hi) != (0.0, np.inf):
        real = d["mask"] == 1
        assert np.any(real & (w == 0)) and np.any(real & (w > 0))  # both kept and dropped


@pytest.mark.parametrize("aggregate", ["product", "geometric"])
@pytest.mark.parametrize("mode, bounds", [("truncate", {"cap": 1.5}), ("truncate", {"cap": 1.0}),
                                          ("mask", {"lo": 0.5, "hi": 2.0}),
                                          ("mask", {"lo": 1.0, "hi": 3.0}),
                                          ("mask", {"lo": 0.2, "hi": 1.0})])
def test_sequence_weights_match_loop_reference(aggregate, mode, bounds):
    d = make_batch(1, scale=0.3)
    w = np.asarray(sequence_is_weights(d["logp"], d["logp_b"], d["mask"], aggregate=aggregate,
                                       mode=mode, **bounds))
    expected = np_sequence_weights(d["logp"], d["logp_b"], d["mask"], aggregate, mode, **bounds)
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    assert w.shape == (B,) and w[1] == 0.0  # the empty sequence
    assert w[3] == 1.0  # sequence 3 is on-policy: ρ = 1 exactly, inside every band here


def test_product_and_geometric_mean_differ_and_do_not_overflow():
    # 2000 tokens of log-ratio 0.1: the product is e^200 (inf in float32), the mean e^0.1.
    logp = jnp.full((2000, 2), 0.1)
    logp_b = jnp.zeros((2000, 2))
    mask = jnp.ones((2000, 2)).at[1000:, 1].set(0)
    truncated = sequence_is_weights(logp, logp_b, mask, cap=2.0)
    np.testing.assert_array_equal(truncated, [2.0, 2.0])
    masked = sequence_is_weights(logp, logp_b, mask, mode="mask", lo=0.5, hi=1e30)
    np.testing.assert_array_equal(masked, [0.0, 0.0])  # e^200 and e^100 are both above 1e30
    geometric = sequence_is_weights(logp, logp_b, mask, aggregate="geometric", mode="mask",
                                    lo=0.5, hi=2.0)
    np.testing.assert_allclose(geometric, [math.exp(0.1)] * 2, rtol=1e-5)
    # A token ratio of e^200 is dropped without overflowing into inf or nan.
    tokens = token_mis_weights(jnp.array([200.0, 0.0]), jnp.zeros(2), lo=0.5, hi=1e30)
    np.testing.assert_array_equal(tokens, [0.0, 1.0])


def test_weights_are_held_constant():
    d = BATCH
    coef = jnp.asarray(np.random.default_rng(2).normal(size=(T, B)), jnp.float32)

    def total(logp, logp_b):
        token = token_mis_weights(logp, logp_b, d["mask"], lo=0.5, hi=2.0)
        seq = sequence_is_weights(logp, logp_b, d["mask"], aggregate="geometric", cap=1.2)
        return jnp.sum(jnp.where(d["mask"] == 1, token * coef, 0.0)) + jnp.sum(seq)

    assert float(total(d["logp"], d["logp_b"])) != 0.0
    for g in jax.grad(total, argnums=(0, 1))(d["logp"], d["logp_b"]):
        np.testing.assert_array_equal(g, np.zeros((T, B)))


def test_on_policy_weights_are_the_mask():
    d = BATCH
    w = token_mis_weights(d["logp"], d["logp"], d["mask"], lo=0.5, hi=2.0)
    np.testing.assert_array_equal(w, d["mask"].astype(np.float32))
    non_empty = (np.array(LENGTHS) > 0).astype(np.float32)
    for aggregate in ("product", "geometric"):
        for bounds in ({"mode": "truncate", "cap": 1.0}, {"mode": "mask", "lo": 1.0, "hi": 2.0}):
            w = sequence_is_weights(d["logp"], d["logp"], d["mask"], aggregate=aggregate,
                                    **bounds)
            np.testing.assert_array_equal(w, non_empty)
    # The corrected policy-gradient loss is then the uncorrected one.
    lp = jnp.where(d["mask"] == 1, d["logp"], 0.0)
    adv = jnp.where(d["mask"] == 1, d["adv"], 0.0)
    w = token_mis_weights(lp, lp, d["mask"], lo=0.5, hi=2.0)
    np.testing.assert_allclose(policy_gradient_loss(lp, w * adv, d["mask"]),
                               policy_gradient_loss(lp, adv, d["mask"]), rtol=1e-6)


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_icepop_matches_loop_reference(reduction):
    d = BATCH
    kwargs = {"alpha": 1.6, "clip_low": 0.2, "clip_high": 0.28, "reduction": reduction}
    f = lambda logp: icepop_loss(logp, d["logp_old"], d["logp_b"], d["adv"], d["mask"],
                                 **kwargs)[0]
    loss, grad = jax.value_and_grad(f)(d["logp"])
    expected_loss, expected_grad = np_icepop(d, 1.6, 0.2, 0.28, reduction)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    assert padding_is_inert(grad)
    metrics = icepop_loss(d["logp"], d["logp_old"], d["logp_b"], d["adv"], d["mask"],
                          **kwargs)[1]
    real = d["mask"] == 1
    k = np.exp(d["logp_old"].astype(np.float64) - d["logp_b"])
    dropped = real & ((k < 1 / 1.6) | (k > 1.6))
    assert 0 < dropped.sum() < real.sum()
    np.testing.assert_allclose(metrics["masked_fraction"], dropped.sum() / real.sum(), rtol=1e-6)
    # The old and behaviour log-probs are held constant.
    g_old, g_b = jax.grad(lambda o, b: icepop_loss(d["logp"], o, b, d["adv"], d["mask"],
                                                   **kwargs)[0], argnums=(0, 1))(
        d["logp_old"], d["logp_b"])
    np.testing.assert_array_equal(g_old, np.zeros((T, B)))
    np.testing.assert_array_equal(g_b, np.zeros((T, B)))


def test_icepop_without_mismatch_is_dapo_and_on_policy_is_the_policy_gradient():
    d = BATCH
    kwargs = {"clip_low": 0.2, "clip_high": 0.28}
    ice = lambda lp, old: icepop_loss(lp, old, old, d["adv"], d["mask"], alpha=1.5, **kwargs)[0]
    dapo = lambda lp, old: dapo_clip_loss(lp, old, d["adv"], d["mask"], **kwargs)[0]
    for f in (ice, dapo):
        assert np.isfinite(float(f(d["logp"], d["logp_old"])))
    np.testing.assert_allclose(ice(d["logp"], d["logp_old"]), dapo(d["logp"], d["logp_old"]),
                               rtol=1e-6)
    np.testing.assert_allclose(jax.grad(ice)(d["logp"], d["logp_old"]),
                               jax.grad(dapo)(d["logp"], d["logp_old"]), rtol=1e-6)
    pg = lambda lp: policy_gradient_loss(lp, d["adv"], d["mask"])
    np.testing.assert_allclose(jax.grad(lambda lp: ice(lp, d["logp"]))(d["logp"]),
                               jax.grad(pg)(d["logp"]), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sapo_matches_loop_reference(reduction):
    d = BATCH
    f = lambda logp: sapo_loss(logp, d["logp_b"], d["adv"], d["mask"], tau_pos=1.0,
                               tau_neg=1.05, reduction=reduction)[0]
    loss, grad = jax.value_and_grad(f)(d["logp"])
    expected_loss, expected_grad = np_sapo(d, 1.0, 1.05, reduction)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    assert padding_is_inert(grad)


def test_sapo_gradient_matches_finite_differences():
    d = BATCH
    f = lambda logp: sapo_loss(logp, d["logp_b"], d["adv"], d["mask"], tau_pos=2.0,
                               tau_neg=3.0)[0]
    logp = jnp.where(d["mask"] == 1, d["logp"], 0.0)
    grad = np.asarray(jax.grad(f)(logp))
    eps = 1e-2
    for t, b in [(0, 0), (2, 0), (4, 4), (0, 2), (0, 3)]:
        step = jnp.zeros((T, B)).at[t, b].set(eps)
        numeric = (float(f(logp + step)) - float(f(logp - step))) / (2 * eps)
        np.testing.assert_allclose(grad[t, b], numeric, rtol=1e-2, atol=1e-4)
    assert np.count_nonzero(grad) >= 10


def test_sapo_on_policy_is_the_policy_gradient():
    d = BATCH
    for reduction in ("sequence", "token"):
        sapo = functools.partial(sapo_loss, logp_behaviour=d["logp"], advantages=d["adv"],
                                 mask=d["mask"], tau_pos=1.0, tau_neg=1.05, reduction=reduction)
        pg = functools.partial(policy_gradient_loss, advantages=d["adv"], mask=d["mask"],
                               reduction=reduction)
        np.testing.assert_allclose(jax.grad(lambda lp, f=sapo: f(lp)[0])(d["logp"]),
                                   jax.grad(pg)(d["logp"]), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(sapo(d["logp"])[1]["gate_weight"], 1.0, rtol=1e-6)
    # An overflowing ratio keeps a finite (zero) gradient: the gate is flat there.
    g = jax.grad(lambda lp: sapo_loss(lp, jnp.zeros(2), jnp.array([1.0, -1.0]), tau_pos=1.0,
                                      tau_neg=1.05)[0])(jnp.array([200.0, -200.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0])


@pytest.mark.parametrize("clip", [(0.4, 0.4), (0.1, 0.3), (np.inf, np.inf)])
def test_gmpo_matches_loop_reference(clip):
    d = BATCH
    f = lambda logp: gmpo_loss(logp, d["logp_b"], d["seq_adv"], d["mask"], clip_low=clip[0],
                               clip_high=clip[1])[0]
    loss, grad = jax.value_and_grad(f)(d["logp"])
    expected_loss, expected_grad = np_gmpo(d, *clip)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    assert padding_is_inert(grad)
    if clip == (0.1, 0.3):  # some tokens pass no gradient, others do
        real = d["mask"] == 1
        assert np.any(real & (np.asarray(grad) == 0)) and np.any(np.asarray(grad) != 0)


def test_gmpo_on_policy_is_the_sequence_policy_gradient():
    d = BATCH
    gmpo = lambda lp: gmpo_loss(lp, d["logp"], d["seq_adv"], d["mask"], clip_low=0.4,
                                clip_high=0.4)[0]
    adv = jnp.broadcast_to(d["seq_adv"][None], (T, B))
    pg = lambda lp: policy_gradient_loss(lp, adv, d["mask"], reduction="sequence")
    np.testing.assert_allclose(jax.grad(gmpo)(d["logp"]), jax.grad(pg)(d["logp"]), rtol=1e-6,
                               atol=1e-8)
    non_empty = np.array(LENGTHS) > 0
    np.testing.assert_allclose(gmpo(d["logp"]), -d["seq_adv"][non_empty].mean(), rtol=1e-6)


# --------------------------------------------------------------------------- jit and vmap


def _calls():
    """Each function as f(batch dict, hyperparameter) -> array, with hyperparameter values
    (the first one the default, the last one changing the result)."""
    return {
        "token_mis": (lambda d, h: token_mis_weights(d["logp"], d["logp_b"], d["mask"],
                                                     lo=1.0 / h, hi=h), (1.7, 1.3, 1.05)),
        "sequence": (lambda d, h: sequence_is_weights(d["logp"], d["logp_b"], d["mask"],
                                                      aggregate="geometric", mode="mask",
                                                      lo=1.0 / h, hi=h), (1.3, 1.1, 1.02)),
        "sequence_tis": (lambda d, h: sequence_is_weights(d["logp"], d["logp_b"], d["mask"],
                                                          cap=h), (1.5, 1.2, 1.01)),
        "icepop": (lambda d, h: icepop_loss(d["logp"], d["logp_old"], d["logp_b"], d["adv"],
                                            d["mask"], alpha=h, clip_low=0.2,
                                            clip_high=0.2)[0], (1.6, 1.3, 1.1)),
        "sapo": (lambda d, h: sapo_loss(d["logp"], d["logp_b"], d["adv"], d["mask"],
                                        tau_pos=h, tau_neg=1.05)[0], (1.0, 2.0, 4.0)),
        "gmpo": (lambda d, h: gmpo_loss(d["logp"], d["logp_b"], d["seq_adv"], d["mask"],
                                        clip_low=h, clip_high=h)[0], (0.4, 0.2, 0.05)),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_jit_and_vmap_agree_with_eager(name):
    f, values = _calls()[name]
    h = values[0]
    batches = [make_batch(seed) for seed in (3, 4, 5)]
    eager = [np.asarray(f(d, h)) for d in batches]
    np.testing.assert_allclose(jax.jit(f)(batches[0], h), eager[0], rtol=1e-6)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    np.testing.assert_allclose(jax.vmap(f, in_axes=(0, None))(stacked, h), np.stack(eager),
                               rtol=1e-5)
    # The hyperparameter traced under vmap (not checked, not baked in).
    swept = jax.vmap(f, in_axes=(None, 0))(batches[0], jnp.array(values))
    per_value = np.stack([np.asarray(f(batches[0], v)) for v in values])
    np.testing.assert_allclose(swept, per_value, rtol=1e-5)
    assert not np.allclose(per_value[0], per_value[-1])  # the sweep changes the result


# --------------------------------------------------------------------------- bad arguments


LP = jnp.zeros((3, 2))
BAD = [
    (lambda: token_mis_weights(LP, LP, lo=2.0, hi=2.0), "0 <= lo < hi"),
    (lambda: token_mis_weights(LP, LP, lo=2.0, hi=1.0), "0 <= lo < hi"),
    (lambda: token_mis_weights(LP, LP, lo=-0.1, hi=1.0), "0 <= lo < hi"),
    (lambda: token_mis_weights(LP, LP, lo=np.nan, hi=1.0), "0 <= lo < hi"),
    (lambda: token_mis_weights(LP, LP, lo=jnp.array([0.5]), hi=2.0), "`lo` must be a scalar"),
    (lambda: token_mis_weights(LP, jnp.zeros(3), lo=0.5, hi=2.0), "logp_behaviour"),
    (lambda: token_mis_weights(LP, LP, jnp.ones(2), lo=0.5, hi=2.0), "mask"),
    (lambda: sequence_is_weights(LP, LP, mode="mask", lo=1.0, hi=0.5), "0 <= lo < hi"),
    (lambda: sequence_is_weights(LP, LP, mode="mask", cap=2.0), 'mode="mask" takes'),
    (lambda: sequence_is_weights(LP, LP), 'mode="truncate" takes'),
    (lambda: sequence_is_weights(LP, LP, cap=2.0, hi=3.0), 'mode="truncate" takes'),
    (lambda: sequence_is_weights(LP, LP, cap=0.0), "`cap` must be > 0"),
    (lambda: sequence_is_weights(LP, LP, cap=2.0, mode="clip"), "`mode` must be one of"),
    (lambda: sequence_is_weights(LP, LP, cap=2.0, aggregate="mean"), "`aggregate` must be"),
    (lambda: icepop_loss(LP, LP, LP, LP, alpha=1.0, clip_low=0.2, clip_high=0.2),
     "`alpha` must be > 1"),
    (lambda: icepop_loss(LP, LP, LP, LP, alpha=0.5, clip_low=0.2, clip_high=0.2),
     "`alpha` must be > 1"),
    (lambda: icepop_loss(LP, LP, LP, LP, alpha=2.0, clip_low=-0.1, clip_high=0.2),
     "`clip_low` must be >= 0"),
    (lambda: icepop_loss(LP, LP, LP, LP, alpha=2.0, clip_low=0.2, clip_high=0.2,
                         reduction="mean"), "`reduction` must be one of"),
    (lambda: icepop_loss(LP, LP, LP, jnp.zeros(2), alpha=2.0, clip_low=0.2, clip_high=0.2),
     "advantages"),
    (lambda: sapo_loss(LP, LP, LP, tau_pos=0.0, tau_neg=1.0), "`tau_pos` must be > 0"),
    (lambda: sapo_loss(LP, LP, LP, tau_pos=1.0, tau_neg=-1.0), "`tau_neg` must be > 0"),
    (lambda: gmpo_loss(LP, LP, jnp.zeros(2), clip_low=0.4, clip_high=-0.4),
     "`clip_high` must be >= 0"),
    (lambda: gmpo_loss(LP, LP, LP, clip_low=0.4, clip_high=0.4), "one per sequence"),
]


@pytest.mark.parametrize("call, message", BAD, ids=[m for _, m in BAD])
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        call()


def test_traced_values_are_not_checked():
    # A traced empty band (lo > hi) is not refused; it simply keeps nothing.
    f = jax.jit(lambda lo, hi: token_mis_weights(LP, LP, lo=lo, hi=hi))
    np.testing.assert_array_equal(f(2.0, 1.0), np.zeros((3, 2)))
    np.testing.assert_array_equal(f(0.5, 2.0), np.ones((3, 2)))
    g = jax.jit(lambda a: icepop_loss(LP, LP, LP, jnp.ones((3, 2)), alpha=a, clip_low=0.2,
                                      clip_high=0.2)[1]["masked_fraction"])
    assert float(g(0.5)) == 1.0 and float(g(2.0)) == 0.0
