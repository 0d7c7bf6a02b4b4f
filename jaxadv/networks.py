"""Actor-critic MLPs behind an ``(init, apply)`` pair of pure functions.

``apply(params, obs[*B, obs_dim]) -> (policy, critic)`` runs actor and critic in
one call. ``policy`` is the categorical ``logits [*B, A]`` or the Gaussian
``(mean [*B, D], log_std [*B, D])``; ``critic`` is ``V(s) [*B]``, or
``Q(s, ·) [*B, A]`` when the network is built with ``q_critic=True`` (the ``qv``
estimator). Flax linen modules live inside; parameters are plain pytrees outside.

Weights use an orthogonal initialiser (√2 hidden, 0.01 policy, 1.0 critic, as is
customary for PPO) written with plain ``jnp`` ops — classical Gram–Schmidt with
re-orthogonalisation — instead of flax's QR-based one: batched LAPACK calls can
deadlock jaxlib 0.10 on CPU when ``init`` is ``vmap``-ed over seeds (DESIGN.md,
"Known hazard").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ActorCritic", "Network", "make_network", "orthogonal"]

Params = Any


def _orthonormal_columns(a: jax.Array) -> jax.Array:
    """Orthonormalise the columns of ``a [m, n]`` (m ≥ n) by Gram–Schmidt, twice per column.

    Equals the Q of a QR decomposition whose R has a positive diagonal, so a
    Gaussian ``a`` gives a Haar-distributed Q. Plain ``jnp`` ops in a ``fori_loop``.
    """
    n = a.shape[1]
    cols = jnp.arange(n)

    def body(j, q):
        v = a[:, j]
        done = (cols < j).astype(a.dtype)  # the columns already orthonormalised
        for _ in range(2):  # "twice is enough" (Giraud et al., 2005)
            v = v - q @ (done * (q.T @ v))
        v = v * jax.lax.rsqrt(jnp.sum(v * v))
        return q.at[:, j].set(v)

    return jax.lax.fori_loop(0, n, body, jnp.zeros_like(a))


def orthogonal(scale: float = 1.0) -> Callable:
    """A flax initialiser of (semi-)orthogonal ``[fan_in, fan_out]`` matrices times ``scale``.

    Same distribution as ``jax.nn.initializers.orthogonal(scale)``, without LAPACK.

    >>> import jax, jax.numpy as jnp
    >>> w = orthogonal(2.0)(jax.random.key(0), (5, 3))
    >>> bool(jnp.allclose(w.T @ w, 4.0 * jnp.eye(3), atol=1e-5))
    True
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        if len(shape) != 2:
            raise ValueError(f"orthogonal init needs a 2-D shape, got {tuple(shape)}")
        rows, cols = shape
        a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
        q = _orthonormal_columns(a)
        q = q if rows >= cols else q.T
        return (scale * q).astype(dtype)

    return init


def _dense(features: int, scale: float, name: str) -> nn.Dense:
    return nn.Dense(
        features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros, name=name
    )


class ActorCritic(nn.Module):
    """MLP actor and critic, with separate torsos or one shared torso.

    Attributes:
      num_outputs: number of discrete actions A, or the action dimension D.
      discrete: categorical (logits) or diagonal Gaussian (mean, state-independent log_std).
      hidden: widths of the hidden layers.
      activation: "tanh" or "relu".
      shared_torso: one torso feeds both heads.
      q_critic: the critic outputs Q(s, ·) (A values) instead of V(s).
    """

    num_outputs: int
    discrete: bool = True
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    q_critic: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array):
        act = {"tanh": nn.tanh, "relu": nn.relu}[self.activation]

        def torso(x, name):
            for i, width in enumerate(self.hidden):
                x = act(_dense(width, 2.0**0.5, f"{name}_{i}")(x))
            return x

        actor_h = torso(obs, "torso" if self.shared_torso else "actor")
        critic_h = actor_h if self.shared_torso else torso(obs, "critic")
        out = _dense(self.num_outputs, 0.01, "policy_head")(actor_h)
        critic_width = self.num_outputs if self.q_critic else 1
        critic = _dense(critic_width, 1.0, "critic_head")(critic_h)
        critic = critic if self.q_critic else critic[..., 0]
        if self.discrete:
            return out, critic
        log_std = self.param("log_std", nn.initializers.zeros, (self.num_outputs,))
        return (out, jnp.broadcast_to(log_std, out.shape)), critic


class Network(NamedTuple):
    """A pure ``init(key, obs) -> params`` and ``apply(params, obs) -> (policy, critic)``."""

    init: Callable[[jax.Array, jax.Array], Params]
    apply: Callable[[Params, jax.Array], tuple[Any, jax.Array]]


def make_network(
    num_outputs: int,
    *,
    discrete: bool = True,
    hidden: tuple[int, ...] = (64, 64),
    activation: str = "tanh",
    shared_torso: bool = False,
    q_critic: bool = False,
) -> Network:
    """Build the actor-critic ``(init, apply)`` pair (see :class:`ActorCritic`).

    >>> import jax, jax.numpy as jnp
    >>> net = make_network(2, hidden=(8,))
    >>> params = net.init(jax.random.key(0), jnp.zeros(4))
    >>> logits, value = net.apply(params, jnp.zeros((3, 4)))
    >>> logits.shape, value.shape
    ((3, 2), (3,))
    """
    if activation not in ("tanh", "relu"):
        raise ValueError(f"`activation` must be 'tanh' or 'relu', got {activation!r}")
    module = ActorCritic(num_outputs, discrete, tuple(hidden), activation, shared_torso, q_critic)
    return Network(init=module.init, apply=module.apply)
