"""jaxadv.science.objective_exact: each objective's exact expected gradient against references built
independently from the enumerated responses' token log-probabilities (jnp sums of the
definitions, differentiated once; the corrections' weights by numpy loops), on-policy and
off-policy, the bfloat16 sampler against numpy rounding of the logits, and the report's rows."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _bfloat16 import bf16_round, np_log_softmax
from jax.flatten_util import ravel_pytree

from jaxadv import cli
from jaxadv.engine.train import HParams, TrainConfig
from jaxadv.envs.sequence import SequenceTask
from jaxadv.nets.transformer import make_transformer
from jaxadv.science.objective_exact import (
    CORRECTION_SETTINGS,
    LOSS_SETTINGS,
    Behaviour,
    _inputs,
    ascend,
    objective_report,
    population_gradients,
    population_gradients_and_masks,
)
from jaxadv.science.sequence_exact import (
    enumerate_responses,
    exact_gradient,
    make_prompts,
    response_rewards,
    response_tokens,
    token_log_probs,
)

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


def np_weights(name, old_train, old, mask, lo_hi=None):
    """Loop reference of one correction's weights of π_old/π_b, ``[Np, M, R]`` (settings:
    CORRECTION_SETTINGS, or the band ``lo_hi`` for token masking)."""
    s = CORRECTION_SETTINGS
    w = np.zeros(old.shape)
    for p, m in np.ndindex(old.shape[:2]):
        tokens = [t for t in range(old.shape[-1]) if mask[m, t]]
        rho = math.exp(sum(float(old_train[p, m, t]) - float(old[p, m, t]) for t in tokens))
        for t in tokens:
            r = math.exp(float(old_train[p, m, t]) - float(old[p, m, t]))
            lo, hi = lo_hi or s["mis_range"]
            w[p, m, t] = {"tis": min(r, s["tis_cap"]),
                          "token_mis": r if lo <= r <= hi else 0.0,
                          "seq_tis": min(rho, s["seq_cap"]),
                          "seq_mis": rho if s["seq_range"][0] <= rho <= s["seq_range"][1] else 0.0,
                          }[name]
    return w


def _reference(theta, behaviour, prompts, token_term, per_response_mean=False, temperature=1.0,
               weights=None):
    """−∇θ of Σ_p Σ_m π_b(m|p) Σ_t term(ρ_t, A, log π_t) / norm, from token log-probs.
    ``weights(old_train, old, mask)``: a correction, as the trainer applies it — ρ against
    π_old (the network at temperature 1 at the behaviour's parameters), A times the weights."""
    responses = enumerate_responses(ENV)
    apply_b = (lambda p, x: (NET.apply_all(p, x)[0] / temperature, None))
    old = token_log_probs(behaviour, apply_b, ENV, prompts, responses)  # [Np, M, R]
    old_train = token_log_probs(behaviour, NET.apply_all, ENV, prompts, responses)
    pi_b = jnp.exp(old.sum(-1))
    rewards = response_rewards(ENV, prompts, responses)
    adv = rewards - jnp.sum(pi_b * rewards, -1, keepdims=True)
    mask = np.arange(old.shape[-1])[None] < np.minimum(np.asarray(responses.lengths) + 1,
                                                       ENV.response_length)[:, None]
    tokens = mask.sum(-1)
    flat, unravel = ravel_pytree(theta)
    a = jnp.broadcast_to(adv[..., None], old.shape)
    ratio_to = old
    if weights is not None:
        a = a * weights(np.asarray(old_train), np.asarray(old), mask)
        ratio_to = old_train

    def objective(f):
        lp = token_log_probs(unravel(f), NET.apply_all, ENV, prompts, responses)
        terms = jnp.where(mask[None], token_term(jnp.exp(lp - ratio_to), a, lp), 0.0)
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


def _ppo(low=0.2, high=0.2):
    return lambda rho, a, lp: jnp.minimum(rho * a, jnp.clip(rho, 1 - low, 1 + high) * a)


NEW_UNBIASED = ("sapo", "tis", "token_mis", "seq_tis", "seq_mis", "icepop")


def test_on_policy_sapo_and_every_correction_are_the_exact_gradient_and_gmpo_is_not(policies):
    params, _, prompts = policies
    names = (*NEW_UNBIASED, "gmpo")
    grads, clipped = _population(params, params, prompts, names)
    truth = np.asarray(exact_gradient(params, NET.apply_all, ENV, prompts))
    ref = _reference(params, params, prompts, lambda rho, a, lp: rho * a)
    for name, g in zip(names, grads, strict=True):
        cos = g @ truth / np.linalg.norm(g) / np.linalg.norm(truth)
        if name == "gmpo":  # like GSPO: each response's score over its length
            length_ref = _reference(params, params, prompts, lambda rho, a, lp: lp * a,
                                    per_response_mean=True)
            np.testing.assert_allclose(g, length_ref, rtol=2e-3, atol=1e-6)
            assert cos < 0.999
        else:
            np.testing.assert_allclose(g, ref, rtol=2e-3, atol=1e-6, err_msg=name)
            assert cos > 0.9999, name
    np.testing.assert_array_equal(clipped, 0.0)


def test_with_stale_samples_every_correction_is_ppo_and_icepop_is_dapo(policies):
    """No sampler mismatch (π_b is the network at θ_old): every weight is exactly 1."""
    params, stale, prompts = policies
    names = ("ppo", "dapo", "tis", "token_mis", "seq_tis", "seq_mis", "icepop")
    b = Behaviour("b", params, NET.apply_all)
    grads, clipped, masked = (np.asarray(x) for x in jax.jit(
        lambda t, bp: population_gradients_and_masks(t, NET.apply_all, ENV, prompts,
                                                     b._replace(params=bp), names))(stale, params))
    for i in (2, 3, 4, 5):
        np.testing.assert_allclose(grads[i], grads[0], rtol=1e-5, atol=1e-8)
        assert clipped[i] == clipped[0]
    np.testing.assert_allclose(grads[6], grads[1], rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(masked, 0.0)


@pytest.mark.parametrize("name", ["tis", "token_mis", "seq_tis", "seq_mis", "icepop"])
def test_off_policy_corrections_equal_their_definition(policies, name):
    """Stale parameters and a sampler at temperature 2: PPO's ratio against π_old, the
    advantages times the weights of π_old/π_b (numpy loops), or IcePop's band around DAPO."""
    params, stale, prompts = policies
    (g,), _, (masked,) = (np.asarray(x) for x in jax.jit(
        lambda t, bp: population_gradients_and_masks(
            t, NET.apply_all, ENV, prompts, Behaviour("b", bp, NET.apply_all, 2.0), (name,)))(
        stale, params))
    if name == "icepop":
        alpha = LOSS_SETTINGS["icepop_alpha"]
        weights = lambda tr, old, mask: np_weights("token_mis", tr, old, mask, (1 / alpha, alpha))
        term = _ppo(0.2, 0.28)
    else:
        weights = lambda tr, old, mask: np_weights(name, tr, old, mask)
        term = _ppo()
    ref = _reference(stale, params, prompts, term, temperature=2.0, weights=weights)
    np.testing.assert_allclose(g, ref, rtol=2e-3, atol=1e-6)
    assert (masked > 0) == (name in ("token_mis", "seq_mis", "icepop"))  # the bands bite


def test_off_policy_sapo_and_gmpo_equal_their_definition(policies):
    params, stale, prompts = policies
    grads, _ = _population(stale, params, prompts, ("sapo", "gmpo"))
    tau = lambda a: jnp.where(a > 0, LOSS_SETTINGS["sapo_tau_pos"], LOSS_SETTINGS["sapo_tau_neg"])
    sapo = lambda rho, a, lp: 4.0 / tau(a) * jax.nn.sigmoid(tau(a) * (rho - 1.0)) * a
    np.testing.assert_allclose(grads[0], _reference(stale, params, prompts, sapo),
                               rtol=2e-3, atol=1e-6)
    # GMPO: A·exp(mean_t of the log-ratio clipped to 0.4 (A ≥ 0) or −0.4), a mean over responses
    responses = enumerate_responses(ENV)
    old = token_log_probs(params, NET.apply_all, ENV, prompts, responses)
    pi_b = jnp.exp(old.sum(-1))
    rewards = response_rewards(ENV, prompts, responses)
    adv = rewards - jnp.sum(pi_b * rewards, -1, keepdims=True)
    mask = np.arange(old.shape[-1]) < np.minimum(np.asarray(responses.lengths) + 1,
                                                 ENV.response_length)[:, None]
    flat, unravel = ravel_pytree(stale)

    def objective(f):
        ell = token_log_probs(unravel(f), NET.apply_all, ENV, prompts, responses) - old
        clipped = jnp.where(adv[..., None] >= 0, jnp.minimum(ell, 0.4), jnp.maximum(ell, -0.4))
        s = jnp.exp(jnp.where(mask, clipped, 0.0).sum(-1) / mask.sum(-1)[None])
        return jnp.sum(pi_b * adv * s) / prompts.shape[0]

    np.testing.assert_allclose(grads[1], jax.grad(objective)(flat), rtol=2e-3, atol=1e-6)


def test_bfloat16_sampler_is_softmax_of_the_rounded_logits(policies):
    """The bf16 setting's behaviour probabilities: log-softmax (numpy, float64) of the
    transformer's logits rounded to bfloat16 by bit arithmetic; π_old stays the float32 one."""
    params, _, prompts = policies
    x = _inputs(Behaviour("bf16", params, NET.apply_all, 1.0, "bfloat16"), ENV, prompts)
    responses = enumerate_responses(ENV)
    rows = response_tokens(ENV, prompts, responses)
    start = ENV.prompt_size
    logits = np.asarray(NET.apply_all(params, rows)[0])[..., start:start + ENV.response_length, :]
    actions = np.maximum(np.asarray(responses.actions), 0)[None, ..., None]
    mask = np.asarray(x.mask)[None]
    want = np.take_along_axis(np_log_softmax(bf16_round(logits)), np.broadcast_to(
        actions, (*logits.shape[:-1], 1)), -1)[..., 0]
    np.testing.assert_allclose(np.asarray(x.old), np.where(mask, want, 0.0), atol=1e-5)
    np.testing.assert_allclose(np.exp(np.asarray(x.old).sum(-1)).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(x.old_train), np.asarray(
        token_log_probs(params, NET.apply_all, ENV, prompts, responses)))
    assert not np.array_equal(np.asarray(x.old), np.asarray(x.old_train))
    assert not np.array_equal(bf16_round(logits), logits)


def test_exact_settings_are_the_trainers_defaults():
    config, hp = TrainConfig(), HParams()
    assert {"tis_cap": config.tis_cap, "mis_range": config.mis_range,
                                   "seq_cap": config.seq_cap, "seq_range": config.seq_range,
                                   "seq_aggregate": config.seq_aggregate} == CORRECTION_SETTINGS
    assert {k: getattr(hp, k) for k in LOSS_SETTINGS} == LOSS_SETTINGS


def test_report_rows_and_the_command(policies, tmp_path):
    params, _, prompts = policies
    rows = objective_report(jax.random.key(0), params, NET.apply_all, ENV, prompts,
                            [Behaviour("on", params, NET.apply_all)],
                            objectives=("ppo", "gspo", "seq_mis", "icepop"), num_batches=40)
    ppo, gspo, seq_mis, icepop = rows
    assert ppo["cosine_exact"] > 0.9999 and ppo["rel_perp_exact"] < 1e-2 and ppo["token_kl"] == 0.0
    assert gspo["rel_perp_exact"] > 0.05
    # sampled: RLOO advantages keep the on-policy estimate unbiased up to the token mean
    assert ppo["rel_bias_lo"] < 0.2 and ppo["variance"] > 0
    for r in (seq_mis, icepop):  # on-policy every weight is 1: the same estimates as PPO's
        assert r["masked_fraction"] == 0.0 and r["cosine_exact"] > 0.9999
        np.testing.assert_allclose(r["variance"], ppo["variance"], rtol=1e-4)
    out = tmp_path / "obj"
    argv = ["variance", "--sequence", "reverse", "--num-digits", "2", "--prompt-length", "2",
            "--prompts", "2", "--objectives", "ppo", "seq_tis", "--num-batches", "10",
            "--batch-sizes", "4", "--stale-steps", "1", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    lines = (out / "objectives.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 5 and (out / "objectives.png").stat().st_size > 10_000
    assert "masked_fraction" in lines[0]
    settings = [line.split(",")[0] for line in lines[1::2]]
    assert settings == ["on-policy", "stale: 1 steps", "behaviour at temperature 2",
                        "sampler logits in bfloat16", "sampler at temperature 1.1"]
    assert cli.main(["variance", "--objectives", "ppo", "--out", str(out)]) == 2
