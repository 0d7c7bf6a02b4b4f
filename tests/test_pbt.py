"""PBT's exploit and explore step: a replaced member is its donor's parameters, optimiser
state and normalisation statistics bit for bit, with its own environment state and key;
every other member is untouched; explored values stay in their valid ranges."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.engine.policies import load_policies
from jaxadv.engine.train import HParams, TrainConfig, make_train, make_trainer
from jaxadv.stats import final_returns
from jaxadv.tuning.pbt import COPIED, PBTSettings, exploit_explore, rank

# mechanics; the tests marked product_emitters compare programs bit for bit (conftest.py)
pytestmark = [pytest.mark.fast_compile]

CONFIG = TrainConfig(num_envs=2, num_steps=8, total_timesteps=64, hidden=(8,),
                     normalize_obs=True)
M = 8


@pytest.fixture(scope="module")
def population():
    keys = jax.random.split(jax.random.key(0), M)
    hp = HParams(lr=jnp.geomspace(1e-5, 1e-1, M, dtype=jnp.float32),
                 gamma=jnp.linspace(0.9, 1.0, M, dtype=jnp.float32),
                 **{f.name: jnp.full(M, getattr(HParams(), f.name), jnp.float32)
                    for f in dataclasses.fields(HParams) if f.name not in ("lr", "gamma")})
    trainer = make_trainer(CONFIG)
    state = jax.jit(jax.vmap(trainer.init))(keys, hp)
    state, _ = jax.jit(jax.vmap(lambda s, h: trainer.run(s, h, 2)))(state, hp)  # members differ
    return state, hp


def test_rank_puts_nan_last_and_breaks_ties_by_index():
    assert rank(jnp.array([1.0, jnp.nan, 3.0, 1.0, 3.0])).tolist() == [2, 4, 0, 3, 1]


def test_exploit_copies_the_donor_bitwise_and_leaves_the_rest(population):
    state, hp = population
    fitness = jnp.array([5.0, 1.0, 7.0, 3.0, jnp.nan, 8.0, 2.0, 6.0])  # top 2: 5, 2; bottom: 1, 4
    settings = PBTSettings(ranges={"lr": (1e-5, 1e-1), "gamma": (0.9, 1.0)}, quantile=0.25)
    new, new_hp, parent = jax.jit(exploit_explore, static_argnums=4)(
        jax.random.key(1), fitness, state, hp, settings)
    parent = np.asarray(parent)
    assert set(np.flatnonzero(parent != np.arange(M))) == {1, 4}
    assert set(parent[[1, 4]]) <= {5, 2}
    leaves = lambda tree: jax.tree.leaves(tree)
    for m in range(M):
        for field in COPIED:
            for a, b in zip(leaves(getattr(new, field)), leaves(getattr(state, field))):
                assert np.array_equal(np.asarray(a[m]), np.asarray(b[parent[m]])), (field, m)
        for field in ("env_state", "obs", "update"):  # its own environment stays
            for a, b in zip(leaves(getattr(new, field)), leaves(getattr(state, field))):
                assert np.array_equal(np.asarray(a[m]), np.asarray(b[m]))
        assert np.array_equal(jax.random.key_data(new.key[m]), jax.random.key_data(state.key[m]))
        if parent[m] == m:  # untouched hyperparameters
            assert float(new_hp.lr[m]) == float(hp.lr[m]) and float(new_hp.gamma[m]) == float(hp.gamma[m])
        else:  # the donor's, explored: × 0.8, × 1.25 or a draw from the range
            donor = float(hp.lr[parent[m]])
            lr = float(new_hp.lr[m])
            assert np.isclose(lr, donor * 0.8) or np.isclose(lr, donor * 1.25) or 1e-5 <= lr <= 1e-1
    assert np.array_equal(np.asarray(new_hp.ent_coef), np.asarray(hp.ent_coef))  # not searched


def test_explore_stays_in_the_valid_range():
    m = 512
    hp = HParams(**{f.name: jnp.full(m, getattr(HParams(), f.name), jnp.float32)
                    for f in dataclasses.fields(HParams)})
    hp = dataclasses.replace(hp, gamma=jnp.full(m, 0.999, jnp.float32),
                             gae_lambda=jnp.full(m, 0.99, jnp.float32))
    settings = PBTSettings(ranges={"gamma": (0.9, 1.0), "gae_lambda": (0.5, 1.0),
                                   "lr": (1e-4, 1e-2)}, quantile=0.5, resample=0.3)
    from jaxadv.tuning.pbt import _explore

    for field, _ in settings.ranges:
        for seed in range(5):
            value = getattr(hp, field)
            out = np.asarray(_explore(jax.random.key(seed), value, field, settings))
            lo, hi = {"gamma": (0, 1), "gae_lambda": (0, 1)}.get(field, (0, np.inf))
            assert np.all((out >= lo) & (out <= hi)) and np.all(np.isfinite(out))
            resampled = ~np.isclose(out, value * 0.8) & ~np.isclose(out, value * 1.25)
            assert 0.15 < resampled.mean() < 0.7  # some clipped at 1 count here too


def test_bad_settings_are_refused():
    for kwargs, words in [({"quantile": 0.0}, "quantile"), ({"quantile": 0.6}, "quantile"),
                          ({"resample": 1.5}, "resample")]:
        with pytest.raises(ValueError, match=words):
            PBTSettings(ranges={"lr": (1e-4, 1e-2)}, **kwargs)
    with pytest.raises(ValueError, match="not an HParams field"):
        PBTSettings(ranges={"num_envs": (1, 2)})
    with pytest.raises(ValueError, match="LOW < HIGH"):
        PBTSettings(ranges={"lr": (1e-2, 1e-4)})


TINY = TrainConfig(algo="a2c", num_envs=2, num_steps=8, total_timesteps=2 * 8 * 12, hidden=(8,))


@pytest.fixture(scope="module")
def pbt_run(default_emitters):
    """Four members of one seed each, lr explored by x0.8 / x1.25 only, every 3 updates
    (default emitters: two tests compare it with other programs bit for bit)."""
    from jaxadv.tuning.pbt import population_based_training

    settings = PBTSettings(ranges={"lr": (1e-4, 1e-1)}, quantile=0.5, resample=0.0)
    with default_emitters():
        return population_based_training(TINY, settings, 4, 1, 3, key=jax.random.key(2))


def test_the_in_program_loop_follows_its_own_exploit_and_explore(pbt_run):
    result = pbt_run
    intervals = TINY.num_updates // 3
    assert result.fitness.shape == result.parent.shape == (intervals, 4)
    assert result.parent[-1].tolist() == [0, 1, 2, 3]  # no exploit after the last interval
    lr = result.hparams["lr"]
    for i in range(intervals - 1):
        order = np.asarray(rank(jnp.asarray(result.fitness[i])))
        replaced = sorted(order[2:].tolist())
        assert sorted(np.flatnonzero(result.parent[i] != np.arange(4)).tolist()) == replaced
        for m in range(4):
            p = result.parent[i, m]
            if p == m:
                assert lr[i + 1, m] == lr[i, m]
            else:  # resample 0: exactly x0.8 or x1.25 of the donor's, in float32
                assert p in order[:2]
                assert lr[i + 1, m] in (np.float32(lr[i, p] * np.float32(0.8)),
                                        np.float32(lr[i, p] * np.float32(1.25)))
    assert len(result.lineage(0)) == intervals
    assert result.returns.shape == (4, TINY.num_updates)


@pytest.mark.product_emitters  # compares two programs bit for bit (conftest.py)
def test_a_run_stopped_between_calls_resumes_to_the_same_bits(pbt_run):
    """In calls of one interval, ``on_saved`` after the second of four; the run resumed from
    it (``resume=``) ends as the run in one call: the same fitness, parents, hyperparameters,
    returns and final state, bit for bit."""
    from jaxadv.tuning.pbt import population_based_training

    class Stop(Exception):
        pass

    def stop_after_two(progress):
        if progress.intervals == 2:
            raise Stop(progress)

    settings = PBTSettings(ranges={"lr": (1e-4, 1e-1)}, quantile=0.5, resample=0.0)
    run = lambda **kw: population_based_training(TINY, settings, 4, 1, 3, key=jax.random.key(2),
                                                 per_call=1, **kw)
    with pytest.raises(Stop) as stopped:
        run(on_saved=stop_after_two)
    progress = stopped.value.args[0]
    assert progress.fitness.shape == (2, 4) and progress.returns.shape == (2, 4, 3)
    got, want = run(resume=progress), pbt_run
    for name in ("fitness", "parent", "returns", "episodes"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_array_equal(got.hparams["lr"], want.hparams["lr"])
    for a, b in zip(jax.tree.leaves(got.state), jax.tree.leaves(want.state), strict=True):
        a, b = (jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                else x for x in (a, b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.product_emitters  # compares two programs bit for bit (conftest.py)
def test_a_replayed_schedule_is_the_lineages_and_an_uncopied_member_replays_bitwise(pbt_run):
    """:func:`jaxadv.tuning.replay.replay` of each member's schedule on its own seed: the
    values are the lineage's, interval by interval; a member that never copied trains the
    same bits alone as it did in the population; fresh seeds give other runs."""
    from jaxadv.tuning.replay import replay, schedule

    result = pbt_run
    lineages = [result.lineage(m) for m in range(4)]
    schedules = [schedule(result.hparams, path) for path in lineages]
    for path, sched in zip(lineages, schedules):
        assert sched["lr"].tolist() == [result.hparams["lr"][i, m] for i, m in enumerate(path)]
    own = jax.random.split(jax.random.key(2), 1)  # the population's seed (one per draw)
    returns, episodes = replay(TINY, schedules, 3, own)
    assert returns.shape == episodes.shape == (4, 1, TINY.num_updates)
    alone = [m for m, path in enumerate(lineages) if path == [m] * len(path)]
    copied = [m for m in range(4) if m not in alone]
    assert alone and copied  # quantile 0.5 of 4: two members copy at every interval
    for m in alone:
        np.testing.assert_array_equal(returns[m, 0], result.returns[m])
        np.testing.assert_array_equal(episodes[m, 0], result.episodes[m])
    fresh, _ = replay(TINY, schedules[:1], 3, jax.random.split(jax.random.key(9), 2))
    assert not np.array_equal(fresh[0, 0], fresh[0, 1])
    with pytest.raises(ValueError, match="intervals"):
        replay(TINY, [{"lr": np.ones(5)}], 3, own)


TINY_192 = TrainConfig(algo="a2c", num_envs=2, num_steps=8, total_timesteps=192, hidden=(8,))


def test_the_pbt_command_and_its_refusals(tmp_path, capsys):
    from _processes import signalled_searches

    from jaxadv import cli

    base = ["sweep", "--search", "pbt", "--algo", "a2c", "--num-envs", "2", "--num-steps", "8",
            "--hidden", "8", "--total-timesteps", "192", "--seeds", "1", "--population", "4"]
    out = tmp_path / "pbt"
    assert cli.main([*base, "--grid.lr", "1e-4", "1e-1", "--pbt.interval", "4",
                     "--reeval.top", "2", "--reeval.seeds", "2", "--out", str(out)]) == 0
    rows = (out / "pbt.csv").read_text().splitlines()
    assert rows[0] == "interval,update,member,parent,fitness,lr,lr_next" and len(rows) == 1 + 3 * 4
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["best"]["lineage"]) == 3 and summary["members"] == 4
    for name in ("pbt.png", "selection.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # the top two members, each its lineage's schedule replayed on two fresh seeds; a
    # schedule without a change of lr is a run of that lr alone: make_train on the fresh keys
    selection = summary["selection"]
    assert selection[0]["index"] == summary["best"]["member"]
    lr_in = {(int(r[0]), int(r[2])): float(r[5]) for r in (line.split(",") for line in rows[1:])}
    assert selection[0]["point"]["schedule"]["lr"] == pytest.approx(
        [lr_in[i, m] for i, m in enumerate(summary["best"]["lineage"])], rel=1e-6)
    # the best member's final policy (best.npz), which eval restores: for this seed its
    # lineage never copied, so it is a run of its lr alone on its own seed (to float32
    # rounding: the population is one program, which XLA fuses its own way)
    best = summary["best"]
    assert best["lineage"] == [best["member"]] * 3
    state, _ = jax.jit(jax.vmap(make_train(TINY_192), (0, None)))(
        jax.random.split(jax.random.key(0), 1), HParams(lr=np.float32(best["hparams"]["lr"])))
    for a, b in zip(load_policies(out / "best.npz"),
                    jax.tree.leaves((state.params, state.obs_stats)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)
    assert cli.main(["eval", str(out), "--point", "best", "--episodes", "2", "--quiet"]) == 0
    record = json.loads((out / "eval" / "best" / "eval.json").read_text())
    assert len(record["per_seed"]) == 1 and record["checkpoint"]["update"] == 12
    # stopped by a signal after its first call (one interval), then resumed: the same outputs
    again = tmp_path / "again"
    argv = [*base, "--grid.lr", "1e-4", "1e-1", "--pbt.interval", "4", "--reeval.top", "2",
            "--reeval.seeds", "2", "--out", str(again)]
    with signalled_searches():
        assert cli.main(argv) == 130
    assert "stopped after interval 1 of 3" in " ".join(capsys.readouterr().err.split())
    assert cli.main(argv) == 2  # no fresh start into it
    assert "unfinished sweep (1 interval(s) saved)" in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", str(again), "--pbt.quantile", "0.5"]) == 2
    assert "`pbt` = " in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", str(again)]) == 0
    assert "1 of 3 interval(s) saved" in " ".join(capsys.readouterr().err.split())
    assert (again / "pbt.csv").read_text().splitlines() == rows
    resumed = json.loads((again / "summary.json").read_text())
    for key in ("best", "fitness_mean", "selection", "env_steps"):
        assert resumed[key] == summary[key], key
    for a, b in zip(load_policies(again / "best.npz"), load_policies(out / "best.npz"), strict=True):
        np.testing.assert_array_equal(a, b)

    for row in selection:
        m, lrs = row["index"], row["point"]["schedule"]["lr"]
        assert row["point"]["member"] == m and len(lrs) == 3
        assert len(row["selected"]["per_seed"]) == 1 and len(row["fresh"]["per_seed"]) == 2
        assert row["optimism_gap"]["value"] == row["selected"]["iqm"] - row["fresh"]["iqm"]
        if len(set(lrs)) == 1:
            keys = jax.random.split(jax.random.fold_in(jax.random.key(0), 2), 2)
            _, metrics = jax.jit(jax.vmap(make_train(TINY_192), (0, None)))(
                keys, HParams(lr=np.float32(lrs[0])))
            alone = final_returns(np.asarray(metrics["episode_return"]), np.asarray(metrics["episodes"]))
            np.testing.assert_array_equal(row["fresh"]["per_seed"], alone)
    capsys.readouterr()
    for flags, words in [
        (["--grid.num-envs", "2", "4"], "num_envs cannot change during a PBT run"),
        (["--grid.lr", "1e-3"], "takes a range LOW HIGH"),
        (["--grid.lr", "1e-4", "1e-1", "--pbt.quantile", "0.6"], "`pbt.quantile` must be in (0, 0.5]"),
        (["--grid.lr", "1e-4", "1e-1", "--pbt.interval", "5"], "divides the run's 12"),
        (["--grid.lr", "1e-4", "1e-1", "--pbt.interval", "0"], "`pbt.interval` = 0"),
        (["--grid.lr", "1e-4", "1e-1", "--reeval.top", "5"], "only 4 point(s)"),
        (["--grid.lr", "1e-4", "1e-1", "--reeval.top", "1", "--reeval.seeds", "0"],
         "at least one fresh seed"),
    ]:
        assert cli.main([*base, *flags, "--out", str(tmp_path / "x")]) == 2
        assert words in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as patch:  # as under jax.distributed: 2 processes, 3 devices
        patch.setattr(jax, "process_count", lambda: 2)
        patch.setattr(jax, "device_count", lambda: 3)
        assert cli.main([*base, "--grid.lr", "1e-4", "1e-1", "--out", str(tmp_path / "x")]) == 2
        assert ("`population` × `seeds` = 4 members: under jax.distributed give a multiple of "
                "the 3 devices of the 2 processes") in " ".join(capsys.readouterr().err.split())
        halving = [a if a != "pbt" else "halving" for a in base]
        assert cli.main([*halving, "--grid.lr", "1e-4", "1e-1", "--out", str(tmp_path / "x")]) == 2
    assert "`search` = 'halving' runs in one process" in " ".join(capsys.readouterr().err.split())
