"""The ``jaxadv`` command line, built with tyro from the config dataclasses.

``jaxadv train --env CartPole-v1 --algo ppo --seeds 16 --out runs/cartpole`` trains
one :class:`~jaxadv.engine.train.TrainConfig` on several seeds at once (``vmap``), drives the
fused update in chunks of ``--chunk-updates`` updates per compiled call (a
``lax.scan`` inside each call), shows progress between chunks and writes
``config.json``, ``metrics.csv``, ``summary.json`` and ``returns.png`` under ``--out``.
Between calls it saves checkpoints with orbax under ``--out/checkpoints/`` (see
:mod:`jaxadv.engine.checkpoint`); ``jaxadv train --resume runs/cartpole`` continues a run from
its latest good one, bit for bit as if it had not stopped. Ctrl-C (SIGINT) or SIGTERM
finishes the call in flight, saves, prints the command that resumes and exits with
128 + the signal number (130, 143); a second one quits at once. A NaN or ±inf in the
loss, the gradient or the parameters (the ``nonfinite`` metric) stops the run at the end
of the call in which it appeared, keeping the last finite state as a checkpoint.

``jaxadv sweep --grid.lr 1e-4 3e-4 1e-3 --grid.gae-lambda 0.8 0.95 1.0 --seeds 8`` trains
every point of a grid (or ``--samples`` random draws) on every seed with
:func:`~jaxadv.engine.sweep.run_sweep` — one compile per static group, a progress bar over its
chunks — and writes ``sweep.csv``, ``summary.json`` and ``sweep.png`` under ``--out``.
Each chunk's results are saved under ``--out/chunks/`` as soon as it finishes
(:class:`~jaxadv.engine.checkpoint.SweepChunks`); ``jaxadv sweep --resume runs/sweep`` computes
only the chunks that are missing and writes the same files, bit for bit, as a sweep that
never stopped. Ctrl-C and SIGTERM finish and save the chunk in flight, as for ``train``.

``jaxadv eval runs/cartpole --episodes 100 --render policy.gif`` plays fresh episodes of a
run's latest good checkpoint per seed, writes ``eval.json`` and draws the policy
(:mod:`jaxadv.cli.eval`), reading the run's directory without writing to it.

Every flag is checked right after the arguments are parsed — ``TrainConfig.__post_init__``,
``HParams.validate`` and the command's ``check()`` (:meth:`TrainArgs.check`,
:meth:`SweepArgs.check`: every grid value and every static configuration it makes) — so
a bad value is refused with ``error: <message naming the field>`` and exit status 2
before anything compiles.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import tyro

__all__ = ["main"]


def _commands() -> dict[str, tuple[type, Callable[[Any], Any]]]:
    """Each subcommand's argument class and function. Imported on first use: the modules
    start JAX's backends (gymnax makes arrays at import), which :func:`main` first gives one
    host device per core."""
    from jaxadv.cli.check import CheckArgs, check_command
    from jaxadv.cli.eval import EvalArgs, eval_command
    from jaxadv.cli.sequence import SequenceArgs, sequence_command
    from jaxadv.cli.sweep import SweepArgs, sweep_command
    from jaxadv.cli.train import TrainArgs, train_command
    from jaxadv.cli.variance import VarianceArgs, variance_command

    return {
        "train": (TrainArgs, train_command),
        "sweep": (SweepArgs, sweep_command),
        "variance": (VarianceArgs, variance_command),
        "sequence": (SequenceArgs, sequence_command),
        "eval": (EvalArgs, eval_command),
        "check": (CheckArgs, check_command),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return the exit status.

    0: done (or ``--help``); 2: a bad flag or value, or an OS error (a directory that
    cannot be written, a full disk, a platform that is not there), reported as one
    ``error: ...`` line on stderr, before anything is compiled where it can be; 1:
    non-finite values; 128 + the signal after SIGINT or SIGTERM (:func:`_run`). Called as
    the ``jaxadv`` command (``argv`` ``None``) in a process whose JAX backends have not
    started, it first gives JAX one CPU device per core
    (:func:`~jaxadv.engine.devices.use_host_devices`; not where ``XLA_FLAGS`` or
    ``JAX_NUM_CPU_DEVICES`` sets the count), over which ``train --seeds`` spreads its seeds.
    """
    early = threading.current_thread() is threading.main_thread()
    if early:  # while importing and parsing (seconds): a signal ends the command with one line
        previous = {s: signal.signal(s, _interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if argv is None:
            from jaxadv.engine.devices import use_host_devices

            use_host_devices()
        _check_platform()  # before the commands' modules start JAX's backends at import
        args = _parse(argv)
        return _run(args)
    except (_ParseError, _PlatformError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        if early:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _interrupted(signum: int, _frame: Any) -> None:
    """SIGINT or SIGTERM while starting up (importing, parsing, checking): nothing is written
    yet, so the process ends at once (an exception could land in a callback that ignores it)."""
    name = signal.Signals(signum).name
    os.write(2, f"\n{name}: stopped while starting up; nothing was written\n".encode())
    os._exit(128 + signum)


class _ParseError(Exception):
    """A flag or value refused while parsing or checking (printed as ``error: ...``)."""


def _parse(argv: Sequence[str] | None) -> Any:
    """The checked arguments of the subcommand in ``argv``; raises :class:`_ParseError`."""
    from jaxadv.cli.runs import TrainArgs, resume_args
    from jaxadv.cli.sequence import SequenceArgs, sequence_resume_args
    from jaxadv.cli.sweep_args import SweepArgs, sweep_resume_args

    _refuse_none_grid_values(argv)
    commands = _commands()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):  # tyro's box, reworded as one error line
            args = tyro.extras.subcommand_cli_from_dict(
                {name: cls for name, (cls, _) in commands.items()},
                prog="jaxadv",
                description="Advantage-function policy-gradient training as pure JAX functions.",
                args=argv,
            )
            resumes = ((TrainArgs, "train", resume_args), (SweepArgs, "sweep", sweep_resume_args),
                       (SequenceArgs, "sequence", sequence_resume_args))
            for cls, name, resume in resumes:  # the run's own settings under the flags given
                if isinstance(args, cls) and args.resume is not None:
                    args = resume(args.resume, _flags_after(argv, name))
        args.check()  # after parsing: tyro would draw its own box around a ValueError
    except SystemExit as exc:
        if exc.code in (0, None):
            sys.stderr.write(stderr.getvalue())
            raise
        raise _ParseError(_tyro_message(stderr.getvalue())) from None
    except ValueError as exc:  # a config check: TrainConfig's own, or the command's check()
        raise _ParseError(str(exc)) from None
    except OSError as exc:  # a directory the checks could not read
        from jaxadv.cli.outdir import describe_os_error

        raise _ParseError(describe_os_error(exc)) from None
    return args


def _tyro_message(box: str) -> str:
    """tyro's error box as one line: its message, the subcommands where it lists them, and
    where the help is; a list of choices sorted, without ``None``.

    >>> _tyro_message(" Invalid choice \\n ---- \\n  invalid choice 'x' for argument "
    ...               "'--objective'. Expected one of ('grpo',  \\n  'None', 'dapo').\\n"
    ...               "  ----\\n  For full helptext, run jaxadv sequence --help \\n")
    "invalid choice 'x' for argument '--objective'; expected one of: dapo, grpo (see jaxadv sequence --help)"
    """
    lines = []
    for line in box.splitlines():
        if line.lstrip().startswith("╭"):  # the box's top edge carries the title
            lines += [line.strip(" ╭╮─"), "-"]
        else:
            lines.append(line.strip(" │╰╯\t"))
    sections: list[list[str]] = [[]]
    for line in lines:
        if line and set(line) <= set("-─"):
            sections.append([])
        elif line:
            sections[-1].append(line)
    usage = [section[1] for section in sections
             if len(section) > 1 and section[0].startswith("Argument helptext")]
    body = [" ".join(section) for section in sections[1:] if section]
    if not body:
        return box.strip() or "bad arguments (see jaxadv --help)"
    message = body[0]
    choices = re.search(r"\. Expected one of \((.*)\)\.?$", message)
    if choices:
        names = sorted({c for c in re.findall(r"'([^']*)'", choices.group(1)) if c != "None"})
        message = f"{message[:choices.start()]}; expected one of: {', '.join(names)}"
    if usage:
        message += f"; usage: {usage[0]}"
    extra = [b for b in body[1:] if b.startswith("Available subcommands")]
    helps = [b for b in body if b.startswith("For full helptext")]
    if extra:
        message += f"; {extra[0][0].lower()}{extra[0][1:]}"
    if helps:
        message += f" (see {helps[0].split(maxsplit=3)[-1].removeprefix('run ').removeprefix('see ')})"
    return message


def _refuse_none_grid_values(argv: Sequence[str] | None) -> None:
    """``--grid.FIELD None``: tyro would read it as the field left out."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for flag, value in itertools.pairwise(argv):
        if flag.startswith("--grid.") and value in ("None", "none"):
            raise _ParseError(f"`{flag[2:].replace('-', '_')}`: {value!r} is not a value to "
                              "sweep; give the values themselves, or leave the flag out")


def _resume_hint(args: Any) -> str | None:
    """The command that continues ``args``'s run where one can be continued, else ``None``."""
    out = getattr(args, "out", None)
    name = next((name for name, (cls, _) in _commands().items()
                 if isinstance(args, cls) and hasattr(cls, "resume")), None)
    if name is None or out is None:
        return None
    from jaxadv.cli.outdir import find_run

    found = find_run(out)
    if found is None or found.finished:
        return None
    return f"jaxadv {name} --resume {shlex.quote(str(out))}"


def _run(args: Any) -> int:
    """Run the checked ``args``: an error is one ``error: ...`` line; a signal while setting up
    or compiling ends the process at once (nothing to save), one during training stops after
    the call in flight, one after the last update lets the outputs be written."""
    from rich.console import Console

    from jaxadv.cli.check import CheckFailed
    from jaxadv.cli.interrupts import Interrupts
    from jaxadv.engine.driver import RunStopped

    at_once = lambda: ("{signal}: stopped before training began (setting up or compiling); "
                       "nothing was saved, and nothing stops a fresh start")
    guard = Interrupts(Console(stderr=True), stopping="the outputs are written", at_once=at_once)
    with guard:
        try:
            _enable_compile_cache(args)
            command = next(fn for cls, fn in _commands().values() if isinstance(args, cls))
            command(args)
        except CheckFailed as failed:  # jaxadv check: the table is printed
            print(f"jaxadv check: {failed}", file=sys.stderr)
            return 1
        except RunStopped as stop:  # interrupted, non-finite values, nothing usable to resume
            _quiet_teardown()
            print(stop, file=sys.stderr)
            return stop.status
        except (OSError, MemoryError, _PlatformError) as exc:
            _quiet_teardown()
            print(f"error: {_describe(exc, args)}", file=sys.stderr)
            return 2
    if guard.signum is not None:
        name = signal.Signals(guard.signum).name
        print(f"{name}: arrived after the last update; every output was written", file=sys.stderr)
        return 128 + guard.signum
    return 0


class _PlatformError(RuntimeError):
    """JAX cannot start the platform asked for (``JAX_PLATFORMS``)."""


def _check_platform() -> None:
    """Start JAX's backends now, turning a missing platform into :class:`_PlatformError`."""
    import jax

    try:
        jax.devices()
    except Exception as exc:  # jaxlib raises RuntimeError, or a bare AssertionError
        # jax.config's flags are attributes made at run time, which its type does not declare
        asked = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms  # type: ignore[attr-defined]
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _PlatformError(f"JAX cannot start the platform {asked!r} (JAX_PLATFORMS) on "
                             f"this machine: {why}") from None


def _enable_compile_cache(args: Any) -> None:
    """Turn on JAX's persistent cache in ``$JAXADV_CACHE_DIR`` (unless ``--no-compile-cache``)."""
    from jaxadv.engine.driver import default_compile_cache, enable_compile_cache

    if not getattr(args, "compile_cache", True):
        enable_compile_cache(None)
        return
    directory = default_compile_cache()
    try:
        enable_compile_cache(directory)
    except OSError as exc:
        raise _PlatformError(f"the compile cache {directory} ($JAXADV_CACHE_DIR, else "
                             f"~/.cache/jaxadv/xla) cannot be used: "
                             f"{(exc.strerror or str(exc)).lower()}; set JAXADV_CACHE_DIR to a "
                             "writable directory, or pass --no-compile-cache") from None


def _describe(exc: BaseException, args: Any) -> str:
    """One line for an OS, memory or platform error, with the resume command where a run
    can be continued."""
    from jaxadv.cli.outdir import describe_os_error

    if isinstance(exc, OSError):
        text = describe_os_error(exc)
    elif isinstance(exc, MemoryError):
        text = str(exc) or "out of memory"
    else:
        text = str(exc)
    hint = _resume_hint(args)
    if hint is None:
        return text
    return f"{text}; {'free space and ' if 'no space' in text else ''}resume with: {hint}"


def _quiet_teardown() -> None:
    """After an error line: no tracebacks from background threads (orbax's asyncio loops)
    or from objects finalised at exit."""
    threading.excepthook = lambda _args: None
    sys.unraisablehook = lambda _args: None
    logging.disable(logging.CRITICAL)


def _flags_after(argv: Sequence[str] | None, command: str) -> list[str]:
    """The flags after ``command`` in ``argv`` (default ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return argv[argv.index(command) + 1:] if command in argv else argv

