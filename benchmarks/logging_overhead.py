"""What ``--log tensorboard`` and ``--log wandb`` cost a ``jaxadv train`` command.

``.venv/bin/python benchmarks/logging_overhead.py [--pairs 5] [-- TRAIN ARGS]`` runs the
same ``jaxadv train`` command (the default run unless TRAIN ARGS are given) ``--pairs``
times each without logging, with ``--log tensorboard`` and with ``--log wandb``
(``WANDB_MODE=offline``; it needs the ``wandb`` extra), interleaved in a shuffled order
per round so that drifts in the machine's speed fall on all three alike. The first,
unmeasured round fills JAX's compilation cache, as any second run of a configuration
finds it. It prints a markdown table: the median training time (``train_seconds`` of
``summary.json``: the compiled calls and the host work between them, where the logging
happens) and the median time of the whole command (start-up, compile, training, the
loggers' final writes, exit), each also as the median of the per-round ratios to the
run without logging; and the median CPU seconds of the command with every process it
started (the logging process and W&B's helper included): what logging adds there is the
CPU it competes for (XLA's threads spin while they wait, so this too follows the wall
time). A benchmark, kept out of ``make test``.
"""

from __future__ import annotations

import argparse
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
JAXADV = pathlib.Path(sys.executable).with_name("jaxadv")


def cpu_seconds() -> float:
    """User and system CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(mode: str, out: pathlib.Path) -> tuple[float, float, float]:
    """One ``jaxadv train`` with logging ``mode``: (command seconds, training seconds, CPU
    seconds of the command and the processes it started)."""
    cpu, t0 = cpu_seconds(), time.perf_counter()
    subprocess.run([str(JAXADV), "train", "--out", str(out / mode), "--quiet", *MODES[mode],
                    *ARGS.train_args], check=True, env={**os.environ, "WANDB_MODE": "offline"},
                   stdout=subprocess.DEVNULL)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu
    return seconds, json.loads((out / mode / "summary.json").read_text())["train_seconds"], cpu


def main() -> None:
    rng = random.Random(0)
    times: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ARGS.pairs + 1):
            order = list(MODES)
            rng.shuffle(order)
            for mode in order:
                measured = run(mode, pathlib.Path(tmp))
                print(f"  {mode}: command {measured[0]:.2f} s, training {measured[1]:.2f} s, "
                      f"CPU {measured[2]:.2f} s", file=sys.stderr, flush=True)
                if round_:
                    times[mode].append(measured)
            print(f"round {round_}/{ARGS.pairs} done", file=sys.stderr, flush=True)
    base = times["none"]
    print("| --log | training s (ratio) | whole command s (ratio) | CPU s (ratio) |")
    print("|---|---:|---:|---:|")
    for mode, measured in times.items():
        cells = []
        for i in (1, 0, 2):
            median = statistics.median(m[i] for m in measured)
            ratio = statistics.median(m[i] / b[i] for m, b in zip(measured, base, strict=True))
            cells.append(f"{median:.2f} ({ratio:.3f})")
        print(f"| {mode} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
