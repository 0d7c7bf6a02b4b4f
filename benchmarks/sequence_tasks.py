"""Sequence RL: samples each estimator needs to reach an exact-match rate of 0.5 and 0.9.

The task is `reverse` with 5-digit prompts over 10 digits and the partial-credit reward (the
`jaxadv sequence` defaults): a 2-layer, width-64 causal transformer from random
initialisation, 64 prompts × 8 samples per update, PPO (2 epochs × 4 minibatches) with
each estimator, and 3 seeds vmapped into one program. For each estimator it prints the
responses generated before a seed's exact-match rate (per update, over its 512 responses)
first reaches 0.5 and 0.9 — the mean over the seeds that did, and how many did — the final
rate, and the wall seconds of the 3-seed run (compile excluded; the warm start included).
Then the same for every estimator after a supervised warm start of 50 and of 300 steps
(teacher-forced, 256 prompts).

Run: ``.venv/bin/python benchmarks/sequence_tasks.py [--samples 30720] [--seeds 3]``
(about 25 minutes on 2 CPU cores).

``--objectives grpo dapo gspo cispo vapo`` measures the ``jaxadv sequence --objective``
presets instead (no warm start), on ``--task reverse`` or a harder one (``--task add``:
two 3-digit numbers, or ``--prompt-length 8``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from jaxadv.cli.sequence import SequenceArgs
from jaxadv.engine.train import make_train

ESTIMATORS = ["grpo", "drgrpo", "rloo", "batchmean", "rfpp", "remax", "gae"]


def first_reach(exact: np.ndarray, level: float, per_update: int) -> list[float]:
    """Per seed: responses generated when the rate first reached ``level`` (NaN if never)."""
    out = []
    for row in exact:
        hit = np.flatnonzero(row >= level)
        out.append(float((hit[0] + 1) * per_update) if hit.size else float("nan"))
    return out


def _cell(values: list[float]) -> str:
    done = [v for v in values if np.isfinite(v)]
    if not done:
        return f"not reached (0/{len(values)})"
    return f"{np.mean(done):,.0f}" + ("" if len(done) == len(values) else f" ({len(done)}/{len(values)})")


def run(args: SequenceArgs, seeds: int) -> tuple[np.ndarray, float]:
    config, hp = args.config, args.hparams
    train = jax.jit(jax.vmap(make_train(config), in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(0), seeds)
    compiled = train.lower(keys, hp).compile()
    start = time.perf_counter()
    _, metrics = compiled(keys, hp)
    exact = np.asarray(jax.device_get(metrics["exact_match"]))
    return exact, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=30_720)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--estimators", nargs="+", default=ESTIMATORS)
    parser.add_argument("--warm-start", nargs="*", type=int, default=[50, 300])
    parser.add_argument("--warm-only", action="store_true", help="skip the runs without a warm start")
    parser.add_argument("--objectives", nargs="*", default=[], help="compare these --objective presets")
    parser.add_argument("--task", default="reverse", choices=["reverse", "sort", "add"])
    parser.add_argument("--prompt-length", type=int, default=5)
    cli = parser.parse_args()
    if cli.objectives:
        return objectives(cli)
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind} ({platform.machine()}, "
          f"{os.cpu_count()} cores); reverse, 5 digits of 10, partial reward, 64 prompts × 8, "
          f"{cli.samples:,} responses, {cli.seeds} seeds\n")
    print("| estimator | warm start | responses to 0.5 | responses to 0.9 | final exact match | wall s (all seeds) |")
    print("|---|---:|---:|---:|---:|---:|")
    runs = [] if cli.warm_only else [(e, 0) for e in cli.estimators]
    runs += [(e, w) for w in cli.warm_start for e in cli.estimators]
    for estimator, warm in runs:
        args = SequenceArgs(estimator=estimator, total_samples=cli.samples, warm_start_steps=warm)
        exact, seconds = run(args, cli.seeds)
        per_update = args.prompts_per_update * args.group_size
        final = exact[:, -max(1, exact.shape[1] // 10):].mean()
        print(f"| {estimator} | {warm or '–'} | {_cell(first_reach(exact, 0.5, per_update))} "
              f"| {_cell(first_reach(exact, 0.9, per_update))} | {final:.3f} | {seconds:.0f} |", flush=True)


def objectives(cli: argparse.Namespace) -> None:
    """One row per ``--objective`` preset: responses to 0.5 and 0.9, final exact match, wall s."""
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind} ({platform.machine()}, "
          f"{os.cpu_count()} cores); {cli.task}, prompts of {cli.prompt_length} digits of 10, "
          f"partial reward, 64 prompts × 8, {cli.samples:,} responses, {cli.seeds} seeds\n")
    print("| objective | task | responses to 0.5 | responses to 0.9 | final exact match | wall s (all seeds) |")
    print("|---|---|---:|---:|---:|---:|")
    for objective in cli.objectives:
        args = SequenceArgs(objective=objective, task=cli.task, prompt_length=cli.prompt_length,
                            total_samples=cli.samples)
        exact, seconds = run(args, cli.seeds)
        per_update = args.prompts_per_update * args.group_size
        final = exact[:, -max(1, exact.shape[1] // 10):].mean()
        print(f"| {objective} | {cli.task} {cli.prompt_length} | "
              f"{_cell(first_reach(exact, 0.5, per_update))} | "
              f"{_cell(first_reach(exact, 0.9, per_update))} | {final:.3f} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
