"""What ``TrainConfig.telemetry`` (``jaxadv train --telemetry``) costs in training steps/s.

For each ``--sizes`` entry (``num_envs``) it compiles the same PPO run twice, telemetry on
and off (CartPole-v1, 128 steps × ``num_envs``, 4 epochs × 4 minibatches, 64×64 tanh MLP,
the trainer's defaults otherwise: ``jax.jit(make_train(config))``, one seed, or with
``--seeds N`` that many in one ``jax.vmap``, compile excluded), for ``--total-timesteps``
steps or 2 updates, whichever is more. Then
``--rounds`` rounds time each program once, in a shuffled order per round, so that drifts in
the machine's speed fall on both alike. It prints a markdown table, a row per size: the
median steps/s of each; the median over the rounds of the ratio on ÷ off of steps/s, with
a 95% bootstrap interval of that median; the same for the process's CPU seconds per run
(off ÷ on: the work, less sensitive than wall time to other jobs on a shared machine); and
the cost, ``1 −`` the median ratio of steps/s. The two programs' parameters are the same
bits (``benchmarks/bitwise.py``), which it checks once.

Run: ``.venv/bin/python benchmarks/telemetry.py [--sizes 4 2048] [--seeds 1]
[--rounds 100]``. A benchmark, kept out of ``make test``.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time

import jax
import numpy as np

from jaxadv.engine.train import HParams, TrainConfig, make_train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--sizes", type=int, nargs="+", default=[4, 2048])
parser.add_argument("--total-timesteps", type=int, default=2**13)
parser.add_argument("--rounds", type=int, default=100, help="timed runs of each program")
parser.add_argument("--seeds", type=int, default=1, help="seeds per run, vmapped (1: no vmap)")


def compiled(num_envs: int, total_timesteps: int, telemetry: bool, seeds: int = 1):
    """The compiled run (one seed, or ``seeds`` vmapped) and its ``(key, hparams)``
    arguments, after one warm-up call; and the env steps of a call."""
    config = TrainConfig(num_envs=num_envs, num_steps=128, telemetry=telemetry,
                         total_timesteps=max(total_timesteps, 2 * num_envs * 128))
    train = make_train(config)
    if seeds > 1:
        args = (jax.random.split(jax.random.key(0), seeds), HParams())
        train = jax.vmap(train, (0, None))
    else:
        args = (jax.random.key(0), HParams())
    program = jax.jit(train).lower(*args).compile()
    jax.block_until_ready(program(*args))
    return program, args, seeds * config.num_updates * config.batch_size


def seconds(job) -> tuple[float, float]:
    """Wall seconds and process CPU seconds of one call of a compiled job."""
    program, args, _ = job
    start, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(program(*args))
    return time.perf_counter() - start, time.process_time() - cpu


def median_interval(values: list[float], reps: int = 2000) -> tuple[float, float, float]:
    """The median of ``values`` and a 95% bootstrap interval of it."""
    x = np.asarray(values)
    rng = np.random.default_rng(0)
    medians = np.median(x[rng.integers(0, len(x), (reps, len(x)))], axis=1)
    lo, hi = np.quantile(medians, [0.025, 0.975])
    return float(np.median(x)), float(lo), float(hi)


def main() -> int:
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()} ({platform.machine()}); "
          f"{args.rounds} interleaved rounds per size, {args.seeds} seed(s) per run")
    print("| num_envs | steps per run | off: steps/s | on: steps/s | steps/s on ÷ off (95% CI) "
          "| CPU s off ÷ on (95% CI) | cost |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rng = random.Random(0)
    for size in args.sizes:
        jobs = {on: compiled(size, args.total_timesteps, on, args.seeds) for on in (False, True)}
        same = jax.tree.map(np.array_equal, *(job[0](*job[1])[0].params for job in jobs.values()))
        if not all(jax.tree.leaves(same)):
            print(f"{size} envs: the parameters differ with telemetry on", file=sys.stderr)
            return 1
        times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            order = [False, True]
            rng.shuffle(order)
            for on in order:
                times[on].append(seconds(jobs[on]))
        steps = jobs[True][2]
        cells = [median_interval([off[i] / on[i] for on, off in zip(times[True], times[False],
                                                                     strict=True)])
                 for i in (0, 1)]  # wall, CPU
        rate = {on: steps / statistics.median(t[0] for t in ts) for on, ts in times.items()}
        text = " | ".join(f"{m:.3f} ({lo:.3f}–{hi:.3f})" for m, lo, hi in cells)
        print(f"| {size:,} | {steps:,} | {rate[False]:,.0f} | {rate[True]:,.0f} | {text} | "
              f"{100 * (1 - cells[0][0]):.1f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
