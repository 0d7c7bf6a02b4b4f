"""The off-policy corrections in the trainer: ``TrainConfig.correction`` and its settings, the
bfloat16 sampler (``behaviour_precision``), the ``sapo``, ``gmpo`` and ``icepop`` rows of the
algorithm table, and their refusals of bad input.

Oracles: float64 numpy loops of each weight's definition (as in tests/test_corrections.py),
bfloat16 rounding written with integer bit operations on the float32 words (round to nearest,
ties to even), log-softmax in numpy, and the pure losses of jaxadv.corrections.
"""

import dataclasses
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _bfloat16 import bf16_round, np_log_softmax

from jaxadv import cli
from jaxadv.cli.report import jsonable
from jaxadv.cli.sequence import OBJECTIVE_PRESETS, SequenceArgs, stored_sequence_args
from jaxadv.corrections import gmpo_loss, icepop_loss, sapo_loss
from jaxadv.engine import train as train_mod
from jaxadv.engine.algorithms import ALGORITHMS, CORRECTIONS, correction_weights
from jaxadv.engine.train import (
    HParams,
    TrainConfig,
    collect,
    init,
    make_setup,
    truncated_importance_weights,
)
from jaxadv.losses import dapo_clip_loss

pytestmark = pytest.mark.fast_compile  # mechanics against references, no learning bars


def np_weights(names, logp, logp_b, mask, *, tis_cap=2.0, mis_range=(0.5, 2.0), seq_cap=2.0,
               seq_range=(0.5, 2.0), seq_aggregate="product"):
    """Loop reference of correction_weights over [T, B]."""
    n_t, n_b = logp.shape
    w = np.ones((n_t, n_b))
    for b in range(n_b):
        tokens = [t for t in range(n_t) if mask[t, b]]
        log_rho = sum(float(logp[t, b]) - float(logp_b[t, b]) for t in tokens)
        if seq_aggregate == "geometric" and tokens:
            log_rho /= len(tokens)
        rho = math.exp(log_rho)
        for t in range(n_t):
            r = math.exp(float(logp[t, b]) - float(logp_b[t, b]))
            for name in names:
                if name == "tis":
                    w[t, b] *= min(r, tis_cap)
                elif name == "token_mis":
                    w[t, b] *= r if mask[t, b] and mis_range[0] <= r <= mis_range[1] else 0.0
                elif name == "seq_tis":
                    w[t, b] *= min(rho, seq_cap) if tokens else 0.0
                else:
                    w[t, b] *= rho if tokens and seq_range[0] <= rho <= seq_range[1] else 0.0
    return w


def _batch(seed=0, t=5, b=6):
    rng = np.random.default_rng(seed)
    logp = rng.normal(-1.0, 0.4, (t, b)).astype(np.float32)
    logp_b = (logp + rng.normal(0.0, 0.3, (t, b))).astype(np.float32)
    lengths = np.array([5, 3, 1, 4, 2, 5])[:b]
    mask = (np.arange(t)[:, None] < lengths[None]).astype(np.float32)
    return logp, logp_b, mask


@pytest.mark.parametrize("names, settings", [
    (("tis",), {"tis_cap": 1.3}),
    (("token_mis",), {"mis_range": (0.8, 1.25)}),
    (("seq_tis",), {"seq_cap": 1.5}),
    (("seq_mis",), {"seq_range": (0.6, 1.6)}),
    (("token_mis", "seq_mis"), {"mis_range": (0.7, 1.4), "seq_range": (0.9, 1.1),
                                "seq_aggregate": "geometric"}),
    (("tis", "seq_tis"), {"seq_aggregate": "geometric", "seq_cap": 1.05}),
])
def test_correction_weights_follow_their_definitions(names, settings):
    logp, logp_b, mask = _batch()
    got = np.asarray(correction_weights(names, jnp.asarray(logp), jnp.asarray(logp_b),
                                        jnp.asarray(mask), **settings))
    want = np_weights(names, logp, logp_b, mask, **settings)
    real = mask > 0  # tis weighs padding too (it is masked in the loss), the others give 0
    np.testing.assert_allclose(got[real], want[real], rtol=2e-5)
    kept = want[real]
    if any(n in ("token_mis", "seq_mis") for n in names):
        assert np.any(kept == 0) and np.any(kept > 0)  # the bands drop some tokens, not all
    assert correction_weights((), jnp.asarray(logp), jnp.asarray(logp_b)) is None


def test_tis_is_the_trainers_truncated_importance_sampling_bit_for_bit():
    logp, logp_b, _ = _batch(1)
    np.testing.assert_array_equal(
        np.asarray(correction_weights(("tis",), jnp.asarray(logp), jnp.asarray(logp_b), tis_cap=1.2)),
        np.asarray(truncated_importance_weights(jnp.asarray(logp), jnp.asarray(logp_b), 1.2)))
    assert {name: row.level for name, row in CORRECTIONS.items()} == {
        "tis": "token", "token_mis": "token", "seq_tis": "sequence", "seq_mis": "sequence"}


def test_new_rows_are_the_corrections_losses():
    logp, logp_b, mask = _batch(2)
    logp_old = logp + np.float32(0.05)
    rng = np.random.default_rng(3)
    adv = rng.normal(size=logp.shape).astype(np.float32)
    seq_adv = rng.normal(size=logp.shape[1]).astype(np.float32)
    lp, old, beh, m = (jnp.asarray(x) for x in (logp, logp_old, logp_b, mask))
    got, _ = ALGORITHMS["sapo"].policy_loss(lp, old, jnp.asarray(adv), m, clip_eps=0.2,
                                            sapo_tau_pos=1.0, sapo_tau_neg=1.05, reduction="token")
    want, _ = sapo_loss(lp, old, jnp.asarray(adv), m, tau_pos=1.0, tau_neg=1.05, reduction="token")
    assert float(got) == float(want)
    # gmpo: a sequence-level estimator puts the response's advantage on each of its tokens
    token_adv = jnp.broadcast_to(jnp.asarray(seq_adv)[None], logp.shape)
    got, info = ALGORITHMS["gmpo"].policy_loss(lp, old, token_adv, m, clip_eps=0.3,
                                               clip_eps_high=0.4)
    want, _ = gmpo_loss(lp, old, jnp.asarray(seq_adv), m, clip_low=0.3, clip_high=0.4)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    assert set(info) == {"clip_fraction", "approx_kl"}
    got, _ = ALGORITHMS["icepop"].policy_loss(lp, old, jnp.asarray(adv), m, clip_eps=0.2,
                                              clip_eps_high=0.28, icepop_alpha=1.3,
                                              behaviour_log_prob=beh)
    want, _ = icepop_loss(lp, old, beh, jnp.asarray(adv), m, alpha=1.3, clip_low=0.2, clip_high=0.28)
    assert float(got) == float(want)
    # no sampler log-probs: no mismatch, DAPO's clip
    got, _ = ALGORITHMS["icepop"].policy_loss(lp, old, jnp.asarray(adv), m, clip_eps=0.2,
                                              clip_eps_high=0.28, icepop_alpha=1.3)
    want, _ = dapo_clip_loss(lp, old, jnp.asarray(adv), m, clip_low=0.2, clip_high=0.28)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    assert ALGORITHMS["gmpo"].episodic_only and ALGORITHMS["icepop"].behaviour_loss


def test_bfloat16_sampler_rounds_the_logits_as_numpy_does():
    config = TrainConfig(hidden=(8,), behaviour_precision="bfloat16", behaviour_temperature=1.5,
                         normalize_advantages=False)
    setup = make_setup(config)
    # ties: 1 + 2^-8 rounds down to 1 (even), 1 + 3·2^-8 up to 1 + 2^-6; and ordinary values
    ties = np.array([0x3F808000, 0x3F818000, 0xBF808000], np.uint32).view(np.float32)
    values = np.concatenate([ties, np.random.default_rng(0).normal(0, 3, 61).astype(np.float32)])
    logits = jnp.asarray(values.reshape(32, 2))
    stub = setup.base_network._replace(apply=lambda params, obs: (logits, jnp.zeros(32)))
    got = np.asarray(train_mod._rounded(stub, 1.0).apply(None, None)[0])
    np.testing.assert_array_equal(got, bf16_round(values).reshape(32, 2))  # the rounding: exact
    got = np.asarray(train_mod._rounded(stub, 1.5).apply(None, None)[0])  # then the temperature
    np.testing.assert_allclose(got, bf16_round(values).reshape(32, 2) / 1.5, rtol=3e-7)
    assert bf16_round(ties).tolist() == [1.0, 1.015625, -1.0]
    assert not np.array_equal(bf16_round(values), values)
    # the trainer's sampler is that: the untempered network rounded, then divided
    params = setup.network.init(jax.random.key(0), jnp.zeros(4))
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(7, 4)), jnp.float32)
    raw = np.asarray(setup.base_network.apply(params, obs)[0])
    np.testing.assert_allclose(np.asarray(train_mod._sampler(setup).apply(params, obs)[0]),
                               bf16_round(raw) / 1.5, rtol=3e-7)
    assert not np.allclose(bf16_round(raw), raw, rtol=1e-6, atol=0)


def test_collect_samples_from_the_rounded_sampler_and_weighs_by_the_corrections():
    """Episodic CartPole with an MLP: the sampler's log-probs are log-softmax of the
    bf16-rounded logits at temperature 2 (numpy), the trained policy's replace them, and the
    weights are token MIS × sequence MIS of their ratio (numpy loops), zero on some steps."""
    config = TrainConfig(env="CartPole-v1", episodic=True, num_envs=8, num_steps=12,
                         total_timesteps=96, hidden=(8,), behaviour_precision="bfloat16",
                         behaviour_temperature=2.0, correction=("token_mis", "seq_mis"),
                         mis_range=(0.95, 1.05), seq_range=(0.7, 1.4), normalize_advantages=False)
    setup, hp = make_setup(config), HParams()
    state = init(setup, jax.random.key(0), hp)
    state = state._replace(params=jax.tree.map(lambda x: x * 30.0, state.params))  # far from uniform
    batch = jax.jit(lambda s, k: collect(setup, s, hp, k, (s.env_state, s.obs)))(state, jax.random.key(1))
    traj, mask = batch.traj, np.asarray(batch.mask)
    logits = np.asarray(setup.base_network.apply(state.params, traj.obs)[0])
    action = np.asarray(traj.action)[..., None]
    beh = np.take_along_axis(np_log_softmax(bf16_round(logits) / np.float32(2.0)), action, -1)[..., 0]
    own = np.take_along_axis(np_log_softmax(logits), action, -1)[..., 0]
    np.testing.assert_allclose(np.asarray(batch.behaviour_log_prob), beh, atol=2e-5)
    np.testing.assert_allclose(np.asarray(traj.log_prob), own, atol=2e-5)
    want = np_weights(("token_mis", "seq_mis"), np.asarray(traj.log_prob),
                      np.asarray(batch.behaviour_log_prob), mask, mis_range=(0.95, 1.05),
                      seq_range=(0.7, 1.4))
    got = np.asarray(batch.is_weight)
    np.testing.assert_allclose(got[mask > 0], want[mask > 0], rtol=2e-5)
    assert np.any(want[mask > 0] == 0) and np.any(want[mask > 0] > 0)


def test_icepop_drops_the_tokens_outside_its_band_in_an_update():
    """One update with a sampler at temperature 3: a band [1/α, α] of α = 1.0001 drops every
    token (no policy gradient: with ent_coef 0 the separate actor stays the same bits), and
    α = 100 drops none."""
    config = TrainConfig(algo="icepop", num_envs=4, num_steps=16, total_timesteps=64,
                         hidden=(8,), behaviour_temperature=3.0, update_epochs=1,
                         num_minibatches=1)
    assert config.correction == () and config.normalize_advantages
    setup = make_setup(config)
    update = jax.jit(lambda s, hp: train_mod.update(setup, s, hp))
    actor = lambda s: [v for k, v in s.params["params"].items() if k.startswith(("actor", "policy"))]
    for alpha, dropped in ((1.0001, 1.0), (100.0, 0.0)):
        hp = HParams(ent_coef=0.0, icepop_alpha=alpha)
        state = init(setup, jax.random.key(0), hp)
        state = state._replace(params=jax.tree.map(lambda x: x * 30.0, state.params))
        new, metrics = update(state, hp)
        assert float(metrics["masked_fraction"]) == dropped
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(actor(new)),
                                                        jax.tree.leaves(actor(state)), strict=True))
        assert same == (dropped == 1.0)


def test_defaults_and_stored_configs_leave_existing_runs_alone(tmp_path):
    config = TrainConfig()
    assert (config.correction, config.off_policy, config.behaviour_precision) == (("tis",), False, "float32")
    assert TrainConfig(algo="icepop").correction == ()
    assert TrainConfig().replace(algo="icepop").correction == ()
    assert TrainConfig(algo="icepop").replace(algo="ppo").correction == ("tis",)
    hp = HParams()
    assert (hp.icepop_alpha, hp.sapo_tau_pos, hp.sapo_tau_neg) == (2.0, 1.0, 1.05)
    # config.json round trip (lists back to tuples), as --resume and jaxadv eval read it
    config = TrainConfig(env="CartPole-v1", episodic=True, behaviour_precision="bfloat16",
                         correction=("token_mis", "seq_tis"), mis_range=(0.25, 4),
                         normalize_advantages=False)
    stored = json.loads(json.dumps(dataclasses.asdict(config)))
    assert TrainConfig(**stored) == config
    assert TrainConfig(**{**stored, "correction": None}).correction == ("tis",)
    assert TrainConfig(correction=("none",), behaviour_temperature=1.1).correction == ()
    args = SequenceArgs(objective="gmpo", behaviour_temperature=1.1, correction=("seq_mis",),
                        seq_range=(0.5, 3.0), out=tmp_path)
    (tmp_path / "sequence.json").write_text(json.dumps(jsonable(args)))
    back = stored_sequence_args(tmp_path)
    assert dataclasses.replace(back, resume=None) == args
    assert args.config.algo == "gmpo" and args.hparams.clip_eps == 0.4
    assert {"sapo", "gmpo", "icepop"} <= set(OBJECTIVE_PRESETS)


BEHAVIOUR = ["--behaviour-temperature", "1.1"]
CASES = [
    (["sequence", *BEHAVIOUR, "--correction", "token_mis", "--mis-range", "2", "0.5"], "mis_range"),
    (["sequence", *BEHAVIOUR, "--correction", "token_mis", "--mis-range", "-0.5", "2"], "mis_range"),
    (["sequence", *BEHAVIOUR, "--correction", "seq_mis", "--seq-range", "1", "1"], "seq_range"),
    (["train", "--mis-range", "1.5", "1.5"], "mis_range"),
    (["sequence", "--objective", "icepop", "--icepop-alpha", "1"], "icepop_alpha"),
    (["sequence", "--objective", "icepop", "--icepop-alpha", "0.5"], "icepop_alpha"),
    (["sweep", "--icepop-alpha", "0.9", "--grid.lr", "1e-3"], "icepop_alpha"),
    (["train", *BEHAVIOUR, "--normalize-advantages", "False", "--correction", "seq_tis"], "episodic"),
    (["train", "--behaviour-precision", "bfloat16", "--normalize-advantages", "False",
      "--correction", "seq_mis"], "episodic"),
    (["sequence", *BEHAVIOUR, "--correction", "tis", "token_mis"], "correction"),
    (["sequence", *BEHAVIOUR, "--correction", "seq_tis", "seq_mis"], "correction"),
    (["sequence", "--objective", "icepop", *BEHAVIOUR, "--correction", "tis"], "correction"),
    (["sequence", "--objective", "icepop", *BEHAVIOUR, "--correction", "token_mis"], "correction"),
    (["sequence", "--correction", "seq_mis"], "behaviour"),
    (["sequence", "--correction", "none", "tis"], "correction"),
    (["sequence", *BEHAVIOUR, "--correction", "seq_tis", "--seq-cap", "0"], "seq_cap"),
    (["sequence", "--objective", "sapo", "--sapo-tau-neg", "0"], "sapo_tau_neg"),
    (["train", "--env", "Pendulum-v1", "--behaviour-precision", "bfloat16"], "behaviour_precision"),
    (["sequence", "--estimator", "gae", "--behaviour-precision", "bfloat16"], "normalize_advantages"),
    (["train", "--algo", "gmpo"], "episodic"),
    (["variance", "--sequence", "reverse", "--objectives", "icepop", "seq_mis",
      "--sampler-temperature", "0"], "sampler_temperature"),
]


@pytest.mark.parametrize("argv, field", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_corrections_are_refused_before_compiling(argv, field, no_compile, capsys, tmp_path):
    start = time.perf_counter()
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - start < 2.0
    err = capsys.readouterr().err
    assert err.startswith("error:") and field in err, err


def test_the_refusals_are_config_errors_naming_the_field():
    with pytest.raises(ValueError, match="`mis_range`.*0 <= lo < hi"):
        TrainConfig(mis_range=(0.5, 0.5))
    with pytest.raises(ValueError, match="`icepop_alpha`.*> 1"):
        HParams(icepop_alpha=1.0).validate()
    with pytest.raises(ValueError, match="`correction`.*sequence rewards.*`episodic`"):
        TrainConfig(behaviour_temperature=1.1, normalize_advantages=False, correction=("seq_mis",))
    with pytest.raises(ValueError, match="`correction`.*both reweight the token ratio"):
        TrainConfig(behaviour_temperature=1.1, normalize_advantages=False,
                    correction=("tis", "token_mis"))
    with pytest.raises(ValueError, match="`correction`.*`algo` = 'icepop'"):
        TrainConfig(algo="icepop", behaviour_temperature=1.1, correction=("tis",))
