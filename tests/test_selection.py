"""Honest selection: interquartile means and bootstrap intervals against independent
references, fresh seeds disjoint from the selection seeds, and a re-evaluated point equal
to training it alone on those seeds."""

import json
import types

import jax
import numpy as np
import pytest
import scipy.stats

from jaxadv import cli
from jaxadv.engine.sweep import run_sweep
from jaxadv.engine.train import HParams, TrainConfig, make_train
from jaxadv.stats import bootstrap_ci, iqm
from jaxadv.tuning.selection import fresh_key, reevaluate, selection_report, top_points

pytestmark = pytest.mark.fast_compile  # compares programs (conftest.py)

TINY = TrainConfig(algo="a2c", num_envs=2, num_steps=8, total_timesteps=2 * 8 * 12, hidden=(8,))


@pytest.mark.parametrize("n", [1, 3, 4, 7, 8, 13])
def test_iqm_is_scipys_quarter_trimmed_mean(n):
    x = np.random.default_rng(n).normal(size=n) * 100
    assert iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25))
    assert iqm(np.append(x, np.nan)) == pytest.approx(iqm(x))  # NaN seeds are left out


def test_bootstrap_interval_against_a_loop_over_resamples():
    x = np.random.default_rng(0).normal(10.0, 2.0, size=12)
    rng = np.random.default_rng(5)
    draws = [scipy.stats.trim_mean(x[rng.integers(0, 12, 12)], 0.25) for _ in range(400)]
    assert bootstrap_ci(x, reps=400, seed=5) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
    assert bootstrap_ci(np.full(6, 3.0)) == (3.0, 3.0)  # no spread, no width
    low, high = bootstrap_ci(x + 5.0, x, reps=400)  # the difference of two samples
    assert low < 5.0 < high


def test_fresh_seeds_are_disjoint_from_the_selection_seeds():
    for seed in (0, 1, 17):
        selection = jax.random.key_data(jax.random.split(jax.random.key(seed), 64))
        fresh = jax.random.key_data(jax.random.split(fresh_key(seed), 64))
        assert not {tuple(k) for k in np.asarray(selection).tolist()} & {
            tuple(k) for k in np.asarray(fresh).tolist()}


def test_top_points_ranks_by_interquartile_mean():
    result = types.SimpleNamespace(points=[{"lr": i} for i in range(4)], final_return=np.array([
        [1.0, 1.0, 1.0, 100.0],  # one lucky seed: IQM 1
        [5.0, 5.0, 5.0, 5.0],
        [np.nan] * 4,            # never finished an episode: last
        [3.0, 4.0, 4.0, 3.0],
    ]))
    assert top_points(result, 4) == [1, 3, 0, 2]


def test_a_re_evaluated_point_is_that_point_trained_alone_on_the_fresh_seeds():
    grid = {"lr": [1e-3, 3e-3, 1e-2]}
    result = run_sweep(TINY, grid, 2, key=jax.random.key(7))
    chosen, fresh = reevaluate(TINY, HParams(), result, 2, 3, seed=7)
    assert chosen == top_points(result, 2)
    keys = jax.random.split(fresh_key(7), 3)
    train = jax.jit(jax.vmap(make_train(TINY), (0, None)))
    for i, p in enumerate(chosen):
        hp = HParams(lr=result.points[p]["lr"])
        _, metrics = train(keys, hp)
        alone = run_sweep(TINY, {"lr": [result.points[p]["lr"]]}, 3, key=fresh_key(7))
        assert np.array_equal(fresh.returns[i], alone.returns[0], equal_nan=True)
        assert np.array_equal(fresh.returns[i], np.asarray(metrics["episode_return"]),
                              equal_nan=True)
    rows = selection_report(result, chosen, fresh, reps=200)
    for row, p in zip(rows, chosen):
        sel = result.final_return[p]
        assert row["selected"]["iqm"] == pytest.approx(scipy.stats.trim_mean(sel[np.isfinite(sel)], 0.25))
        assert row["optimism_gap"]["value"] == pytest.approx(row["selected"]["iqm"] - row["fresh"]["iqm"])


def test_the_sweep_command_reports_selection_and_fresh_returns(tmp_path, capsys):
    out = tmp_path / "sweep"
    # TINY and the grid of the test above: its programs (3 points × 2 seeds, then 3 fresh seeds)
    argv = ["sweep", "--algo", "a2c", "--num-envs", "2", "--num-steps", "8", "--hidden", "8",
            "--total-timesteps", "192", "--grid.lr", "1e-3", "3e-3", "1e-2", "--seeds", "2",
            "--reeval.top", "1", "--reeval.seeds", "3", "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["selection"]
    assert len(row["selected"]["per_seed"]) == 2 and len(row["fresh"]["per_seed"]) == 3
    assert row["point"] == summary["per_point"][row["index"]]["point"]
    assert (out / "selection.png").read_bytes()[:4] == b"\x89PNG"
    assert "optimism gap" in capsys.readouterr().out


def test_a_re_evaluation_that_cannot_run_is_refused_before_compiling(capsys, no_compile):
    base = ["sweep", "--grid.lr", "1e-3", "1e-2"]
    for flags, words in [(["--reeval.top", "3"], "the sweep has only 2 point(s)"),
                         (["--reeval.top", "1", "--reeval.seeds", "0"], "at least one fresh seed"),
                         (["--reeval.top", "-1"], "`reeval.top` must be an integer >= 0")]:
        assert cli.main([*base, *flags]) == 2
        assert words in capsys.readouterr().err
