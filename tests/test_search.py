"""Successive halving: the schedule keeps the true best arm of a fake problem, a run that
goes on continues from its own state (the same bits as training it in one go), a search
compiles once per rung plus once to start, and the command's outputs and refusals."""

import json
import math

import jax
import numpy as np
import pytest
from _processes import signalled_searches

from jaxadv import cli
from jaxadv.engine.policies import load_policies
from jaxadv.engine.sweep import expand_grid
from jaxadv.engine.train import HParams, TrainConfig, make_train
from jaxadv.tuning.halving import halving_loop, rung_budgets, successive_halving

# mechanics; the test marked product_emitters compares programs bit for bit (conftest.py)
pytestmark = [pytest.mark.fast_compile]

TINY = TrainConfig(algo="a2c", num_envs=2, num_steps=8, total_timesteps=2 * 8 * 12, hidden=(8,))


@pytest.mark.parametrize("seed", range(5))
def test_the_schedule_keeps_the_true_best_arm_of_a_fake_problem(seed):
    """27 arms with known means; an arm's measured fitness is its mean plus noise whose
    scale falls as 1/sqrt(updates trained), as an average over more episodes would."""
    rng = np.random.default_rng(seed)
    means = rng.permutation(np.linspace(0.0, 26.0, 27))
    trained = np.zeros(27, int)
    calls = []

    def train(points, updates, budget):
        calls.append((list(points), updates, budget))
        trained[points] += updates
        assert np.all(trained[points] == budget)  # each goes on from where it stopped
        return means[points] + rng.normal(size=len(points)) * 4.0 / np.sqrt(trained[points])

    rungs = halving_loop(27, rung_budgets(81, 3, 1), 3, train)
    assert [len(r.points) for r in rungs] == [27, 9, 3, 1, 1]
    assert [r.budget for r in rungs] == [1, 3, 9, 27, 81]
    assert [c[1] for c in calls] == [1, 2, 6, 18, 54]  # never retrained from zero
    assert rungs[-1].kept == [int(np.argmax(means))]
    for r in rungs[:-1]:
        assert len(r.kept) == math.ceil(len(r.points) / 3)


def test_nan_fitness_ranks_last():
    rungs = halving_loop(4, [1, 2], 2, lambda p, u, b: np.array([np.nan, 1.0, 3.0, 2.0])[p])
    assert rungs[0].kept == [2, 3]


GRID = {"lr": [1e-4, 1e-3, 1e-2, 3e-2]}


@pytest.fixture(scope="module")
def search():
    """One search of 4 points × 2 seeds (rungs of 3, 6 and 12 updates: 4, 2 and 1 points),
    and the backend compiles it made (after its eager start: the grid's points from the key)."""
    key = jax.random.key(3)
    expand_grid(GRID, key=jax.random.fold_in(key, 1))  # as an earlier search would have
    compiles = []

    def listener(name, seconds, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = successive_halving(TINY, GRID, 2, key=key, eta=2, min_updates=3)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return result, compiles


def test_a_run_that_goes_on_is_the_same_bits_as_training_it_in_one_go(search):
    """Every point's returns, over the updates it reached (3, 6 or 12), are those of its
    run trained in one go: a run that goes on continues from its own state."""
    result, _ = search
    assert [r.budget for r in result.rungs] == [3, 6, 12]
    keys = jax.random.split(jax.random.key(3), 2)
    train = jax.jit(jax.vmap(make_train(TINY), (0, None)))
    reached = {p: rung.budget for rung in result.rungs for p in rung.points}
    assert sorted(reached.values()) == [3, 3, 6, 12]
    for p, lr in enumerate(GRID["lr"]):
        _, metrics = train(keys, HParams(lr=np.float32(lr)))
        want = np.asarray(metrics["episode_return"])[:, :reached[p]]
        assert np.array_equal(result.returns[p], want, equal_nan=True), p
    assert result.env_steps == 2 * (4 * 3 + 2 * 3 + 1 * 6) * TINY.batch_size


def test_a_search_stopped_after_a_rung_resumes_to_the_same_bits(search):
    """``on_saved`` after the first rung; a search resumed from it (``resume=``) trains
    only the rungs left and ends as the uninterrupted search: the same rungs, fitness,
    returns, ranking and final states, bit for bit."""
    want, _ = search

    class Stop(Exception):
        pass

    def stop(progress):
        raise Stop(progress)

    with pytest.raises(Stop) as stopped:
        successive_halving(TINY, GRID, 2, key=jax.random.key(3), eta=2, min_updates=3,
                           on_saved=stop)
    progress = stopped.value.args[0]
    assert [r.budget for r in progress.rungs] == [3] and sorted(progress.returns) == [0, 1, 2, 3]
    got = successive_halving(TINY, GRID, 2, key=jax.random.key(3), eta=2, min_updates=3,
                             resume=progress)
    assert got.rungs[0] == progress.rungs[0] and len(got.rungs) == 3
    assert [(r.points, r.kept) for r in got.rungs] == [(r.points, r.kept) for r in want.rungs]
    for a, b in zip(got.rungs, want.rungs):
        np.testing.assert_array_equal(a.fitness, b.fitness)  # NaN where no episode ended
    assert got.ranking == want.ranking and got.env_steps == want.env_steps
    assert got.compiles == 2  # the two rungs left; the initial states came with the progress
    for a, b in zip(got.returns + got.episodes, want.returns + want.episodes, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(got.state), jax.tree.leaves(want.state), strict=True):
        a, b = (jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                else x for x in (a, b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="not the first of this search's"):
        successive_halving(TINY, GRID, 2, key=jax.random.key(3), eta=3, min_updates=2,
                           resume=progress)


def test_a_search_compiles_once_per_rung_and_once_to_start(search):
    result, compiles = search
    assert len(result.rungs) == 3
    assert len(compiles) <= len(result.rungs) + 1 == result.compiles


@pytest.mark.product_emitters  # compares two programs bit for bit (conftest.py)
def test_the_command_writes_the_search_and_refuses_what_it_cannot_search(tmp_path, capsys):
    out = tmp_path / "search"
    base = ["sweep", "--search", "halving", "--algo", "a2c", "--num-envs", "2", "--num-steps",
            "8", "--hidden", "8", "--total-timesteps", "192", "--seeds", "2"]
    # the search of the fixture above, as a command (its programs, from the compile cache)
    assert cli.main([*base, "--grid.lr", "1e-4", "1e-3", "1e-2", "3e-2", "--halving.eta", "2",
                     "--halving.min-steps", "48", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["budget"] for r in summary["rungs"]] == [3, 6, 12]
    assert [len(r["points"]) for r in summary["rungs"]] == [4, 2, 1]
    assert summary["best"]["index"] == summary["rungs"][-1]["points"][0]
    rows = (out / "search.csv").read_text().splitlines()
    assert rows[0] == "rung,updates,env_steps,point,lr,fitness,kept" and len(rows) == 1 + 7
    assert (out / "search.png").read_bytes()[:4] == b"\x89PNG"
    # the pick's final policies (best.npz) are its run trained in one go, and eval finds them
    pick = summary["best"]["index"]
    assert summary["rungs"][-1]["points"] == [pick]
    state, _ = jax.jit(jax.vmap(make_train(TINY), (0, None)))(
        jax.random.split(jax.random.key(0), 2), HParams(lr=np.float32(summary["best"]["point"]["lr"])))
    saved = load_policies(out / "best.npz")
    for a, b in zip(saved, jax.tree.leaves((state.params, state.obs_stats)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert cli.main(["eval", str(out), "--point", "best", "--episodes", "2", "--quiet"]) == 0
    record = json.loads((out / "eval" / "best" / "eval.json").read_text())
    assert len(record["per_seed"]) == 2 and record["checkpoint"]["update"] == 12
    capsys.readouterr()

    # stopped by a signal after its first rung (saved), then resumed: the same outputs
    again = tmp_path / "again"
    argv = [*base, "--grid.lr", "1e-4", "1e-3", "1e-2", "3e-2", "--halving.eta", "2",
            "--halving.min-steps", "48", "--out", str(again)]
    with signalled_searches():
        assert cli.main(argv) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "stopped after rung 1 of 3" in err and f"jaxadv sweep --resume {again}" in err
    assert not (again / "summary.json").exists()
    assert cli.main(argv) == 2  # no fresh start into it
    assert "unfinished sweep (1 rung(s) saved)" in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", str(again), "--halving.eta", "3"]) == 2
    assert "`halving` = " in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", str(again)]) == 0
    assert f"resuming {again}: 1 of 3 rung(s) saved" in " ".join(capsys.readouterr().err.split())
    assert (again / "search.csv").read_text().splitlines() == rows
    resumed = json.loads((again / "summary.json").read_text())
    for key in ("best", "env_steps", "points"):
        assert resumed[key] == summary[key], key
    assert [(r["budget"], r["points"], r["kept"]) for r in resumed["rungs"]] == [
        (r["budget"], r["points"], r["kept"]) for r in summary["rungs"]]
    for a, b in zip(load_policies(again / "best.npz"), saved, strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed["compiles"] == 2  # the two rungs left

    (out / "best.npz").unlink()
    assert cli.main(["eval", str(out), "--point", "best", "--overwrite", "--quiet"]) == 2
    assert "best.npz holds no saved policies" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path), "--point", "best", "--quiet"]) == 2
    assert "holds no finished sweep's summary.json" in capsys.readouterr().err
    for flags, words in [
        (["--grid.num-envs", "2", "4"], "num_envs cannot be searched with --search halving"),
        (["--grid.lr", "1e-3", "--halving.eta", "1"], "`halving.eta` must be an integer >= 2"),
        (["--grid.lr", "1e-3", "--halving.min-steps", "8"], "at least one update (16 env steps)"),
    ]:
        assert cli.main([*base, *flags, "--out", str(tmp_path / "x")]) == 2
        assert words in capsys.readouterr().err
