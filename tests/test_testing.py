"""The conformance kit (jaxadv/testing.py): jaxadv's own estimators pass every check, and the
kit catches what it claims to catch: rlax's GAE and a PureJaxRL-style GAE are wrong exactly
where an episode is truncated, an off-by-one termination fails the reference, and a wrong
output shape is a failed row that says why."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxadv
from jaxadv import advantages as adv
from jaxadv import testing as kit

pytestmark = pytest.mark.fast_compile

ALL_CHECKS = (
    "reference", "reference_truncation",
    "terminated_last_step", "truncated_last_step", "both_last_step",
    "terminated_every_step", "truncated_every_step", "both_every_step",
    "both_same_step", "T=1", "B=1", "float32", "bfloat16", "jit", "vmap",
)

# The worst absolute errors of the truncation checks, recorded from the kit's fixed inputs
# (seed 0, gamma 0.9, lambda 0.8); a change to the kit's inputs changes them.
RLAX_GAE_WORST = {"reference_truncation": 1.2604, "truncated_every_step": 3.9605}
PUREJAXRL_GAE_WORST = {"reference_truncation": 1.6062, "truncated_last_step": 1.5642,
                       "truncated_every_step": 2.5216}


def purejaxrl_gae(rewards, values, dones, last_value, *, gamma, lambda_):
    """PureJaxRL's inline GAE (ppo.py, `_calculate_gae`): one `done` flag, one value stream."""

    def step(carry, transition):
        gae, next_value = carry
        done, value, reward = transition
        delta = reward + gamma * next_value * (1 - done) - value
        gae = delta + gamma * lambda_ * (1 - done) * gae
        return (gae, value), gae

    _, advantages = jax.lax.scan(step, (jnp.zeros_like(last_value), last_value),
                                 (dones, values, rewards), reverse=True)
    return advantages, advantages + values


@pytest.fixture(scope="module")
def rlax_report():
    rlax = pytest.importorskip("rlax")
    return kit.check_advantages(rlax.truncated_generalized_advantage_estimation, "gae",
                                adapter=kit.RLAX)


@pytest.fixture(scope="module")
def purejaxrl_report():
    return kit.check_advantages(purejaxrl_gae, "gae", adapter=kit.PUREJAXRL)


# ------------------------------------------------------------- jaxadv passes


@pytest.mark.parametrize("kind, fn", [
    ("returns", adv.discounted_returns), ("td", adv.td_errors), ("nstep", adv.n_step_advantages),
    ("gae", adv.gae), ("lambda_returns", adv.lambda_returns),
])
def test_jaxadv_estimators_pass_every_check(kind, fn):
    report = kit.check_advantages(fn, kind)
    assert tuple(row.name for row in report.rows) == ALL_CHECKS
    report.raise_for_failures()
    assert report.passed and report.failed == ()
    for row in report.rows:
        assert row.reason is None and row.case is None
        assert 0.0 <= row.worst_error < (0.1 if row.name == "bfloat16" else 1e-5), row


@pytest.mark.parametrize("kind", kit.SEQUENCE_KINDS)
def test_jaxadv_sequence_estimators_pass_every_check(kind):
    report = kit.check_sequence_advantages(functools.partial(adv.sequence_advantages, kind), kind)
    assert len(report.rows) == 7
    report.raise_for_failures()
    assert report.passed


def test_grouped_adapter_takes_group_relative_and_leave_one_out():
    for fn, kind in [(jaxadv.group_relative, "grpo"),
                     (functools.partial(jaxadv.group_relative, normalize_std=False), "drgrpo"),
                     (jaxadv.leave_one_out, "rloo")]:
        kit.check_sequence_advantages(fn, kind, adapter=kit.SEQUENCE_GROUPED).raise_for_failures()


def test_batch_major_adapter():
    def batch_major_gae(r, v, nv, term, trunc, *, gamma, lambda_):  # [B, T] in and out
        out = adv.gae(*(a.T for a in (r, v, nv, term, trunc)), gamma=gamma, lambda_=lambda_)
        return out.T

    checks = ("reference_truncation", "T=1", "B=1", "vmap")
    adapter = kit.jaxadv_style(batch_major=True)
    assert kit.check_advantages(batch_major_gae, "gae", adapter=adapter, checks=checks).passed
    # The same function handed time-major arrays scans the batch axis: the shapes fit, the
    # numbers do not, in every check.
    wrong = kit.check_advantages(batch_major_gae, "gae", checks=checks)
    assert wrong.failed == checks
    assert all("over the tolerance" in row.reason for row in wrong.rows)

    def batch_major_purejaxrl(r, v, dones, last_value, *, gamma, lambda_):
        a, targets = purejaxrl_gae(r.T, v.T, dones.T, last_value, gamma=gamma, lambda_=lambda_)
        return a.T, targets.T

    report = kit.check_advantages(batch_major_purejaxrl, "gae",
                                  adapter=kit.done_only(batch_major=True),
                                  checks=("reference", "truncated_last_step"))
    assert report.failed == ("truncated_last_step",)


# ------------------------------------------------------ rlax and PureJaxRL


def test_rlax_gae_fails_exactly_the_truncation_checks(rlax_report):
    # rlax has one discount stream and no truncation flag: right wherever no episode is
    # truncated, wrong where one is truncated before the window's end. A truncation on the
    # last step equals the window's end (it bootstraps from next_values[T - 1] either way).
    assert rlax_report.failed == ("reference_truncation", "truncated_every_step"), str(rlax_report)
    for name, worst in RLAX_GAE_WORST.items():
        row = rlax_report[name]
        assert row.worst_error == pytest.approx(worst, rel=1e-3), (name, row.worst_error)
        # the smallest failing input: two steps, an episode truncated at t = 0 bootstraps
        # from the next step's value instead of next_values[0]
        case = row.case
        assert case.shape == (2, 1), str(case)
        assert case.arrays["truncated"][0, 0] and not case.arrays["terminated"][0, 0]
        assert case.arrays["next_values"][0, 0] != case.arrays["values"][1, 0]
        assert abs(case.got["advantages"][0, 0] - case.expected["advantages"][0, 0]) > 1e-3
    for name in set(ALL_CHECKS) - set(RLAX_GAE_WORST):
        assert rlax_report[name].passed and rlax_report[name].worst_error < (
            0.1 if name == "bfloat16" else 1e-5), rlax_report[name]


def test_purejaxrl_gae_fails_where_an_episode_is_truncated(purejaxrl_report):
    # done = terminated or truncated: a truncation is treated as a termination, so the
    # final observation's value is never bootstrapped, on the last step too.
    assert purejaxrl_report.failed == tuple(PUREJAXRL_GAE_WORST), str(purejaxrl_report)
    gamma = 0.9
    for name, worst in PUREJAXRL_GAE_WORST.items():
        row = purejaxrl_report[name]
        assert row.worst_error == pytest.approx(worst, rel=1e-3), (name, row.worst_error)
        case = row.case  # one truncated step: the error is exactly the missing γ V(s')
        assert case.shape == (1, 1) and case.arrays["truncated"].all(), str(case)
        assert not case.arrays["terminated"].any()
        for out in ("advantages", "targets"):
            missing = case.expected[out] - case.got[out]
            np.testing.assert_allclose(missing, gamma * case.arrays["next_values"], atol=1e-5)
    assert purejaxrl_report["both_same_step"].passed  # a termination is handled right


def test_raise_for_failures_shows_the_failing_input_and_the_diff(purejaxrl_report):
    with pytest.raises(AssertionError) as info:
        purejaxrl_report.raise_for_failures()
    text = str(info.value)
    assert "12/15 checks passed" in text
    for name in PUREJAXRL_GAE_WORST:
        assert f"--- {name}:" in text
    assert "got−expected" in text and "next_values" in text and "truncated" in text
    assert "FAIL" in str(purejaxrl_report) and "pass" in str(purejaxrl_report)


# ---------------------------------------------------------- broken functions


def test_off_by_one_termination_fails_the_reference():
    def off_by_one(r, v, nv, term, trunc, *, gamma, lambda_):
        # reads the termination flag of the previous step: a classic shifted-`done` bug
        shifted = jnp.concatenate([jnp.zeros_like(term[:1]), term[:-1]])
        return adv.gae(r, v, nv, shifted, trunc, gamma=gamma, lambda_=lambda_)

    report = kit.check_advantages(off_by_one, "gae",
                                  checks=("reference", "T=1", "truncated_every_step"))
    assert report.failed == ("reference", "T=1")
    row = report["reference"]
    assert row.worst_error > 0.1 and "over the tolerance" in row.reason
    assert row.case.shape[1] == 1 and row.case.arrays["terminated"].any(), str(row.case)


def test_wrong_output_shape_is_a_row_that_could_not_run():
    squeezed = lambda *a, **k: jnp.squeeze(adv.gae(*a, **k))  # drops T = 1 or B = 1 axes
    report = kit.check_advantages(squeezed, "gae", checks=("reference", "T=1", "B=1", "vmap"))
    assert report.failed == ("T=1", "B=1")
    assert "could not run: output 'advantages' has shape (8,)" in report["T=1"].reason
    assert "(16, 1)" in report["B=1"].reason and np.isnan(report["B=1"].worst_error)
    assert report["B=1"].case.shape == (16, 1) and report["B=1"].case.got is None

    short = lambda *a, **k: adv.gae(*a, **k)[:-1]
    report = kit.check_advantages(short, "gae", checks=("reference", "jit", "vmap"))
    assert report.failed == ("reference", "jit", "vmap")
    assert all(row.reason.startswith("could not run") for row in report.rows)
    assert "0/3 checks passed" in str(report) and "could not run" in str(report)

    pair = lambda *a, **k: (adv.gae(*a, **k), adv.lambda_returns(*a, **k))
    report = kit.check_advantages(pair, "gae", checks=("reference",))
    assert "returned a tuple of 2" in report["reference"].reason
    good = kit.jaxadv_style(outputs=("advantages", "targets"))
    assert kit.check_advantages(pair, "gae", adapter=good, checks=("reference", "vmap")).passed


def test_a_function_that_cannot_be_traced_is_checked_eagerly():
    def numpy_gae(r, v, nv, term, trunc, *, gamma, lambda_):
        r, v, nv, term, trunc = (np.asarray(a, np.float64) for a in (r, v, nv, term, trunc))
        out, a = np.zeros_like(r), np.zeros_like(r[0])
        for t in reversed(range(len(r))):
            delta = r[t] + gamma * (1 - term[t]) * nv[t] - v[t]
            a = delta + gamma * lambda_ * (1 - term[t]) * (1 - trunc[t]) * a
            out[t] = a
        return jnp.asarray(out, jnp.float32)

    report = kit.check_advantages(numpy_gae, "gae", checks=("reference_truncation", "jit", "vmap"))
    assert report.failed == ("jit", "vmap")
    assert "TracerArrayConversionError" in report["jit"].reason


def test_sequence_checks_catch_a_sample_std_and_a_wrong_shape():
    # GRPO with the sample (ddof = 1) standard deviation, as torch.std computes by default
    sample_std = lambda g, eps: (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + eps)
    report = kit.check_sequence_advantages(sample_std, "grpo", adapter=kit.SEQUENCE_GROUPED)
    assert "reference" in report.failed and report["reference"].worst_error > 0.05
    assert report["reference"].case.shape == (4,)  # one group of 4
    report = kit.check_sequence_advantages(lambda r, **kw: r[:-1], "rloo", checks=("reference",))
    assert report["reference"].reason.startswith("could not run: output has shape (23,)")


# ---------------------------------------------------------- the references


def test_references_against_hand_worked_episodes():
    # tests/test_advantages.py::test_hand_worked_episode_boundaries: truncated at t = 1
    # (final observation's value 10), terminated at t = 3
    col = lambda *xs: np.array(xs, np.float64)[:, None]
    x = kit.RolloutArrays(col(1, 1, 1, 1), col(0, 0, 0, 0), col(0, 10, 0, 99), col(0, 0, 0, 1),
                    col(0, 1, 0, 0))
    returns = kit.reference_advantages("returns", x, gamma=0.5)["targets"][:, 0]
    np.testing.assert_allclose(returns, [4, 6, 1.5, 1])
    gae = kit.reference_advantages("gae", x, gamma=0.5, lambda_=1.0)["advantages"][:, 0]
    np.testing.assert_allclose(gae, [4, 6, 1.5, 1])
    # both flags on one step count as a termination
    both = kit.RolloutArrays(col(1, 1), col(0, 0), col(7, 7), col(1, 0), col(1, 0))
    gae = kit.reference_advantages("gae", both, gamma=0.9, lambda_=0.9)["advantages"][:, 0]
    np.testing.assert_allclose(gae, [1.0, 1.0 + 0.9 * 7.0])
    np.testing.assert_allclose(
        kit.reference_sequence_advantages("grpo", [1.0, 0.0, 3.0, 3.0], group_size=2, eps=0.0),
        [1.0, -1.0, 0.0, 0.0])


def test_the_kit_calls_no_lapack():
    # docs/design.md, "Batched LAPACK under vmap": the kit vmaps user functions
    import inspect
    assert "linalg" not in inspect.getsource(kit)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        kit.check_advantages(adv.gae, "gea")
    with pytest.raises(ValueError, match="unknown checks"):
        kit.check_advantages(adv.gae, "gae", checks=("refrence",))
    with pytest.raises(ValueError, match="kind"):
        kit.check_sequence_advantages(adv.gae, "ppo")
