"""Estimators against plain-Python references, rlax, and the identities of docs/design.md,
"Estimator identities"."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxadv
from jaxadv import advantages as adv

pytestmark = pytest.mark.fast_compile  # checks against references and mechanics (conftest.py)

# ---------------------------------------------------------------- references
# Written from the definitions, one trajectory at a time, by walking forward
# from each t — deliberately not the backward recursions the library uses.


def _walk(t, T, terminated, truncated, max_len):
    """Steps k = t, t+1, ... of the trace from t, and whether it ended by termination."""
    ks = []
    for k in range(t, min(T, t + max_len)):
        ks.append(k)
        if terminated[k] or truncated[k]:
            break
    return ks


def ref_td(r, v, nv, term, gamma):
    return np.array([r[t] + gamma * (1 - term[t]) * nv[t] - v[t] for t in range(len(r))])


def ref_nstep_return(r, nv, term, trunc, gamma, n):
    T = len(r)
    out = np.zeros(T)
    for t in range(T):
        ks = _walk(t, T, term, trunc, n)
        g = sum(gamma ** (k - t) * r[k] for k in ks)
        last = ks[-1]
        if not term[last]:
            g += gamma ** (last - t + 1) * nv[last]
        out[t] = g
    return out


def ref_returns(r, nv, term, trunc, gamma):
    return ref_nstep_return(r, nv, term, trunc, gamma, n=len(r) + 1)


def ref_gae(r, v, nv, term, trunc, gamma, lam):
    T = len(r)
    delta = ref_td(r, v, nv, term, gamma)
    out = np.zeros(T)
    for t in range(T):
        out[t] = sum((gamma * lam) ** (k - t) * delta[k] for k in _walk(t, T, term, trunc, T))
    return out


def _per_column(ref, *arrays, **kw):
    """Apply a 1-D reference to every column of [T, *B] arrays."""
    T, *B = arrays[0].shape
    flat = [a.reshape(T, -1) for a in arrays]
    cols = [ref(*(a[:, j] for a in flat), **kw) for j in range(flat[0].shape[1])]
    return np.stack(cols, axis=1).reshape(T, *B)


def _random_inputs(seed, shape, p_term=0.15, p_trunc=0.15):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=shape).astype(np.float32)
    v = rng.normal(size=shape).astype(np.float32)
    nv = rng.normal(size=shape).astype(np.float32)
    term = rng.random(shape) < p_term
    trunc = rng.random(shape) < p_trunc
    return r, v, nv, term, trunc


# Jitted once per shape; γ and λ are traced, so the loops below do not recompile.
_td = jax.jit(adv.td_errors)
_returns = jax.jit(adv.discounted_returns)
_nstep = jax.jit(adv.n_step_advantages, static_argnames="n")
_gae = jax.jit(adv.gae)
_lambda_returns = jax.jit(adv.lambda_returns)

SHAPES = [(1,), (1, 3), (5,), (7, 4), (16, 2, 3), (33, 5)]
GAMMAS = [0.0, 0.9, 0.99, 1.0]
LAMBDAS = [0.0, 0.5, 0.95, 1.0]
# termination and truncation probabilities: none, some, all-done, both flags everywhere
FLAGS = [(0.0, 0.0), (0.2, 0.2), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("flags", FLAGS)
def test_estimators_match_references(shape, flags):
    r, v, nv, term, trunc = _random_inputs(hash((shape, flags)) % 2**32, shape, *flags)
    for gamma in GAMMAS:
        np.testing.assert_allclose(
            _td(r, v, nv, term, gamma=gamma),
            _per_column(ref_td, r, v, nv, term, gamma=gamma),
            rtol=1e-5, atol=1e-5,
        )
        np.testing.assert_allclose(
            _returns(r, nv, term, trunc, gamma=gamma),
            _per_column(ref_returns, r, nv, term, trunc, gamma=gamma),
            rtol=1e-4, atol=1e-4,
        )
        for n in (1, 2, 3, 40):
            np.testing.assert_allclose(
                _nstep(r, v, nv, term, trunc, gamma=gamma, n=n),
                _per_column(ref_nstep_return, r, nv, term, trunc, gamma=gamma, n=n) - v,
                rtol=1e-4, atol=1e-4,
            )
        for lam in LAMBDAS:
            want = _per_column(ref_gae, r, v, nv, term, trunc, gamma=gamma, lam=lam)
            np.testing.assert_allclose(
                _gae(r, v, nv, term, trunc, gamma=gamma, lambda_=lam), want,
                rtol=1e-4, atol=1e-4,
            )
            np.testing.assert_allclose(
                _lambda_returns(r, v, nv, term, trunc, gamma=gamma, lambda_=lam), want + v,
                rtol=1e-4, atol=1e-4,
            )


def test_hand_worked_episode_boundaries():
    # T = 4: an episode truncated at t=1 (final obs value 10), a new one terminated at t=3.
    #   G_3 = 1                       (terminated: no bootstrap)
    #   G_2 = 1 + 0.5·1 = 1.5
    #   G_1 = 1 + 0.5·10 = 6          (truncated: bootstrap from next_values[1], not G_2)
    #   G_0 = 1 + 0.5·6 = 4
    r = jnp.ones(4)
    nv = jnp.array([0.0, 10.0, 0.0, 99.0])
    term = jnp.array([False, False, False, True])
    trunc = jnp.array([False, True, False, False])
    np.testing.assert_allclose(adv.discounted_returns(r, nv, term, trunc, gamma=0.5), [4, 6, 1.5, 1])
    # GAE with λ = 1 and V ≡ 0 except next_values: the same returns.
    z = jnp.zeros(4)
    np.testing.assert_allclose(
        adv.gae(r, z, nv, term, trunc, gamma=0.5, lambda_=1.0), [4, 6, 1.5, 1]
    )


def test_both_flags_at_once_is_termination():
    # Terminated and truncated at the same step: no bootstrap (termination wins), trace cut.
    r, v, nv = jnp.ones(2), jnp.zeros(2), jnp.full(2, 7.0)
    both = jnp.array([True, False])
    out = adv.gae(r, v, nv, both, both, gamma=0.9, lambda_=0.9)
    np.testing.assert_allclose(out, [1.0, 1.0 + 0.9 * 7.0], rtol=1e-6)


# -------------------------------------------------------------------- rlax


@pytest.mark.parametrize("seed", range(4))
def test_gae_agrees_with_rlax(seed):
    T, gamma, lam = 20, 0.97, 0.9
    r, _, _, term, _ = _random_inputs(seed, (T,))
    values = np.random.default_rng(seed + 100).normal(size=T + 1).astype(np.float32)
    discount = gamma * (1.0 - term)
    want = rlax.truncated_generalized_advantage_estimation(r, discount, lam, values)
    got = adv.gae(r, values[:-1], values[1:], term, np.zeros(T, bool), gamma=gamma, lambda_=lam)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_lambda_returns_agree_with_rlax(seed):
    T, gamma, lam = 20, 0.97, 0.8
    r, _, _, term, _ = _random_inputs(seed, (T,))
    v = np.random.default_rng(seed + 100).normal(size=T + 1).astype(np.float32)
    discount = gamma * (1.0 - term)
    want = rlax.lambda_returns(r, discount, v[1:], lam)
    got = adv.lambda_returns(r, v[:-1], v[1:], term, np.zeros(T, bool), gamma=gamma, lambda_=lam)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------- jit and vmap


def test_jit_and_vmap_over_batch_and_hyperparameters():
    r, v, nv, term, trunc = _random_inputs(0, (12, 6))
    args = (r, v, nv, term, trunc)
    direct = adv.gae(*args, gamma=0.9, lambda_=0.8)
    jitted = jax.jit(lambda g, l: adv.gae(*args, gamma=g, lambda_=l))(0.9, 0.8)
    np.testing.assert_allclose(jitted, direct, rtol=1e-5, atol=1e-6)
    # vmap over the batch axis of [T, N] inputs equals the batched call.
    per_env = jax.vmap(lambda *a: adv.gae(*a, gamma=0.9, lambda_=0.8), in_axes=1, out_axes=1)
    np.testing.assert_allclose(per_env(*args), direct, rtol=1e-5, atol=1e-6)
    # vmap over traced γ and λ equals a Python loop.
    gammas, lams = jnp.array([0.5, 0.9, 1.0]), jnp.array([0.0, 0.7, 1.0])
    swept = jax.jit(jax.vmap(lambda g, l: adv.gae(*args, gamma=g, lambda_=l)))(gammas, lams)
    for i, (g, l) in enumerate(zip([0.5, 0.9, 1.0], [0.0, 0.7, 1.0])):
        np.testing.assert_allclose(swept[i], adv.gae(*args, gamma=g, lambda_=l), rtol=1e-5, atol=1e-6)
    for fn in (
        lambda g: adv.td_errors(r, v, nv, term, gamma=g),
        lambda g: adv.discounted_returns(r, nv, term, trunc, gamma=g),
        lambda g: adv.n_step_advantages(*args, gamma=g, n=3),
        lambda g: adv.lambda_returns(*args, gamma=g, lambda_=0.5),
    ):
        swept = jax.jit(jax.vmap(fn))(gammas)
        for i, g in enumerate([0.5, 0.9, 1.0]):
            np.testing.assert_allclose(swept[i], fn(g), rtol=1e-5, atol=1e-6)


def test_low_precision_inputs_keep_their_dtype_with_a_traced_float32_gamma():
    # Sweeping γ (a float32 HParams field) over bf16 rewards and values: each estimator
    # computes in the inputs' dtype and agrees with the float32 reference to bf16 precision.
    r, v, nv, term, trunc = _random_inputs(3, (9, 4))
    r16, v16, nv16 = (jnp.asarray(a, jnp.bfloat16) for a in (r, v, nv))
    gammas = jnp.array([0.5, 0.9], jnp.float32)
    cases = [
        (lambda g: adv.td_errors(r16, v16, nv16, term, gamma=g),
         lambda g: _per_column(ref_td, r, v, nv, term, gamma=g)),
        (lambda g: adv.discounted_returns(r16, nv16, term, trunc, gamma=g),
         lambda g: _per_column(ref_returns, r, nv, term, trunc, gamma=g)),
        (lambda g: adv.n_step_advantages(r16, v16, nv16, term, trunc, gamma=g, n=3),
         lambda g: _per_column(ref_nstep_return, r, nv, term, trunc, gamma=g, n=3) - v),
        (lambda g: adv.gae(r16, v16, nv16, term, trunc, gamma=g, lambda_=jnp.float32(0.8)),
         lambda g: _per_column(ref_gae, r, v, nv, term, trunc, gamma=g, lam=0.8)),
        (lambda g: adv.lambda_returns(r16, v16, nv16, term, trunc, gamma=g, lambda_=jnp.float32(0.8)),
         lambda g: _per_column(ref_gae, r, v, nv, term, trunc, gamma=g, lam=0.8) + v),
    ]
    for fn, ref in cases:
        swept = jax.vmap(fn)(gammas)
        assert swept.dtype == jnp.bfloat16
        for i, g in enumerate([0.5, 0.9]):
            np.testing.assert_allclose(np.asarray(swept[i], np.float32), ref(g), rtol=0.05, atol=0.1)


# ------------------------------------------- one scan over the raw inputs
# The recursive estimators compute δ_t, the decays and the flags inside one reverse scan
# over the raw inputs. These pin that arithmetic to the two-pass form it replaced (TD
# errors and decays as [T, *B] arrays, then a scan), bit for bit, so the trainer's results
# do not move, and check the hyperparameters that arrive as arrays (scanned with the data).


def _two_pass_gae(r, v, nv, term, trunc, gamma, lambda_):
    dtype = adv._dtype(r, v, nv)
    deltas = adv.td_errors(r, v, nv, term, gamma=gamma)
    cont = (1.0 - jnp.asarray(term).astype(dtype)) * (1.0 - jnp.asarray(trunc).astype(dtype))
    decay = jnp.asarray(gamma * lambda_).astype(dtype) * cont
    step = lambda a, xs: (xs[0] + xs[1] * a,) * 2
    return jax.lax.scan(step, jnp.zeros_like(deltas[0]), (deltas, decay), reverse=True)[1]


def _two_pass_n_step(r, v, nv, term, trunc, gamma, n):
    dtype = adv._dtype(r, v, nv)
    n = min(n, r.shape[0])
    te = jnp.asarray(term).astype(dtype)
    stop = jnp.maximum(te, jnp.asarray(trunc).astype(dtype)).at[-1].set(1.0)
    g = jnp.asarray(gamma).astype(dtype)

    def step(later, xs):
        r, nv, te, st = xs
        shorter = jnp.concatenate([nv[None], later[:-1]], axis=0)
        d = g * (1.0 - te)
        out = (r + d * st * nv)[None] + (d * (1.0 - st))[None] * shorter
        return out, out[-1]

    init = jnp.broadcast_to(jnp.asarray(nv[-1], dtype), (n, *r.shape[1:]))
    returns = jax.lax.scan(step, init, (jnp.asarray(r, dtype), jnp.asarray(nv, dtype), te, stop),
                           reverse=True)[1]
    return returns - jnp.asarray(v, dtype)


@pytest.fixture
def optimised():
    """XLA's optimisations on, as the trainer compiles (this module is ``fast_compile``):
    which multiplies and adds become one FMA depends on how XLA fuses, so bit-for-bit
    comparisons of two programs hold for one compile mode at a time."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()  # jit's caches do not key on the mode: drop what was compiled fast
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        jax.clear_caches()


@jax.jit
def _two_pass_gae_and_returns(r, v, nv, term, trunc, gamma, lambda_):
    # jitted like the estimators: XLA may contract a multiply and an add into one FMA inside
    # a fusion, so op-by-op execution can differ in the last bit from either
    advantages = _two_pass_gae(r, v, nv, term, trunc, gamma, lambda_)
    return advantages, advantages + jnp.asarray(v, advantages.dtype)


_two_pass_n_step_jit = jax.jit(_two_pass_n_step, static_argnums=6)


def _assert_same_form(got, want, dtype):
    """Bit for bit in float32. In bfloat16, within 4 of its ulps (eps 2⁻⁷) of the largest
    value: where the CPU converts bfloat16 natively (AVX512-BF16), XLA keeps some of one
    program's intermediates in float32 and rounds the other's, and the two forms differ by one
    or two bfloat16 ulps (measured on a Sapphire Rapids Xeon; without it they are equal)."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    if dtype == jnp.float32:
        np.testing.assert_array_equal(got, want)
    else:
        tol = 4 * float(jnp.finfo(jnp.bfloat16).eps) * max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("shape, dtype", [((1, 3), jnp.float32), ((33, 5), jnp.float32),
                                          ((1,), jnp.bfloat16), ((7, 4), jnp.bfloat16)])
def test_one_scan_is_bitwise_the_two_pass_form(shape, dtype, optimised):
    for seed, (p_term, p_trunc) in enumerate(FLAGS):
        r, v, nv, term, trunc = _random_inputs(seed, shape, p_term, p_trunc)
        r, v, nv = (jnp.asarray(a, dtype) for a in (r, v, nv))
        for gamma, lam in [(0.99, 0.95), (1.0, 1.0), (0.0, 0.5), (jnp.float32(0.9), jnp.float32(0.8))]:
            want, want_returns = _two_pass_gae_and_returns(r, v, nv, term, trunc, gamma, lam)
            got = _gae(r, v, nv, term, trunc, gamma=gamma, lambda_=lam)
            assert got.dtype == dtype
            _assert_same_form(got, want, dtype)
            _assert_same_form(_lambda_returns(r, v, nv, term, trunc, gamma=gamma, lambda_=lam),
                              want_returns, dtype)
            for n in (1, 3, 40):
                _assert_same_form(_nstep(r, v, nv, term, trunc, gamma=gamma, n=n),
                                  _two_pass_n_step_jit(r, v, nv, term, trunc, gamma, n), dtype)
    # and under vmap over a traced γ
    gammas = jnp.array([0.0, 0.5, 0.97], jnp.float32)
    got = jax.jit(jax.vmap(lambda g: adv.gae(r, v, nv, term, trunc, gamma=g, lambda_=0.9)))(gammas)
    want = jax.jit(jax.vmap(lambda g: _two_pass_gae(r, v, nv, term, trunc, g, 0.9)))(gammas)
    _assert_same_form(got, want, dtype)


def _ref_gae_arrays(r, v, nv, term, trunc, gamma, lam):
    """GAE with per-step γ_t and λ_t, one column, by the backward recursion in float64."""
    out, a = np.zeros(len(r)), 0.0
    for t in reversed(range(len(r))):
        delta = r[t] + gamma[t] * (1 - term[t]) * nv[t] - v[t]
        a = delta + gamma[t] * lam[t] * (1 - term[t]) * (1 - trunc[t]) * a
        out[t] = a
    return out


def _ref_returns_arrays(r, nv, term, trunc, gamma):
    """Discounted returns with per-step γ_t, one column, by the backward recursion."""
    out, g = np.zeros(len(r)), nv[-1]
    for t in reversed(range(len(r))):
        g = r[t] + gamma[t] * (1 - term[t]) * (nv[t] if trunc[t] else g)
        out[t] = g
    return out


def test_array_hyperparameters_are_scanned_with_the_data(optimised):
    # VAPO's length-adaptive λ arrives as a [T, N] array; a per-column λ or γ as [1, N].
    T, N = 11, 4
    r, v, nv, term, trunc = _random_inputs(7, (T, N), 0.2, 0.2)
    rng = np.random.default_rng(8)
    lam_tn = jnp.asarray(rng.random((T, N)), jnp.float32)
    lam_n = jnp.asarray(rng.random((1, N)), jnp.float32)
    gamma_n = jnp.asarray(rng.uniform(0.5, 1.0, (1, N)), jnp.float32)
    for gamma, lam in [(0.9, lam_tn), (0.9, lam_n), (gamma_n, 0.7), (gamma_n, lam_tn)]:
        g = np.broadcast_to(np.float64(gamma) if np.ndim(gamma) == 0 else gamma, (T, N))
        l_ = np.broadcast_to(np.float64(lam) if np.ndim(lam) == 0 else lam, (T, N))
        want = _per_column(_ref_gae_arrays, r, v, nv, term, trunc, g, l_)
        kw = {"rtol": 1e-5, "atol": 1e-5}
        np.testing.assert_allclose(_gae(r, v, nv, term, trunc, gamma=gamma, lambda_=lam), want, **kw)
        np.testing.assert_allclose(
            _lambda_returns(r, v, nv, term, trunc, gamma=gamma, lambda_=lam), want + v, **kw)
        np.testing.assert_array_equal(  # the array path equals the two-pass form bit for bit
            _gae(r, v, nv, term, trunc, gamma=gamma, lambda_=lam),
            _two_pass_gae_and_returns(r, v, nv, term, trunc, gamma, lam)[0])
    for gamma in (gamma_n, np.broadcast_to(gamma_n, (T, N))):
        g = np.broadcast_to(gamma, (T, N))
        np.testing.assert_allclose(
            _returns(r, nv, term, trunc, gamma=gamma),
            _per_column(_ref_returns_arrays, r, nv, term, trunc, g), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            _nstep(r, v, nv, term, trunc, gamma=gamma, n=1),
            r + g * (1 - term) * nv - v, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            _nstep(r, v, nv, term, trunc, gamma=gamma, n=T),
            _returns(r, nv, term, trunc, gamma=gamma) - v, rtol=1e-5, atol=1e-5)


def test_mixed_input_dtypes_compute_in_the_widest():
    r, v, nv, term, trunc = _random_inputs(5, (6, 3))
    v16 = jnp.asarray(v, jnp.bfloat16)
    v_back = np.asarray(v16, np.float32)  # what the float32 computation sees
    # within 2 float32 ulps, not bit for bit: where the convert from bfloat16 sits decides which
    # multiply-adds XLA contracts into FMAs on some CPUs; a bfloat16 computation would be off
    # by about 1e-2
    for fn in (adv.gae, adv.lambda_returns):
        got = fn(r, v16, nv, term, trunc, gamma=0.9, lambda_=0.8)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, fn(r, v_back, nv, term, trunc, gamma=0.9, lambda_=0.8),
                                   rtol=2.5e-7, atol=1e-7)
    got = adv.n_step_advantages(r, v16, nv, term, trunc, gamma=0.9, n=3)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, adv.n_step_advantages(r, v_back, nv, term, trunc, gamma=0.9, n=3),
                               rtol=2.5e-7, atol=1e-7)


def test_estimators_are_differentiable():
    r, v, nv, term, trunc = _random_inputs(1, (9, 2))
    # d/dr_t of Σ_t G_t for a single uncut trajectory of length T: Σ_{s<=t} γ^{t-s}.
    g = jax.grad(lambda x: adv.discounted_returns(x, nv[:, 0] * 0, 0 * term[:, 0], 0 * trunc[:, 0],
                                                  gamma=0.5).sum())(r[:, 0])
    want = [sum(0.5 ** (t - s) for s in range(t + 1)) for t in range(9)]
    np.testing.assert_allclose(g, want, rtol=1e-6)
    assert jnp.isfinite(jax.grad(lambda x: adv.n_step_advantages(
        x, v, nv, term, trunc, gamma=0.9, n=3).sum())(r)).all()


# --------------------------------------------------------------- identities


@st.composite
def _episode_batch(draw):
    T = draw(st.integers(1, 12))
    B = draw(st.sampled_from([(), (1,), (3,), (2, 2)]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    shape = (T, *B)
    r = rng.normal(size=shape).astype(np.float32)
    v = rng.normal(size=shape).astype(np.float32)
    term = rng.random(shape) < draw(st.floats(0, 1))
    trunc = rng.random(shape) < draw(st.floats(0, 1))
    # next_values[t] == values[t+1] wherever the episode goes on inside the window;
    # elsewhere it is the final observation's (arbitrary) value.
    nv = rng.normal(size=shape).astype(np.float32)
    goes_on = ~(term | trunc)
    nv[:-1] = np.where(goes_on[:-1], v[1:], nv[:-1])
    gamma = draw(st.floats(0, 1))
    return r, v, nv, term, trunc, gamma


@settings(max_examples=40, deadline=None)
@given(_episode_batch(), st.integers(0, 1))
def test_identities(batch, longer):
    r, v, nv, term, trunc, gamma = batch
    T = r.shape[0]
    kw = {"rtol": 1e-4, "atol": 1e-4}
    td = _td(r, v, nv, term, gamma=gamma)
    mc = _returns(r, nv, term, trunc, gamma=gamma) - v
    np.testing.assert_allclose(_gae(r, v, nv, term, trunc, gamma=gamma, lambda_=0.0), td, **kw)
    np.testing.assert_allclose(_gae(r, v, nv, term, trunc, gamma=gamma, lambda_=1.0), mc, **kw)
    np.testing.assert_allclose(_nstep(r, v, nv, term, trunc, gamma=gamma, n=1), td, **kw)
    n_long = T + 5 * longer  # n = T and n > T
    np.testing.assert_allclose(_nstep(r, v, nv, term, trunc, gamma=gamma, n=n_long), mc, **kw)


# ---------------------------------------------------------- group baselines


def test_group_relative_and_leave_one_out_against_loops():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(6, 5)).astype(np.float32)
    grpo = np.array([(g - g.mean()) / (g.std() + 1e-6) for g in rewards])
    np.testing.assert_allclose(jaxadv.group_relative(rewards), grpo, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        jaxadv.group_relative(rewards, normalize_std=False),
        rewards - rewards.mean(1, keepdims=True), rtol=1e-5, atol=1e-6,
    )
    rloo = np.array([[g[i] - np.delete(g, i).mean() for i in range(len(g))] for g in rewards])
    np.testing.assert_allclose(jaxadv.leave_one_out(rewards), rloo, rtol=1e-5, atol=1e-6)
    for a in (jaxadv.group_relative(rewards), jaxadv.leave_one_out(rewards)):
        np.testing.assert_allclose(a.mean(axis=1), 0.0, atol=1e-6)


def test_leave_one_out_baseline_excludes_the_sample_itself():
    rewards = jnp.array([[1.0, 2.0, 4.0, 8.0]])
    base = jaxadv.leave_one_out(rewards)
    bumped = jaxadv.leave_one_out(rewards.at[0, 2].add(3.0))
    # Sample 2's own baseline does not move, so its advantage moves by exactly +3;
    # every other sample's baseline rises by 3 / (K − 1) = 1.
    np.testing.assert_allclose(bumped - base, [[-1.0, -1.0, 3.0, -1.0]], rtol=1e-6)


@pytest.mark.parametrize("value", [0.0, 0.1, 1.0 / 3.0, -7.3, 1e6, 3.14159e7])
@pytest.mark.parametrize("k", [2, 3, 7, 64])
def test_constant_groups_give_exact_zeros(value, k):
    rewards = jnp.full((3, k), value, jnp.float32)
    for a in (
        jaxadv.group_relative(rewards),
        jaxadv.group_relative(rewards, eps=0.0),
        jaxadv.group_relative(rewards, normalize_std=False),
        jaxadv.leave_one_out(rewards),
    ):
        assert np.all(np.asarray(a) == 0.0), a


def test_large_rewards_keep_small_differences():
    # float32 ulp at 1e6 is 0.0625: differences of 0.25 are representable in the inputs.
    rewards = jnp.array([[1e6, 1e6 + 0.25, 1e6 + 0.5, 1e6 + 0.75]], jnp.float32)
    small = jnp.array([[0.0, 0.25, 0.5, 0.75]])
    np.testing.assert_allclose(jaxadv.group_relative(rewards), jaxadv.group_relative(small), rtol=1e-5)
    np.testing.assert_allclose(jaxadv.leave_one_out(rewards), jaxadv.leave_one_out(small), rtol=1e-6)
    np.testing.assert_allclose(
        jaxadv.group_relative(rewards, normalize_std=False),
        jaxadv.group_relative(small, normalize_std=False), rtol=1e-6,
    )


def test_normalize():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    out = jaxadv.normalize(x)
    np.testing.assert_allclose(out, (x - x.mean()) / (x.std() + 1e-8), rtol=1e-4, atol=1e-5)
    mask = np.random.default_rng(1).random(x.shape) < 0.6
    out = jaxadv.normalize(x, mask)
    sel = x[mask]
    np.testing.assert_allclose(out[mask], (sel - sel.mean()) / (sel.std() + 1e-8), rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(out)[~mask] == 0)
    # changing masked-out entries changes nothing
    np.testing.assert_array_equal(jaxadv.normalize(np.where(mask, x, 1e9), mask), out)
    for single in (jnp.array([5.0]), jnp.array([[3.0]]), jnp.full((4,), 2.0)):
        for eps in (1e-8, 0.0):
            res = jaxadv.normalize(single, eps=eps)
            assert jnp.all(jnp.isfinite(res)) and jnp.all(res == 0)


# -------------------------------------------------------------- bad input


def test_bad_input_names_the_argument():
    r, v, nv, term, trunc = _random_inputs(0, (5, 3))
    cases = [
        (lambda: adv.gae(r, v[:4], nv, term, trunc, gamma=0.9, lambda_=0.9), "values"),
        (lambda: adv.gae(r, v, nv[:, :2], term, trunc, gamma=0.9, lambda_=0.9), "next_values"),
        (lambda: adv.gae(r, v, nv, term[None], trunc, gamma=0.9, lambda_=0.9), "terminated"),
        (lambda: adv.td_errors(r, v, nv, term.T, gamma=0.9), "terminated"),
        (lambda: adv.discounted_returns(r, nv, term, trunc[:, 0], gamma=0.9), "truncated"),
        (lambda: adv.gae(r[0, 0], v[0, 0], nv[0, 0], term[0, 0], trunc[0, 0],
                         gamma=0.9, lambda_=0.9), "rewards"),
        (lambda: adv.gae(r[:0], v[:0], nv[:0], term[:0], trunc[:0], gamma=0.9, lambda_=0.9), "T"),
        (lambda: adv.n_step_advantages(r, v, nv, term, trunc, gamma=0.9, n=0), "`n`"),
        (lambda: adv.n_step_advantages(r, v, nv, term, trunc, gamma=0.9, n=2.0), "`n`"),
        (lambda: adv.gae(r, v, nv, term, trunc, gamma=1.5, lambda_=0.9), "gamma"),
        (lambda: adv.gae(r, v, nv, term, trunc, gamma=0.9, lambda_=-0.1), "lambda_"),
        (lambda: jaxadv.leave_one_out(jnp.ones((4, 1))), "at least 2"),
        (lambda: jaxadv.leave_one_out(jnp.ones(4)), "[G, K]"),
        (lambda: jaxadv.group_relative(jnp.ones((2, 3, 4))), "[G, K]"),
        (lambda: jaxadv.normalize(jnp.ones(3), jnp.ones(4)), "mask"),
    ]
    for fn, needle in cases:
        with pytest.raises(ValueError, match=None) as info:
            fn()
        assert needle in str(info.value), (needle, str(info.value))


def test_public_names_have_docstrings():
    for name in jaxadv.__all__:
        obj = getattr(jaxadv, name)
        assert obj.__doc__ and len(obj.__doc__) > 40, name


def test_all_flag_dtypes_accepted():
    r, v, nv, term, trunc = _random_inputs(3, (6, 2))
    fns = [
        lambda te, tr: adv.gae(r, v, nv, te, tr, gamma=0.9, lambda_=0.9),
        lambda te, tr: adv.lambda_returns(r, v, nv, te, tr, gamma=0.9, lambda_=0.9),
        lambda te, tr: adv.n_step_advantages(r, v, nv, te, tr, gamma=0.9, n=3),
        lambda te, tr: adv.discounted_returns(r, nv, te, tr, gamma=0.9),
        lambda te, tr: adv.td_errors(r, v, nv, te, gamma=0.9),
    ]
    for fn in fns:
        want = fn(term, trunc)
        for cast in itertools.product((np.int32, np.float32), repeat=2):
            np.testing.assert_array_equal(fn(term.astype(cast[0]), trunc.astype(cast[1])), want)
