"""Gradient-quality telemetry inside training (``TrainConfig.telemetry``, issue 32 item 2):
the SNR and cosine formulas against numpy and the variance module's statistics, the
in-training SNR against the offline ``jaxadv variance`` figure on a tabular MDP, the
zero-advantage groups against the engine's own count of uninformative groups, the same bits
with and without telemetry, and ``jaxadv train --no-telemetry``."""

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxadv import cli
from jaxadv.cli.report import jsonable
from jaxadv.cli.runs import TrainArgs, resume_args, write_config
from jaxadv.cli.sequence import SequenceArgs, stored_sequence_args
from jaxadv.engine.train import (
    TELEMETRY_METRICS,
    HParams,
    TrainConfig,
    accumulate_gradient,
    advantage_telemetry,
    gradient_moments,
    gradient_telemetry,
    make_setup,
    make_train,
    make_trainer,
)
from jaxadv.science import variance

pytestmark = pytest.mark.fast_compile  # against references and mechanics (conftest.py)

GRADIENT_METRICS = ("grad_snr", "grad_cosine", "grad_signal", "grad_noise")


def _numpy_telemetry(grads: np.ndarray) -> dict[str, float]:
    """The definitions, in float64 from the stored gradients ``[n, P]``."""
    n = len(grads)
    mean = grads.mean(0)
    noise = np.sum((grads - mean) ** 2) / (n - 1)
    signal = mean @ mean - noise / n
    cos = grads @ mean / (np.linalg.norm(grads, axis=1) * np.linalg.norm(mean))
    return {"grad_snr": signal / noise, "grad_cosine": cos.mean(), "grad_signal": signal,
            "grad_noise": noise}


def test_gradient_telemetry_matches_numpy_and_the_variance_modules_snr():
    rng = np.random.default_rng(0)
    grads = (rng.normal(size=(6, 50)) + rng.normal(size=50)).astype(np.float32)
    moments = gradient_moments(50)
    keep = [True, False, True, True, True, True, True, False]  # two left out by `keep`
    extra = iter(rng.normal(size=(2, 50)).astype(np.float32) * 100)
    it = iter(grads)
    for k in keep:
        moments = accumulate_gradient(moments, jnp.asarray(next(it) if k else next(extra)), keep=k)
    got = gradient_telemetry(moments)
    want = _numpy_telemetry(grads.astype(np.float64))
    for name in GRADIENT_METRICS:
        np.testing.assert_allclose(float(got[name]), want[name], rtol=2e-5, err_msg=name)
    # the offline tooling's bias-corrected SNR, an independent implementation
    stats = variance.gradient_statistics(grads, grads.mean(0))  # the SNR ignores the reference
    np.testing.assert_allclose(float(got["grad_snr"]), stats["snr"], rtol=2e-5)
    # a zero gradient adds nothing to the cosine's sum of unit vectors
    zero = accumulate_gradient(gradient_moments(50), jnp.zeros(50))
    assert float(jnp.abs(zero.unit).max()) == 0.0


def test_gradient_noise_keeps_its_digits_at_a_high_snr():
    """Gradients that agree to 4 digits (SNR ≈ 10⁸): the spread, summed directly (Welford),
    comes out within 1e-5 of float64's; as Σ‖g‖² − n‖ḡ‖² in float32 it would come out 0
    (measured with numpy)."""
    rng = np.random.default_rng(1)
    grads = (1.0 + 1e-4 * rng.normal(size=(8, 50))).astype(np.float32)
    moments = gradient_moments(50)
    for g in grads:
        moments = accumulate_gradient(moments, jnp.asarray(g))
    got, want = gradient_telemetry(moments), _numpy_telemetry(grads.astype(np.float64))
    assert want["grad_snr"] > 1e7
    np.testing.assert_allclose(float(got["grad_noise"]), want["grad_noise"], rtol=1e-3)
    np.testing.assert_allclose(float(got["grad_snr"]), want["grad_snr"], rtol=1e-3)


def test_gradient_telemetry_is_nan_without_a_second_gradient():
    moments = accumulate_gradient(gradient_moments(3), jnp.ones(3))
    assert all(math.isnan(float(v)) for v in gradient_telemetry(moments).values())


def test_advantage_telemetry_matches_a_numpy_count():
    config = TrainConfig(env="Gridworld-v0", algo="reinforce", estimator="grpo", episodic=True,
                         group_size=2, num_envs=6, num_steps=4, total_timesteps=24, hidden=(4,))
    setup = make_setup(config)
    adv = np.array([[0, 0, 1, -1, 0, 0], [0, 0, 1, -1, 0, 5], [0, 0, 1, -1, 0, 0],
                    [7, 0, 0, 0, 0, 0]], np.float32)  # [T, N]; groups (0,1), (2,3), (4,5)
    episodes = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0],
                         [0, 1, 0, 0, 1, 0]], np.float32)
    loss_mask = episodes * np.array([1, 1, 1, 1, 0, 0], np.float32)  # group 3 dropped
    got = advantage_telemetry(setup, jnp.asarray(adv), jnp.asarray(loss_mask),
                              jnp.asarray(episodes))
    steps = adv[loss_mask > 0]
    np.testing.assert_allclose(float(got["adv_mean"]), steps.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(got["adv_std"]), steps.std(), rtol=1e-6)
    # group (0, 1): its 7 lies after column 0's episode; (4, 5): its 5 too. (2, 3): not zero
    zero = [np.all(adv[:, g * 2:g * 2 + 2][episodes[:, g * 2:g * 2 + 2] > 0] == 0) for g in range(3)]
    assert zero == [True, False, True]
    assert float(got["zero_adv_groups"]) == pytest.approx(np.mean(zero))
    # a row that is not group-based reports no groups
    plain = make_setup(config.replace(algo="reinforce", estimator="mc", group_size=1))
    assert "zero_adv_groups" not in advantage_telemetry(plain, jnp.asarray(adv), None,
                                                        jnp.asarray(episodes))


def test_in_training_snr_agrees_with_the_offline_variance_report():
    """On the tabular MDP with parameters held fixed (lr 1e-30), each minibatch gradient of
    REINFORCE with the Monte Carlo return (no critic, ``loss_reduction="constant"``: a fixed
    divisor T·b that cancels in the ratio) is −1/T times the variance module's unweighted
    ``mc`` estimate from b trajectories, so both measure the same SNR at batch size b.

    Training: U = 200 updates of n = 16 minibatches of b = 4 episodes; the in-training SNR is
    mean(grad_signal) / mean(grad_noise) over the updates, whose standard error ``se`` comes
    from the U independent updates (delta method). Offline: ``train_state_report`` with M =
    U·n batches of b: the same number of minibatch gradients, pooled into one U-statistic,
    whose error is at most the in-training one's. So the difference has a standard error of
    at most √2·se, and the test allows 4√2·se (measured: 0.1475 in training, 0.1428 offline,
    se 0.0052, tolerance 0.030). The plain ratio ‖ḡ‖²/v, biased by 1/n = 0.0625, would
    fail it."""
    horizon, b, n, updates = 10, 4, 16, 200
    config = TrainConfig(env="Tabular-v0", env_kwargs=(("max_steps", horizon),),
                         algo="reinforce", estimator="mc", baseline=False, episodic=True,
                         normalize_advantages=False, loss_reduction="constant",
                         num_envs=n * b, num_steps=horizon, num_minibatches=n, update_epochs=1,
                         anneal_lr=False, hidden=(8,), total_timesteps=updates * n * b * horizon)
    hp = HParams(lr=1e-30, ent_coef=0.0, gamma=0.9)
    trainer = make_trainer(config)
    state, metrics = jax.jit(trainer.train)(jax.random.key(0), hp)
    # the parameters did not move: Adam's steps of about lr = 1e-30 vanish in float32, except
    # on parameters that start at exactly 0 (biases), which they leave within 1e-26
    signal = np.asarray(metrics["grad_signal"], np.float64)
    noise = np.asarray(metrics["grad_noise"], np.float64)
    ratio = signal.mean() / noise.mean()
    se = np.sqrt(np.var(signal - ratio * noise, ddof=1) / updates) / noise.mean()
    rows, _ = variance.train_state_report(
        jax.random.key(1), trainer, state.params, gamma=0.9, critic="zero",
        estimators=["mc:unweighted"], batch_sizes=[b], num_batches=updates * n,
        reference_factor=1)
    offline = rows[0]["snr"]
    assert 0.05 < offline < 0.5  # a measurable SNR: neither lost in noise nor saturated
    assert abs(ratio - offline) <= 4 * math.sqrt(2) * se, (ratio, offline, se)
    assert 4 * math.sqrt(2) * se < 1 / n  # the test can tell the unbiased SNR from the plain one


@pytest.mark.product_emitters  # two different programs, bit for bit (conftest.py)
def test_zero_adv_groups_and_the_same_bits_without_telemetry():
    """GRPO on a small gridworld (reward only at the goal: many groups of equal returns, whose
    advantages are exactly 0), 2 epochs × 2 minibatches: ``zero_adv_groups`` is 1 −
    ``informative_groups``, DAPO's count from the rewards
    (:func:`jaxadv.advantages.informative_groups`), at every update; and without telemetry
    the parameters, optimiser state and every other metric are the same bits."""
    config = TrainConfig(env="Gridworld-v0", env_kwargs=(("width", 3), ("height", 3),
                                                         ("max_steps", 4)),
                         algo="ppo", estimator="grpo", episodic=True, group_size=4,
                         update_epochs=2, num_minibatches=2, dynamic_sampling=True,
                         num_envs=32, num_steps=4, hidden=(8,), total_timesteps=32 * 4 * 12)
    train = lambda config: jax.jit(make_train(config))(jax.random.key(0), HParams(lr=1e-3))
    on_state, on = train(config)
    zero = np.asarray(on["zero_adv_groups"])
    np.testing.assert_array_equal(zero, 1.0 - np.asarray(on["informative_groups"]))
    assert 0 < zero.min() < 1 and zero.max() > zero.min()  # a mixed and changing count
    assert np.all(np.isfinite(on["grad_snr"])) and np.all(np.abs(on["grad_cosine"]) <= 1)
    off_state, off = train(config.replace(telemetry=False))
    assert set(on) - set(off) == set(TELEMETRY_METRICS)
    jax.tree.map(np.testing.assert_array_equal, (on_state.params, on_state.opt_state),
                 (off_state.params, off_state.opt_state))
    for name, value in off.items():
        np.testing.assert_array_equal(on[name], value, err_msg=name)


def test_which_metrics_a_configuration_gets():
    small = dict(num_envs=4, num_steps=8, total_timesteps=32, hidden=(4,))
    names = lambda **changes: set(jax.eval_shape(make_train(TrainConfig(**small, **changes)),
                                                 jax.random.key(0), HParams())[1])
    gradient = set(GRADIENT_METRICS)
    assert names() >= gradient | {"adv_mean", "adv_std"}  # ppo: 4 minibatches
    assert "zero_adv_groups" not in names()
    one = names(algo="a2c")  # one minibatch: no spread to measure
    assert not one & gradient and {"adv_mean", "adv_std"} <= one
    grouped = names(env="Gridworld-v0", algo="reinforce", estimator="rloo", episodic=True,
                    group_size=2)
    assert "zero_adv_groups" in grouped
    assert not names(telemetry=False) & set(TELEMETRY_METRICS)


def test_telemetry_must_be_a_bool():
    with pytest.raises(ValueError, match="`telemetry` must be True or False"):
        TrainConfig(telemetry="no")


def test_the_telemetry_flag_sets_the_field():
    base = ["--out", "unused"]
    assert tyro.cli(TrainArgs, args=base).config.telemetry is TrainConfig().telemetry
    assert tyro.cli(TrainArgs, args=[*base, "--no-telemetry"]).config.telemetry is False
    assert tyro.cli(TrainArgs, args=[*base, "--telemetry"]).config.telemetry is True


def test_jaxadv_train_writes_the_telemetry_to_metrics_csv_tensorboard_and_a_plot(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--num-envs", "2", "--num-steps", "8", "--total-timesteps", "128",
            "--hidden", "8", "--seeds", "2", "--telemetry", "--log", "tensorboard", "--quiet",
            "--out", str(out)]
    assert cli.main(argv) == 0
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert set(TELEMETRY_METRICS) & set(rows[0]) == set(TELEMETRY_METRICS) - {"zero_adv_groups"}
    assert (out / "telemetry.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    snr, signal, noise = (np.array([float(r[name]) for r in rows])
                          for name in ("grad_snr", "grad_signal", "grad_noise"))
    np.testing.assert_allclose(snr, signal / noise, rtol=1e-5)
    # TensorBoard's own reader gets each seed's values back (tests/test_tracking.py checks
    # every metric of metrics.csv, these among them, in TensorBoard and W&B)
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    for name in set(TELEMETRY_METRICS) - {"zero_adv_groups"}:
        for seed in ("0", "1"):
            want = {int(r["env_steps"]): float(r[name]) for r in rows if r["seed"] == seed}
            got = {e.step: e.value for e in acc.Scalars(f"{name}/seed{seed}")}
            assert got.keys() == want.keys(), name
            np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-5)


def test_a_run_recorded_before_telemetry_resumes_without_it(tmp_path):
    """A config.json without the field (a run started before it existed) resumes with
    telemetry off: its checkpoints' metrics have no telemetry columns to continue (with it
    on, the first call after the checkpoint would bring columns that the restored history
    lacks). A config.json that has the field keeps its value."""
    args = tyro.cli(TrainArgs, args=["--out", str(tmp_path), "--hidden", "8"])
    write_config(args)
    assert resume_args(tmp_path).config.telemetry is True
    record = json.loads((tmp_path / "config.json").read_text())
    del record["train_config"]["telemetry"]
    (tmp_path / "config.json").write_text(json.dumps(record))
    resumed = resume_args(tmp_path)
    assert resumed.config.telemetry is False
    assert resumed.config == args.config.replace(telemetry=False)


def test_a_sequence_run_recorded_before_telemetry_resumes_without_it(tmp_path):
    """``jaxadv sequence``: ``--no-telemetry`` reaches the TrainConfig, and a sequence.json
    without the field (a run started before it existed) resumes with telemetry off."""
    args = tyro.cli(SequenceArgs, args=["--out", str(tmp_path), "--no-telemetry"])
    assert args.config.telemetry is False
    args = tyro.cli(SequenceArgs, args=["--out", str(tmp_path)])
    assert args.config.telemetry is True
    record = {k: v for k, v in jsonable(args).items() if k not in ("resume", "overwrite")}
    (tmp_path / "sequence.json").write_text(json.dumps(record))
    assert stored_sequence_args(tmp_path).config.telemetry is True
    del record["telemetry"]
    (tmp_path / "sequence.json").write_text(json.dumps(record))
    resumed = stored_sequence_args(tmp_path)
    assert resumed.config.telemetry is False
    assert resumed.config == args.config.replace(telemetry=False)
