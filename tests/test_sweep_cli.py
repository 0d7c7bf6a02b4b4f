"""`jaxadv sweep`: its outputs, the best point and its CI, the plot, and bad grids refused
before anything compiles.

One real sweep (a 2 × 2 grid of tiny PPO runs, ~10 s to compile here) checks the files
end to end; the rest swaps ``make_train`` for a stub whose final return is a known
function of the hyperparameters, so the best point is known in advance and a compile
takes milliseconds.
"""

import csv
import dataclasses
import json
import math
import struct
import time
import typing
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxadv import cli
from jaxadv import stats as jstats
from jaxadv.cli import report, sweep_args
from jaxadv.engine import sweep as sweep_module
from jaxadv.engine.sweep import SweepResult, expand_grid
from jaxadv.engine.train import HParams, TrainConfig

pytestmark = pytest.mark.fast_compile  # compares programs and checks mechanics (conftest.py)

TINY = ["--num-envs", "2", "--num-steps", "16", "--total-timesteps", "256", "--hidden", "8"]
HP_FIELDS = [f.name for f in dataclasses.fields(HParams)]


def _read_csv(path):
    with path.open() as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def _ci95(values) -> tuple[float, float]:
    """Oracle: mean and t-based half-width over the finite values (scipy)."""
    v = np.asarray([x for x in values if math.isfinite(x)])
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


# --- one real sweep, end to end ---


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    argv = ["sweep", *TINY, "--grid.lr", "1e-3", "3e-3", "--grid.gae-lambda", "0.5", "1.0",
            "--seeds", "2", "--seed", "1", "--max-parallel", "3", "--out", str(out), "--quiet"]
    start = time.perf_counter()
    assert cli.main(argv) == 0
    return out, time.perf_counter() - start


def test_real_sweep_writes_the_three_files(real_sweep):
    out, _ = real_sweep
    assert {p.name for p in out.iterdir()} == {"sweep.csv", "summary.json", "sweep.png", "chunks"}
    # 8 runs in calls of at most 3: the finished chunks, saved for --resume
    assert sorted(p.name for p in (out / "chunks").iterdir()) == [
        "group0-runs0-3.npz", "group0-runs3-6.npz", "group0-runs6-8.npz", "manifest.json"]
    assert json.loads((out / "chunks" / "manifest.json").read_text())["complete"] is True

    columns, rows = _read_csv(out / "sweep.csv")
    assert columns == ["point", "seed", *HP_FIELDS, "env_steps", "final_return", "auc"]
    assert len(rows) == 4 * 2  # points × seeds
    grid = [(lr, lam) for lr in (1e-3, 3e-3) for lam in (0.5, 1.0)]  # expand_grid's order
    for r in rows:
        p = int(r["point"])
        assert (float(r["lr"]), float(r["gae_lambda"])) == grid[p]
        for f in ("gamma", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm"):
            assert float(r[f]) == getattr(HParams(), f)  # the base value where not swept
        assert int(r["env_steps"]) == 256
    assert [(int(r["point"]), int(r["seed"])) for r in rows] == [(p, s) for p in range(4)
                                                                  for s in range(2)]
    finals = np.array([float(r["final_return"]) for r in rows]).reshape(4, 2)
    aucs = np.array([float(r["auc"]) for r in rows]).reshape(4, 2)
    assert np.isfinite(aucs).all() and (aucs >= 1).all()  # CartPole: ≥ 1 per episode

    summary = json.loads((out / "summary.json").read_text())
    for key in ("best", "points", "seeds", "devices", "processes", "compile_seconds",
                "wall_seconds", "agents_per_second", "per_point", "train_config", "hparams"):
        assert key in summary, key
    assert (summary["points"], summary["seeds"], summary["runs"]) == (4, 2, 8)
    assert (summary["devices"], summary["processes"]) == (jax.device_count(), 1)
    assert summary["wall_seconds"] >= summary["compile_seconds"] > 0
    train_seconds = summary["wall_seconds"] - summary["compile_seconds"]
    np.testing.assert_allclose(summary["agents_per_second"], 8 / train_seconds, rtol=1e-6)
    np.testing.assert_allclose(summary["env_steps_per_second"], 8 * 256 / train_seconds, rtol=1e-6)
    assert summary["run"]["grid"] == {"lr": [1e-3, 3e-3], "gae_lambda": [0.5, 1.0]}
    assert TrainConfig(**{**summary["train_config"], "hidden": tuple(summary["train_config"]["hidden"])}) \
        == TrainConfig(num_envs=2, num_steps=16, total_timesteps=256, hidden=(8,))

    # per point: mean ± t·sd/√n over the seeds with a final return (scipy as the oracle)
    for p, entry in enumerate(summary["per_point"]):
        mean, half = _ci95(finals[p])
        assert entry["point"] == dict(zip(("lr", "gae_lambda"), grid[p]))
        nan_if_none = lambda x: math.nan if x is None else x  # 0.0 is a value, not missing
        np.testing.assert_allclose(nan_if_none(entry["final_return_mean"]), mean, rtol=1e-5)
        np.testing.assert_allclose(nan_if_none(entry["final_return_ci95"]), half, rtol=1e-5)
    # the best point is the max of the mean final return
    means = np.array([_ci95(f)[0] for f in finals])
    best = int(np.nanargmax(means))
    assert summary["best"]["index"] == best
    assert summary["best"]["point"] == dict(zip(("lr", "gae_lambda"), grid[best]))
    np.testing.assert_allclose(summary["best"]["final_return_mean"], np.nanmax(means), rtol=1e-5)

    width, _ = _png_size(out / "sweep.png")
    assert width == 3 * 5 * 120  # 2-D grid: the heat-map and one panel per field


# --- a stub train: final return = 100·lr·1000 − 100·(λ − 0.9)² + seed noise ---


class _StubState(NamedTuple):
    """The part of a run's final state that a sweep keeps."""

    params: jax.Array
    obs_stats: None = None


def _stub_make_train(config: TrainConfig):
    def train(key, hp):
        u = config.num_updates
        score = hp.lr * 1e5 - 100.0 * (hp.gae_lambda - 0.9) ** 2 + jax.random.normal(key)
        returns = jnp.full((u,), score)
        episodes = jnp.ones((u,), jnp.float32)  # one episode per update: final return = score
        steps = jnp.arange(1, u + 1, dtype=jnp.int32) * config.batch_size
        return _StubState(jnp.zeros(2)), {"episode_return": returns, "episodes": episodes,
                                          "env_steps": steps}

    return train


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(sweep_module, "make_train", _stub_make_train)


def test_best_point_is_the_known_best(stub, tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["sweep", *TINY, "--grid.gae-lambda", "0.0", "0.9", "1.0", "--grid.lr", "1e-4", "3e-4",
            "--seeds", "3", "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["point"] == {"gae_lambda": 0.9, "lr": 3e-4}
    _, rows = _read_csv(out / "sweep.csv")
    assert len(rows) == 6 * 3
    finals = np.array([float(r["final_return"]) for r in rows]).reshape(6, 3)
    assert summary["best"]["index"] == int(np.argmax(finals.mean(axis=1)))
    # the rows are run_sweep's numbers for the same config, grid and key (seed 0); the
    # grid's axes come in Grid's field order (lr before gae_lambda), not the flags' order
    assert summary["swept"] == ["lr", "gae_lambda"]
    config = TrainConfig(num_envs=2, num_steps=16, total_timesteps=256, hidden=(8,))
    want = sweep_module.run_sweep(config, {"lr": [1e-4, 3e-4], "gae_lambda": [0.0, 0.9, 1.0]}, 3,
                                  key=jax.random.key(0))
    np.testing.assert_allclose(finals, want.final_return, rtol=1e-6)
    # one episode per update, all returning the stub's score: the final return is the score
    noise = [float(jax.random.normal(k)) for k in jax.random.split(jax.random.key(0), 3)]
    scores = [[np.float32(p["lr"]) * 1e5 - 100.0 * (np.float32(p["gae_lambda"]) - 0.9) ** 2 + n
               for n in noise] for p in want.points]
    np.testing.assert_allclose(finals, scores, rtol=1e-5, atol=1e-4)
    lo, hi = summary["best"]["final_return_ci95_low"], summary["best"]["final_return_ci95_high"]
    assert lo < summary["best"]["final_return_mean"] < hi
    printed = capsys.readouterr()
    assert "best point" in printed.out and "gae_lambda=0.9" in printed.out
    assert "18/18 runs" in printed.err  # the progress bar over chunks
    assert _png_size(out / "sweep.png")[0] == 3 * 5 * 120


def test_one_field_one_panel_and_one_seed_has_no_ci(stub, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sweep", *TINY, "--grid.ent-coef", "0", "0.01", "0.1", "--seeds", "1",
                     "--quiet", "--out", str(out)]) == 0
    assert capsys.readouterr() == ("", "")  # --quiet: no progress bar, no table
    _, rows = _read_csv(out / "sweep.csv")
    assert len(rows) == 3 and [float(r["ent_coef"]) for r in rows] == [0.0, 0.01, 0.1]
    summary = json.loads((out / "summary.json").read_text())
    assert all(e["final_return_ci95"] is None for e in summary["per_point"])
    assert summary["best"]["final_return_ci95_low"] is None
    assert _png_size(out / "sweep.png")[0] == int(6.4 * 120)  # one panel, no heat-map


def test_random_search_and_a_static_field(stub, tmp_path):
    out = tmp_path / "s"
    argv = ["sweep", *TINY, "--samples", "3", "--grid.lr", "1e-5", "1e-2", "--grid.gae-lambda",
            "0.5", "1.0", "--grid.num-envs", "2", "4", "--seeds", "2", "--seed", "7",
            "--max-parallel", "4", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["grid"] == {
        "lr": {"distribution": "LogUniform", "low": 1e-5, "high": 1e-2},
        "gae_lambda": {"distribution": "Uniform", "low": 0.5, "high": 1.0},
        "num_envs": [2, 4],
    }
    want = expand_grid({"lr": sweep_module.LogUniform(1e-5, 1e-2),
                        "gae_lambda": sweep_module.Uniform(0.5, 1.0), "num_envs": [2, 4]},
                       num_samples=3, key=jax.random.fold_in(jax.random.key(7), 1))
    assert [e["point"] for e in summary["per_point"]] == want
    assert summary["points"] == 6 and summary["runs"] == 12
    columns, rows = _read_csv(out / "sweep.csv")
    assert columns == ["point", "seed", "num_envs", *HP_FIELDS, "env_steps", "final_return", "auc"]
    for r in rows:
        point = want[int(r["point"])]
        assert float(r["lr"]) == point["lr"] and int(r["num_envs"]) == point["num_envs"]
        assert 1e-5 <= float(r["lr"]) <= 1e-2 and 0.5 <= float(r["gae_lambda"]) <= 1.0
    assert _png_size(out / "sweep.png")[0] == 3 * 5 * 120  # lr, λ, num_envs: no heat-map


def test_nan_returns_are_written_as_nan(tmp_path):
    """A run with no finished episode: ``nan`` in sweep.csv, ``null`` in summary.json."""
    points = [{"lr": 1e-3}, {"lr": 1e-2}]
    final = np.array([[np.nan, np.nan], [5.0, np.nan]])
    result = SweepResult(points=points, seeds=2, returns=[np.full((2, 3), np.nan)] * 2,
                         episodes=[np.zeros((2, 3))] * 2, env_steps=[np.arange(1, 4) * 8] * 2,
                         final_return=final, auc=final, compile_seconds=1.0, wall_seconds=2.0,
                         devices=1, processes=1)
    report.write_sweep_csv(tmp_path / "sweep.csv", result, HParams())
    _, rows = _read_csv(tmp_path / "sweep.csv")
    assert [r["final_return"] for r in rows] == ["nan", "nan", "5", "nan"]
    assert all(r["env_steps"] == "24" for r in rows)
    summary = report.summarize_sweep(result, TrainConfig(), HParams())
    report.write_json(tmp_path / "summary.json", summary)
    loaded = json.loads((tmp_path / "summary.json").read_text())
    assert loaded["per_point"][0]["final_return_mean"] is None
    assert loaded["best"]["index"] == 1 and loaded["best"]["final_return_ci95"] is None
    report.plot_sweep(tmp_path / "sweep.png", result, "nan")
    allnan = result._replace(final_return=np.full((2, 2), np.nan))
    assert report.summarize_sweep(allnan, TrainConfig(), HParams())["best"] is None
    report.plot_sweep(tmp_path / "allnan.png", allnan, "all nan")


def test_t_quantile_and_ci_match_scipy():
    for df in [*range(1, 60), 100, 1000, 10**6]:
        np.testing.assert_allclose(jstats.t_quantile_975(df), stats.t.ppf(0.975, df), rtol=2e-6)
    values = np.random.default_rng(0).normal(size=(7, 5))
    values[0, 1] = values[1, 1] = np.nan
    mean, half, count = jstats.mean_ci95(values)
    for j in range(5):
        want_mean, want_half = _ci95(values[:, j])
        np.testing.assert_allclose([mean[j], half[j]], [want_mean, want_half], rtol=1e-6)
    assert count.tolist() == [7, 5, 7, 7, 7]


# --- the flags ---


def test_grid_has_a_flag_for_every_hparam(capsys):
    grid_fields = {f.name for f in dataclasses.fields(sweep_args.Grid)}
    assert set(HP_FIELDS) <= grid_fields
    assert list(typing.get_args(sweep_args._HParamName)) == HP_FIELDS  # --log-uniform's choices
    assert cli.main(["sweep", "--help"]) == 0
    text = capsys.readouterr().out
    for name in [*HP_FIELDS, "num_envs", "num_steps", "estimator"]:
        assert "--grid." + name.replace("_", "-") in text, name
    for flag in ("--seeds", "--seed", "--samples", "--max-parallel", "--out", "--resume",
                 "--quiet", "--num-envs", "--lr"):
        assert flag in text, flag
    assert cli.main(["--help"]) == 0
    assert "sweep" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ([], ["`grid` is empty"]),
        (["--grid.lr"], ["'lr'", "empty"]),
        (["--grid.lr", "1e-3", "0"], ["`lr`", "> 0"]),
        (["--grid.lr", "nan"], ["`lr`"]),
        (["--grid.gae-lambda", "0.5", "1.5"], ["gae_lambda", "[0, 1]"]),
        (["--grid.gae-lambda", "-0.1"], ["gae_lambda", "[0, 1]"]),
        (["--grid.gamma", "2"], ["gamma", "[0, 1]"]),
        (["--grid.foo", "1"], ["--grid.foo"]),
        (["--grid.num-envs", "2", "3", "--num-minibatches", "32"], ["`num_minibatches`"]),
        (["--grid.num-envs", "0"], ["`num_envs`", "positive"]),
        (["--env", "Pendulum-v1", "--grid.estimator", "gae", "qv"], ["`estimator`", "discrete"]),
        (["--grid.estimator", "vtrace"], ["--grid.estimator"]),
        (["--samples", "4", "--grid.lr", "1e-3"], ["'lr'", "LOW HIGH"]),
        (["--samples", "4", "--grid.lr", "1e-2", "1e-3"], ["'lr'", "LOW < HIGH"]),
        (["--samples", "4", "--grid.gae-lambda", "0.5", "1.5"], ["gae_lambda", "[0, 1]"]),
        (["--samples", "4", "--grid.num-envs", "2", "4"], ["`samples`", "LOW HIGH"]),
        (["--samples", "0", "--grid.lr", "1e-4", "1e-3"], ["`samples`", "positive"]),
        (["--grid.lr", "1e-3", "--seeds", "0"], ["`seeds`", "positive"]),
        (["--grid.lr", "1e-3", "--max-parallel", "0"], ["`max_parallel`", "positive"]),
        (["--grid.lr", "1e-3", "--gamma", "1.5"], ["`gamma`", "[0, 1]"]),
    ],
)
def test_bad_grids_exit_2_before_compiling(flags, words, no_compile, capsys, tmp_path):
    start = time.perf_counter()
    assert cli.main(["sweep", *TINY, *flags, "--out", str(tmp_path / "run")]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)
    if not any(word.startswith("--") for word in words):  # ours, not tyro's parse error
        assert err.startswith("error: `"), err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_train_still_works_beside_sweep(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--chunk-updates" in capsys.readouterr().out
