"""PPO on a Brax locomotion task for a fixed wall-clock budget: the return it reaches, beside
Brax's own PPO trained here for the same number of env steps.

``.venv/bin/python benchmarks/brax_locomotion.py [--env brax:ant] [--minutes 8]`` trains
PPO (jaxadv's engine; settings close to Brax's own for its locomotion tasks: γ 0.97,
observation normalisation, reward scaling, 4 epochs, lr 3e-4) in compiled chunks of
updates until ``--minutes`` of training have passed. It then trains Brax's PPO
(``brax.training.agents.ppo.train``) on the same Brax environment and backend for the same
number of env steps, rounded down to whole Brax training steps. ``--reference notebook``
(the default) uses the hyperparameters of Brax's training notebook for ant: 4096 envs,
unroll 5, batch 2048 × 32 minibatches, 4 epochs, reward scaling 10, entropy 1e-2, Brax's
default networks (policy 4 × 32, value 5 × 256, swish); ``--reference ours`` uses our sizes
(envs, steps per update, 8 minibatches, (128, 128) tanh networks, entropy 1e-3) with Brax's
own defaults otherwise (reward scaling 10, clipping 0.3, no gradient clipping); ``none``
skips it (``--reference-steps N`` trains only Brax's, for N steps). Both final policies are
scored the same way: 128 fresh episodes of at most 1000 steps with sampled actions (Brax's
``eval/episode_reward``; ours with :func:`jaxadv.engine.evaluate.evaluate`). It prints a markdown
table. One seed each; it needs the ``brax`` extra. A benchmark, kept out of ``make test``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import jax
import numpy as np

from jaxadv.engine.evaluate import evaluate
from jaxadv.engine.train import HParams, TrainConfig, make_setup, make_trainer
from jaxadv.envs.brax_envs import make_brax

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--env", default="brax:ant")
parser.add_argument("--minutes", type=float, default=8.0)
parser.add_argument("--num-envs", type=int, default=256)
parser.add_argument("--num-steps", type=int, default=32)
parser.add_argument("--chunk", type=int, default=20, help="updates per compiled call")
parser.add_argument("--reference", choices=("notebook", "ours", "none"), default="notebook",
                    help="Brax's PPO with its notebook's ant settings, with our sizes, or not")
parser.add_argument("--reference-steps", type=int, default=0,
                    help="train only Brax's PPO, for this many env steps")
ARGS = parser.parse_args()
EVAL_EPISODES, EPISODE_LENGTH = 128, 1000


def train_jaxadv() -> dict:
    """Our PPO for ``--minutes``: env steps, steps/s, compile s, the training episodes'
    return over the first and last 10% of updates, and the final policy's evaluation."""
    config = TrainConfig(env=ARGS.env, num_envs=ARGS.num_envs, num_steps=ARGS.num_steps,
                         total_timesteps=10**9, num_minibatches=8, normalize_obs=True,
                         scale_rewards=True, hidden=(128, 128), activation="tanh",
                         anneal_lr=False)
    hp = HParams(lr=3e-4, gamma=0.97, ent_coef=1e-3)
    trainer = make_trainer(config)
    start = time.perf_counter()
    state = jax.jit(trainer.init)(jax.random.key(0), hp)
    run = jax.jit(trainer.run, static_argnums=2).lower(state, hp, ARGS.chunk).compile()
    compile_s = time.perf_counter() - start
    returns, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < ARGS.minutes * 60:
        state, metrics = run(state, hp)
        returns.extend(np.asarray(metrics["episode_return"]).tolist())
        if len(returns) % (10 * ARGS.chunk) == 0:
            print(f"jaxadv PPO: {len(returns) * config.batch_size:,} env steps, training return "
                  f"{np.nanmean(returns[-ARGS.chunk:]):.0f}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    tenth = max(1, len(returns) // 10)
    episodes = jax.jit(lambda key, params, stats: evaluate(
        make_setup(config), key, params, stats, episodes=EVAL_EPISODES,
        max_steps=EPISODE_LENGTH, greedy=False))(jax.random.key(1), state.params, state.obs_stats)
    steps = len(returns) * config.batch_size
    return {"trainer": f"jaxadv PPO ({ARGS.num_envs} envs × {ARGS.num_steps} steps)",
            "steps": steps, "seconds": seconds, "compile": compile_s,
            "first": np.nanmean(returns[:tenth]), "last": np.nanmean(returns[-tenth:]),
            "eval": float(np.mean(episodes.returns))}


def train_brax(num_timesteps: int) -> dict:
    """Brax's PPO, ``--reference`` settings, for ``num_timesteps`` env steps rounded down to
    whole training steps."""
    import flax.linen as nn
    from brax.training.agents.ppo import networks as brax_networks
    from brax.training.agents.ppo import train as brax_ppo

    if not hasattr(jax, "device_put_replicated"):  # Brax 0.14's PPO calls it; jax removed it
        jax.device_put_replicated = lambda tree, devices: jax.device_put(
            jax.tree.map(lambda x: np.stack([x] * len(devices)), tree), devices[0])

    if ARGS.reference == "notebook":
        name = "Brax PPO, its notebook's ant settings (4096 envs × 5 steps)"
        settings = {"num_envs": 4096, "batch_size": 2048, "unroll_length": 5,
                    "num_minibatches": 32, "entropy_cost": 1e-2}
    else:  # ours: envs, steps, minibatches, network, entropy; Brax's own defaults otherwise
        name = f"Brax PPO, our sizes ({ARGS.num_envs} envs × {ARGS.num_steps} steps)"
        settings = {"num_envs": ARGS.num_envs, "batch_size": ARGS.num_envs // 8,
                    "unroll_length": ARGS.num_steps, "num_minibatches": 8, "entropy_cost": 1e-3,
                    "network_factory": functools.partial(
                        brax_networks.make_ppo_networks, policy_hidden_layer_sizes=(128, 128),
                        value_hidden_layer_sizes=(128, 128), activation=nn.tanh)}
    batch = settings["batch_size"] * settings["unroll_length"] * settings["num_minibatches"]
    n = max(1, num_timesteps // batch)  # training steps, in as many epochs as divide them
    epochs = max(d for d in range(1, 6) if n % d == 0)
    progress: list[tuple[int, dict]] = []

    def report(step: int, metrics: dict) -> None:
        progress.append((step, metrics))
        print(f"Brax PPO: {step:,} env steps, evaluation return "
              f"{float(metrics['eval/episode_reward']):.0f}", file=sys.stderr, flush=True)

    env = make_brax(ARGS.env)[0]._env
    with jax.numpy_rank_promotion("allow"):
        brax_ppo.train(environment=env, num_timesteps=n * batch, num_evals=epochs + 1,
                       reward_scaling=10, episode_length=EPISODE_LENGTH,
                       normalize_observations=True, action_repeat=1, num_updates_per_batch=4,
                       discounting=0.97, learning_rate=3e-4, seed=1,
                       num_eval_envs=EVAL_EPISODES, progress_fn=report, **settings)
    # evaluations: of the initial policy, then after each epoch (the first compiles);
    # steps/s is the last epoch's
    steps, last = progress[-1]
    seconds = steps / float(last["training/sps"])
    return {"trainer": name, "steps": steps, "seconds": seconds,
            "compile": float(last["training/walltime"]) - seconds,
            "first": float(progress[0][1]["eval/episode_reward"]), "last": float("nan"),
            "eval": float(last["eval/episode_reward"])}


def main() -> None:
    rows = [] if ARGS.reference_steps else [train_jaxadv()]
    if ARGS.reference != "none":
        rows.append(train_brax(ARGS.reference_steps or rows[0]["steps"]))
    print(f"{ARGS.env}, one seed each, {EVAL_EPISODES} evaluation episodes of ≤ {EPISODE_LENGTH} "
          "steps with sampled actions")
    print("| trainer | env steps | wall s (steps/s) | compile s | training return, first → "
          "last 10% | evaluation return |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        training = (f"{r['first']:.0f} → {r['last']:.0f}" if r["last"] == r["last"]
                    else f"initial policy {r['first']:.0f}")
        print(f"| {r['trainer']} | {r['steps']:,} | {r['seconds']:.0f} "
              f"({r['steps'] / r['seconds']:,.0f}) | {r['compile']:.1f} | {training} "
              f"| {r['eval']:.0f} |")


if __name__ == "__main__":
    main()
