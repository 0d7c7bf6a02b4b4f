"""`jaxadv train`: outputs, chunked == fused, and bad flags refused before anything compiles."""

import csv
import dataclasses
import json
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxadv import cli
from jaxadv.engine import driver
from jaxadv.engine.train import HParams, TrainConfig, make_train

pytestmark = pytest.mark.fast_compile  # compares programs and checks mechanics (conftest.py)

TINY = ["--num-envs", "2", "--num-steps", "8", "--total-timesteps", "256", "--hidden", "8"]


def test_train_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--seeds", "2", "--seed", "3", "--chunk-updates", "4", "--out", str(out)]
    assert cli.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {
        "config.json", "metrics.csv", "summary.json", "returns.png", "telemetry.png", "checkpoints"
    }
    # default: a checkpoint a minute apart (none in this run) and one at the end
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["16"]

    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["num_envs"] == 2
    assert config["train_config"]["update_epochs"] == 4  # ppo default filled in
    assert config["hparams"] == {f.name: getattr(HParams(), f.name)
                                 for f in dataclasses.fields(HParams)}
    assert config["run"] == {"seed": 3, "seeds": 2, "chunk_updates": 4, "out": str(out),
                             "checkpoint_every": None, "keep_checkpoints": 2, "seed_groups": 1}
    assert TrainConfig(**config["train_config"]) == TrainConfig(
        num_envs=2, num_steps=8, total_timesteps=256, hidden=(8,)
    )

    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    num_updates = 256 // 16
    assert len(rows) == num_updates * 2
    for column in ("seed", "update", "env_steps", "episode_return", "episode_length",
                   "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                   "explained_variance", "nonfinite", "wall_seconds"):
        assert column in rows[0], column
    for seed in ("0", "1"):
        seed_rows = [r for r in rows if r["seed"] == seed]
        steps = [int(r["env_steps"]) for r in seed_rows]
        assert steps == [16 * u for u in range(1, num_updates + 1)]
        assert [int(r["update"]) for r in seed_rows] == list(range(1, num_updates + 1))
        wall = [float(r["wall_seconds"]) for r in seed_rows]
        assert wall == sorted(wall) and wall[0] >= 0
    entropy = np.array([float(r["entropy"]) for r in rows])
    assert np.all((entropy > 0) & (entropy <= np.log(2) + 1e-5))  # CartPole: 2 actions
    returns = np.array([float(r["episode_return"]) for r in rows])
    assert np.isfinite(returns).any() and np.all(returns[np.isfinite(returns)] >= 1)

    summary = json.loads((out / "summary.json").read_text())
    for key in ("final_return_mean", "final_return_std", "env_steps", "steps_per_second",
                "compile_seconds", "seeds", "jax_version", "device"):
        assert key in summary, key
    assert summary["env_steps"] == 256 and summary["seeds"] == 2
    assert summary["jax_version"] == jax.__version__
    assert summary["steps_per_second"] > 0 and summary["compile_seconds"] > 0
    # final return: per seed, the mean over episodes that ended in the last 10% of updates
    last = [r for r in rows if int(r["update"]) > num_updates - 2]  # ceil(0.1 * 16) = 2
    per_seed = []
    for seed in ("0", "1"):
        ended = [r for r in last if r["seed"] == seed and float(r["episodes"]) > 0]
        returns = [float(r["episode_return"]) for r in ended]
        weights = [float(r["episodes"]) for r in ended]
        per_seed.append(np.average(returns, weights=weights) if ended else np.nan)
    got = [np.nan if x is None else x for x in summary["final_return_per_seed"]]
    np.testing.assert_allclose(got, per_seed, rtol=1e-5)
    finite = [x for x in per_seed if np.isfinite(x)]
    if finite:  # tiny runs: a seed may finish no episode in the window
        np.testing.assert_allclose(summary["final_return_mean"], np.mean(finite), rtol=1e-5)
        np.testing.assert_allclose(summary["final_return_std"], np.std(finite), atol=1e-4)
        assert summary["final_return_mean"] >= 1
    assert (out / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    printed = capsys.readouterr()
    assert "final return" in printed.out and "steps/s" in printed.err


def test_quiet_prints_nothing(tmp_path, capsys):
    argv = ["train", "--algo", "reinforce", *TINY, "--seeds", "1", "--quiet", "--out",
            str(tmp_path)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert (tmp_path / "summary.json").exists()


@pytest.mark.product_emitters  # two different programs, bit for bit (conftest.py)
def test_chunked_equals_make_train_bitwise():
    # TINY's config (test_train_writes_outputs): its 4-update calls, from the compile cache
    config = TrainConfig(num_envs=2, num_steps=8, total_timesteps=256, hidden=(8,))
    hp = HParams()
    keys = jax.random.split(jax.random.key(7), 2)
    chunked = driver.compile_chunked(config, hp, keys, chunk_updates=12)
    assert chunked.sizes == [12, 4]  # 16 updates: one full call and a shorter last one
    states, metrics = zip(*chunked.iterate(keys, hp), strict=True)
    metrics = jax.tree.map(lambda *m: np.concatenate(m, axis=1), *metrics)

    ref_state, ref_metrics = jax.jit(jax.vmap(make_train(config), (0, None)))(keys, hp)
    jax.tree.map(np.testing.assert_array_equal, states[-1].params, ref_state.params)
    jax.tree.map(np.testing.assert_array_equal, metrics, dict(ref_metrics))


def test_default_chunks_cover_the_run():
    for n in (1, 7, 97, 976, 997, 3906):
        k = driver.default_chunk_updates(n)
        sizes = driver.chunk_sizes(n, k)
        assert sum(sizes) == n and len(set(sizes)) <= 2
        assert n < 16 or 16 <= len(sizes) <= 64


def test_every_hparam_is_a_flag(capsys):
    assert cli.main(["train", "--help"]) == 0
    help_text = capsys.readouterr().out
    for f in dataclasses.fields(HParams):
        assert "--" + f.name.replace("_", "-") in help_text, f.name


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--env", "Cartpole-v1"], ["`env`", "Did you mean 'CartPole-v1'"]),
        (["--num-minibatches", "3"], ["`num_minibatches`", "num_envs * num_steps"]),
        (["--lr", "-1"], ["`lr`", "> 0"]),
        (["--gamma", "1.5"], ["`gamma`", "in [0, 1]"]),
        (["--env", "Pendulum-v1", "--estimator", "qv"], ["`estimator`", "discrete"]),
        (["--seeds", "0"], ["`seeds`", "positive"]),
        (["--total-timesteps", "100"], ["`total_timesteps`", "batch"]),
        (["--algo", "trpo"], ["--algo", "ppo", "a2c", "reinforce"]),
        (["--num-envs", "four"], ["--num-envs", "INT"]),
    ],
)
def test_bad_flags_exit_2_before_compiling(flags, words, no_compile, capsys, tmp_path):
    start = time.perf_counter()
    assert cli.main(["train", *flags, "--out", str(tmp_path / "run")]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_help_lists_field_docs(capsys):
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for doc in ("steps per environment per update", "passes over each rollout",
                "discount factor", "--gae-lambda", "--chunk-updates", "--seeds", "--out",
                "--resume", "latest good checkpoint", "--checkpoint-every",
                "--keep-checkpoints", "--debug-nans"):
        assert doc in text, doc
    assert cli.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_installed_script_refuses_bad_value():
    script = pathlib.Path(sys.executable).parent / "jaxadv"
    if not script.exists():
        pytest.skip("the jaxadv script is not installed (pip install -e .)")
    done = subprocess.run([str(script), "train", "--num-minibatches", "3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: `num_minibatches`")
    assert "Traceback" not in done.stderr
