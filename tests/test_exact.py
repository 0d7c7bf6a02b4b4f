"""Exact values and policy gradients against numpy solves, finite differences and the PG theorem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.science import exact

pytestmark = pytest.mark.fast_compile  # checks against references and mechanics (conftest.py)


def _numpy_reference(mdp, logits):
    """V, Q, d and the policy-gradient-theorem gradient with np.linalg.solve (float64)."""
    p = np.asarray(mdp.transitions, np.float64)
    r = np.asarray(mdp.rewards, np.float64)
    mu = np.asarray(mdp.initial, np.float64)
    logits = np.asarray(logits, np.float64)
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    s = len(mu)
    p_pi = np.einsum("sa,sat->st", pi, p)
    r_pi = (pi * r).sum(1)
    a_mat = np.eye(s) - mdp.gamma * p_pi
    v = np.linalg.solve(a_mat, r_pi)
    q = r + mdp.gamma * np.einsum("sat,t->sa", p, v)
    d = np.linalg.solve(a_mat.T, mu)
    # Σ_s d(s) Σ_a π(a|s) ∇_θ log π(a|s) Q(s, a), with ∂ log π(a|s)/∂θ[s, b] = 1[a=b] − π(b|s)
    grad = np.zeros_like(logits)
    for si in range(s):
        for b in range(logits.shape[1]):
            grad[si, b] = d[si] * sum(
                pi[si, a] * ((a == b) - pi[si, b]) * q[si, a] for a in range(logits.shape[1])
            )
    return v, q, d, grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("termination", [0.0, 0.2])
def test_values_and_gradient_match_numpy_and_finite_differences(seed, termination):
    with jax.enable_x64(True):
        key = jax.random.key(seed)
        mdp = exact.random_mdp(key, 6, 3, gamma=0.9, termination=termination)
        mdp = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), mdp)
        logits = jax.random.normal(jax.random.fold_in(key, 7), (6, 3), jnp.float64)
        v_ref, q_ref, d_ref, g_ref = _numpy_reference(mdp, logits)
        v, q = exact.values(mdp, logits)
        np.testing.assert_allclose(v, v_ref, rtol=1e-10)
        np.testing.assert_allclose(q, q_ref, rtol=1e-10)
        np.testing.assert_allclose(exact.visitation(mdp, logits), d_ref, rtol=1e-10)
        g = exact.policy_gradient(mdp, logits)
        np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-12)
        # central finite differences of J
        eps = 1e-6
        objective = jax.jit(exact.objective)
        fd = np.zeros((6, 3))
        for s in range(6):
            for a in range(3):
                up = objective(mdp, logits.at[s, a].add(eps))
                down = objective(mdp, logits.at[s, a].add(-eps))
                fd[s, a] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)  # FD round-off ~ 1e-16·J/eps
        # autodiff through the Neumann series agrees too
        np.testing.assert_allclose(jax.grad(lambda l: exact.objective(mdp, l))(logits), g, rtol=1e-8)


def test_chain_values_by_hand():
    # Always "move on": V(s) = Σ_{k < L − s} γ^k.
    mdp = exact.chain_mdp(4, gamma=0.5)
    v, q = exact.values(mdp, jnp.array([[0.0, -jnp.inf]] * 4))
    np.testing.assert_allclose(v, [1.875, 1.75, 1.5, 1.0], rtol=1e-6)
    # Staying put in state 3 earns 0 now, then V(3) discounted.
    np.testing.assert_allclose(q[3, 1], 0.5 * 1.0, rtol=1e-6)


def test_vmapped_over_mdps_without_lapack():
    keys = jax.random.split(jax.random.key(0), 16)
    mdps = jax.vmap(lambda k: exact.random_mdp(k, 5, 2, gamma=0.95))(keys)
    logits = jnp.zeros((16, 5, 2))
    fn = jax.jit(jax.vmap(exact.policy_gradient))
    jaxpr = str(jax.make_jaxpr(jax.vmap(exact.policy_gradient))(mdps, logits))
    for primitive in ("lu", "qr", "triangular_solve", "cholesky", "eigh", "svd"):
        assert f" {primitive}[" not in jaxpr and f"{primitive}(" not in jaxpr, primitive
    batched = fn(mdps, logits)
    for i in (0, 7, 15):
        one = jax.tree.map(lambda x, i=i: x[i], mdps)
        np.testing.assert_allclose(batched[i], exact.policy_gradient(one, logits[i]), rtol=1e-5, atol=1e-6)


def test_bad_shapes_name_the_argument():
    mdp = exact.random_mdp(jax.random.key(0), 3, 2)
    with pytest.raises(ValueError, match="logits"):
        exact.values(mdp, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="rewards"):
        exact.values(mdp._replace(rewards=jnp.zeros((2, 2))), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="termination"):
        exact.random_mdp(jax.random.key(0), 3, 2, termination=1.0)


def test_gridworld_mass_and_values_match_numpy():
    mdp = exact.gridworld_mdp(3, 3, slip=0.2, goal_reward=1.0, step_reward=-0.1, gamma=0.9)
    p, r = np.asarray(mdp.transitions, np.float64), np.asarray(mdp.rewards, np.float64)
    # every non-goal (s, a): the mass that stays on the grid plus the mass entering the goal is 1
    goal = 8
    entering = (r[:goal] + 0.1) / 1.0  # the expected goal reward is P(enter goal)
    np.testing.assert_allclose(p[:goal].sum(-1) + entering, 1.0, atol=1e-6)
    assert p[goal].sum() == 0.0
    # from the cell left of the goal, "right" enters it with 1 − slip + slip/4
    assert entering[7, 3] == pytest.approx(0.8 + 0.05)
    with jax.enable_x64(True):
        mdp64 = exact.TabularMDP(*(jnp.asarray(x, jnp.float64) for x in mdp[:3]), mdp.gamma)
        logits = jax.random.normal(jax.random.key(3), (9, 4), jnp.float64)
        v_ref, _, _, grad_ref = _numpy_reference(mdp64, logits)
        np.testing.assert_allclose(exact.values(mdp64, logits)[0], v_ref, atol=1e-10)
        np.testing.assert_allclose(exact.policy_gradient(mdp64, logits), grad_ref, atol=1e-9)


def test_gridworld_rejects_bad_sizes():
    with pytest.raises(ValueError, match="width"):
        exact.gridworld_mdp(1, 1)
    with pytest.raises(ValueError, match="slip"):
        exact.gridworld_mdp(2, 2, slip=1.5)
