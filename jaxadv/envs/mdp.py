"""Small finite MDPs as arrays: :class:`TabularMDP` and three builders (random, chain,
gridworld). :mod:`jaxadv.science.exact` solves them exactly; :mod:`jaxadv.envs.tabular` samples
them as a gymnax environment.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TabularMDP", "chain_mdp", "gridworld_mdp", "random_mdp"]


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
    >>> from jaxadv.science.exact import values
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
