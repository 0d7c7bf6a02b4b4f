"""Hyperparameter searches compared by what they pick, measured on fresh seeds.

For each task (PPO on CartPole-v1, Acrobot-v1 and Pendulum-v1, the configurations of the
suite's learning tests at ``--budget`` times their budgets) and each of ``--search-seeds``
search seeds, four searches over the learning rate in [1e-5, 1e-1] (log-uniform):

- ``grid``: ``--points`` log-spaced rates, each on ``--seeds`` seeds, trained to the end;
- ``random``: ``--points`` log-uniform draws, the same;
- ``halving``: ``--points`` draws on ``--seeds`` seeds, eta 3, first rung a ninth of the
  run (:func:`~jaxadv.tuning.halving.successive_halving`): three rungs of a ninth, a third
  and all of the run, trained by all, a third and a ninth of the points, so about a third
  of the grid's env steps;
- ``pbt``: ``--points × --seeds / 3`` draws (at least 2), one seed each, exploit and
  explore every tenth of the run (:func:`~jaxadv.tuning.pbt.population_based_training`):
  a third of the grid's env steps.

The issue's target is that halving or PBT reaches the grid's fresh-seed IQM with at most a
third of its env steps.

Each search's pick (the best point by the interquartile mean of its final returns; PBT's
best member of the last interval, its schedule replayed from scratch) is trained again on
``--fresh`` seeds that no search saw (:func:`~jaxadv.tuning.selection.fresh_key`), and the
table gives, per task and search, the mean over search seeds of that fresh-seed IQM (and its
lowest and highest), the env steps the search spent, its wall seconds and XLA compiles, and
the optimism gap of each search seed's pick (its IQM on the seeds that selected it minus the
fresh-seed IQM, with a stratified-bootstrap 95% interval).
Then PBT's cost: the same population trained with its exploit and explore steps and without
(one interval), timed in interleaved rounds. ``search.png`` plots the fresh-seed IQM against
the env steps spent, per task and search (hollow: the same pick's IQM on its selection
seeds). Each outcome is appended to ``--results`` (JSON lines) as it finishes; a rerun with
the same settings reads them back instead of measuring again, so an interrupted run goes on
where it stopped.

Run: ``.venv/bin/python benchmarks/search.py [--budget 1] [--search-seeds 3]`` (hours on the
2-core machine at the full budget); ``--budget 0.1 --search-seeds 1`` checks that it runs.
A benchmark, kept out of ``make test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxadv.engine.sweep import LogUniform, run_sweep
from jaxadv.engine.train import HParams, TrainConfig
from jaxadv.tuning.halving import successive_halving
from jaxadv.tuning.pbt import PBTSettings, population_based_training
from jaxadv.tuning.replay import reevaluate_members
from jaxadv.tuning.selection import reevaluate, selection_report

TASKS = {  # the suite's learning tests (tests/test_train.py), at their full budgets
    "CartPole-v1": (TrainConfig(total_timesteps=500_000), HParams()),
    "Acrobot-v1": (TrainConfig(env="Acrobot-v1", num_envs=8, num_steps=64,
                               total_timesteps=200_000), HParams()),
    "Pendulum-v1": (TrainConfig(env="Pendulum-v1", num_envs=16, num_steps=64, num_minibatches=8,
                                normalize_obs=True, scale_rewards=True, total_timesteps=200_000),
                    HParams(gamma=0.95, ent_coef=0.0)),
}
LR = (1e-5, 1e-1)


@dataclasses.dataclass
class Outcome:
    fresh_iqm: float
    env_steps: int
    seconds: float
    compiles: int
    selected_iqm: float  # the pick's IQM on the seeds the search selected it on
    gap: float  # selected minus fresh IQM (the optimism gap)
    gap_low: float  # its stratified-bootstrap 95% interval
    gap_high: float


def _scored(report: list[dict], steps: int) -> tuple[dict, int]:
    """The pick's row of :func:`~jaxadv.tuning.selection.selection_report` and the steps."""
    return report[0], steps


def _counting(fn: Callable[[], tuple[dict, int]]) -> Outcome:
    """Run ``fn`` (returning the pick's selection report row and the env steps spent),
    counting XLA's compiles."""
    compiles = []
    listener = lambda name, *a, **k: compiles.append(1) if name.endswith(
        "backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        start = time.perf_counter()
        row, steps = fn()
        seconds = time.perf_counter() - start
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    gap = row["optimism_gap"]
    return Outcome(row["fresh"]["iqm"], steps, seconds, len(compiles), row["selected"]["iqm"],
                   gap["value"], gap["ci95"]["low"], gap["ci95"]["high"])


def _enumerated(config, hp, grid, seeds, fresh, seed, samples=None) -> tuple[dict, int]:
    key = jax.random.key(seed)
    result = run_sweep(config, grid, seeds, hparams=hp, key=key, num_samples=samples)
    chosen, again = reevaluate(config, hp, result, 1, fresh, seed=seed)
    steps = len(result.points) * seeds * config.num_updates * config.batch_size
    return _scored(selection_report(result, chosen, again), steps)


def _halving(config, hp, points, seeds, fresh, seed) -> tuple[dict, int]:
    result = successive_halving(config, {"lr": LogUniform(*LR)}, seeds, hparams=hp,
                                key=jax.random.key(seed), eta=3, num_samples=points,
                                min_updates=max(1, config.num_updates // 9))
    chosen, again = reevaluate(config, hp, result, 1, fresh, seed=seed, ranking=result.ranking)
    return _scored(selection_report(result, chosen, again), result.env_steps)


def _interval(updates: int) -> int:
    return min((k for k in range(1, updates + 1) if updates % k == 0),
               key=lambda k: abs(k - updates / 10))


def _pbt(config, hp, population, fresh, seed) -> tuple[dict, int]:
    result = population_based_training(config, PBTSettings(ranges={"lr": LR}), population, 1,
                                       _interval(config.num_updates), hparams=hp,
                                       key=jax.random.key(seed))
    chosen, members, again = reevaluate_members(config, result, 1, fresh, seed=seed, hparams=hp)
    return _scored(selection_report(members, chosen, again),
                   result.returns.size * config.batch_size)


def searches(config, hp, args, seed) -> dict[str, Callable[[], Outcome]]:
    """The four searches of one task with one search seed, each to be run when called."""
    n, s, f = args.points, args.seeds, args.fresh
    grid = {"lr": list(np.geomspace(*LR, n))}
    return {
        "grid": lambda: _counting(lambda: _enumerated(config, hp, grid, s, f, seed)),
        "random": lambda: _counting(lambda: _enumerated(config, hp, {"lr": LogUniform(*LR)}, s,
                                                        f, seed, samples=n)),
        "halving": lambda: _counting(lambda: _halving(config, hp, n, s, f, seed)),
        "pbt": lambda: _counting(lambda: _pbt(config, hp, max(2, n * s // 3), f, seed)),
    }


class Results:
    """Outcomes kept in a JSON-lines file, one per (settings, task, search seed, search),
    appended as each finishes, so that an interrupted run goes on where it stopped."""

    def __init__(self, path: str, settings: dict):
        self.path, self.settings = path, settings
        self.done: dict[tuple, dict] = {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    row = json.loads(line)
                    if row.pop("settings") == settings:
                        self.done[(row.pop("task"), row.pop("seed"), row.pop("search"))] = row

    def get(self, *key, run: Callable[[], object]) -> dict:
        if key not in self.done:
            value = run()
            row = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            with open(self.path, "a") as f:
                f.write(json.dumps({"settings": self.settings, "task": key[0], "seed": key[1],
                                    "search": key[2], **row}) + "\n")
            self.done[key] = row
        return self.done[key]


def _timed(fn: Callable[[], object]) -> float:
    """Wall seconds of ``fn()`` less the seconds XLA spent compiling in it."""
    compiling = []
    listener = lambda name, seconds, **k: compiling.append(seconds) if name.endswith(
        "backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start - sum(compiling)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def pbt_cost(config, hp, population: int, rounds: int) -> tuple[float, float]:
    """Steps/s of the population with exploit/explore every tenth of the run (median over
    rounds), and the median ratio of steps/s, with ÷ without (one interval, so no exploit),
    over rounds that run both in a shuffled order; compile time left out of both."""
    every = _interval(config.num_updates)
    run = {name: (lambda k=k: population_based_training(
        config, PBTSettings(ranges={"lr": LR}), population, 1, k, hparams=hp))
        for name, k in (("with", every), ("without", config.num_updates))}
    times: dict[str, list[float]] = {"with": [], "without": []}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        for name in order.permutation(list(run)):
            times[name].append(_timed(run[name]))
    steps = population * config.num_updates * config.batch_size
    ratio = statistics.median(b / a for a, b in zip(times["with"], times["without"]))
    return steps / statistics.median(times["with"]), ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budget", type=float, default=1.0,
                        help="fraction of each task's full budget (env steps per run)")
    parser.add_argument("--search-seeds", type=int, default=3)
    parser.add_argument("--points", type=int, default=9)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per point (grid, random, halving)")
    parser.add_argument("--fresh", type=int, default=8, help="fresh seeds for the picks")
    parser.add_argument("--cost-rounds", type=int, default=5)
    parser.add_argument("--plot", default="search.png")
    parser.add_argument("--results", default="search.jsonl",
                        help="JSON lines of finished outcomes; a rerun with the same settings "
                             "skips them (delete the file to measure again)")
    args = parser.parse_args()
    print(f"# jax {jax.__version__}, {jax.devices()[0].platform}, "
          f"{platform.processor() or platform.machine()}, {jax.local_device_count()} device(s); "
          f"budget ×{args.budget}, {args.search_seeds} search seed(s), {args.points} points")
    saved = Results(args.results, {k: getattr(args, k) for k in
                                   ("budget", "points", "seeds", "fresh", "cost_rounds")})
    rows: dict[str, dict[str, list[Outcome]]] = {}
    for task in args.tasks:
        config, hp = _task(task, args.budget)
        rows[task] = {}
        for seed in range(args.search_seeds):
            for name, run in searches(config, hp, args, seed).items():
                outcome = Outcome(**saved.get(task, seed, name, run=run))
                rows[task].setdefault(name, []).append(outcome)
                print(f"{task} seed {seed} {name}: fresh IQM {outcome.fresh_iqm:.1f} "
                      f"(selection {outcome.selected_iqm:.1f}, gap {_gap(outcome)}), "
                      f"{outcome.env_steps:,} env steps, {outcome.seconds:.0f} s, "
                      f"{outcome.compiles} compiles", flush=True)
    _table(rows)
    config, hp = _task(args.tasks[0], args.budget)
    cost = saved.get(args.tasks[0], -1, "pbt_cost", run=lambda: dict(zip(
        ("speed", "ratio"), pbt_cost(config, hp, args.points, args.cost_rounds))))
    print(f"\nPBT on {args.tasks[0]}, {args.points} members: {cost['speed']:,.0f} env steps/s "
          f"with exploit/explore every tenth of the run; steps/s with ÷ without (one "
          f"interval), median of {args.cost_rounds} interleaved rounds: {cost['ratio']:.3f}")
    _plot(rows, args.plot)


def _task(task: str, budget: float) -> tuple[TrainConfig, HParams]:
    config, hp = TASKS[task]
    return dataclasses.replace(config, total_timesteps=int(config.total_timesteps * budget)), hp


def _gap(o: Outcome) -> str:
    return f"{o.gap:+.1f} [{o.gap_low:+.1f}, {o.gap_high:+.1f}]"


def _table(rows: dict[str, dict[str, list[Outcome]]]) -> None:
    print()
    print("| task | search | fresh-seed IQM of the pick (mean; lowest–highest) | env steps "
          "| ÷ grid's | wall s | compiles | optimism gap per search seed [95% interval] |")
    print("|:---|:---|---:|---:|---:|---:|---:|:---|")
    for task, by_search in rows.items():
        grid_steps = by_search["grid"][0].env_steps
        for name, outcomes in by_search.items():
            f = [o.fresh_iqm for o in outcomes]
            print(f"| {task} | {name} | {np.mean(f):.1f}; {min(f):.1f}–{max(f):.1f} "
                  f"| {outcomes[0].env_steps:,} | {outcomes[0].env_steps / grid_steps:.2f} "
                  f"| {np.mean([o.seconds for o in outcomes]):.0f} "
                  f"| {max(o.compiles for o in outcomes)} "
                  f"| {'; '.join(_gap(o) for o in outcomes)} |")


def _plot(rows: dict[str, dict[str, list[Outcome]]], path: str) -> None:
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4), squeeze=False)
    for ax, (task, by_search) in zip(axes[0], rows.items()):
        for name, outcomes in by_search.items():
            dots = ax.scatter([o.env_steps for o in outcomes], [o.fresh_iqm for o in outcomes],
                              label=f"{name}: fresh seeds")
            ax.scatter([o.env_steps for o in outcomes], [o.selected_iqm for o in outcomes],
                       facecolors="none", edgecolors=dots.get_facecolor(), marker="o",
                       label=f"{name}: selection seeds")
        ax.set_xscale("log")
        ax.set_xlabel("env steps the search spent")
        ax.set_ylabel("fresh-seed IQM of its pick")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
