"""PPO on a Brax locomotion task for a fixed wall-clock budget: the return it reaches.

``.venv/bin/python benchmarks/brax_locomotion.py [--env brax:ant] [--minutes 10]`` trains
PPO (jaxadv's engine, the settings below, close to Brax's own PPO settings for its
locomotion tasks: γ 0.97, observation normalisation, reward scaling, 4 epochs, lr 3e-4) in
compiled chunks of updates until ``--minutes`` of training have passed, and prints a
markdown row: env steps done, steps/s, compile seconds, and the mean episodic return over
the last 10% of updates (the episodes that ended in them) against the first 10%. One
seed; it needs the ``brax`` extra. It is a benchmark, kept out of ``make test``.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxadv.train import HParams, TrainConfig, make_trainer

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--env", default="brax:ant")
parser.add_argument("--minutes", type=float, default=10.0)
parser.add_argument("--num-envs", type=int, default=256)
parser.add_argument("--num-steps", type=int, default=32)
parser.add_argument("--chunk", type=int, default=20, help="updates per compiled call")
ARGS = parser.parse_args()


def main() -> None:
    config = TrainConfig(env=ARGS.env, num_envs=ARGS.num_envs, num_steps=ARGS.num_steps,
                         total_timesteps=10**9, num_minibatches=8, normalize_obs=True,
                         scale_rewards=True, hidden=(128, 128), activation="tanh")
    hp = HParams(lr=3e-4, gamma=0.97, ent_coef=1e-3)
    trainer = make_trainer(config.replace(anneal_lr=False))
    start = time.perf_counter()
    state = jax.jit(trainer.init)(jax.random.key(0), hp)
    run = jax.jit(trainer.run, static_argnums=2).lower(state, hp, ARGS.chunk).compile()
    compile_s = time.perf_counter() - start
    returns, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < ARGS.minutes * 60:
        state, metrics = run(state, hp)
        returns.extend(np.asarray(metrics["episode_return"]).tolist())
    seconds = time.perf_counter() - t0
    steps = len(returns) * config.batch_size
    tenth = max(1, len(returns) // 10)
    first, last = np.nanmean(returns[:tenth]), np.nanmean(returns[-tenth:])
    print("| env | env steps | steps/s | compile s | return, first 10% | return, last 10% |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| {ARGS.env} | {steps:,} | {steps / seconds:,.0f} | {compile_s:.1f} | {first:.1f} "
          f"| {last:.1f} |")


if __name__ == "__main__":
    main()
