"""A training run from the command line, shared by ``jaxadv train`` and ``jaxadv sequence``.

:class:`TrainArgs` is the run's schema (one :class:`~jaxadv.engine.train.TrainConfig`, its
:class:`~jaxadv.engine.train.HParams`, seeds, ``--out`` and the run's options);
:func:`drive_logged` runs it with the library driver :func:`~jaxadv.engine.driver.drive`,
giving it the command line's sinks: ``metrics.csv``, ``checkpoints/``, the ``--log``
loggers, a progress bar, messages on stderr, and SIGINT/SIGTERM as its ``stop()``
(:class:`~jaxadv.cli.interrupts.Interrupts`: finish the call in flight, save, print the
command that resumes and exit with 128 + the signal). :func:`write_run_outputs` writes
``summary.json``, ``returns.png`` and ``telemetry.png``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal

import jax
import numpy as np
import tyro
from rich.console import Console
from rich.progress import TextColumn

from jaxadv.cli.interrupts import Interrupts
from jaxadv.cli.options import TrainOptions
from jaxadv.cli.outdir import OutputLock, check_fresh, remove_run
from jaxadv.cli.report import (
    jsonable,
    plot_returns,
    plot_telemetry,
    progress_bar,
    summary_table,
    write_json,
)
from jaxadv.cli.tracking import WandbSettings, check_loggers, make_loggers
from jaxadv.engine.checkpoint import checkpoint_steps
from jaxadv.engine.devices import seed_groups
from jaxadv.engine.driver import (
    RunOptions,
    RunProgress,
    RunResult,
    RunStopped,
    default_chunk_updates,
    drive,
)
from jaxadv.engine.metrics import MetricsWriter
from jaxadv.engine.train import HParams
from jaxadv.validate import check_positive, check_seed, field_changes, refuse_changes

__all__ = ["TrainArgs", "drive_logged", "prepare_out", "resume_args", "run_options",
           "write_config", "write_run_outputs"]


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """Train one configuration on --seeds seeds at once; write config.json, metrics.csv,
    summary.json, returns.png, telemetry.png and checkpoints/ under --out (--resume DIR
    continues a run)."""

    config: Annotated[TrainOptions, tyro.conf.arg(name="")]
    hparams: Annotated[HParams, tyro.conf.arg(name="")]
    seed: int = 0
    """base seed; the seeds' keys are jax.random.split(jax.random.key(seed), seeds)."""
    seeds: int = 4
    """independent runs, vmapped into one program."""
    devices: int | None = None
    """spread the seeds over at most this many devices; default: all (on CPU, one XLA host device per core). The results do not depend on it."""
    seed_groups: int | None = None
    """compute the seeds in this many equal groups, each one vmapped program, so that every seed's result is the same on any number of devices; default: the largest divisor of --seeds up to the device count."""
    out: pathlib.Path = pathlib.Path("runs/train")
    """output directory (created); one that holds a run is refused unless --overwrite."""
    overwrite: bool = False
    """start afresh in an --out that holds a run (finished or not, of any kind): its files are deleted first."""
    chunk_updates: int | None = None
    """updates per compiled call; default: 16 to 64 calls per run (the count nearest 32 whose calls are all of one length), else about 32."""
    resume: pathlib.Path | None = None
    """continue the run in this directory (an earlier --out) from its latest good checkpoint, with the settings in its config.json; a flag that would change a TrainConfig or HParams field, --seed or --seeds is refused."""
    checkpoint_every: int | None = None
    """updates between checkpoints, rounded up to whole calls; one is also written at the end and on Ctrl-C/SIGTERM; default: one per minute of training."""
    keep_checkpoints: int = 2
    """how many of the latest checkpoints to keep under --out/checkpoints."""
    debug_nans: bool = False
    """diagnostic rerun (e.g. with --resume after a non-finite stop): compile each call with jax.experimental.checkify NaN checks and report the first operation that makes a NaN, with its source line (slower)."""
    quiet: bool = False
    """no progress bar and no summary table."""
    log: tuple[Literal["tensorboard", "wandb"], ...] = ()
    """also log every metric of metrics.csv (mean over seeds and per seed, against env steps), the config, the summary and the returns plot: tensorboard, event files under --out/tb (pip install 'jaxadv[tensorboard]'); wandb, a Weights & Biases run with its local files under --out/wandb (pip install 'jaxadv[wandb]'; WANDB_MODE=offline works without a network). Handed over between compiled calls to a low-priority process of its own."""
    wandb: WandbSettings = WandbSettings()
    compile_cache: bool = True
    """keep compiled programs in JAX's persistent cache ($JAXADV_CACHE_DIR, default ~/.cache/jaxadv/xla), so the same configuration compiles once; --no-compile-cache turns it off."""
    resume_command: tyro.conf.Suppress[str] = "jaxadv train --resume"
    """the command that continues this run, in messages (jaxadv sequence's runs: its own)."""

    def check(self, kind: str = "train") -> TrainArgs:
        """Refuse a bad value with a ``ValueError`` naming the field; compiles nothing.

        With ``resume``: the directory must hold a ``config.json`` and a checkpoint, no
        other process may be writing there, and no static (:class:`TrainConfig`) or
        :class:`HParams` field, ``seed`` or ``seeds`` may differ from it. Without: ``out``
        must hold no run (:func:`~jaxadv.cli.outdir.check_fresh`; ``kind`` names the command
        that would resume an unfinished one) unless ``overwrite``.
        """
        check_seed(self.seed)
        check_positive(self, "seeds", "chunk_updates", "checkpoint_every", "keep_checkpoints",
                       "devices", "seed_groups")
        if self.resume is not None:  # first: a changed setting is named as what it is
            self._check_resume()
        if self.seed_groups is not None and self.seeds % self.seed_groups:
            raise ValueError(f"`seed_groups` = {self.seed_groups} must divide `seeds` = {self.seeds}")
        self.hparams.validate()
        check_loggers(self.log)
        if self.resume is None:
            check_fresh(self.out, kind, overwrite=self.overwrite)
        return self

    def _check_resume(self) -> None:
        assert self.resume is not None
        if self.overwrite:
            raise ValueError("`overwrite`: --resume continues the run in its directory; "
                             "--overwrite would delete it")
        OutputLock(self.resume).check()
        stored = _stored_args(self.resume)
        refuse_changes(_changes(stored, self), "run", self.resume / "config.json")
        if self.out.resolve() != self.resume.resolve():
            raise ValueError(f"`out` = {str(self.out)!r}: --resume continues the run in its own "
                             f"directory {str(self.resume)!r}; leave --out out")
        if not checkpoint_steps(self.resume / "checkpoints"):
            raise ValueError(f"`resume`: {self.resume / 'checkpoints'} holds no checkpoint to "
                             "resume from")


def _stored_args(run_dir: pathlib.Path) -> TrainArgs:
    """The :class:`TrainArgs` that ``run_dir/config.json`` records (``out``, ``resume``: run_dir)."""
    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text())
        run = data["run"]
        # a run recorded before TrainConfig.telemetry existed ran without it, and its
        # checkpoints' metrics have no telemetry to continue
        config = {"telemetry": False, **data["train_config"]}
        return TrainArgs(
            config=TrainOptions(**config), hparams=HParams(**data["hparams"]),
            seed=run["seed"], seeds=run["seeds"], out=run_dir, chunk_updates=run["chunk_updates"],
            resume=run_dir, checkpoint_every=run.get("checkpoint_every"),
            keep_checkpoints=run.get("keep_checkpoints", 2), seed_groups=run.get("seed_groups", 1),
        )
    except FileNotFoundError:
        raise ValueError(f"`resume`: {path} not found; --resume takes the --out directory of "
                         "an earlier `jaxadv train`") from None
    except OSError as exc:  # run_dir is a file, or cannot be read
        what = "is not a directory" if not run_dir.is_dir() else f"cannot be read ({exc.strerror})"
        raise ValueError(f"`resume`: {run_dir} {what}; --resume takes the --out directory of "
                         "an earlier `jaxadv train`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`resume`: {path} does not describe a train run ({exc})") from None


def _changes(stored: TrainArgs, args: TrainArgs) -> Iterator[tuple[str, Any, Any]]:
    """``(field, stored value, new value)`` for each setting a resumed run may not change."""
    yield from field_changes(stored.config, args.config)
    yield from field_changes(stored.hparams, args.hparams)
    yield from field_changes(stored, args, names=("seed", "seeds", "seed_groups"))


def resume_args(run_dir: pathlib.Path, argv: Sequence[str] = ()) -> TrainArgs:
    """The :class:`TrainArgs` to resume the run in ``run_dir``: its ``config.json``, with the
    ``jaxadv train`` flags in ``argv`` parsed on top (a flag that changes a recorded setting
    is refused by :meth:`TrainArgs.check`; ``--quiet``, ``--chunk-updates``,
    ``--checkpoint-every``, ``--keep-checkpoints`` and ``--debug-nans`` may change).
    """
    run_dir = pathlib.Path(run_dir)
    return tyro.cli(TrainArgs, args=list(argv), default=_stored_args(run_dir),
                    prog="jaxadv train")


def prepare_out(args: TrainArgs) -> None:
    """With ``--overwrite``, delete the run in ``--out`` (:func:`~jaxadv.cli.outdir.remove_run`)."""
    if args.resume is None and args.overwrite:
        removed = remove_run(args.out)
        if removed:
            Console(stderr=True, quiet=args.quiet).print(
                f"--overwrite: deleted {', '.join(removed)} from {args.out}")


class _Display:
    """The command line's side of a run: messages on stderr, the progress bar, and
    SIGINT/SIGTERM as the driver's ``stop()``; the bar and the signal guard start with
    training (a signal while compiling is the process-wide guard's: exit at once)."""

    COLUMNS = (  # env steps per seed, steps/s (all seeds), the latest return
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
        TextColumn("{task.fields[sps]}"),
        TextColumn("return {task.fields[ret]}"),
    )

    def __init__(self, quiet: bool):
        self.err = Console(stderr=True, quiet=quiet)
        self.interrupts: Interrupts | None = None
        self._stack = contextlib.ExitStack()
        self._bar: Any = None

    def progress(self, now: RunProgress) -> None:
        if self._bar is None:
            self.interrupts = self._stack.enter_context(Interrupts(self.err))
            self._bar = self._stack.enter_context(progress_bar(self.err, "train", *self.COLUMNS))
            self._task = self._bar.add_task("train", total=now.total_env_steps,
                                            completed=now.env_steps, sps="", ret="–")
        sps = "" if now.steps_per_second is None else f"{now.steps_per_second:,.0f} steps/s"
        ret = "–" if np.isnan(now.mean_return) else f"{now.mean_return:.1f}"
        self._bar.update(self._task, completed=now.env_steps, sps=sps, ret=ret)

    def close(self) -> None:
        self._stack.close()

    def stop(self) -> bool:
        return self.interrupts is not None and self.interrupts.signum is not None

    def worded(self, stop: RunStopped, total: int, resume: str) -> RunStopped:
        """``stop`` as the command line says it: the signal and the command that resumes."""
        if stop.reason == "stopped" and self.interrupts is not None:
            return self.interrupts.stopped(f"update {stop.update} of {total}",
                                           f"checkpoint {stop.checkpoint} and metrics.csv", resume)
        if stop.reason != "nonfinite":
            return stop
        if stop.checkpoint is not None:
            kept = (f"The last finite state, after update {stop.update}, is checkpoint "
                    f"{stop.checkpoint}")
            if not stop.found:
                kept += f"; rerun from it with `{resume} --debug-nans` to find the operation"
        else:
            kept = "No checkpoint was written before it"
            if not stop.found:
                kept += "; rerun the same command with --debug-nans to find the operation"
        return RunStopped(f"error: {stop}; training stopped. {kept}.", stop.status,
                          reason=stop.reason, update=stop.update, checkpoint=stop.checkpoint)


def _drive(args: TrainArgs, loggers: tuple[Any, ...], record: dict[str, Any]) -> RunResult:
    """:func:`~jaxadv.engine.driver.drive` with the command line's sinks and display
    (``record``: what ``config.json`` holds)."""
    display = _Display(args.quiet)
    resume = f"{args.resume_command} {shlex.quote(str(args.out))}"
    writer = MetricsWriter(args.out / "metrics.csv", args.config.batch_size)
    options = dataclasses.replace(
        run_options(args, record), sinks=(writer, *loggers), progress=display.progress,
        log=display.err.print, warn=lambda message: print(message, file=sys.stderr),
        stop=display.stop)  # warnings even with --quiet
    try:
        with writer:
            return drive(args.config, args.hparams, options)
    except RunStopped as stop:
        raise display.worded(stop, args.config.num_updates, resume) from None
    finally:
        display.close()


def drive_logged(args: TrainArgs, write: Callable[[RunResult], None]) -> RunResult:
    """Run checked ``args`` with :func:`~jaxadv.engine.driver.drive` (creating ``--out`` and
    writing ``config.json`` first), then wait for the ``--log`` loggers (the summary gains
    ``log_seconds`` and ``log_wait_seconds``), call ``write`` (which writes
    ``returns.png``), give the loggers the summary and plot, close them."""
    record = write_config(args)
    loggers = tuple(make_loggers(args.log, args.out, args.config.batch_size,
                                 args.config.num_updates, record, args.wandb))
    try:
        result = _drive(args, loggers, record)
        if args.resume is not None and result.resumed_from == args.config.num_updates and (
                args.out / "summary.json").is_file():  # it had finished: its outputs stay
            Console(stderr=True, quiet=args.quiet).print(
                f"{args.out} holds a finished run: nothing to resume, no output rewritten")
            summary = json.loads((args.out / "summary.json").read_text())
            for logger in loggers:
                logger.close()
            return dataclasses.replace(result, summary=summary)
        if loggers:  # what the logging processes still had to do when training ended
            t0 = time.perf_counter()
            for logger in loggers:
                logger.wait()
            result.summary.update(log_wait_seconds=time.perf_counter() - t0,
                                  log_seconds=sum(logger.seconds for logger in loggers))
        write(result)
        for logger in loggers:
            logger.finish(result.summary, args.out / "returns.png")
    except BaseException:  # a stopped run (Ctrl-C, NaN) reports that, not a logger's failure
        for logger in loggers:
            with contextlib.suppress(Exception):
                logger.close()
        raise
    for logger in loggers:
        logger.close()
    return result


def _record(args: TrainArgs) -> dict[str, Any]:
    """The run's JSON description (``config.json``; every checkpoint carries it)."""
    config = args.config
    k = min(args.chunk_updates or default_chunk_updates(config.num_updates), config.num_updates)
    groups = args.seed_groups or seed_groups(args.seeds, jax.local_device_count())
    run = {"seed": args.seed, "seeds": args.seeds, "chunk_updates": k, "out": args.out,
           "checkpoint_every": args.checkpoint_every, "keep_checkpoints": args.keep_checkpoints,
           "seed_groups": groups}
    return jsonable({"train_config": config, "hparams": args.hparams, "run": run})


def write_config(args: TrainArgs) -> dict[str, Any]:
    """Create ``--out`` and write ``config.json``; return what it holds."""
    args.out.mkdir(parents=True, exist_ok=True)
    record = _record(args)
    write_json(args.out / "config.json", record)
    return record


def run_options(args: TrainArgs, record: dict[str, Any]) -> RunOptions:
    """The driver's :class:`~jaxadv.engine.driver.RunOptions` for ``args`` and its
    ``record`` (:func:`write_config`'s): seeds, calls, checkpoints under
    ``--out/checkpoints``; no sinks, display or stop."""
    return RunOptions(seed=args.seed, seeds=args.seeds, chunk_updates=record["run"]["chunk_updates"],
                      checkpoints=args.out / "checkpoints", checkpoint_every=args.checkpoint_every,
                      keep_checkpoints=args.keep_checkpoints, resume=args.resume is not None,
                      debug_nans=args.debug_nans, record=record,
                      seed_groups=record["run"]["seed_groups"], devices=args.devices)


def write_run_outputs(result: RunResult, out: pathlib.Path, *, quiet: bool = False,
                      title: str | None = None) -> None:
    """Write ``summary.json`` and ``returns.png`` of a finished run (and ``telemetry.png``
    where its metrics hold ``TrainConfig.telemetry``'s); print the summary table."""
    config, summary = result.trainer.config, result.summary
    write_json(out / "summary.json", summary)
    steps = np.arange(1, config.num_updates + 1) * config.batch_size
    title = title or f"{config.algo} · {config.env} · {summary['seeds']} seed(s)"
    plot_returns(out / "returns.png", steps, np.asarray(result.history["episode_return"], np.float64),
                 np.asarray(result.history["episodes"]), title)
    written = "config.json, metrics.csv, summary.json, returns.png"
    if "adv_mean" in result.history:
        plot_telemetry(out / "telemetry.png", steps, result.history, title)
        written += ", telemetry.png"
    console = Console(quiet=quiet)
    console.print(summary_table(summary))
    console.print(f"wrote {written}, checkpoints/ to {out}/")
