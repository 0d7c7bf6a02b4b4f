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
jaxlib 0.10 on CPU; DESIGN.md, "Known hazard"). With ``γ < 1`` or termination, 40
squarings leave an error below ``ρ(γP)^(2^40)``: nothing at float64.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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


class TabularMDP(NamedTuple):
    """A finite MDP as arrays.

    Attributes:
      transitions: ``[S, A, S]`` ``P(s' | s, a)``; a row summing to less than 1
        terminates with the missing probability.
      rewards: ``[S, A]`` expected reward of taking ``a`` in ``s``.
      initial: ``[S]`` initial state distribution ``μ``.
      gamma: discount (a scalar; may be traced).
    """

    transitions: jax.Array
    rewards: jax.Array
    initial: jax.Array
    gamma: Any


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


def random_mdp(
    key: jax.Array,
    num_states: int,
    num_actions: int,
    *,
    gamma: float = 0.9,
    termination: float = 0.0,
    reward_offset: float = 0.0,
) -> TabularMDP:
    """A random MDP: Dirichlet(1) transitions scaled by ``1 − termination``, N(offset, 1)
    rewards and a Dirichlet(1) initial distribution (all without LAPACK)."""
    if num_states < 1 or num_actions < 1:
        raise ValueError(f"`num_states` and `num_actions` must be >= 1, got {num_states}, {num_actions}")
    if not 0.0 <= termination < 1.0:
        raise ValueError(f"`termination` must lie in [0, 1), got {termination}")
    k_p, k_r, k_mu = jax.random.split(key, 3)
    p = jax.random.dirichlet(k_p, jnp.ones(num_states), (num_states, num_actions))
    r = reward_offset + jax.random.normal(k_r, (num_states, num_actions))
    mu = jax.random.dirichlet(k_mu, jnp.ones(num_states))
    return TabularMDP(p * (1.0 - termination), r, mu, gamma)


def chain_mdp(length: int, *, gamma: float = 0.99) -> TabularMDP:
    """A chain of ``length`` states walked left to right, reward 1 per step, ending after
    the last state. Action 0 moves on; action 1 stays put with reward 0 (a distractor)."""
    if length < 1:
        raise ValueError(f"`length` must be >= 1, got {length}")
    s = jnp.arange(length)
    p = jnp.zeros((length, 2, length))
    p = p.at[s[:-1], 0, s[:-1] + 1].set(1.0)  # the last state's "move on" terminates
    p = p.at[s, 1, s].set(1.0)
    r = jnp.stack([jnp.ones(length), jnp.zeros(length)], axis=-1)
    return TabularMDP(p, r, jnp.zeros(length).at[0].set(1.0), gamma)


def gridworld_mdp(
    width: int,
    height: int,
    *,
    slip: float = 0.1,
    goal_reward: float = 1.0,
    step_reward: float = 0.0,
    gamma: float = 0.95,
) -> TabularMDP:
    """A ``width × height`` grid: start in the top-left cell, the episode ends on entering the
    bottom-right one with ``goal_reward``. Actions 0–3 move up, down, left, right (into a
    wall: stay); with probability ``slip`` the move goes in a uniformly random direction
    instead. Every step also pays ``step_reward``. State ``s = row · width + col``.

    >>> mdp = gridworld_mdp(3, 1, slip=0.0, gamma=0.5)  # a corridor: right, right, goal
    >>> import jax.numpy as jnp
    >>> v = values(mdp, jnp.array([[-50.0, -50, -50, 0]] * 3))[0]  # always right
    >>> [round(float(x), 4) for x in v]    # the goal pays on entering: V = (γ·1, 1, 0)
    [0.5, 1.0, 0.0]
    """
    if width < 1 or height < 1 or width * height < 2:
        raise ValueError(f"`width` × `height` must be at least 2 cells, got {width} × {height}")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"`slip` must lie in [0, 1], got {slip}")
    num = width * height
    goal = num - 1
    moves = ((-1, 0), (1, 0), (0, -1), (0, 1))
    p = np.zeros((num, 4, num))
    r = np.full((num, 4), float(step_reward))
    for s in range(num):
        row, col = divmod(s, width)
        for a in range(4):
            for d, (dr, dc) in enumerate(moves):
                prob = (1.0 - slip) * (d == a) + slip / 4
                nr, nc = row + dr, col + dc
                nxt = nr * width + nc if 0 <= nr < height and 0 <= nc < width else s
                if nxt == goal:
                    r[s, a] += prob * goal_reward  # entering the goal ends the episode
                else:
                    p[s, a, nxt] += prob
    p[goal] = 0.0  # never occupied after the start; ends at once if it is
    r[goal] = 0.0
    mu = np.zeros(num)
    mu[0] = 1.0
    return TabularMDP(jnp.asarray(p, jnp.float32), jnp.asarray(r, jnp.float32),
                      jnp.asarray(mu, jnp.float32), gamma)
