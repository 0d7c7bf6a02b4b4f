"""Actor-critic networks: the LAPACK-free orthogonal initialiser and the (init, apply) pair."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _lapack import LAPACK_PRIMITIVES, primitive_names

from jaxadv.nets.networks import make_network, orthogonal, orthogonal_matrices

pytestmark = pytest.mark.fast_compile  # checks against references and mechanics (conftest.py)


def test_primitive_walker_finds_qr_in_flax_orthogonal():
    # The oracle for the checks below: the walker and the HLO scan do see LAPACK where it is.
    keys = jax.random.split(jax.random.key(0), 4)
    init = jax.vmap(lambda k: jax.nn.initializers.orthogonal()(k, (4, 4)))
    assert "qr" in primitive_names(jax.make_jaxpr(init)(keys).jaxpr)
    assert "lapack" in jax.jit(init).lower(keys).as_text()


@pytest.mark.parametrize("discrete", [True, False])
def test_init_vmapped_over_16_keys_has_no_lapack(discrete):
    net = make_network(2, discrete=discrete, hidden=(64, 64))
    keys = jax.random.split(jax.random.key(0), 16)
    init = jax.vmap(net.init, (0, None))
    obs = jnp.zeros(4)
    found = primitive_names(jax.make_jaxpr(init)(keys, obs).jaxpr) & LAPACK_PRIMITIVES
    assert not found, f"LAPACK primitives in vmapped init: {found}"
    assert "lapack" not in jax.jit(init).lower(keys, obs).as_text()
    # and it runs, batched, with distinct parameters per key
    params = jax.jit(init)(keys, obs)
    w = params["params"]["actor_0"]["kernel"]
    assert w.shape == (16, 4, 64)
    assert not np.allclose(w[0], w[1])


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (64, 2), (2, 64), (1, 7), (7, 1)])
@pytest.mark.parametrize("scale", [1.0, 2.0**0.5, 0.01])
def test_orthogonal_rows_or_columns_are_orthonormal(shape, scale):
    w = np.asarray(orthogonal(scale)(jax.random.key(3), shape), np.float64)
    assert w.shape == shape and w.dtype == np.float64
    rows, cols = shape
    gram = w.T @ w if rows >= cols else w @ w.T  # tall: columns; wide: rows
    np.testing.assert_allclose(gram, scale**2 * np.eye(min(shape)), atol=1e-5 * scale**2)


def test_orthogonal_dtype_and_bad_shape():
    assert orthogonal()(jax.random.key(0), (3, 2), jnp.bfloat16).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="2-D"):
        orthogonal()(jax.random.key(0), (2, 3, 4))


def _ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b|."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def _reference_orthogonal(keys: jax.Array, shape: tuple[int, int]) -> np.ndarray:
    """jax.nn.initializers.orthogonal (QR) for each key, by ``lax.map``: batched QR can
    deadlock jaxlib 0.10 on CPU."""
    init = jax.nn.initializers.orthogonal()
    return np.asarray(jax.jit(lambda ks: jax.lax.map(lambda k: init(k, shape), ks))(keys))


def _assert_same_law(ours: np.ndarray, ref: np.ndarray) -> None:
    """KS distance of the first entry and of the trace of the leading square block, below
    the 0.1% critical value 1.95·√(2/n) ≈ 0.039 for n = 5000 samples each."""
    k = min(ours.shape[1:])
    for stat in (lambda w: w[:, 0, 0], lambda w: np.trace(w[:, :k, :k], axis1=1, axis2=2)):
        assert _ks_distance(stat(ours), stat(ref)) < 0.039


@pytest.mark.parametrize("shape", [(3, 3), (5, 2), (2, 5)])
def test_orthogonal_matches_jax_distribution(shape):
    """Same law as jax.nn.initializers.orthogonal (Haar): first entry and trace, by KS.

    The reference is drawn with ``lax.map`` (not ``vmap``: batched QR can deadlock
    jaxlib 0.10 on CPU). With n = 5000 samples each, the 0.1% KS critical value is
    1.95·√(2/n) ≈ 0.039. Each entry of a Haar (semi-)orthogonal m×k matrix (m ≥ k)
    has mean 0 and variance 1/m.
    """
    n = 5000
    keys_ours, keys_ref = jax.random.split(jax.random.key(7), (2, n))
    ours = np.asarray(jax.jit(jax.vmap(lambda k: orthogonal()(k, shape)))(keys_ours))
    _assert_same_law(ours, _reference_orthogonal(keys_ref, shape))
    np.testing.assert_allclose(ours.mean(0), 0.0, atol=0.03)
    np.testing.assert_allclose((ours**2).mean(0), 1.0 / max(shape), rtol=0.1)


MIXED = [(5, 3), (3, 5), (4, 4), (7, 1)]  # padded together into one 7 × 5 block


def test_orthogonal_matrices_are_orthonormal_with_their_scales():
    scales = [1.0, 2.0, 0.01, 3.0]
    for w, shape, scale in zip(orthogonal_matrices(jax.random.key(3), MIXED, scales), MIXED,
                               scales, strict=True):
        w = np.asarray(w, np.float64)
        assert w.shape == shape
        gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
        np.testing.assert_allclose(gram, scale**2 * np.eye(min(shape)), atol=1e-5 * scale**2)


def test_orthogonal_matrices_match_jax_distribution_and_are_independent():
    """Each matrix of a joint draw has the Haar law of jax.nn.initializers.orthogonal (KS on
    the first entry and the trace, as above), and matrices of one draw are uncorrelated."""
    n = 5000
    keys_ours, keys_ref = jax.random.split(jax.random.key(11), (2, n))
    ours = jax.jit(jax.vmap(lambda k: orthogonal_matrices(k, MIXED, [1.0] * 4)))(keys_ours)
    for w, shape in zip(ours, MIXED, strict=True):
        _assert_same_law(np.asarray(w), _reference_orthogonal(keys_ref, shape))
    first = np.stack([np.asarray(w)[:, 0, 0] for w in ours])  # [4 matrices, n]
    corr = np.corrcoef(first)[np.triu_indices(4, 1)]
    assert np.all(np.abs(corr) < 4 / np.sqrt(n)), corr


def test_network_init_scales_each_kernel_and_zeroes_biases():
    """√2-orthogonal hidden kernels, 0.01 policy head, 1.0 critic head (PPO's custom)."""
    net = make_network(3, hidden=(16, 8))
    params = net.init(jax.random.key(0), jnp.zeros(5))["params"]
    expect = {"actor_0": 2.0, "actor_1": 2.0, "critic_0": 2.0, "critic_1": 2.0,
              "policy_head": 1e-4, "critic_head": 1.0}
    for layer, square in expect.items():
        w = np.asarray(params[layer]["kernel"], np.float64)
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, square * np.eye(min(w.shape)), atol=1e-5 * square)
        assert not np.any(np.asarray(params[layer]["bias"]))
    assert not np.allclose(params["actor_0"]["kernel"], params["critic_0"]["kernel"])


def test_apply_shapes_discrete_continuous_and_q_critic():
    obs = jnp.zeros((3, 4))
    net = make_network(2, hidden=(8,))
    logits, value = net.apply(net.init(jax.random.key(0), obs[0]), obs)
    assert logits.shape == (3, 2) and value.shape == (3,)
    net = make_network(2, hidden=(8,), q_critic=True, shared_torso=True)
    logits, q = net.apply(net.init(jax.random.key(0), obs[0]), obs)
    assert logits.shape == (3, 2) and q.shape == (3, 2)
    net = make_network(1, discrete=False, hidden=(8, 8), activation="relu")
    (mean, log_std), value = net.apply(net.init(jax.random.key(0), obs[0]), obs)
    assert mean.shape == log_std.shape == (3, 1) and value.shape == (3,)
    with pytest.raises(ValueError, match="activation"):
        make_network(2, activation="gelu")
