"""jaxadv.objective_exact: each objective's exact expected gradient against references built
independently from the enumerated responses' token log-probabilities (jnp sums of the
definitions, differentiated once), on-policy and off-policy, and the report's rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxadv import cli
from jaxadv.envs.sequence import SequenceTask
from jaxadv.objective_exact import Behaviour, ascend, objective_report, population_gradients
from jaxadv.sequence_exact import (
    enumerate_responses,
    exact_gradient,
    make_prompts,
    response_rewards,
    token_log_probs,
)
from jaxadv.transformer import make_transformer

pytestmark = pytest.mark.fast_compile  # compares gradients with references (conftest.py)

ENV = SequenceTask("reverse", num_digits=2, prompt_length=2, min_prompt_length=1, reward="partial")
NET = make_transformer(ENV.vocab_size, ENV.obs_length, ENV.num_actions, pad=ENV.tokens.pad,
                       layers=1, width=8, heads=2, value_head=False)


@pytest.fixture(scope="module")
def policies():
    key_net, key_prompts = jax.random.split(jax.random.key(3))
    params = jax.jit(NET.init)(key_net, jnp.zeros(ENV.obs_length))
    params = jax.tree.map(lambda x: x * 10.0, params)  # a policy far from uniform
    prompts = make_prompts(key_prompts, ENV, 3)
    stale = jax.jit(lambda p: ascend(p, NET.apply_all, ENV, prompts, steps=2, step_size=0.3))(params)
    return params, stale, prompts


def _reference(theta, behaviour, prompts, token_term, per_response_mean=False, temperature=1.0):
    """−∇θ of Σ_p Σ_m π_b(m|p) Σ_t term(ρ_t, A, log π_t) / norm, from token log-probs."""
    responses = enumerate_responses(ENV)
    apply_b = (lambda p, x: (NET.apply_all(p, x)[0] / temperature, None))
    old = token_log_probs(behaviour, apply_b, ENV, prompts, responses)  # [Np, M, R]
    pi_b = jnp.exp(old.sum(-1))
    rewards = response_rewards(ENV, prompts, responses)
    adv = rewards - jnp.sum(pi_b * rewards, -1, keepdims=True)
    mask = np.arange(old.shape[-1])[None] < np.minimum(np.asarray(responses.lengths) + 1,
                                                       ENV.response_length)[:, None]
    tokens = mask.sum(-1)
    flat, unravel = ravel_pytree(theta)

    def objective(f):
        lp = token_log_probs(unravel(f), NET.apply_all, ENV, prompts, responses)
        terms = jnp.where(mask[None], token_term(jnp.exp(lp - old), adv[..., None], lp), 0.0)
        per = terms.sum(-1)
        if per_response_mean:
            return jnp.sum(pi_b * per / tokens[None]) / prompts.shape[0]
        return jnp.sum(pi_b * per) / (prompts.shape[0] * jnp.mean(pi_b @ tokens))

    return jax.grad(objective)(flat)


def _population(theta, behaviour, prompts, names, temperature=1.0):
    b = Behaviour("b", behaviour, NET.apply_all, temperature)
    grads, clipped = jax.jit(lambda t, bp: population_gradients(
        t, NET.apply_all, ENV, prompts, b._replace(params=bp), names))(theta, behaviour)
    return np.asarray(grads), np.asarray(clipped)


def test_on_policy_every_token_objective_is_the_exact_gradient_over_the_mean_length(policies):
    params, _, prompts = policies
    grads, clipped = _population(params, params, prompts, ("reinforce", "ppo", "dapo", "cispo"))
    truth = np.asarray(exact_gradient(params, NET.apply_all, ENV, prompts))
    ref = _reference(params, params, prompts, lambda rho, a, lp: rho * a)
    for g in grads:
        np.testing.assert_allclose(g, ref, rtol=2e-3, atol=1e-6)
        cos = g @ truth / np.linalg.norm(g) / np.linalg.norm(truth)
        assert cos > 0.9999
    np.testing.assert_array_equal(clipped, 0.0)


def test_gspo_on_policy_weighs_each_response_by_one_over_its_length(policies):
    params, _, prompts = policies
    (g,), _ = _population(params, params, prompts, ("gspo",))
    # ∇ s_m = s_m (1/|y|) Σ_t ∇ log π: the score of each response divided by its tokens
    ref = _reference(params, params, prompts, lambda rho, a, lp: lp * a, per_response_mean=True)
    np.testing.assert_allclose(g, ref, rtol=2e-3, atol=1e-6)
    truth = np.asarray(exact_gradient(params, NET.apply_all, ENV, prompts))
    assert g @ truth / np.linalg.norm(g) / np.linalg.norm(truth) < 0.999  # not ∥ ∇J


@pytest.mark.parametrize(("name", "low", "high"), [("ppo", 0.2, 0.2), ("dapo", 0.2, 0.28)])
def test_off_policy_clipped_objectives_equal_their_definition(policies, name, low, high):
    params, stale, prompts = policies
    (g,), (frac,) = _population(stale, params, prompts, (name,))
    term = lambda rho, a, lp: jnp.minimum(rho * a, jnp.clip(rho, 1 - low, 1 + high) * a)
    np.testing.assert_allclose(g, _reference(stale, params, prompts, term), rtol=2e-3, atol=1e-6)
    assert 0.0 < frac < 1.0  # the stale policy moved: some tokens clip, not all


def test_off_policy_cispo_and_tempered_reinforce_equal_their_definition(policies):
    params, stale, prompts = policies
    (g,), _ = _population(stale, params, prompts, ("cispo",))
    term = lambda rho, a, lp: jax.lax.stop_gradient(jnp.clip(rho, 0.0, 1.28)) * a * lp
    np.testing.assert_allclose(g, _reference(stale, params, prompts, term), rtol=2e-3, atol=1e-6)
    (g,), _ = _population(params, params, prompts, ("reinforce",), temperature=2.0)
    ref = _reference(params, params, prompts, lambda rho, a, lp: a * lp, temperature=2.0)
    np.testing.assert_allclose(g, ref, rtol=2e-3, atol=1e-6)


def test_report_rows_and_the_command(policies, tmp_path):
    params, _, prompts = policies
    rows = objective_report(jax.random.key(0), params, NET.apply_all, ENV, prompts,
                            [Behaviour("on", params, NET.apply_all)], objectives=("ppo", "gspo"),
                            num_batches=40)
    ppo, gspo = rows
    assert ppo["cosine_exact"] > 0.9999 and ppo["rel_perp_exact"] < 1e-2 and ppo["token_kl"] == 0.0
    assert gspo["rel_perp_exact"] > 0.05
    # sampled: RLOO advantages keep the on-policy estimate unbiased up to the token mean
    assert ppo["rel_bias_lo"] < 0.2 and ppo["variance"] > 0
    out = tmp_path / "obj"
    argv = ["variance", "--sequence", "reverse", "--num-digits", "2", "--prompt-length", "2",
            "--prompts", "2", "--objectives", "ppo", "--num-batches", "10", "--batch-sizes", "4",
            "--stale-steps", "1", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    lines = (out / "objectives.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 and (out / "objectives.png").stat().st_size > 10_000
    assert cli.main(["variance", "--objectives", "ppo", "--out", str(out)]) == 2
