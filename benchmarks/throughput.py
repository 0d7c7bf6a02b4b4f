"""Training throughput of the fused trainer against a reference PPO and the raw env-stepping
ceiling, all measured in the same run.

Configuration (the one the most-copied fused JAX PPO is measured at): CartPole-v1,
128 steps × ``num_envs``, 4 epochs × 4 minibatches, 64×64 tanh MLP, 5×10⁵ steps
(or 4 updates, whichever is more). For each ``num_envs`` it prints training env
steps/s (compile excluded); the same for ``reference_ppo.py``, a PPO written the way
that implementation is (truncation as termination), and the ratio; the raw ceiling —
gymnax stepping with a policy forward pass and action sampling at the same
``num_envs``, nothing stored or learned — and the ratio to it; compile seconds and
the compiled program's memory (arguments + outputs + temporaries, from XLA's memory
analysis). The last rows train 4 and 16 seeds vmapped at 4 envs each.

The ``cli`` column runs the same configuration as a user does — ``jaxadv train --quiet`` in
a subprocess, with its defaults: chunks of updates per compiled call, metrics.csv,
checkpoints, into a temporary directory — and reports the ``steps_per_second`` of its
``summary.json`` (compile excluded), interleaved with the other programs. Its compile seconds are given for the
first run (an empty persistent compilation cache) and for the runs after it (cached).

Run: ``.venv/bin/python benchmarks/throughput.py [--sizes 4 64 ...] [--single-thread]
[--no-reference]``.
``--single-thread`` sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` before JAX
starts: at these sizes XLA's intra-op thread pool costs more than it brings.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("--sizes", type=int, nargs="+", default=[4, 64, 512, 2048, 8192])
parser.add_argument("--total-timesteps", type=int, default=500_000)
parser.add_argument("--seeds", type=int, nargs="*", default=[4, 16],
                    help="seeds of the vmapped rows at 4 envs (none: skip)")
parser.add_argument("--single-thread", action="store_true")
parser.add_argument("--repeats", type=int, default=5, help="timed runs of each program")
parser.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the reference PPO (reference_ppo.py) column")
parser.add_argument("--no-cli", dest="cli", action="store_false",
                    help="skip the jaxadv train driver (cli) column")
ARGS = parser.parse_args()
if ARGS.single_thread:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import gymnax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxadv.networks import make_network  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_ppo import make_reference_train  # noqa: E402

from jaxadv.train import HParams, TrainConfig, make_train  # noqa: E402


def _memory_mb(compiled) -> float:
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return total / 2**20


def _compiled(fn, *args):
    """(compile seconds, compiled, args) for a jitted ``fn``, after one warm-up call."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up run: allocator, caches
    return compile_s, compiled, args


def _seconds(job) -> float:
    _, compiled, args = job
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - start


def ceiling(num_envs: int, num_steps: int):
    """Raw gymnax stepping with a policy forward pass and sampling, compiled."""
    env, env_params = gymnax.make("CartPole-v1")
    net = make_network(env.num_actions)
    params = net.init(jax.random.key(0), jnp.zeros(env.observation_space(env_params).shape))

    def run(key):
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(key, num_envs), env_params
        )

        def step(carry, key):
            obs, state = carry
            key_act, key_env = jax.random.split(key)
            logits, _ = net.apply(params, obs)
            action = jax.random.categorical(key_act, logits)
            obs, state, reward, *_ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(key_env, num_envs), state, action, env_params
            )
            return (obs, state), reward

        return jax.lax.scan(step, (obs, state), jax.random.split(key, num_steps))[1].sum()

    return _compiled(run, jax.random.key(1))


def _seed_keys(seeds: int):
    return jax.random.split(jax.random.key(0), seeds) if seeds else jax.random.key(0)


def _config(num_envs: int) -> TrainConfig:
    return TrainConfig(num_envs=num_envs, total_timesteps=max(ARGS.total_timesteps, 4 * num_envs * 128))


def train_job(num_envs: int, seeds: int = 0):
    """jaxadv's ``train`` at ``num_envs`` (vmapped over ``seeds`` if > 0), compiled."""
    train = make_train(_config(num_envs))
    return _compiled(jax.vmap(train, (0, None)) if seeds else train, _seed_keys(seeds), HParams())


def reference_job(num_envs: int, seeds: int = 0):
    """``reference_ppo.py`` (the most-copied PPO's structure) at ``num_envs``, compiled."""
    train = make_reference_train(num_envs, max(ARGS.total_timesteps, 4 * num_envs * 128))
    return _compiled(jax.vmap(train) if seeds else train, _seed_keys(seeds))


def cli_run(num_envs: int, seeds: int, out: pathlib.Path, cache: pathlib.Path) -> dict:
    """One ``jaxadv train --quiet`` run at ``num_envs`` (defaults otherwise): its summary."""
    config = _config(num_envs)
    argv = [sys.executable, "-m", "jaxadv.cli", "train", "--quiet", "--out", str(out),
            "--num-envs", str(num_envs), "--total-timesteps", str(config.total_timesteps),
            "--seeds", str(max(seeds, 1))]
    env = {**os.environ, "JAXADV_CACHE_DIR": str(cache)}
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="jaxadv-throughput-"))
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].device_kind} ({platform.machine()}, "
        f"{os.cpu_count()} cores); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"median of {ARGS.repeats} interleaved runs"
    )
    print()
    print("| num_envs | seeds | train steps/s | cli steps/s | cli ÷ train | reference steps/s "
          "| train ÷ ref | cli ÷ ref | ceiling steps/s | train ÷ ceiling | compile s: train "
          "| cli (first, cached) | reference | memory MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(n, 0) for n in ARGS.sizes] + [(4, s) for s in ARGS.seeds]
    nan = float("nan")
    for num_envs, seeds in rows:
        total = max(ARGS.total_timesteps, 4 * num_envs * 128)
        steps = total // (num_envs * 128) * num_envs * 128 * max(seeds, 1)
        jobs = {"train": train_job(num_envs, seeds),
                # the ceiling of the vmapped row: all seeds' envs stepped together
                "ceiling": ceiling(num_envs * max(seeds, 1), 128)}
        if ARGS.reference:
            jobs["reference"] = reference_job(num_envs, seeds)
        times = {name: [] for name in jobs}
        cli = []
        for i in range(ARGS.repeats):  # interleaved, so a slow spell of the machine hits all
            for name, job in jobs.items():
                times[name].append(_seconds(job))
            if ARGS.cli:
                cli.append(cli_run(num_envs, seeds, scratch / f"run-{num_envs}-{seeds}-{i}",
                                   scratch / "xla"))  # empty at first: a real first compile
        med = {name: float(np.median(t)) for name, t in times.items()}
        speed = steps / med["train"]
        top = num_envs * max(seeds, 1) * 128 / med["ceiling"]
        ref = steps / med["reference"] if ARGS.reference else nan
        cli_speed = float(np.median([c["steps_per_second"] for c in cli])) if cli else nan
        first = cli[0]["compile_seconds"] if cli else nan
        cached = float(np.median([c["compile_seconds"] for c in cli[1:]])) if len(cli) > 1 else nan
        compile_s, compiled, _ = jobs["train"]
        ref_compile = jobs["reference"][0] if ARGS.reference else nan
        print(
            f"| {num_envs} | {max(seeds, 1)} | {speed:,.0f} | {cli_speed:,.0f} | {cli_speed / speed:.2f} "
            f"| {ref:,.0f} | {speed / ref:.2f} | {cli_speed / ref:.2f} | {top:,.0f} | {speed / top:.2f} "
            f"| {compile_s:.1f} | {first:.1f}, {cached:.1f} | {ref_compile:.1f} "
            f"| {_memory_mb(compiled):.0f} |",
            flush=True,
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
