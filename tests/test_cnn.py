"""The convolutional torso for image observations (MinAtar's 10 × 10 × C grids): its
convolution against a numpy loop, its LAPACK-free orthogonal kernels, the automatic choice
for image-shaped observations, and PPO learning Breakout-MinAtar."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.engine.train import HParams, TrainConfig, make_train
from jaxadv.nets.networks import make_network


def _np_conv_same(image, kernel, bias):
    """3 × 3 'SAME' cross-correlation of ``image [H, W, C]`` with ``kernel [3, 3, C, F]``."""
    h, w, _ = image.shape
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, kernel.shape[-1]))
    for i in range(h):
        for j in range(w):
            out[i, j] = np.einsum("abc,abcf->f", padded[i:i + 3, j:j + 3], kernel) + bias
    return out


@pytest.mark.fast_compile  # against a numpy loop (conftest.py)
def test_the_torso_convolves_the_image_as_a_numpy_loop_and_draws_orthogonal_kernels():
    shape = (5, 6, 3)
    net = make_network(4, hidden=(8,), activation="relu", image_shape=shape)
    obs = jax.random.normal(jax.random.key(1), (2, 5 * 6 * 3))
    params = jax.jit(net.init)(jax.random.key(0), obs[0])
    p = params["params"]
    kernel = np.asarray(p["actor_conv"]["kernel"])
    assert kernel.shape == (3, 3, 3, 16)
    flat = kernel.reshape(27, 16)
    np.testing.assert_allclose(flat.T @ flat, 2.0 * np.eye(16), atol=1e-4)  # √2 · orthonormal
    bias = np.array(jax.random.normal(jax.random.key(2), (16,)))
    p["actor_conv"]["bias"] = jnp.asarray(bias)
    logits, value = net.apply(params, obs)
    assert logits.shape == (2, 4) and value.shape == (2,)
    image = np.asarray(obs[1]).reshape(shape)
    hidden = np.maximum(_np_conv_same(image, kernel, bias), 0).reshape(-1)
    hidden = np.maximum(hidden @ np.asarray(p["actor_0"]["kernel"]) + np.asarray(p["actor_0"]["bias"]), 0)
    want = hidden @ np.asarray(p["policy_head"]["kernel"]) + np.asarray(p["policy_head"]["bias"])
    np.testing.assert_allclose(logits[1], want, rtol=1e-4, atol=1e-5)


def test_image_observations_choose_the_cnn_and_flat_ones_refuse_it():
    assert TrainConfig(env="Breakout-MinAtar").network == "cnn"
    assert TrainConfig(env="CartPole-v1").network == "mlp"
    with pytest.raises(ValueError, match="needs image observations"):
        TrainConfig(env="CartPole-v1", network="cnn")
    with pytest.raises(ValueError, match="image_shape"):
        make_network(2, image_shape=(10, 10))


def _cnn_returns(total_timesteps: int) -> tuple[float, float]:
    """1 seed (key 0), 64 envs × 32 steps, 4 × 8 minibatches, lr 5e-4: the mean return of the
    first and of the last 10% of updates (a random policy scores about 0.35)."""
    config = TrainConfig(env="Breakout-MinAtar", num_envs=64, num_steps=32, update_epochs=4,
                         num_minibatches=8, total_timesteps=total_timesteps, hidden=(64,),
                         activation="relu")
    assert config.network == "cnn"
    _, metrics = jax.jit(make_train(config))(jax.random.key(0), HParams(lr=5e-4, ent_coef=0.01))
    returns = np.asarray(metrics["episode_return"])
    tenth = len(returns) // 10
    return np.nanmean(returns[:tenth]), np.nanmean(returns[-tenth:])


def test_ppo_with_the_cnn_learns_breakout_minatar():
    """At 5×10⁴ steps (24 updates): keys 0–7 (vmapped) ended at 2.48–3.07 (key 0: 3.07), from
    first tenths of 0.31–0.39."""
    first, last = _cnn_returns(50_000)
    assert first < 1.0 and last >= 2.0, (first, last)


@pytest.mark.slow
def test_ppo_with_the_cnn_learns_breakout_minatar_at_1e5_steps():
    """Measured at 10⁵ steps: keys 0–7 ended at 3.45–4.64. At 1.2×10⁵ steps (first, last): key
    0 (0.46, 5.03); keys 1–7: first 0.41–0.46, last 3.57–4.71. At 1.5×10⁵ steps keys 0–2 and 7
    ended at 5.0–5.4."""
    first, last = _cnn_returns(100_000)
    assert first < 2.0 and last >= 3.0, (first, last)
