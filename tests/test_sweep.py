"""run_sweep: every point equals its own run, bitwise, however the sweep is spread.

Bitwise equality holds on CPU (jaxlib 0.10.2) between a sweep point and
``jax.jit(jax.vmap(make_train(cfg), (0, None)))(keys, HParams(**point))``, between
chunked and fused sweeps, between 1 device and 4, and between one process and two;
the comparisons use ``np.testing.assert_array_equal`` (NaN == NaN: updates in which
no episode ended).

Compiles dominate the runtime (~5 s each here), so the sharded and multi-host runs
start in the background (``tests/_sweep_worker.py``) while this process compiles.
The bookkeeping (order, seeds, chunk remainders, groups) is also checked against a
stub ``train`` that compiles in milliseconds and echoes its inputs.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxadv
from jaxadv.engine import sweep as sweep_module
from jaxadv.engine.sweep import LogUniform, Uniform, expand_grid, run_sweep
from jaxadv.engine.train import HParams, TrainConfig, make_train

CONFIG = {"num_envs": 2, "num_steps": 16, "total_timesteps": 256, "hidden": [8]}
# 9 points × 2 seeds = 18 runs: not a multiple of 4 devices, nor of max_parallel = 8.
GRID = {"gae_lambda": [0.0, 0.5, 1.0], "lr": [3e-4, 2e-3, 1e-2]}
SEEDS = 2
SEED = 0
MAX_PARALLEL = 8
WORKER = pathlib.Path(__file__).with_name("_sweep_worker.py")
PACKAGE_PARENT = pathlib.Path(jaxadv.__file__).parent.parent  # workers import this jaxadv
TIMEOUT_S = 120  # the workers; a hung collective fails the test instead of stalling CI

# in-process sweeps, should a vmapped train hang; they compare programs (conftest.py)
pytestmark = [pytest.mark.timeout(240), pytest.mark.fast_compile]


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{**CONFIG, **overrides})


def _assert_same_results(got, want) -> None:
    """Points, per-point curves and summaries equal bitwise (NaN == NaN)."""
    assert got["points"] == want.points
    assert len(got["returns"]) == len(want.returns)
    for i, point in enumerate(want.points):
        np.testing.assert_array_equal(got["returns"][i], want.returns[i], err_msg=str(point))
        np.testing.assert_array_equal(got["episodes"][i], want.episodes[i], err_msg=str(point))
        np.testing.assert_array_equal(got["env_steps"][i], want.env_steps[i], err_msg=str(point))
    np.testing.assert_array_equal(got["final_return"], want.final_return)
    np.testing.assert_array_equal(got["auc"], want.auc)


RESULT_FIELDS = ("points", "returns", "episodes", "env_steps", "final_return", "auc")


def _as_dict(result) -> dict:
    return {k: getattr(result, k) for k in RESULT_FIELDS}


def _final_return_oracle(returns: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """Per seed, the mean return of the episodes that ended in the last ceil(U/10) updates:
    each update's mean return weighted by its episode count (a plain loop).

    E.g. U = 8: the last update only; U = 16: the last two, so returns (…, 10, 40) with
    episodes (…, 1, 2) give (10·1 + 40·2) / 3 = 30.
    """
    seeds, num_updates = returns.shape
    window = -(-num_updates // 10)  # ceil(U / 10), in integers
    out = np.full(seeds, np.nan)
    for s in range(seeds):
        total, count = 0.0, 0.0
        for t in range(num_updates - window, num_updates):
            if episodes[s, t] > 0:
                total += float(returns[s, t]) * float(episodes[s, t])
                count += float(episodes[s, t])
        if count > 0:
            out[s] = total / count
    return out


# --- background processes: 4 forced CPU devices; two processes × 2 devices over gloo ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _spawn(spec: dict, out: pathlib.Path, devices: int, *dist_args) -> subprocess.Popen:
    out.mkdir(parents=True)
    flags = os.environ.get("XLA_FLAGS", "")
    if "pbt" in spec or "cli" in spec:  # compared bit for bit in product_emitters tests (conftest.py)
        flags = flags.replace("--xla_cpu_use_fusion_emitters=false", "")
    env = dict(
        os.environ,
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]),
    )
    log = (out / "log.txt").open("w")
    cmd = [sys.executable, str(WORKER), json.dumps(spec), str(out), *map(str, dist_args)]
    proc = subprocess.Popen(cmd, env=env, cwd=out, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def _wait(procs: list[subprocess.Popen], outs: list[pathlib.Path]) -> list[dict]:
    """Wait for all workers; on a timeout or a failed worker, kill them all and fail."""
    deadline = time.monotonic() + TIMEOUT_S
    while any(proc.poll() is None for proc in procs):
        failed = any(proc.poll() not in (None, 0) for proc in procs)
        if failed or time.monotonic() > deadline:
            for proc in procs:
                proc.kill()
                proc.wait()
            logs = "\n".join(f"--- {o.name}\n" + (o / "log.txt").read_text()[-3000:] for o in outs)
            why = "a worker failed" if failed else f"still running after {TIMEOUT_S} s (hung?)"
            pytest.fail(f"sweep workers: {why}\n{logs}")
        time.sleep(0.1)
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, (out / "log.txt").read_text()[-3000:]
    return [_load(out) for out in outs]


def _load(out: pathlib.Path) -> dict:
    if (out / "status").exists():  # a command (run_cli), then a PBT search
        with np.load(out / "pbt.npz") as z:
            return {"status": (out / "status").read_text(), **z}
    meta = json.loads((out / "result.json").read_text())
    with np.load(out / "result.npz") as z:
        n = len(meta["points"])
        meta["returns"] = [z[f"returns_{i}"] for i in range(n)]
        meta["episodes"] = [z[f"episodes_{i}"] for i in range(n)]
        meta["env_steps"] = [z[f"env_steps_{i}"] for i in range(n)]
        meta["final_return"], meta["auc"] = z["final_return"], z["auc"]
    return meta


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Start the sharded and the multi-host sweeps; they compile while this process does."""
    root = tmp_path_factory.mktemp("sweep_workers")
    spec = {"config": CONFIG, "grid": GRID, "seeds": SEEDS, "key": SEED}
    # The multi-host run is also chunked: 18 runs in chunks of 8 over 4 global devices.
    multihost_spec = {**spec, "max_parallel": MAX_PARALLEL}
    port, pbt_port = _free_port(), _free_port()
    pbt = {**PBT_SPEC, "cli": [*PBT_FLAGS, "--out", str(root / "pbt_out")]}
    runs = {
        "sharded": ([_spawn(spec, root / "sharded", 4)], [root / "sharded"]),
        "multihost": (
            [_spawn(multihost_spec, root / f"process{i}", 2, i, 2, port) for i in range(2)],
            [root / f"process{i}" for i in range(2)],
        ),
        "pbt": (  # two processes of one device each, one block of PBT members on each:
            # `jaxadv sweep --search pbt` (then resumed), then the same search as a library call
            [_spawn(pbt, root / f"pbt{i}", 1, i, 2, pbt_port) for i in range(2)],
            [root / f"pbt{i}" for i in range(2)],
        ),
    }
    yield runs
    for procs, _ in runs.values():
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- the reference sweep, in this process ---


@pytest.fixture(scope="module")
def swept(workers):
    """The fused single-device sweep, and the configs `make_train` was called with."""
    configs = []

    def counting_make_train(config):
        configs.append(config)
        return make_train(config)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_module, "make_train", counting_make_train)
        result = run_sweep(_config(), GRID, SEEDS, key=jax.random.key(SEED))
    return result, configs


@pytest.fixture(scope="module")
def alone():
    """``alone(config, hparams)``: episode returns, episode counts and env steps of running
    one point alone."""
    compiled = {}
    keys = jax.random.split(jax.random.key(SEED), SEEDS)

    def run(config: TrainConfig, hp: HParams):
        if config not in compiled:
            compiled[config] = jax.jit(jax.vmap(make_train(config), (0, None)))
        _, metrics = compiled[config](keys, hp)
        return tuple(np.asarray(metrics[k]) for k in ("episode_return", "episodes", "env_steps"))

    return run


def test_each_point_equals_running_it_alone_bitwise(swept, alone):
    result, _ = swept
    assert result.points == expand_grid(GRID)
    assert result.seeds == SEEDS and (result.devices, result.processes) == (1, 1)
    num_updates = _config().num_updates
    for point, returns, episodes, env_steps in zip(result.points, result.returns,
                                                   result.episodes, result.env_steps, strict=True):
        want_returns, want_episodes, want_steps = alone(_config(), HParams(**point))
        assert returns.shape == episodes.shape == (SEEDS, num_updates)
        np.testing.assert_array_equal(returns, want_returns, err_msg=str(point))
        np.testing.assert_array_equal(episodes, want_episodes, err_msg=str(point))
        np.testing.assert_array_equal(env_steps, want_steps[0], err_msg=str(point))
    stacked = np.stack(result.returns)  # [P, S, U]
    assert np.isfinite(stacked).mean() > 0.5  # episodes ended: the comparison is not NaN vs NaN
    # the swept values reach the runs: same seeds, lr 3e-4 vs 1e-2, different curves
    curves = {tuple(p.values()): r for p, r in zip(result.points, result.returns, strict=True)}
    for lambda_ in GRID["gae_lambda"]:
        assert not np.array_equal(curves[lambda_, 3e-4], curves[lambda_, 1e-2], equal_nan=True)
    # an update with episodes has a return, one without has NaN
    counts = np.stack(result.episodes)
    np.testing.assert_array_equal(np.isfinite(stacked), counts > 0)
    want_final = np.stack([_final_return_oracle(r, e)
                           for r, e in zip(result.returns, result.episodes, strict=True)])
    np.testing.assert_allclose(result.final_return, want_final, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN run
        np.testing.assert_array_equal(result.auc, np.nanmean(stacked, -1))


def test_lambda_grid_sweeps_the_estimator_family_in_one_compile(swept):
    result, configs = swept
    assert configs == [_config()]  # one static group, one make_train, one compile
    lambdas = {p["gae_lambda"] for p in result.points}
    assert {0.0, 1.0} <= lambdas  # one-step TD … Monte Carlo return − baseline
    curves = {tuple(p.values()): r for p, r in zip(result.points, result.returns, strict=True)}
    for lr in GRID["lr"]:
        assert np.isfinite(curves[0.0, lr]).any() and np.isfinite(curves[1.0, lr]).any()
    # λ reaches the estimator: at the largest lr, TD(0) and Monte Carlo learn differently
    assert not np.array_equal(curves[0.0, 1e-2], curves[1.0, 1e-2], equal_nan=True)
    assert result.compile_seconds > 0 and result.wall_seconds >= result.compile_seconds


@pytest.fixture(scope="module")
def grouped_and_chunked(swept):
    """GRID × num_envs ∈ {2, 4}: two static groups of 18 runs, each in chunks of 8, 8, 2."""
    configs, progress = [], []

    def counting_make_train(config):
        configs.append(config)
        return make_train(config)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_module, "make_train", counting_make_train)
        result = run_sweep(_config(), {**GRID, "num_envs": [2, 4]}, SEEDS,
                           key=jax.random.key(SEED), max_parallel=MAX_PARALLEL,
                           on_chunk=lambda *a: progress.append(a))
    return result, configs, progress


def test_chunked_equals_fused(swept, grouped_and_chunked):
    fused, _ = swept
    result, _, progress = grouped_and_chunked
    # per group, 18 runs: 8 + 8 + a remainder of 2 (padded to 8)
    assert progress == [(8, 36), (16, 36), (18, 36), (26, 36), (34, 36), (36, 36)]
    chunked = {k: [] for k in RESULT_FIELDS}
    for i, point in enumerate(map(dict, result.points)):  # copies: the fixture is shared
        if point.pop("num_envs") == 2:  # the base config's group: the fused sweep's runs
            for k in chunked:
                chunked[k].append(point if k == "points" else getattr(result, k)[i])
    _assert_same_results(chunked, fused)


def test_sharded_over_4_devices_equals_one_device(swept, workers):
    (got,) = _wait(*workers["sharded"])
    assert (got["devices"], got["processes"]) == (4, 1)
    _assert_same_results(got, swept[0])  # 18 runs padded to 20 over 4 devices


def test_two_processes_equal_one(swept, workers):
    results = _wait(*workers["multihost"])
    for got in results:  # every process holds the gathered results
        assert (got["devices"], got["processes"]) == (4, 2)
        _assert_same_results(got, swept[0])


PBT_SPEC = {"config": {"algo": "a2c", "num_envs": 2, "num_steps": 8, "total_timesteps": 2 * 8 * 9,
                       "hidden": [8]}, "key": 2,
            "pbt": {"population": 4, "seeds": 1, "interval": 3, "groups": 2, "per_call": 2,
                    "ranges": {"lr": [1e-4, 1e-1]}, "quantile": 0.5}}
PBT_FLAGS = ["sweep", "--search", "pbt", "--algo", "a2c", "--num-envs", "2", "--num-steps", "8",
             "--total-timesteps", "144", "--hidden", "8", "--population", "4", "--seeds", "1",
             "--grid.lr", "1e-4", "1e-1", "--pbt.interval", "3", "--pbt.save-every", "1",
             "--pbt.quantile", "0.5", "--seed", "2", "--quiet"]


@pytest.fixture(scope="module")
def pbt_one(default_emitters):
    """The search of :data:`PBT_FLAGS` as the library runs it in this one process, both
    blocks in turn (in one compiled call), with XLA's default emitters (conftest.py)."""
    from jaxadv.cli import app
    from jaxadv.tuning.pbt import population_based_training

    args = app._parse([*PBT_FLAGS, "--out", "unused"])
    with default_emitters():
        one = population_based_training(args.config, args.pbt_settings(), 4, 1, 3,
                                        hparams=args.hparams, key=jax.random.key(2), groups=2)
    assert (one.parent[:-1] != np.arange(4)).any()  # members copied across the blocks
    return one


@pytest.mark.product_emitters  # two different programs, bit for bit (conftest.py)
def test_pbt_over_two_processes_equals_one_process(workers, pbt_one):
    """Population-based training under ``jax.distributed``: 4 members in 2 blocks, one block
    on each of two processes (gloo collectives rank the members and copy the donors across
    them), in two compiled calls (of 2 intervals, then 1). Each process gets the whole
    result, and it is the same fitness, parents, learning rates, returns and final states,
    bit for bit, as one process training both blocks in turn."""
    from _sweep_worker import pbt_arrays

    one = pbt_arrays(pbt_one)
    for got in _wait(*workers["pbt"]):
        assert int(got.pop("processes")) == 2 and got.pop("status") == "0 0"
        assert got.keys() == one.keys()
        for name, want in one.items():
            np.testing.assert_array_equal(got[name], want, err_msg=name)


@pytest.mark.product_emitters  # two different programs, bit for bit (conftest.py)
def test_the_pbt_command_over_two_processes_resumes_and_equals_one_process(
        workers, pbt_one, tmp_path):
    """``jaxadv sweep --search pbt`` on two processes of one device each (one block of
    members on each, a checkpoint after every interval), then its last checkpoint and
    outputs removed and ``--resume`` on both: the resumed ``pbt.csv``, ``best.npz`` and
    ``summary.json`` are the finished run's, and its ``pbt.csv`` (fitness, parents, lr before
    and after) is that of the library's search in this one process with the same 2 blocks."""
    from jaxadv.cli.search import write_pbt_csv

    assert [r["status"] for r in _wait(*workers["pbt"])] == ["0 0", "0 0"]
    out, full = workers["pbt"][1][0].parent / "pbt_out", workers["pbt"][1][0] / "full"
    for name in ("pbt.csv", "best.npz"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    summary, resumed = (json.loads((d / "summary.json").read_text()) for d in (full, out))
    assert summary["best"] == resumed["best"] and summary["seed_groups"] == 2
    write_pbt_csv(tmp_path / "one.csv", pbt_one)
    assert (out / "pbt.csv").read_text() == (tmp_path / "one.csv").read_text()


def test_static_fields_compile_per_group_and_equal_running_alone(grouped_and_chunked, alone):
    result, configs, _ = grouped_and_chunked
    assert configs == [_config(num_envs=2), _config(num_envs=4)]  # one compile per group
    assert [p["num_envs"] for p in result.points[:4]] == [2, 4, 2, 4]  # groups interleave
    for point, returns, episodes, env_steps in zip(result.points, result.returns,
                                                   result.episodes, result.env_steps, strict=True):
        num_envs = point["num_envs"]
        assert returns.shape == episodes.shape == (SEEDS, 256 // (num_envs * 16))
        hp = HParams(**{k: v for k, v in point.items() if k != "num_envs"})
        want_returns, want_episodes, want_steps = alone(_config(num_envs=num_envs), hp)
        np.testing.assert_array_equal(returns, want_returns, err_msg=str(point))
        np.testing.assert_array_equal(episodes, want_episodes, err_msg=str(point))
        np.testing.assert_array_equal(env_steps, want_steps[0], err_msg=str(point))
    np.testing.assert_array_equal(result.env_steps[1], [64.0, 128.0, 192.0, 256.0])


# --- random search ---


def test_random_search_draws_within_bounds_deterministically():
    grid = {"lr": LogUniform(1e-4, 1e-2), "gamma": Uniform(0.9, 0.999)}
    points = expand_grid(grid, num_samples=64, key=jax.random.key(3))
    assert len(points) == 64
    lr = np.array([p["lr"] for p in points])
    gamma = np.array([p["gamma"] for p in points])
    # float32 draws: allow their rounding at the bounds
    assert np.all((lr >= 1e-4 * (1 - 1e-6)) & (lr <= 1e-2 * (1 + 1e-6)))
    assert np.all((gamma >= 0.9 - 1e-6) & (gamma <= 0.999 + 1e-6))
    assert (lr < 1e-3).any() and (lr > 1e-3).any()  # log-uniform: both decades
    assert len(set(lr)) == 64 and len(set(gamma)) == 64
    assert expand_grid(grid, num_samples=64, key=jax.random.key(3)) == points
    assert expand_grid(grid, num_samples=64, key=jax.random.key(4)) != points
    # crossed with lists: every list value gets the same draws
    crossed = expand_grid({"gae_lambda": [0.0, 1.0], **grid}, num_samples=3,
                          key=jax.random.key(3))
    assert [p["gae_lambda"] for p in crossed] == [0.0] * 3 + [1.0] * 3
    assert [p["lr"] for p in crossed[:3]] == [p["lr"] for p in crossed[3:]]


# --- bookkeeping, checked with a stub train that echoes its inputs ---


class _StubState(NamedTuple):
    """The part of a run's final state that a sweep keeps."""

    params: jax.Array
    obs_stats: None = None


def _stub_make_train(config: TrainConfig):
    """``episode_return`` = [lr, λ, num_envs, uniform(key)…]: every input is visible;
    ``episodes`` ∈ {0, 1, 2} at random, so the final return's weights matter."""

    def train(key, hp):
        u = config.num_updates
        head = jnp.stack([hp.lr, hp.gae_lambda, jnp.float32(config.num_envs)])
        returns = jnp.concatenate([head, jax.random.uniform(key, (u,))])
        episodes = jax.random.randint(jax.random.fold_in(key, 1), (u + 3,), 0, 3)
        steps = jnp.arange(1, u + 1, dtype=jnp.float32) * config.batch_size
        metrics = {"episode_return": returns, "episodes": episodes.astype(jnp.float32),
                   "env_steps": steps}
        return _StubState(jnp.zeros(2)), metrics

    return train


@pytest.mark.parametrize("max_parallel", [None, 1, 5, 11])
def test_bookkeeping_with_stub_train(max_parallel, monkeypatch):
    monkeypatch.setattr(sweep_module, "make_train", _stub_make_train)
    key, seeds = jax.random.key(5), 3
    grid = {"lr": [1e-3, 1e-2], "num_envs": [2, 4], "gae_lambda": LogUniform(0.5, 1.0)}
    progress = []
    result = run_sweep(_config(), grid, seeds, key=key, num_samples=2,
                       max_parallel=max_parallel, on_chunk=lambda *a: progress.append(a))
    # random-search draws use fold_in(key, 1); the groups (num_envs) interleave in the points
    assert result.points == expand_grid(grid, num_samples=2, key=jax.random.fold_in(key, 1))
    assert [p["num_envs"] for p in result.points] == [2, 2, 4, 4, 2, 2, 4, 4]
    total = len(result.points) * seeds
    assert progress[-1] == (total, total)
    per_call = np.diff([0] + [done for done, _ in progress])
    assert np.all(per_call > 0) and np.all(per_call <= (max_parallel or total))
    seed_keys = jax.random.split(key, seeds)  # seed s: the same key for every point
    for p, point in enumerate(result.points):
        config = _config(num_envs=point["num_envs"])
        hp = HParams(lr=np.float32(point["lr"]), gae_lambda=np.float32(point["gae_lambda"]))
        runs = [_stub_make_train(config)(k, hp)[1] for k in seed_keys]
        want_returns = np.stack([np.asarray(m["episode_return"]) for m in runs])
        want_episodes = np.stack([np.asarray(m["episodes"]) for m in runs])
        np.testing.assert_array_equal(result.returns[p], want_returns, err_msg=str(point))
        np.testing.assert_array_equal(result.episodes[p], want_episodes, err_msg=str(point))
        np.testing.assert_array_equal(
            result.env_steps[p], np.arange(1, config.num_updates + 1) * config.batch_size
        )
        # U = 11 (num_envs 2) and 7 (num_envs 4): the last 2 updates, and the last 1
        np.testing.assert_allclose(result.final_return[p],
                                   _final_return_oracle(want_returns, want_episodes), rtol=1e-6)


# --- bad grids: refused with a ValueError naming the field, before anything compiles ---


BAD = [
    ("unknown field", {"grid": {"lr": [1e-3], "lrr": [1e-3]}}, "lrr"),
    ("empty grid", {"grid": {}}, "grid"),
    ("empty list", {"grid": {"lr": []}}, "lr"),
    ("lambda above 1", {"grid": {"gae_lambda": [0.5, 1.5]}}, "gae_lambda"),
    ("lambda below 0", {"grid": {"gae_lambda": [-0.1, 0.5]}}, "gae_lambda"),
    ("lr zero", {"grid": {"lr": [1e-3, 0.0]}}, "lr"),
    ("lr negative", {"grid": {"lr": [-1e-3]}}, "lr"),
    ("gamma nan", {"grid": {"gamma": [float("nan")]}}, "gamma"),
    ("distribution on a static field", {"grid": {"num_envs": Uniform(2, 8)}, "num_samples": 2},
     "num_envs"),
    ("distribution without num_samples", {"grid": {"lr": LogUniform(1e-4, 1e-2)}},
     "num_samples"),
    ("num_samples zero", {"grid": {"lr": LogUniform(1e-4, 1e-2)}, "num_samples": 0},
     "num_samples"),
    ("LogUniform low <= 0", {"grid": {"lr": LogUniform(0.0, 1e-2)}, "num_samples": 2}, "lr"),
    ("LogUniform low 0 on lambda", {"grid": {"gae_lambda": LogUniform(0.0, 1.0)},
                                    "num_samples": 2}, "gae_lambda"),
    ("Uniform bound outside the domain", {"grid": {"gae_lambda": Uniform(0.5, 1.5)},
                                          "num_samples": 2}, "gae_lambda"),
    ("seeds zero", {"seeds": 0}, "seeds"),
    ("seeds not an int", {"seeds": 2.0}, "seeds"),
    ("max_parallel zero", {"max_parallel": 0}, "max_parallel"),
    ("num_minibatches not dividing", {"grid": {"num_minibatches": [4, 3]}}, "num_minibatches"),
    ("num_envs zero", {"grid": {"num_envs": [2, 0]}}, "num_envs"),
    ("unknown env", {"grid": {"env": ["CartPole-v1", "CartPole-v9"]}}, "env"),
    ("bad base hparams", {"hparams": HParams(gamma=1.5)}, "gamma"),
]


@pytest.mark.parametrize(("kwargs", "field"), [pytest.param(k, f, id=i) for i, k, f in BAD])
def test_bad_sweeps_refused_before_compiling(kwargs, field, no_compile):
    kwargs = {"grid": {"lr": [1e-3]}, "seeds": 2, **kwargs}
    grid, seeds = kwargs.pop("grid"), kwargs.pop("seeds")
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        run_sweep(_config(), grid, seeds, **kwargs)
    assert time.perf_counter() - start < 1.0
    assert field in str(info.value), str(info.value)


# --- edge cases of grids ---


@pytest.mark.parametrize(
    ("grid", "num_samples", "field"),
    [
        ({"gamma": Uniform(0.999, 0.9)}, 2, "gamma"),  # low > high: draws all equal `low`
        ({"lr": [[1e-3, 1e-2]]}, None, "lr"),  # a non-scalar value passes validation
        ({"hidden": [8, 16]}, None, "hidden"),  # TypeError: 'int' object is not iterable
        ({"lr": LogUniform(1e-4, 1e-2)}, 2.5, "num_samples"),  # TypeError from jax.random
    ],
    ids=["Uniform low > high", "non-scalar value", "hidden as ints", "num_samples float"],
)
def test_gap_more_bad_grids_refused(grid, num_samples, field, no_compile):
    """These should be ValueErrors naming the field, raised before compiling."""
    with pytest.raises(ValueError, match=field):
        run_sweep(_config(), grid, 1, num_samples=num_samples)


def test_gap_numpy_array_of_values_is_a_list(monkeypatch):
    """``{"lr": np.logspace(-4, -2, 3)}`` is one point whose lr is an array (crashes in train)."""
    monkeypatch.setattr(sweep_module, "make_train", _stub_make_train)
    result = run_sweep(_config(), {"lr": np.array([1e-3, 1e-2])}, 1)
    assert result.points == [{"lr": 1e-3}, {"lr": 1e-2}]


def test_gap_sweeping_algo_uses_that_algos_defaults(monkeypatch):
    """``dataclasses.replace(config, algo="reinforce")`` keeps the base algo's resolved
    estimator ('gae') and 4 epochs × 4 minibatches instead of reinforce's mc, 1 × 1."""
    configs = []
    monkeypatch.setattr(sweep_module, "make_train",
                        lambda c: configs.append(c) or _stub_make_train(c))
    run_sweep(_config(), {"algo": ["ppo", "reinforce"]}, 1)
    assert configs[1] == _config(algo="reinforce")  # estimator mc, 1 epoch × 1 minibatch
