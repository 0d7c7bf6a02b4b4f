"""What ``--log tensorboard`` and ``--log wandb`` cost a ``jaxadv train`` command.

``.venv/bin/python benchmarks/logging_overhead.py [--pairs 5] [-- TRAIN ARGS]`` runs the
same ``jaxadv train`` command (the default run unless TRAIN ARGS are given) ``--pairs``
times each without logging, with ``--log tensorboard`` and with ``--log wandb``
(``WANDB_MODE=offline``; it needs the ``wandb`` extra), interleaved in a shuffled order
per round so that drifts in the machine's speed fall on all three alike. The first,
unmeasured round fills JAX's compilation cache, as any second run of a configuration
finds it. It prints a markdown table of medians, each also as the median of the per-round
ratios to the run without logging: the training time until everything is logged
(``train_seconds + log_wait_seconds`` of ``summary.json``: the compiled calls, the host
work between them, where the logging happens, and the wait for the logger to catch up
once the last call returns, also shown alone as "waited"); the whole command (start-up,
compile, training, the loggers' final writes, exit); and the CPU seconds of the command
with every process it started (the logging process and W&B's helper included).

Where training keeps every core busy (a CPU run), the logging process can slow it by at
most the CPU it takes, a figure far less noisy than the wall times: so a second table
replays one run's calls (its ``metrics.csv`` in the trainer's chunks, its summary and
plot) through each logger's process ``--pairs`` times and gives the CPU seconds of that
process and its helpers, started and closed with no calls, and for the calls, also as a
share of the training time without logging (the most they can add to it). A benchmark, kept out of ``make test``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--pairs", type=int, default=5, help="measured rounds")
parser.add_argument("train_args", nargs="*", help="arguments for jaxadv train (after --)")
ARGS = parser.parse_args()
MODES = {"none": [], "tensorboard": ["--log", "tensorboard"], "wandb": ["--log", "wandb"]}
JAXADV = [sys.executable, "-m", "jaxadv.cli"]
"""The ``jaxadv`` command, run by this interpreter (also where the console script is not installed)."""


def cpu_seconds() -> float:
    """User and system CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(mode: str, out: pathlib.Path) -> tuple[float, float, float, float]:
    """One ``jaxadv train`` with logging ``mode``: (command seconds, training seconds until
    everything is logged, CPU seconds of the command and the processes it started, seconds
    the trainer waited at the end for the logger to catch up)."""
    cpu, t0 = cpu_seconds(), time.perf_counter()
    subprocess.run([*JAXADV, "train", "--out", str(out / mode), "--quiet", *MODES[mode],
                    *ARGS.train_args], check=True, env={**os.environ, "WANDB_MODE": "offline"},
                   stdout=subprocess.DEVNULL)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu
    summary = json.loads((out / mode / "summary.json").read_text())
    waited = summary.get("log_wait_seconds", 0.0)
    return seconds, summary["train_seconds"] + waited, cpu, waited


def replay(mode: str, run_dir: pathlib.Path, out: pathlib.Path, *, calls: bool) -> float:
    """CPU seconds of ``mode``'s logging process (with the processes it started) for the run
    in ``run_dir``: started, given that run's ``metrics.csv`` in the chunks its trainer
    handed over, its summary and plot (``calls``; else none), and closed."""
    import numpy as np

    from jaxadv.cli.tracking import make_loggers

    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    train = config["train_config"]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    names = [n for n in rows[0] if n not in ("seed", "update", "wall_seconds")]
    seeds, updates = summary["seeds"], summary["num_updates"]
    table = {n: np.array([float(r[n]) for r in rows]).reshape(seeds, updates) for n in names}
    cpu = cpu_seconds()
    logger, = make_loggers((mode,), out / f"replay-{mode}", train["num_envs"] * train["num_steps"],
                           updates, config)
    if calls:
        k = summary["chunk_updates"]
        for first in range(0, updates, k):
            logger.append({n: x[:, first:first + k] for n, x in table.items()}, first + 1, 1.0)
        logger.finish(summary, run_dir / "returns.png")
    logger.close()
    return cpu_seconds() - cpu


def main() -> None:
    os.environ["WANDB_MODE"] = "offline"  # the replays' loggers
    rng = random.Random(0)
    times: dict[str, list[tuple[float, float, float, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ARGS.pairs + 1):
            order = list(MODES)
            rng.shuffle(order)
            for mode in order:
                measured = run(mode, pathlib.Path(tmp))
                print(f"  {mode}: command {measured[0]:.2f} s, training {measured[1]:.2f} s, "
                      f"CPU {measured[2]:.2f} s, waited {measured[3]:.2f} s", file=sys.stderr, flush=True)
                if round_:
                    times[mode].append(measured)
            print(f"round {round_}/{ARGS.pairs} done", file=sys.stderr, flush=True)
    base = times["none"]
    print("| --log | training s (ratio) | whole command s (ratio) | CPU s (ratio) | waited s |")
    print("|---|---:|---:|---:|---:|")
    for mode, measured in times.items():
        cells = []
        for i in (1, 0, 2):
            median = statistics.median(m[i] for m in measured)
            ratio = statistics.median(m[i] / b[i] for m, b in zip(measured, base, strict=True))
            cells.append(f"{median:.2f} ({ratio:.3f})")
        cells.append(f"{statistics.median(m[3] for m in measured):.3f}")
        print(f"| {mode} | {' | '.join(cells)} |")
    with tempfile.TemporaryDirectory() as tmp:  # the logging processes alone, on a quiet machine
        run_dir = pathlib.Path(tmp) / "none"
        run("none", pathlib.Path(tmp))
        train = statistics.median(m[1] for m in base)
        updates = json.loads((run_dir / "summary.json").read_text())["num_updates"]
        print(f"\nThe logging process's CPU, replaying a run's calls ({ARGS.pairs} times each; "
              f"training without logging: {train:.2f} s):\n")
        print(f"| --log | start-up and close, CPU s | the run's {updates:,} updates, CPU s "
              "| updates' CPU / training s |")
        print("|---|---:|---:|---:|")
        for mode in ("tensorboard", "wandb"):
            bare = statistics.median(replay(mode, run_dir, pathlib.Path(tmp), calls=False)
                                     for _ in range(ARGS.pairs))
            full = statistics.median(replay(mode, run_dir, pathlib.Path(tmp), calls=True)
                                     for _ in range(ARGS.pairs))
            print(f"| {mode} | {bare:.2f} | {full - bare:.2f} | {100 * (full - bare) / train:.1f}% |")

if __name__ == "__main__":
    main()
