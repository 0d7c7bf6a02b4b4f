"""The ``jaxadv`` command line, built with tyro from the config dataclasses.

``jaxadv train --env CartPole-v1 --algo ppo --seeds 16 --out runs/cartpole`` trains
one :class:`~jaxadv.train.TrainConfig` on several seeds at once (``vmap``), drives the
fused update in chunks of ``--chunk-updates`` updates per compiled call (a
``lax.scan`` inside each call), shows progress between chunks and writes
``config.json``, ``metrics.csv``, ``summary.json`` and ``returns.png`` under ``--out``.
Between calls it saves checkpoints with orbax under ``--out/checkpoints/`` (see
:mod:`jaxadv.checkpoint`); ``jaxadv train --resume runs/cartpole`` continues a run from
its latest good one, bit for bit as if it had not stopped. Ctrl-C (SIGINT) or SIGTERM
finishes the call in flight, saves, prints the command that resumes and exits with
128 + the signal number (130, 143); a second one quits at once. A NaN or ±inf in the
loss, the gradient or the parameters (the ``nonfinite`` metric) stops the run at the end
of the call in which it appeared, keeping the last finite state as a checkpoint.

``jaxadv sweep --grid.lr 1e-4 3e-4 1e-3 --grid.gae-lambda 0.8 0.95 1.0 --seeds 8`` trains
every point of a grid (or ``--samples`` random draws) on every seed with
:func:`~jaxadv.sweep.run_sweep` — one compile per static group, a progress bar over its
chunks — and writes ``sweep.csv``, ``summary.json`` and ``sweep.png`` under ``--out``.
Each chunk's results are saved under ``--out/chunks/`` as soon as it finishes
(:class:`~jaxadv.checkpoint.SweepChunks`); ``jaxadv sweep --resume runs/sweep`` computes
only the chunks that are missing and writes the same files, bit for bit, as a sweep that
never stopped. Ctrl-C and SIGTERM finish and save the chunk in flight, as for ``train``.

``jaxadv eval runs/cartpole --episodes 100 --render policy.gif`` plays fresh episodes of a
run's latest good checkpoint per seed, writes ``eval.json`` and draws the policy
(:mod:`jaxadv.eval_cli`), reading the run's directory without writing to it.

Every flag is checked right after the arguments are parsed — ``TrainConfig.__post_init__``,
``HParams.validate`` and the command's ``check()`` (:meth:`TrainArgs.check`,
:meth:`SweepArgs.check`: every grid value and every static configuration it makes) — so
a bad value is refused with ``error: <message naming the field>`` and exit status 2
before anything compiles.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import tyro

from jaxadv.devices import use_host_devices

__all__ = ["main"]


def _commands() -> dict[str, tuple[type, Callable[[Any], Any]]]:
    """Each subcommand's argument class and function. Imported on first use: the modules
    start JAX's backends (gymnax makes arrays at import), which :func:`main` first gives one
    host device per core."""
    from jaxadv.eval_cli import EvalArgs, eval_command
    from jaxadv.sequence_cli import SequenceArgs, sequence_command
    from jaxadv.sweep_cli import SweepArgs, sweep_command
    from jaxadv.train_cli import TrainArgs, train_command
    from jaxadv.variance_cli import VarianceArgs, variance_command

    return {
        "train": (TrainArgs, train_command),
        "sweep": (SweepArgs, sweep_command),
        "variance": (VarianceArgs, variance_command),
        "sequence": (SequenceArgs, sequence_command),
        "eval": (EvalArgs, eval_command),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return the exit status.

    0: done (or ``--help``); 2: a bad flag or value, reported as ``error: ...`` on
    stderr before anything is compiled. Called as the ``jaxadv`` command (``argv`` ``None``)
    in a process whose JAX backends have not started, it first gives JAX one CPU device
    per core (:func:`~jaxadv.devices.use_host_devices`; not where ``XLA_FLAGS`` or
    ``JAX_NUM_CPU_DEVICES`` sets the count), over which ``train --seeds`` spreads its seeds.
    """
    if argv is None:
        use_host_devices()
    from jaxadv.driver import RunStopped, default_compile_cache, enable_compile_cache
    from jaxadv.sweep_cli import SweepArgs, sweep_resume_args
    from jaxadv.train_cli import TrainArgs, resume_args

    commands = _commands()
    try:
        args = tyro.extras.subcommand_cli_from_dict(
            {name: cls for name, (cls, _) in commands.items()},
            prog="jaxadv",
            description="Advantage-function policy-gradient training as pure JAX functions.",
            args=argv,
        )
        if isinstance(args, TrainArgs) and args.resume is not None:  # the run's own settings
            args = resume_args(args.resume, _flags_after(argv, "train"))  # under the flags given
        elif isinstance(args, SweepArgs) and args.resume is not None:  # likewise, a sweep's
            args = sweep_resume_args(args.resume, _flags_after(argv, "sweep"))
        args.check()  # after parsing: tyro would draw its own box around a ValueError
    except SystemExit as exc:  # --help, or tyro's own message about a malformed flag
        return exc.code if isinstance(exc.code, int) else 1
    except ValueError as exc:  # a config check: TrainConfig's own, or the command's check()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    enable_compile_cache(default_compile_cache() if getattr(args, "compile_cache", True) else None)
    command = next(fn for cls, fn in commands.values() if isinstance(args, cls))
    try:
        command(args)
    except RunStopped as stop:  # interrupted, non-finite values, nothing usable to resume
        print(stop, file=sys.stderr)
        return stop.status
    return 0


def _flags_after(argv: Sequence[str] | None, command: str) -> list[str]:
    """The flags after ``command`` in ``argv`` (default ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return argv[argv.index(command) + 1:] if command in argv else argv


if __name__ == "__main__":
    sys.exit(main())
