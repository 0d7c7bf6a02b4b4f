"""A gymnax environment that samples any :class:`~jaxadv.envs.mdp.TabularMDP`.

The same MDP then has exact values and gradients (:mod:`jaxadv.science.exact`) *and* runs
through the ordinary rollout and trainer, which is what lets
:mod:`jaxadv.science.variance` measure sampled estimators against the exact gradient.

* State: an index ``s`` (``Discrete(S)`` observation; :func:`jaxadv.envs.make` turns
  it into a float one-hot ``[S]``, so a linear policy ``obs @ logits[S, A]`` *is*
  the tabular softmax policy).
* ``reset``: ``s_0 ~ initial``. ``step(a)``: reward ``rewards[s, a]`` (deterministic);
  the next state ``s' ~ transitions[s, a]``, or termination with the probability
  ``1 − Σ_s' transitions[s, a, s']``; truncation after ``max_steps_in_episode``.
* The MDP's arrays live in :class:`TabularParams`, so one compiled program can be
  ``vmap``-ed over MDPs of the same shape. ``gamma`` is not the environment's business.

Registered with :func:`jaxadv.envs.make` as ``"Tabular-v0"``:
``make("Tabular-v0", mdp=mdp, max_steps=100)``; and its gridworld
(:func:`~jaxadv.envs.mdp.gridworld_mdp`, 5 × 5 by default) as ``"Gridworld-v0"``, which a config
names without arrays (``jaxadv train --env Gridworld-v0``) and ``jaxadv eval --render``
draws as a picture of the policy.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from jaxadv.envs.mdp import TabularMDP, gridworld_mdp, random_mdp
from jaxadv.validate import positive_int

__all__ = ["TabularEnv", "TabularParams", "TabularState", "make_gridworld", "make_tabular"]


@struct.dataclass
class TabularState(environment.EnvState):
    """``state``: int32 ``[]`` current state index; ``time``: steps taken this episode."""

    state: jax.Array


@struct.dataclass
class TabularParams(environment.EnvParams):
    """The MDP as arrays: ``transitions [S, A, S]``, ``rewards [S, A]``, ``initial [S]``."""

    # gymnax's EnvParams gives its fields defaults, so these need one; every instance sets all three
    transitions: jax.Array = None  # type: ignore[assignment]
    rewards: jax.Array = None  # type: ignore[assignment]
    initial: jax.Array = None  # type: ignore[assignment]


class TabularEnv(environment.Environment[TabularState, TabularParams]):
    """Sample a :class:`TabularMDP` with gymnax 1.x's interface (see the module docstring).

    >>> import jax
    >>> from jaxadv.envs.mdp import chain_mdp
    >>> env = TabularEnv(chain_mdp(3), max_steps=10)
    >>> obs, state = env.reset(jax.random.key(0), env.default_params)
    >>> int(obs)                                         # the chain starts in state 0
    0
    >>> obs, state, reward, terminated, truncated, info = env.step(
    ...     jax.random.key(1), state, 0, env.default_params)
    >>> int(obs), float(reward), bool(terminated)        # "move on": state 1, reward 1
    (1, 1.0, False)
    """

    def __init__(self, mdp: TabularMDP, max_steps: int = 100, grid: tuple[int, int] | None = None):
        """``grid``: ``(width, height)`` when state ``s`` is cell ``divmod(s, width)`` of a
        gridworld (the name is then ``Gridworld-v0``)."""
        super().__init__()
        self.grid = grid
        s, a, s2 = jnp.shape(mdp.transitions)
        if s != s2 or jnp.shape(mdp.rewards) != (s, a) or jnp.shape(mdp.initial) != (s,):
            raise ValueError(
                "`mdp` must have transitions [S, A, S], rewards [S, A] and initial [S]; got "
                f"{jnp.shape(mdp.transitions)}, {jnp.shape(mdp.rewards)}, {jnp.shape(mdp.initial)}"
            )
        positive_int("max_steps", max_steps)
        self.num_states, self._num_actions = int(s), int(a)
        self._params = TabularParams(
            max_steps_in_episode=max_steps,
            transitions=jnp.asarray(mdp.transitions, jnp.float32),
            rewards=jnp.asarray(mdp.rewards, jnp.float32),
            initial=jnp.asarray(mdp.initial, jnp.float32),
        )

    @property
    def default_params(self) -> TabularParams:
        return self._params

    def reset_env(self, key: jax.Array, params: TabularParams) -> tuple[jax.Array, TabularState]:
        s = jax.random.categorical(key, jnp.log(params.initial)).astype(jnp.int32)
        return s, TabularState(time=jnp.zeros((), jnp.int32), state=s)

    def step_env(
        self, key: jax.Array, state: TabularState, action: Any, params: TabularParams
    ) -> tuple[jax.Array, TabularState, jax.Array, jax.Array, dict]:
        row = params.transitions[state.state, action]  # [S]
        end = jnp.maximum(1.0 - jnp.sum(row), 0.0)  # the missing mass: termination
        nxt = jax.random.categorical(key, jnp.log(jnp.append(row, end)))
        terminated = nxt == self.num_states
        s = jnp.where(terminated, state.state, nxt).astype(jnp.int32)  # any valid index
        reward = params.rewards[state.state, action]
        return s, TabularState(time=state.time + 1, state=s), reward, terminated, {}

    @property
    def name(self) -> str:
        return "Tabular-v0" if self.grid is None else "Gridworld-v0"

    @property
    def num_actions(self) -> int:
        return self._num_actions

    def action_space(self, params: TabularParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self._num_actions)

    def observation_space(self, params: TabularParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_states)


def make_tabular(mdp: TabularMDP | None = None, max_steps: int = 100) -> tuple[TabularEnv, TabularParams]:
    """``(env, params)`` for ``mdp`` (default: ``random_mdp(key(0), 8, 3)``) — the
    factory behind ``make("Tabular-v0", mdp=..., max_steps=...)``."""
    env = TabularEnv(random_mdp(jax.random.key(0), 8, 3) if mdp is None else mdp, max_steps)
    return env, env.default_params


def make_gridworld(width: int = 5, height: int = 5, slip: float = 0.1, goal_reward: float = 1.0,
                   step_reward: float = 0.0, max_steps: int = 100) -> tuple[TabularEnv, TabularParams]:
    """``(env, params)`` of :func:`~jaxadv.envs.mdp.gridworld_mdp` — the factory behind
    ``make("Gridworld-v0", width=..., height=..., ...)``: start top-left, the episode ends on
    entering the bottom-right cell (reward ``goal_reward``); actions up, down, left, right.

    >>> env, params = make_gridworld(3, 2)
    >>> env.name, env.grid, env.num_states, env.num_actions
    ('Gridworld-v0', (3, 2), 6, 4)
    """
    mdp = gridworld_mdp(width, height, slip=slip, goal_reward=goal_reward, step_reward=step_reward)
    env = TabularEnv(mdp, max_steps, grid=(width, height))
    return env, env.default_params
