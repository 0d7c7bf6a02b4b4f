"""Exact ground truth on a tiny sequence task: the enumeration, J against Monte Carlo through
the environment, the prefix-tree values, ∇J against finite differences, and the sampled
sequence estimators' bias against ∇J (unbiased ones contain 0, known-biased ones do not)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.envs.sequence import SequenceState, SequenceTask
from jaxadv.nets.transformer import make_transformer
from jaxadv.science import sequence_exact as se

# exact ground truth against references (conftest.py: fast_compile)
pytestmark = [pytest.mark.timeout(300), pytest.mark.fast_compile]

# Prompt lengths 1, 2, 3, 3 (difficulty varies); partial reward minus a length penalty
# (reward correlates with length).
_ENV = SequenceTask("reverse", num_digits=3, prompt_length=3, min_prompt_length=1,
                    response_length=4, reward="partial", length_penalty=0.3)
_PAD = _ENV.tokens.pad
_PROMPTS = jnp.array([[_PAD, _PAD, 1], [_PAD, 0, 2], [2, 1, 0], [1, 1, 2]], jnp.int32)


def _scale_head(params, factor):
    """The policy head × factor: a far-from-uniform policy (the init is nearly uniform)."""
    is_head = lambda path: "policy_head" in jax.tree_util.keystr(path)
    return jax.tree_util.tree_map_with_path(lambda p, x: x * factor if is_head(p) else x, params)


@pytest.fixture(scope="module")
def policy():
    net = make_transformer(_ENV.vocab_size, _ENV.obs_length, _ENV.num_actions, pad=_PAD,
                           layers=1, width=8, heads=2, value_head=False)
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros(_ENV.obs_length))
    params = _scale_head(params, 30.0)
    return net, params


@pytest.fixture(scope="module")
def tables(policy):
    net, params = policy
    return jax.jit(lambda p: se.sequence_tables(p, net.apply_all, _ENV, _PROMPTS))(params)


# ------------------------------------------------------------------ enumeration


@pytest.mark.parametrize(("d", "r"), [(2, 1), (2, 5), (3, 4), (3, 6)])
def test_enumeration_is_every_response_once(d, r):
    env = SequenceTask("sort", num_digits=d, prompt_length=1, response_length=r)
    actions, lengths = (np.asarray(x) for x in se.enumerate_responses(env))
    assert actions.shape == (sum(d**n for n in range(r)) + d**r, r)  # closed form
    assert len({tuple(row) for row in actions}) == len(actions)  # distinct
    for row, n in zip(actions, lengths):
        assert np.all((row[:n] >= 0) & (row[:n] < d))  # n digits ...
        if n < r:
            assert row[n] == d and np.all(row[n + 1:] == -1)  # ... then EOS, then padding


def test_probabilities_sum_to_one_and_rows_are_the_final_observations(policy):
    net, params = policy
    logp = jax.jit(lambda p: se.token_log_probs(p, net.apply_all, _ENV, _PROMPTS))(params)
    np.testing.assert_allclose(jnp.exp(logp.sum(-1)).sum(-1), 1.0, atol=1e-5)
    rows = se.response_tokens(_ENV, _PROMPTS, se.enumerate_responses(_ENV))
    assert _ENV.decode(rows[2, 2]) == "210 → 1<eos>"  # responses "", "0", "1", …
    assert _ENV.decode(rows[3, 5]) == "112 → 01<eos>"  # … "2", "00", "01", …
    assert _ENV.decode(rows[0, -1]) == "1 → 2222"  # the last: R digits, no EOS


# ------------------------------------------------------------------ oracles through the env


def _ancestral(net, params, key, prompt, num):
    """``num`` episodes of ``env.step_env`` with actions from ``net.apply``: (rewards, lengths)."""
    target, target_length = _ENV.target_for(prompt)
    state = SequenceState(time=jnp.zeros((), jnp.int32), prompt=prompt, target=target,
                          target_length=target_length,
                          response=jnp.full((_ENV.response_length,), _PAD, jnp.int32),
                          response_length=jnp.zeros((), jnp.int32))

    def episode(key):
        def step(carry, key):
            state, done, total = carry
            obs = jnp.concatenate([state.prompt, jnp.array([_ENV.tokens.sep]), state.response])
            action = jax.random.categorical(key, net.apply(params, obs)[0])
            _, new, reward, terminated, _ = _ENV.step_env(key, state, action, _ENV.default_params)
            state = jax.tree.map(lambda a, b: jnp.where(done, a, b), state, new)
            return (state, done | terminated, total + jnp.where(done, 0.0, reward)), None

        init = (state, jnp.zeros((), bool), jnp.zeros(()))
        (_, _, total), _ = jax.lax.scan(step, init, jax.random.split(key, _ENV.response_length))
        return total

    return jax.vmap(episode)(jax.random.split(key, num))


def test_objective_matches_monte_carlo_through_the_environment(policy, tables):
    net, params = policy
    num = 3000
    rewards = np.asarray(jax.jit(jax.vmap(lambda k, p: _ancestral(net, params, k, p, num)))(
        jax.random.split(jax.random.key(7), len(_PROMPTS)), _PROMPTS), np.float64)  # [Np, num]
    j = float(jax.jit(lambda p: se.exact_objective(p, net.apply_all, _ENV, _PROMPTS))(params))
    se_j = np.sqrt(np.sum(rewards.var(axis=1, ddof=1) / num)) / len(_PROMPTS)
    assert abs(rewards.mean() - j) < 4 * se_j, (rewards.mean(), j, se_j)
    np.testing.assert_allclose(tables.objectives.mean(), j, atol=1e-6)
    per_prompt_se = rewards.std(axis=1, ddof=1) / np.sqrt(num)
    assert np.all(np.abs(rewards.mean(1) - np.asarray(tables.objectives)) < 4 * per_prompt_se)


def test_greedy_response_matches_stepwise_argmax(policy):
    net, params = policy
    index = jax.jit(lambda p: se.greedy_responses(p, net.apply_all, _ENV, _PROMPTS))(params)
    actions = np.asarray(se.enumerate_responses(_ENV).actions)[np.asarray(index)]
    apply = jax.jit(net.apply)
    for prompt, got in zip(np.asarray(_PROMPTS), actions):
        obs = np.concatenate([prompt, [_ENV.tokens.sep], np.full(_ENV.response_length, _PAD)])
        want = []
        for t in range(_ENV.response_length):
            a = int(jnp.argmax(apply(params, obs)[0]))
            want.append(a)
            if a == _ENV.num_digits:
                break
            obs[_ENV.prompt_size + 1 + t] = a
        assert got[:len(want)].tolist() == want


# ------------------------------------------------------------------ the prefix tree


def test_prefix_values_match_the_enumeration(policy, tables):
    net, params = policy
    values = np.asarray(jax.jit(lambda p: se.prefix_values(p, net.apply_all, _ENV, _PROMPTS))(params))
    np.testing.assert_allclose(values[:, 0], tables.objectives, atol=1e-6)  # V(∅) = J_p
    # every node: V(c) = Σ_{m ⊒ c} π(m) r(m) / Σ_{m ⊒ c} π(m), straight from the enumeration
    actions, lengths = (np.asarray(x) for x in se.enumerate_responses(_ENV))
    pi, r = np.exp(np.asarray(tables.log_probs, np.float64)), np.asarray(tables.rewards)
    d, big_r = _ENV.num_digits, _ENV.response_length
    index = 0
    for t in range(big_r + 1):
        for code in range(d**t):
            digits = [(code // d ** (t - 1 - s)) % d for s in range(t)]
            ext = (lengths >= t) & np.all(actions[:, :t] == np.array(digits, int), axis=1)
            want = (pi[:, ext] * r[:, ext]).sum(1) / pi[:, ext].sum(1)
            np.testing.assert_allclose(values[:, index], want, rtol=1e-4, atol=1e-6)
            index += 1
    assert index == values.shape[1]
    # the tables' critic is this tree read at each response's prefixes
    prefix = np.asarray(se.prefix_index(_ENV))
    mask = np.asarray(tables.mask)
    np.testing.assert_allclose(np.asarray(tables.values), np.where(mask, values[:, prefix], 0.0),
                               atol=1e-6)


# ------------------------------------------------------------------ the exact gradient


def test_exact_gradient_matches_finite_differences_and_the_score_identity(policy, tables):
    net, params = policy
    # score-function identity from the per-token Jacobian
    np.testing.assert_allclose(tables.prompt_gradients.mean(0), tables.gradient, atol=1e-6)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
        flat, unravel = jax.flatten_util.ravel_pytree(p64)
        objective = jax.jit(lambda f: se.exact_objective(unravel(f), net.apply_all, _ENV, _PROMPTS))
        grad = jax.jit(lambda p: se.exact_gradient(p, net.apply_all, _ENV, _PROMPTS))(p64)
        assert grad.dtype == jnp.float64
        rng = np.random.default_rng(0)
        h = 1e-5
        for direction in [rng.normal(size=flat.shape), np.asarray(grad)]:
            u = jnp.asarray(direction / np.linalg.norm(direction))
            fd = (objective(flat + h * u) - objective(flat - h * u)) / (2 * h)
            np.testing.assert_allclose(float(fd), float(grad @ u), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(tables.gradient, np.asarray(grad), rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------ sampled estimators


@pytest.fixture(scope="module")
def report(policy, tables):
    net, params = policy
    return se.sequence_report(
        jax.random.key(1), params, net.apply_all, _ENV, _PROMPTS,
        estimators=("return", "batchmean", "rloo", "remax", "gae", "grpo"),
        reductions=("sequence", "constant"), shapes=((4, 4),), num_batches=2000,
        confidence=0.999, tables=tables)


def test_unbiased_estimators_contain_zero_and_known_biases_show(report):
    rows, info = report
    by = {(r["estimator"], r["reduction"]): r for r in rows}
    unbiased = [key for key, r in by.items() if r["unbiased_in_theory"]]
    assert sorted(unbiased) == sorted((e, "constant") for e in
                                      ("return", "batchmean", "rloo", "remax", "gae"))
    for key in unbiased:  # R·ĝ / target_scale is unbiased for ∇J: 0 in both intervals
        assert by[key]["bias_lo"] == 0.0 and by[key]["perp_bias_lo"] == 0.0, (key, by[key])
        assert abs(by[key]["mean_scale"] - 1.0) < 0.1, (key, by[key]["mean_scale"])
    # grpo's per-prompt std reweights prompts by difficulty: off ∇J's direction
    assert by["grpo", "constant"]["perp_bias_lo"] > 0.0, by["grpo", "constant"]
    # per-response length normalisation weights short responses more
    assert by["gae", "sequence"]["bias_lo"] > 0.0, by["gae", "sequence"]
    assert by["gae", "sequence"]["perp_bias_lo"] > 0.0, by["gae", "sequence"]
    # the exact critic cuts the variance of the critic-free baselines
    assert by["gae", "constant"]["variance"] < by["rloo", "constant"]["variance"]
    assert info["num_responses"] == 121 and info["num_prompts"] == 4
    assert len(set(np.round(info["reward_stds"], 3))) == 4  # prompts differ in difficulty


def test_drgrpo_is_rloo_times_a_known_constant(tables):
    k = 4
    est = jax.jit(lambda key, t: se.sample_sequence_gradients(
        key, t, estimators=("drgrpo", "rloo"), reductions=("constant",), shapes=((2, k),),
        num_batches=5))(jax.random.key(3), tables)
    np.testing.assert_allclose(est[0, 0], (k - 1) / k * est[0, 1], rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ input checks and docs


def test_bad_input_is_refused(policy, tables):
    net, params = policy
    with pytest.raises(ValueError, match="responses"):
        se.enumerate_responses(SequenceTask("sort", num_digits=10, prompt_length=6))
    with pytest.raises(ValueError, match="SequenceTask"):
        se.enumerate_responses(object())
    with pytest.raises(ValueError, match="prompts"):
        se.response_rewards(_ENV, _PROMPTS[:, :2])
    with pytest.raises(ValueError, match="estimators"):
        se.sample_sequence_gradients(jax.random.key(0), tables, estimators=("ppo",))
    with pytest.raises(ValueError, match="shapes"):
        se.sample_sequence_gradients(jax.random.key(0), tables, shapes=((4, 1),))
    with pytest.raises(ValueError, match="num_batches"):
        se.sequence_report(jax.random.key(0), params, net.apply_all, _ENV, _PROMPTS, num_batches=2)


def test_public_names_have_docstrings():
    for name in se.__all__:
        obj = getattr(se, name)
        if callable(obj):
            assert obj.__doc__, name
