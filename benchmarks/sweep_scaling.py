"""Sweep scaling: K agents as one vmapped sweep vs the same K agents one after another.

Each agent is PPO on CartPole-v1 with 4 envs and 10⁵ env steps (its own seed and
learning rate: a 1-D lr grid × seeds, so the sweep is a real hyperparameter sweep).
For K ∈ {1, 8, 64, 256} it prints, in the same run: wall seconds of the vmapped sweep
(``run_sweep``, compile excluded) and of running the K agents sequentially with one
compiled single-agent ``train`` (compile excluded), agents·steps/s of each, the
speed-up, and the compiled sweep program's memory (XLA's estimate: arguments +
outputs + temporaries).

Like ``jaxadv sweep``, it gives JAX one CPU device per core first (``--devices N``: N;
``XLA_FLAGS`` or ``JAX_NUM_CPU_DEVICES`` set by the user win), so the sweep's runs are
sharded over every core; the sequential agents run one at a time, as a user would.

Run: ``.venv/bin/python benchmarks/sweep_scaling.py [--agents 1 8 64 256] [--steps 100000]
[--devices N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from jaxadv.engine.devices import use_host_devices

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--agents", type=int, nargs="+", default=[1, 8, 64, 256])
parser.add_argument("--steps", type=int, default=100_000)
parser.add_argument("--devices", type=int, default=None, help="CPU devices (default: one per core)")
ARGS = parser.parse_args()
use_host_devices(ARGS.devices)  # before anything below starts JAX's backends

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxadv.engine.sweep import run_sweep  # noqa: E402
from jaxadv.engine.train import HParams, TrainConfig, make_train  # noqa: E402


def main() -> None:
    args = ARGS
    config = TrainConfig(num_envs=4, total_timesteps=args.steps)
    steps = config.num_updates * config.batch_size
    single = jax.jit(make_train(config)).lower(jax.random.key(0), HParams(lr=2.5e-4)).compile()
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind} ({platform.machine()}, "
          f"{os.cpu_count()} cores, {jax.device_count()} device(s)); PPO CartPole-v1, 4 envs, "
          f"{steps:,} steps per agent")
    print()
    print("| agents | sweep s | sequential s | sweep agent·steps/s | sequential agent·steps/s "
          "| speed-up | sweep compile s | sweep memory MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in args.agents:
        seeds = min(k, 8)
        lrs = list(np.geomspace(1e-4, 1e-3, k // seeds))
        result = run_sweep(config, {"lr": lrs}, seeds)
        sweep_s = result.wall_seconds - result.compile_seconds
        keys = jax.random.split(jax.random.key(0), seeds)
        start = time.perf_counter()
        for lr in lrs:
            for s in range(seeds):
                jax.block_until_ready(single(keys[s], HParams(lr=float(lr))))
        seq_s = time.perf_counter() - start
        # memory of the sweep's program, compiled once more outside run_sweep
        keys_k = jax.random.split(jax.random.key(0), k)
        hp_k = jax.tree.map(lambda x, k=k: np.full(k, x, np.float32), HParams())
        mem = jax.jit(jax.vmap(make_train(config))).lower(keys_k, hp_k).compile().memory_analysis()
        mem_mb = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                  + mem.temp_size_in_bytes) / 2**20 if mem is not None else float("nan")
        print(f"| {k} | {sweep_s:.1f} | {seq_s:.1f} | {k * steps / sweep_s:,.0f} "
              f"| {k * steps / seq_s:,.0f} | {seq_s / sweep_s:.1f}× | "
              f"{result.compile_seconds:.1f} | {mem_mb:.0f} |", flush=True)


if __name__ == "__main__":
    main()
