"""Actor-critic networks: the LAPACK-free orthogonal initialiser and the (init, apply) pair."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _lapack import LAPACK_PRIMITIVES, primitive_names

from jaxadv.networks import make_network, orthogonal


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
    ref_init = jax.nn.initializers.orthogonal()
    ref = np.asarray(jax.jit(lambda ks: jax.lax.map(lambda k: ref_init(k, shape), ks))(keys_ref))
    k = min(shape)
    for stat in (lambda w: w[:, 0, 0], lambda w: np.trace(w[:, :k, :k], axis1=1, axis2=2)):
        assert _ks_distance(stat(ours), stat(ref)) < 0.039
    np.testing.assert_allclose(ours.mean(0), 0.0, atol=0.03)
    np.testing.assert_allclose((ours**2).mean(0), 1.0 / max(shape), rtol=0.1)


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
