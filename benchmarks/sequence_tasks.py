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

``--corrections`` measures each off-policy correction (:data:`CORRECTIONS`) with a sampler at
``--behaviour-temperature`` (1.2) on the small task of tests/test_objectives.py: `reverse` of
3-digit prompts over 4 digits, a 1-layer width-32 transformer, 16 prompts × 8 samples per
update, 2 epochs × 2 minibatches, lr 3e-3, ``--seeds`` seeds (keys 0, 1, …, vmapped). Each row
gives the responses to 0.5 and 0.9, the final exact match, the lowest seed's mean over the last
3 updates (the learning tests' criterion is ≥ 0.9) and, per seed, the first update after which
that mean is ≥ 0.9 (``–`` if never within ``--samples``; a sequence run keeps its learning
rate constant, so a run of that many updates is this one cut short). Run: ``.venv/bin/python benchmarks/sequence_tasks.py --corrections
--seeds 3 --samples 7680`` (about 6 minutes on 2 CPU cores, nearly all of it compiling).
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

SMALL_TASK = {"task": "reverse", "prompt_length": 3, "num_digits": 4, "reward": "partial",
              "layers": 1, "width": 32, "heads": 2, "group_size": 8, "prompts_per_update": 16,
              "update_epochs": 2, "num_minibatches": 2, "lr": 3e-3}
"""The task of the learning tests in tests/test_objectives.py."""

CORRECTIONS = {
    "tis": {"correction": ("tis",)},
    "token_mis [0.5, 2]": {"correction": ("token_mis",)},
    "token_mis [1/3, 3]": {"correction": ("token_mis",), "mis_range": (1 / 3, 3.0)},
    "seq_tis": {"correction": ("seq_tis",)},
    "seq_mis [0.5, 2]": {"correction": ("seq_mis",)},
    "seq_mis [0.25, 4]": {"correction": ("seq_mis",), "seq_range": (0.25, 4.0)},
    "seq_mis geometric": {"correction": ("seq_mis",), "seq_aggregate": "geometric"},
    "icepop α 2": {"objective": "icepop"},
    "icepop α 3": {"objective": "icepop", "icepop_alpha": 3.0},
    "sapo": {"objective": "sapo"},
    "gmpo": {"objective": "gmpo"},
}
"""Each off-policy correction as ``SequenceArgs`` settings: the weights of --correction on PPO
(GRPO advantages), and the objectives that carry their own correction; the masks at their
defaults and at the wider bands that tests/test_objectives.py trains with."""


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


def run(args: SequenceArgs, seeds: int, split: bool = True) -> tuple[np.ndarray, float]:
    """Exact-match rates ``[seeds, updates]`` and the wall seconds of the vmapped run, with keys
    split from key(0), or (``split=False``) key(0), key(1), … as the tests use."""
    config, hp = args.config, args.hparams
    train = jax.jit(jax.vmap(make_train(config), in_axes=(0, None)))
    keys = (jax.random.split(jax.random.key(0), seeds) if split
            else jax.numpy.stack([jax.random.key(i) for i in range(seeds)]))
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
    parser.add_argument("--corrections", nargs="*", default=None, choices=list(CORRECTIONS),
                        help="measure these off-policy corrections (none named: all) on the small task")
    parser.add_argument("--behaviour-temperature", type=float, default=1.2)
    cli = parser.parse_args()
    if cli.corrections is not None:
        return corrections(cli)
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


def reliable_from(exact: np.ndarray, level: float = 0.9, window: int = 3) -> list[int | None]:
    """Per seed: the first update count u with mean(exact[u - window:u]) ≥ ``level`` (None if
    none): a learning test that trains u updates and checks the last ``window`` passes."""
    out = []
    for row in exact:
        means = np.convolve(row, np.ones(window) / window, mode="valid")
        hit = np.flatnonzero(means >= level)
        out.append(int(hit[0]) + window if hit.size else None)
    return out


def corrections(cli: argparse.Namespace) -> None:
    """One row per off-policy correction, sampled at ``--behaviour-temperature``."""
    names = cli.corrections or list(CORRECTIONS)
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind} ({platform.machine()}, "
          f"{os.cpu_count()} cores); reverse, prompts of 3 digits of 4, partial reward, 16 prompts × 8, "
          f"behaviour temperature {cli.behaviour_temperature}, {cli.samples:,} responses, "
          f"{cli.seeds} seeds\n")
    print("| correction | responses to 0.5 | responses to 0.9 | final exact match "
          "| lowest seed's last-3 mean | updates to a last-3 mean ≥ 0.9, per seed "
          "| wall s (all seeds) |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name in names:
        args = SequenceArgs(**SMALL_TASK, **CORRECTIONS[name], total_samples=cli.samples,
                            behaviour_temperature=cli.behaviour_temperature, samples_shown=0).check()
        exact, seconds = run(args, cli.seeds, split=False)
        per_update = args.prompts_per_update * args.group_size
        final = exact[:, -max(1, exact.shape[1] // 10):].mean()
        reached = ", ".join("–" if u is None else str(u) for u in reliable_from(exact))
        print(f"| {name} | {_cell(first_reach(exact, 0.5, per_update))} | "
              f"{_cell(first_reach(exact, 0.9, per_update))} | {final:.3f} | "
              f"{exact[:, -3:].mean(axis=1).min():.3f} | {reached} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
