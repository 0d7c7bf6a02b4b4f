"""The conformance kit's policy-loss checks (jaxadv/testing.py, ``check_policy_loss``):
jaxadv's own losses pass every check; a loss that forgets the mask, flips the advantage's
sign, divides by the wrong count or multiplies GSPO's ratios instead of averaging them
fails the checks that should catch it, and only those; the references and the exact
gradients are checked against hand-worked numbers, finite differences and
jaxadv.science.exact on an unrolled MDP."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import losses
from jaxadv import testing as kit
from jaxadv.science import exact

pytestmark = pytest.mark.fast_compile

ALL_LOSS_CHECKS = ("reference", "mask", "padding_nan", "all_masked", "float32", "bfloat16",
                   "jit", "vmap", "exact_mdp", "exact_tokens")
MASKED_CHECKS = ("mask", "padding_nan", "float32", "bfloat16", "jit", "vmap")  # padded inputs


# ------------------------------------------------------------- jaxadv passes


@pytest.mark.parametrize("fn, kind, kw", [
    (losses.policy_gradient_loss, "pg", {"reduction": "token"}),
    (losses.policy_gradient_loss, "pg", {"reduction": "sequence"}),
    (losses.ppo_clip_loss, "ppo", {"reduction": "constant"}),
    (losses.dapo_clip_loss, "dapo", {"clip_high": 0.28}),
    (losses.cispo_loss, "cispo", {"clip_eps": float("inf"), "clip_high": 0.2}),
    (losses.gspo_loss, "gspo", {}),
    (functools.partial(losses.gspo_loss, token_level=True), "gspo", {}),
], ids=["pg-token", "pg-sequence", "ppo-constant", "dapo", "cispo", "gspo", "gspo-token"])
def test_jaxadv_policy_losses_pass_every_check(fn, kind, kw):
    report = kit.check_policy_loss(fn, kind, **kw)
    assert tuple(row.name for row in report.rows) == ALL_LOSS_CHECKS
    report.raise_for_failures()
    for row in report.rows:
        bound = {"bfloat16": 0.01, "exact_mdp": 1e-6, "exact_tokens": 1e-6}.get(row.name, 1e-6)
        assert row.passed and row.case is None and 0.0 <= row.worst_error < bound, row
    # the exact rows measure what they claim: T·E[∇(−loss)] and ∇J agree to float32 rounding
    for name in ("exact_mdp", "exact_tokens"):
        assert report[name].note.startswith("cosine 1.000000, relative error"), report[name]
    assert report["all_masked"].worst_error == 0.0
    assert "10/10 checks passed" in str(report) and "cosine 1.000000" in str(report)


# ---------------------------------------------------------- broken losses


def forgets_the_mask(log_probs, advantages, mask, *, reduction):
    return losses.policy_gradient_loss(log_probs, advantages, None, reduction=reduction)


def flips_the_sign(log_probs, advantages, mask, *, reduction):
    return losses.policy_gradient_loss(log_probs, -advantages, mask, reduction=reduction)


def divides_by_every_token(log_probs, advantages, mask, *, reduction):
    """A "token" mean that divides by T·B, padding included (Dr. GRPO's constant)."""
    return -jnp.sum(jnp.where(mask, log_probs * advantages, 0.0)) / log_probs.size


def gspo_product_of_ratios(log_probs, old_log_probs, advantages, mask, *, clip_low, clip_high):
    """GSPO with the sequence's ratio π(y)/π_old(y), not its geometric mean."""
    s = jnp.exp(jnp.sum(jnp.where(mask, log_probs - old_log_probs, 0.0), axis=0))
    x = jnp.minimum(s * advantages, jnp.clip(s, 1 - clip_low, 1 + clip_high) * advantages)
    real = mask.any(axis=0)
    return -jnp.sum(jnp.where(real, x, 0.0)) / jnp.maximum(real.sum(), 1)


def test_a_loss_that_forgets_the_mask_fails_the_padded_checks_only():
    report = kit.check_policy_loss(forgets_the_mask, "pg")
    assert set(report.failed) == {*MASKED_CHECKS, "all_masked"}, str(report)
    assert report["padding_nan"].worst_error == np.inf
    case = report["all_masked"].case  # one padded token: the loss should be exactly 0
    assert case.shape == (1, 1) and not case.arrays["mask"].any()
    assert case.expected["loss"][0] == 0.0 and case.got["loss"][0] != 0.0, str(case)
    assert report["reference"].passed and report["exact_mdp"].passed


def test_a_sign_flipped_advantage_fails_the_exact_gradient_with_cosine_minus_one():
    report = kit.check_policy_loss(flips_the_sign, "pg")
    assert report.failed == tuple(n for n in ALL_LOSS_CHECKS if n != "all_masked"), str(report)
    for name in ("exact_mdp", "exact_tokens"):
        row = report[name]
        assert row.worst_error == pytest.approx(2.0, abs=1e-5)  # ‖−g − g‖ / ‖g‖
        assert "cosine -1.000000" in row.reason and "norm ratio 1" in row.reason
        np.testing.assert_allclose(row.case.got["∇J"], -row.case.expected["∇J"], atol=1e-6)
    case = report["reference"].case  # one token: the loss and its gradient change sign
    assert case.shape == (1, 1)
    np.testing.assert_allclose(case.got["grad"], -case.expected["grad"], rtol=1e-5)
    with pytest.raises(AssertionError) as info:
        report.raise_for_failures()
    text = str(info.value)
    assert "1/10 checks passed" in text and "--- exact_tokens:" in text
    assert "got−expected" in text and "log_probs" in text and "∇J:" in text


def test_dividing_by_every_token_fails_only_where_there_is_padding():
    # without padding T·B is the token count: the reference and the exact checks pass
    report = kit.check_policy_loss(divides_by_every_token, "pg", reduction="token")
    assert set(report.failed) == set(MASKED_CHECKS), str(report)
    case = report["mask"].case  # one sequence, with a padded token
    assert case.shape[1] == 1 and not case.arrays["mask"].all(), str(case)
    mask = case.arrays["mask"][:, 0]
    ratio = case.got["loss"][0] / case.expected["loss"][0]  # Σm / T
    assert ratio == pytest.approx(mask.sum() / mask.size, rel=1e-4)
    # it is the "constant" reduction: claimed as that, it passes but for nan padding, where its
    # single `where` lets 0 · inf = nan into the gradient (jaxadv fills padding first)
    constant = kit.check_policy_loss(divides_by_every_token, "pg", reduction="constant")
    assert constant.failed == ("padding_nan",), str(constant)
    case = constant["padding_nan"].case
    assert np.isfinite(case.got["loss"]).all() and np.isnan(case.got["grad"]).any()
    assert np.isnan(case.got["grad"][~case.arrays["mask"]]).all()


def test_gspo_with_the_product_of_ratios_has_t_times_the_gradient():
    report = kit.check_policy_loss(gspo_product_of_ratios, "gspo",
                                   checks=("reference", "all_masked", "exact_mdp", "exact_tokens"))
    assert report.failed == ("reference", "exact_mdp", "exact_tokens"), str(report)
    for name in ("exact_mdp", "exact_tokens"):  # the right direction, T = 3 times too long
        assert "cosine 1.000000" in report[name].reason and "norm ratio 3" in report[name].reason
        assert report[name].worst_error == pytest.approx(2.0, abs=1e-5)


def test_a_per_token_loss_is_a_row_that_could_not_run_and_batch_major_needs_its_adapter():
    per_token = lambda lp, adv, mask, *, reduction: -lp * adv
    report = kit.check_policy_loss(per_token, "pg", checks=("reference", "exact_tokens"))
    assert report.failed == ("reference", "exact_tokens")
    assert report["reference"].reason == "could not run: the loss has shape (8, 6), not a scalar"
    assert np.isnan(report["reference"].worst_error)

    def batch_major(lp, old, adv, mask, *, clip_eps, reduction):  # [B, T] arrays
        return losses.ppo_clip_loss(lp.T, old.T, adv.T, mask.T, clip_eps=clip_eps,
                                    reduction=reduction)

    checks = ("mask", "vmap", "exact_mdp")
    adapter = kit.loss_style(batch_major=True, name="batch-major")
    report = kit.check_policy_loss(batch_major, "ppo", reduction="sequence", adapter=adapter,
                                   checks=checks)
    assert report.passed and "adapter=batch-major" in report.title
    wrong = kit.check_policy_loss(batch_major, "ppo", reduction="sequence", checks=checks)
    assert wrong.failed == ("mask", "vmap"), str(wrong)  # B = 1 in the exact check: [T, 1] = [1, T]ᵀ


# ------------------------------------------------------------ the references


def test_reference_policy_loss_against_hand_worked_values():
    # masked_mean's docstring example: token 4.0, sequence 4.5, constant 3.0
    x, mask = np.array([[2.0, 6.0], [4.0, 9.0]]), np.array([[1, 1], [1, 0]])
    for reduction, want in (("token", 4.0), ("sequence", 4.5), ("constant", 3.0)):
        loss, _ = kit.reference_policy_loss("pg", -x, None, np.ones((2, 2)), mask,
                                            reduction=reduction)
        assert loss == pytest.approx(want)
    # PPO, ε = 0.2, two tokens: ratio 1.5 with A = +1 is clipped (no gradient), ratio 1.5 with
    # A = −1 is not (−1.5 < −1.2), ratio 0.5 with A = −1 is (−0.8 < −0.5)
    old = np.log([[0.5, 0.5]])
    for ratio, a, want_loss, want_grad in ((1.5, 1.0, -0.6, 0.0), (1.5, -1.0, 0.75, 0.75),
                                           (0.5, -1.0, 0.4, 0.0), (1.0, 1.0, -0.5, -0.5)):
        lp = old + np.log([[ratio, 1.0]])
        loss, grad = kit.reference_policy_loss("ppo", lp, old, [[a, 0.0]], clip_low=0.2)
        assert (loss, grad[0, 0]) == pytest.approx((want_loss, want_grad)), ratio
    # CISPO: the weight clip(2, 0, 1.2) = 1.2 on −A·log π
    loss, grad = kit.reference_policy_loss("cispo", [[0.0]], np.log([[0.5]]), [[1.0]],
                                           clip_low=np.inf, clip_high=0.2)
    assert (loss, grad[0, 0]) == pytest.approx((0.0, -1.2))
    # GSPO (its docstring): token ratios 2 and 0.5, s = 1: loss −A, gradient −A/2 per token
    loss, grad = kit.reference_policy_loss("gspo", np.log([[1.0], [0.25]]), np.log([[0.5], [0.5]]),
                                           [1.0], clip_low=0.1)
    assert loss == pytest.approx(-1.0) and grad[:, 0] == pytest.approx([-0.5, -0.5])


@pytest.mark.parametrize("kind", kit.POLICY_LOSS_KINDS)
def test_reference_gradient_is_the_derivative_of_the_reference_loss(kind):
    rng = np.random.default_rng(1)
    T, B = 5, 4
    lp = np.log(rng.uniform(0.05, 1.0, (T, B)))
    old = lp - rng.normal(0.0, 0.3, (T, B))
    adv = rng.normal(size=B if kind == "gspo" else (T, B))
    mask = rng.random((T, B)) > 0.3
    mask[:, 1] = False
    # CISPO's weight clip(ρ) is held constant: move old_log_probs too, so ρ stays put
    moves_old = 1.0 if kind == "cispo" else 0.0
    for reduction in ("token", "sequence", "constant"):
        kw = {"reduction": reduction, "clip_low": 0.2, "clip_high": 0.28}
        _, grad = kit.reference_policy_loss(kind, lp, old, adv, mask, **kw)
        h, numeric = 1e-6, np.zeros((T, B))
        at = lambda d, kw=kw: kit.reference_policy_loss(kind, lp + d, old + moves_old * d, adv,
                                                        mask, **kw)[0]
        for index in np.ndindex(T, B):
            step = np.zeros((T, B))
            step[index] = h
            numeric[index] = (at(step) - at(-step)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, atol=1e-7, err_msg=reduction)
        assert not grad[~mask].any()


def test_the_exact_mdp_gradient_is_jaxadv_science_exact_on_the_unrolled_mdp():
    """The kit's finite-horizon MDP unrolled into states (s, t) that terminate after T, with
    γ = 1 and one shared row of logits per s: its ∇J, by jaxadv.science.exact's
    policy-gradient theorem summed over t, equals the kit's central differences."""
    paths = kit._mdp_paths(np.random.default_rng(7))
    S, A = paths.logits.shape
    T = paths.states.shape[1]
    probs = np.prod(kit._softmax(paths.logits)[paths.states, paths.actions], 1) * paths.env_prob
    assert probs.sum() == pytest.approx(1.0) and len(probs) == (S * A) ** T
    for t in range(T):  # exact advantages have mean 0 on-policy at every step
        assert np.sum(probs * paths.advantages[:, t]) == pytest.approx(0.0, abs=1e-12)
    # rebuild P, r, μ from the paths: the first step's states and rewards
    rng = np.random.default_rng(7)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    r, mu = rng.normal(size=(S, A)), rng.dirichlet(np.ones(S))
    unrolled = np.zeros((S * T, A, S * T))
    for t in range(T - 1):
        unrolled[t * S:(t + 1) * S, :, (t + 1) * S:(t + 2) * S] = P
    mdp = exact.TabularMDP(jnp.asarray(unrolled, jnp.float32), jnp.asarray(np.tile(r, (T, 1)),
                           jnp.float32), jnp.asarray(np.r_[mu, np.zeros(S * (T - 1))],
                                                     jnp.float32), 1.0)
    logits = jnp.asarray(np.tile(paths.logits, (T, 1)), jnp.float32)
    assert float(exact.objective(mdp, logits)) == pytest.approx(kit._objective(paths, paths.logits),
                                                                rel=1e-5)
    truth = np.asarray(exact.policy_gradient(mdp, logits)).reshape(T, S, A).sum(axis=0)
    np.testing.assert_allclose(kit._exact_gradient_of_objective(paths), truth, atol=1e-5)


def test_the_token_task_enumerates_every_response_once():
    paths = kit._token_paths(np.random.default_rng(3))
    probs = np.prod(kit._softmax(paths.logits)[paths.states, paths.actions], 1)
    assert probs.sum() == pytest.approx(1.0) and len(set(map(tuple, paths.actions))) == 27
    # a prefix's row is shared by exactly the responses that start with it
    for t in range(3):
        for row in np.unique(paths.states[:, t]):
            prefixes = {tuple(a[:t]) for a in paths.actions[paths.states[:, t] == row]}
            assert len(prefixes) == 1


def test_bad_loss_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        kit.check_policy_loss(losses.ppo_clip_loss, "grpo")
    with pytest.raises(ValueError, match="reduction"):
        kit.check_policy_loss(losses.ppo_clip_loss, "ppo", reduction="mean")
    with pytest.raises(ValueError, match="clip_high"):
        kit.check_policy_loss(losses.ppo_clip_loss, "ppo", clip_high=0.28)
    with pytest.raises(ValueError, match="unknown checks"):
        kit.check_policy_loss(losses.ppo_clip_loss, "ppo", checks=("exact",))
