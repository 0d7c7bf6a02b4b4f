"""Exact values and policy gradients of tabular softmax policies on small MDPs.

A :class:`TabularMDP` has ``transitions[s, a, s']`` (rows may sum to less than 1: the
missing mass is termination), ``rewards[s, a]``, an initial distribution
``initial[s]`` and a discount ``gamma``. For a softmax policy ``π = softmax(logits)``
with ``logits [S, A]``:

* ``V^π = (I − γ P_π)^{-1} r_π`` with ``P_π[s, s'] = Σ_a π(a|s) P[s, a, s']`` and
  ``r_π[s] = Σ_a π(a|s) r[s, a]``; ``Q^π = r + γ P V^π``;
* ``J(θ) = μᵀ V^π``, and its exact gradient, which by the policy-gradient theorem is
  ``∂J/∂θ[s, a] = d(s) π(a|s) (Q(s, a) − V(s))`` with the discounted visitation
  ``d = (I − γ P_π)^{-ᵀ} μ``.

The inverse is applied by a doubling Neumann series — ``Σ_{k<2^m} (γ P_π)^k`` from
``m`` matrix squarings in a ``lax.fori_loop`` — plain ``jnp`` matmuls, so every
function here can be ``vmap``-ed without touching LAPACK (batched LAPACK can deadlock
jaxlib 0.10 on CPU; docs/design.md, "Batched LAPACK under vmap"). With ``γ < 1`` or
termination, 40 squarings leave an error below ``ρ(γP)^(2^40)``: nothing at float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxadv.envs.mdp import TabularMDP, chain_mdp, gridworld_mdp, random_mdp

__all__ = [
    "TabularMDP",
    "chain_mdp",
    "gridworld_mdp",
    "objective",
    "policy_gradient",
    "random_mdp",
    "values",
    "visitation",
]

_SQUARINGS = 40


def _check(mdp: TabularMDP, logits: jax.Array) -> None:
    s, a, s2 = jnp.shape(mdp.transitions)
    if s != s2:
        raise ValueError(f"`transitions` must be [S, A, S], got {jnp.shape(mdp.transitions)}")
    if jnp.shape(mdp.rewards) != (s, a):
        raise ValueError(f"`rewards` must be [S, A] = {(s, a)}, got {jnp.shape(mdp.rewards)}")
    if jnp.shape(mdp.initial) != (s,):
        raise ValueError(f"`initial` must be [S] = {(s,)}, got {jnp.shape(mdp.initial)}")
    if jnp.shape(logits) != (s, a):
        raise ValueError(f"`logits` must be [S, A] = {(s, a)}, got {jnp.shape(logits)}")


def _neumann(m: jax.Array, b: jax.Array) -> jax.Array:
    """``(I − m)^{-1} b = Σ_k m^k b`` for ``ρ(m) < 1``, by doubling: b ← b + M b, M ← M²."""

    def body(_, carry):
        power, acc = carry
        return power @ power, acc + power @ acc

    _, acc = jax.lax.fori_loop(0, _SQUARINGS, body, (m, b))
    return acc


def _policy_matrices(mdp: TabularMDP, logits: jax.Array):
    pi = jax.nn.softmax(logits, axis=-1)
    p_pi = jnp.einsum("sa,sat->st", pi, mdp.transitions)
    r_pi = jnp.sum(pi * mdp.rewards, axis=-1)
    return pi, p_pi, r_pi


def values(mdp: TabularMDP, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(V^π [S], Q^π [S, A])`` of the softmax policy ``π = softmax(logits [S, A])``.

    >>> import jax.numpy as jnp
    >>> mdp = chain_mdp(2, gamma=0.5)                 # reward 1 per step, then the end
    >>> v, q = values(mdp, jnp.array([[0.0, -jnp.inf]] * 2))  # always move on
    >>> v
    Array([1.5, 1. ], dtype=float32)
    """
    _check(mdp, logits)
    _, p_pi, r_pi = _policy_matrices(mdp, logits)
    v = _neumann(mdp.gamma * p_pi, r_pi)
    q = mdp.rewards + mdp.gamma * jnp.einsum("sat,t->sa", mdp.transitions, v)
    return v, q


def visitation(mdp: TabularMDP, logits: jax.Array) -> jax.Array:
    """Discounted state visitation ``d[s] = Σ_t γ^t Pr(s_t = s)`` from ``μ``: ``[S]``.

    Unnormalised: ``Σ_s d(s) = E[Σ_t γ^t]`` (``1/(1 − γ)`` without termination).
    """
    _check(mdp, logits)
    _, p_pi, _ = _policy_matrices(mdp, logits)
    return _neumann(mdp.gamma * p_pi.T, mdp.initial)


def objective(mdp: TabularMDP, logits: jax.Array) -> jax.Array:
    """``J(θ) = μᵀ V^π``: the expected discounted return from the initial distribution."""
    return mdp.initial @ values(mdp, logits)[0]


def policy_gradient(mdp: TabularMDP, logits: jax.Array) -> jax.Array:
    """The exact gradient ``∇_θ J`` for ``θ = logits [S, A]``: ``d(s) π(a|s) (Q(s, a) − V(s))``.

    >>> import jax, jax.numpy as jnp
    >>> mdp = random_mdp(jax.random.key(0), 4, 2)
    >>> g = policy_gradient(mdp, jnp.zeros((4, 2)))
    >>> bool(jnp.allclose(g, jax.grad(lambda l: objective(mdp, l))(jnp.zeros((4, 2))), atol=1e-4))
    True
    """
    v, q = values(mdp, logits)
    d = visitation(mdp, logits)
    pi = jax.nn.softmax(logits, axis=-1)
    return d[:, None] * pi * (q - v[:, None])
