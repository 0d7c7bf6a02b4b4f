"""Language-model-style RL through the one trainer: sequence estimators, group resets, masking,
teacher-forced updates, the KL to a reference, learning on a digit task, and `jaxadv sequence`."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import advantages as adv
from jaxadv import cli
from jaxadv.engine.rollout import first_episode_mask, group_resets
from jaxadv.engine.train import HParams, TrainConfig, make_train
from jaxadv.envs import make

# ------------------------------------------------------------------ sequence advantages (numpy)


def _numpy_sequence_advantages(name, r, k, greedy=None):
    r = np.asarray(r, np.float64)
    out = np.zeros_like(r)
    for g in range(len(r) // k):
        grp = r[g * k:(g + 1) * k]
        for i in range(k):
            if name == "grpo":
                out[g * k + i] = (grp[i] - grp.mean()) / (grp.std() + 1e-6)
            elif name == "drgrpo":
                out[g * k + i] = grp[i] - grp.mean()
            elif name == "rloo":
                out[g * k + i] = grp[i] - (grp.sum() - grp[i]) / (k - 1)
    if name == "batchmean":
        out = r - r.mean()
    elif name == "rfpp":
        out = (r - r.mean()) / (r.std() + 1e-6)
    elif name == "remax":
        out = r - np.asarray(greedy, np.float64)
    return out


@pytest.mark.fast_compile  # against references (conftest.py)
@pytest.mark.parametrize("name", adv.SEQUENCE_ESTIMATORS)
def test_sequence_advantages_match_numpy(name):
    rng = np.random.default_rng(0)
    r = rng.integers(0, 3, 24).astype(np.float32) / 2  # ties, constant groups and all
    greedy = rng.random(24).astype(np.float32) if name == "remax" else None
    got = adv.sequence_advantages(name, r, group_size=4, greedy_returns=greedy)
    np.testing.assert_allclose(got, _numpy_sequence_advantages(name, r, 4, greedy), atol=1e-5)


@pytest.mark.fast_compile  # against references (conftest.py)
@pytest.mark.parametrize("name", adv.SEQUENCE_ESTIMATORS)
def test_sequence_advantages_of_integer_rewards_and_constant_batches(name):
    # 0/1 rewards given as ints, with float greedy returns: float advantages as in numpy
    r = np.array([1, 0, 0, 1, 1, 1, 0, 1], np.int32)
    greedy = np.linspace(0.1, 0.8, 8).astype(np.float32) if name == "remax" else None
    got = adv.sequence_advantages(name, r, group_size=4, greedy_returns=greedy)
    assert jnp.issubdtype(got.dtype, jnp.floating)
    np.testing.assert_allclose(got, _numpy_sequence_advantages(name, r, 4, greedy), atol=1e-5)
    # every response equally good, and no stabiliser: no signal, and never NaN
    same = adv.sequence_advantages(name, jnp.ones(8), group_size=4, eps=0.0,
                                   greedy_returns=jnp.ones(8) if name == "remax" else None)
    np.testing.assert_array_equal(same, np.zeros(8))


def test_sequence_advantages_reject_bad_input():
    with pytest.raises(ValueError, match="estimator"):
        adv.sequence_advantages("ppo", jnp.zeros(4))
    with pytest.raises(ValueError, match="group_size"):
        adv.sequence_advantages("grpo", jnp.zeros(6), group_size=4)
    with pytest.raises(ValueError, match="greedy_returns"):
        adv.sequence_advantages("remax", jnp.zeros(4))


# ------------------------------------------------------------------ resets and masks


@pytest.mark.fast_compile  # against references (conftest.py)
def test_group_resets_share_prompts_within_groups_only():
    env, params = make("Sequence-v0", task="sort", prompt_length=6)
    _, state = jax.jit(lambda k: group_resets(k, env, params, 32, 4))(jax.random.key(0))
    prompts = np.asarray(state.env_state.prompt).reshape(8, 4, -1)
    assert (prompts == prompts[:, :1]).all()  # the K samples of a group see one prompt
    assert len({p.tobytes() for p in prompts[:, 0]}) == 8  # the groups differ


@pytest.mark.fast_compile  # against references (conftest.py)
def test_first_episode_mask_matches_a_loop():
    done = np.random.default_rng(1).random((9, 5)) < 0.3
    expected = np.zeros((9, 5))
    for n in range(5):
        for t in range(9):
            expected[t, n] = 1.0
            if done[t, n]:
                break
    np.testing.assert_array_equal(first_episode_mask(jnp.asarray(done)), expected)


# ------------------------------------------------------------------ the trainer on a digit task

TASK = {"task": "reverse", "prompt_length": 3, "num_digits": 4, "reward": "partial"}


def _config(**kw):
    base = dict(env="Sequence-v0", env_kwargs=TASK, network="transformer", layers=1, width=32, heads=2,
                episodic=True, group_size=8, estimator="grpo", num_envs=128, num_steps=4,
                total_timesteps=128 * 4 * 25, update_epochs=2, num_minibatches=2, anneal_lr=False)
    base.update(kw)
    return TrainConfig(**base)


HP = HParams(lr=3e-3, gamma=1.0, gae_lambda=1.0, ent_coef=0.0)


@pytest.fixture(scope="module")
def grpo_run():
    config = _config(total_timesteps=128 * 4 * 30)  # 30 updates: seeds 0 and 2 reach 0.97
    return config, jax.jit(make_train(config))(jax.random.key(0), HP)


def test_grpo_learns_to_reverse(grpo_run):
    _, (_, metrics) = grpo_run
    exact = np.asarray(metrics["exact_match"])
    assert exact[:2].mean() < 0.2  # chance: 4^-3 per exact answer
    assert exact[-3:].mean() >= 0.9, exact
    assert np.all(np.asarray(metrics["episodes"]) == 128)  # one episode per env per update
    np.testing.assert_array_equal(metrics["nonfinite"], 0)


@pytest.mark.fast_compile
def test_teacher_forced_update_reproduces_the_rollout_log_probs(grpo_run):
    """The first minibatch step re-evaluates the rollout's actions in one teacher-forced pass
    per episode: if a position were off by one, the PPO ratio would not start at 1."""
    config = _config(update_epochs=1, num_minibatches=1, total_timesteps=128 * 4 * 2)
    _, metrics = jax.jit(make_train(config))(jax.random.key(3), HP)
    assert float(np.max(np.abs(metrics["approx_kl"]))) < 1e-6
    assert float(np.max(metrics["clip_fraction"])) == 0.0


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_kl_to_the_reference_starts_at_zero_and_grows():
    config = _config(kl="loss", total_timesteps=128 * 4 * 6)
    _, metrics = jax.jit(make_train(config))(jax.random.key(1), HParams(lr=3e-3, gamma=1.0, gae_lambda=1.0,
                                                                         ent_coef=0.0, kl_coef=0.1))
    kl = np.asarray(metrics["kl_ref"])
    assert abs(kl[0]) < 1e-6  # the reference is the initial policy
    assert kl[-1] > 1e-4


@pytest.mark.parametrize("kw, field", [
    (dict(episodic=False), "episodic"),
    (dict(estimator="rloo", group_size=1), "group_size"),
    (dict(group_size=3), "group_size"),
    (dict(num_minibatches=3), "num_minibatches"),
    (dict(width=30, heads=4), "heads"),
    (dict(env="CartPole-v1", env_kwargs=()), "transformer"),
    (dict(loss_reduction="median"), "loss_reduction"),
    (dict(kl="both"), "kl"),
    (dict(env_kwargs={"task": "copy"}), "task"),
    (dict(num_steps=3), "num_steps"),
])
def test_bad_sequence_configs_are_refused(kw, field):
    with pytest.raises(ValueError, match=field):
        _config(**kw)


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_sequence_command_writes_outputs_and_samples(tmp_path, capsys):
    out = tmp_path / "seq"
    argv = ["sequence", "--task", "reverse", "--prompt-length", "3", "--num-digits", "4", "--layers", "1",
            "--width", "32", "--heads", "2", "--group-size", "4", "--prompts-per-update", "8",
            "--total-samples", "96", "--samples-shown", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "before RL" in text and "after RL" in text and "→" in text
    for name in ("config.json", "metrics.csv", "summary.json", "reward.png"):
        assert (out / name).exists(), name
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"exact_match", "response_length", "entropy", "episode_return"} <= set(header)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 96 and 0.0 <= summary["final_exact_match"] <= 1.0


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_temperature_divides_the_logits_that_are_sampled_and_learned():
    from jaxadv.engine.train import make_trainer

    base, hot = make_trainer(_config()), make_trainer(_config(temperature=2.5))
    params = jax.jit(base.init)(jax.random.key(0), HP).params
    obs = jax.jit(base.init)(jax.random.key(1), HP).obs
    np.testing.assert_allclose(hot.network.apply(params, obs)[0], base.network.apply(params, obs)[0] / 2.5,
                               rtol=1e-6)
    np.testing.assert_allclose(hot.network.apply_all(params, obs)[0],
                               base.network.apply_all(params, obs)[0] / 2.5, rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        _config(temperature=0.0)


def test_sequence_estimators_are_not_renormalised_by_default():
    assert not _config(estimator="drgrpo").normalize_advantages
    assert _config(estimator="gae", baseline=True).normalize_advantages  # token-level: as for ppo


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_remax_baseline_answers_the_same_prompts():
    """At a temperature near 0 sampling is greedy, so R − R_greedy is exactly 0 — unless the
    greedy rollout answered other prompts — and nothing moves."""
    config = _config(estimator="remax", temperature=1e-6, total_timesteps=128 * 4 * 3)
    _, metrics = jax.jit(make_train(config))(jax.random.key(2), HP)
    np.testing.assert_array_equal(metrics["grad_norm"], 0.0)
