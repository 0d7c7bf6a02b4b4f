"""Seeds in equal groups: the same bits on any number of devices, and every core used by
default from the command line."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxadv.engine.devices import seed_groups
from jaxadv.engine.driver import _seed_axis
from jaxadv.engine.train import HParams, TrainConfig, make_trainer

# compares programs and checks mechanics bit for bit (conftest.py)
pytestmark = [pytest.mark.fast_compile, pytest.mark.product_emitters]

SMALL = TrainConfig(num_envs=2, num_steps=16, total_timesteps=2 * 16 * 3, hidden=(8,))


@pytest.mark.parametrize("seeds, devices, groups", [(16, 2, 2), (6, 4, 3), (7, 2, 1), (1, 8, 1),
                                                    (12, 5, 4), (4, 1, 1)])
def test_seed_groups_is_the_largest_divisor_up_to_the_devices(seeds, devices, groups):
    assert seed_groups(seeds, devices) == groups
    assert seeds % groups == 0 and groups <= max(devices, 1)


def test_grouped_seed_axis_is_each_group_vmapped_on_its_own():
    """Two groups on one device (``lax.map`` over blocks) equal ``vmap`` over each half."""
    train = make_trainer(SMALL).train
    keys = jax.random.split(jax.random.key(0), 4)
    grouped = jax.jit(_seed_axis(train, 4, (0, None), groups=2))(keys, HParams())
    vmapped = jax.jit(jax.vmap(train, (0, None)))  # one program for both halves
    halves = [vmapped(keys[i:i + 2], HParams()) for i in (0, 2)]
    want = jax.tree.map(lambda a, b: np.concatenate([a, b]), *[
        jax.tree.map(np.asarray, (h[0].params, h[1])) for h in halves])
    got = jax.tree.map(np.asarray, (grouped[0].params, grouped[1]))
    jax.tree.map(np.testing.assert_array_equal, got, want)


_FLAGS = ["train", "--seeds", "4", "--num-envs", "2", "--num-steps", "16", "--total-timesteps",
          "160", "--hidden", "8", "--quiet"]


def _rows(out):
    rows = [{k: v for k, v in row.items() if k != "wall_seconds"}
            for row in csv.DictReader((out / "metrics.csv").open())]
    return rows, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """One process with two CPU devices (``JAX_NUM_CPU_DEVICES=2``) for the two tests below:
    the variance reports' checks (:data:`_SPREAD_BATCHES`), then ``jaxadv train`` twice
    (``cli.main``, as the ``jaxadv`` command runs it), spread and ``--devices 1``. The suite's
    compile cache is the CLI's too (conftest.py). Returns the output folder and the process."""
    out = tmp_path_factory.mktemp("devices")
    script = _SPREAD_BATCHES + _TRAIN_TWICE + _PBT_TWICE
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2"}
    done = subprocess.run([sys.executable, "-c", script, str(out), json.dumps(_FLAGS)],
                          capture_output=True, text=True, timeout=600, env=env)
    return out, done


_TRAIN_TWICE = """
import json, pathlib, sys, traceback
from jaxadv import cli

out, flags = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
try:
    codes = [cli.main([*flags, "--out", str(out / "two")]),
             cli.main([*flags, "--out", str(out / "one"), "--devices", "1"])]
except BaseException:
    traceback.print_exc()
    codes = ["raised"]
print("train", *codes)
"""


_PBT_TWICE = """
from jaxadv.tuning.pbt import PBTSettings, population_based_training

def pbt(devices):
    config = TrainConfig(algo="a2c", num_envs=2, num_steps=8, total_timesteps=2 * 8 * 9,
                         hidden=(8,))
    settings = PBTSettings(ranges={"lr": (1e-4, 1e-1)}, quantile=0.5)
    r = population_based_training(config, settings, 4, 1, 3, key=jax.random.key(2), per_call=2,
                                  groups=2, devices=devices)
    state = [jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
             for x in jax.tree.leaves(r.state)]
    return [r.fitness, r.parent, r.hparams["lr"], r.returns, r.episodes, *map(np.asarray, state)]

try:
    two, one = pbt(2), pbt(1)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(two, one, strict=True))
    assert (two[1] != np.arange(4)).any()  # members copied: the ranking and copies ran
    print("pbt same")
except Exception:
    traceback.print_exc()
    print("pbt failed")
"""


def test_pbt_on_two_devices_is_the_same_bits_as_on_one(two_devices):
    """Population-based training with its 4 members in 2 groups, spread over two CPU devices
    (the ranking and the exploit's copies across them) and run in turn on one: the same
    fitness, parents, learning rates, returns and final states, bit for bit."""
    _, done = two_devices
    assert "pbt same" in done.stdout.split("\n"), done.stdout + done.stderr[-3000:]


def test_two_devices_give_the_same_metrics_as_one(two_devices):
    """``jaxadv train --seeds 4`` spreads two groups of seeds over two CPU devices; with
    ``--devices 1`` the same groups run in turn on one: metrics.csv is identical."""
    out, done = two_devices
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train 0 0" in done.stdout.split("\n"), done.stdout + done.stderr[-3000:]
    spread, spread_summary = _rows(out / "two")
    single, single_summary = _rows(out / "one")
    assert (spread_summary["devices"], spread_summary["seed_groups"]) == (2, 2)
    assert (single_summary["devices"], single_summary["seed_groups"]) == (1, 2)
    assert len(spread) == 4 * 5 and spread == single
    config = json.loads((out / "two" / "config.json").read_text())
    assert config["run"]["seed_groups"] == 2  # kept for a resumed run


_SPREAD_BATCHES = """
import traceback
import jax, jax.numpy as jnp, numpy as np
from jaxadv.science import exact
from jaxadv.science import sequence_exact
from jaxadv.science import variance
from jaxadv.envs import RunningMeanStd
from jaxadv.envs.sequence import SequenceTask
from jaxadv.engine.train import HParams, TrainConfig, make_trainer
from jaxadv.nets.transformer import make_transformer

def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

assert jax.local_device_count() == 2
mdp = exact.random_mdp(jax.random.key(3), 5, 3)
logits = jax.random.normal(jax.random.key(4), (5, 3))
mdp_rows = lambda d: variance.mdp_report(jax.random.key(0), mdp, logits, estimators=["gae:0.9"],
    batch_sizes=[4], critics=["exact"], num_batches=8, devices=d)[0]
task = SequenceTask("reverse", num_digits=2, prompt_length=2, min_prompt_length=1)
net = make_transformer(task.vocab_size, task.obs_length, task.num_actions, pad=task.tokens.pad,
                       layers=1, width=8, heads=2, value_head=False)
params = jax.jit(net.init)(jax.random.key(5), jnp.zeros(task.obs_length))
prompts = sequence_exact.make_prompts(jax.random.key(6), task, 4)
seq_rows = lambda d: sequence_exact.sequence_report(jax.random.key(0), params, net.apply_all, task,
    prompts, estimators=("grpo",), reductions=("constant",), shapes=((2, 4),),
    num_batches=8, devices=d)[0]
trainer = make_trainer(TrainConfig(normalize_obs=True, hidden=(8,), num_envs=2, num_steps=8,
                                   total_timesteps=16))
state = jax.jit(trainer.init)(jax.random.key(7), HParams())
stats = RunningMeanStd(jnp.full(4, 0.1), jnp.full(4, 0.5), jnp.array(3.0))
env_rows = lambda d: variance.train_state_report(jax.random.key(0), trainer, state.params, gamma=0.99,
    obs_stats=stats, estimators=["td"], batch_sizes=[2], num_batches=4, reference_factor=2,
    horizon=20, devices=d)[0]
try:
    for name, rows in (("mdp", mdp_rows), ("sequence", seq_rows), ("network", env_rows)):
        one, two = rows(1), rows(2)
        assert one == two, name
        print(name, "same")
except Exception:
    traceback.print_exc()
    print("spread failed")
"""


def test_estimate_batches_spread_over_two_devices_give_the_same_bits(two_devices):
    """``jaxadv.engine.devices.map_over_devices``: the variance reports' independent batches on two
    CPU devices equal those run in turn on one, row for row (tabular MDP, exact sequence
    gradients, a network on CartPole with normalised observations)."""
    _, done = two_devices
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:6] == ["mdp", "same", "sequence", "same", "network", "same"], (
        done.stderr[-3000:])
