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
Then PBT's cost (:func:`pbt_cost`; ``--search-seeds 0`` measures only it): the compiled
call of the population's whole run, timed in shuffled rounds with exploit and explore
every tenth of the run, with the same intervals but the exploit replaced by the identity
(the loop alone), and as one interval (no exploit), by wall and CPU seconds, with bootstrap
intervals; and one exploit-and-explore call timed alone. ``search.png`` plots the
fresh-seed IQM against the env steps spent, per task and search (hollow: the same pick's IQM on its selection
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
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxadv.engine.driver import _seed_axis
from jaxadv.engine.sweep import LogUniform, _stacked_hparams, expand_grid, run_sweep
from jaxadv.engine.train import HParams, TrainConfig, make_trainer
from jaxadv.tuning import pbt
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
    appended as each finishes, so that an interrupted run goes on where it stopped. A row
    is read back when it was recorded with ``settings`` (and maybe more)."""

    def __init__(self, path: str, settings: dict):
        self.path, self.settings = path, settings
        self.done: dict[tuple, dict] = {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    row = json.loads(line)
                    kept = row.pop("settings")
                    if all(kept.get(k) == v for k, v in settings.items()):
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


def _ratio_interval(a: list[float], b: list[float], draws: int = 2000) -> tuple[float, float, float]:
    """The median over rounds of ``b[i] / a[i]`` (seconds of ``b`` ÷ seconds of ``a``: the
    steps/s of ``a`` ÷ those of ``b``), with a bootstrap 95% interval over the rounds."""
    ratios = np.asarray(b) / np.asarray(a)
    picks = np.random.default_rng(0).integers(0, len(ratios), (draws, len(ratios)))
    low, high = np.percentile(np.median(ratios[picks], axis=1), [2.5, 97.5])
    return float(np.median(ratios)), float(low), float(high)


def _seconds(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and process-CPU seconds of ``fn()`` (a compiled call, blocked on its outputs)."""
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - wall, time.process_time() - cpu


def _population(hp: HParams, population: int) -> HParams:
    """``population`` log-uniform learning rates (a fixed draw), stacked on ``hp``."""
    points = expand_grid({"lr": LogUniform(*LR)}, num_samples=population, key=jax.random.key(1))
    return _stacked_hparams(points, hp.validate())


def _pbt_calls(config, hp, population: int, interval: int, exploit: bool) -> Callable[[], object]:
    """One compiled call of PBT's whole run (as :func:`population_based_training` makes it:
    :func:`~jaxadv.tuning.pbt._pbt_programs`), from a fixed initial population; with
    ``exploit`` off, :func:`~jaxadv.tuning.pbt.exploit_explore` is replaced by the identity
    while it is traced (the same loop, no ranking or copies)."""
    spread = lambda fn: _seed_axis(fn, population, (0, 0))
    intervals = config.num_updates // interval
    init, calls = pbt._pbt_programs(make_trainer(config), PBTSettings(ranges={"lr": LR}),
                                    population, 1, interval, intervals, spread)
    carry = init(jax.random.key(0), _population(hp, population))
    identity = lambda key, fitness, state, hp, settings: (
        state, hp, jnp.arange(fitness.shape[0], dtype=jnp.int32))
    real = pbt.exploit_explore
    pbt.exploit_explore = real if exploit else identity
    try:
        program = calls(intervals).lower(carry, jnp.asarray(0)).compile()
    finally:
        pbt.exploit_explore = real
    return lambda: program(carry, jnp.asarray(0))


def _exploit_seconds(config, hp, population: int, calls: int = 200) -> float:
    """Median seconds of one compiled :func:`~jaxadv.tuning.pbt.exploit_explore` (rank,
    copy, explore) on the population's trained state."""
    hps = _population(hp, population)
    trainer = make_trainer(config)
    keys = jax.random.split(jax.random.key(0), population)
    state = jax.jit(jax.vmap(trainer.init))(keys, hps)
    fitness = jnp.asarray(np.random.default_rng(0).normal(size=population), jnp.float32)
    step = jax.jit(lambda k, f, s, h: pbt.exploit_explore(k, f, s, h, PBTSettings(ranges={"lr": LR})))
    jax.block_until_ready(step(jax.random.key(2), fitness, state, hps))
    return statistics.median(_seconds(lambda: step(jax.random.key(2), fitness, state, hps))[0]
                             for _ in range(calls))


def pbt_cost(config, hp, population: int, rounds: int) -> dict:
    """PBT's cost, compiled calls only (compiles, host transfers and the Python loop left
    out): the population's whole run timed, in ``rounds`` rounds of shuffled order, as
    ``with`` (exploit and explore every tenth of the run), ``loop`` (the same intervals,
    :func:`~jaxadv.tuning.pbt.exploit_explore` replaced by the identity) and ``one`` (one
    interval: no exploit). Returns ``with``'s env steps/s (median), for each pair the
    median steps/s ratio with its bootstrap 95% interval, by wall and by CPU seconds, and
    one exploit/explore call timed alone, as a share of ``with``'s run."""
    every = _interval(config.num_updates)
    runs = {"with": _pbt_calls(config, hp, population, every, True),
            "loop": _pbt_calls(config, hp, population, every, False),
            "one": _pbt_calls(config, hp, population, config.num_updates, True)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        for name in order.permutation(list(runs)):
            times[name].append(_seconds(runs[name]))
    steps = population * config.num_updates * config.batch_size
    wall = {name: [t[0] for t in ts] for name, ts in times.items()}
    cpu = {name: [t[1] for t in ts] for name, ts in times.items()}
    exploit = _exploit_seconds(config, hp, population)
    return {"speed": steps / statistics.median(wall["with"]), "rounds": rounds,
            "interval": every, "intervals": config.num_updates // every,
            **{f"{a}/{b} {kind}": _ratio_interval(kind_times[a], kind_times[b])
               for a, b in (("with", "one"), ("with", "loop"), ("loop", "one"))
               for kind, kind_times in (("wall", wall), ("cpu", cpu))},
            "exploit_seconds": exploit,
            "exploit_share": exploit * (config.num_updates // every - 1) / statistics.median(wall["with"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budget", type=float, default=1.0,
                        help="fraction of each task's full budget (env steps per run)")
    parser.add_argument("--search-seeds", type=int, default=3,
                        help="0: only PBT's cost")
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
    saved = Results(args.results, {k: getattr(args, k) for k in ("budget", "points", "seeds", "fresh")})
    rows: dict[str, dict[str, list[Outcome]]] = {}
    for task in args.tasks if args.search_seeds else []:
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
    if rows:
        _table(rows)
        _plot(rows, args.plot)
    config, hp = _task(args.tasks[0], args.budget)
    costs = Results(args.results, {k: getattr(args, k) for k in ("budget", "points", "cost_rounds")})
    _print_cost(args, costs.get(args.tasks[0], -1, "pbt_cost_parts",
                                run=lambda: pbt_cost(config, hp, args.points, args.cost_rounds)))


def _print_cost(args, cost: dict) -> None:
    interval = lambda r: f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]"
    print(f"\nPBT's cost on {args.tasks[0]}, {args.points} members, {cost['intervals']} intervals "
          f"of {cost['interval']} updates: {cost['speed']:,.0f} env steps/s with exploit/explore; "
          f"steps/s ratios, median of {cost['rounds']} shuffled rounds [bootstrap 95%]:")
    for pair in ("with/one", "with/loop", "loop/one"):
        print(f"  {pair}: wall {interval(cost[pair + ' wall'])}, CPU {interval(cost[pair + ' cpu'])}")
    print(f"  one exploit/explore alone: {cost['exploit_seconds'] * 1e3:.3f} ms, "
          f"{cost['exploit_share']:.2e} of the run")


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
