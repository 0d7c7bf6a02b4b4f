"""Output directories: one writer at a time, no finished run replaced by accident, and
files that are whole or absent.

Every command that writes a run (``train``, ``sequence``, ``sweep``, ``eval``) holds
:class:`OutputLock` on its ``--out`` while it writes: an advisory ``fcntl.flock`` on
``OUT/.jaxadv.lock``, which also records the holder's PID and start time and is deleted
when the command ends. The kernel drops the lock when its process ends, however it ends
(``kill -9`` included), so a lock file left behind never blocks a resume; a second writer
is refused with ``DIR is in use by process PID (started ...)``.

:func:`check_fresh` refuses a fresh run into a directory that already holds a run (a
finished one, an unfinished one, or one of another kind) unless ``--overwrite`` was given;
:func:`remove_run` then deletes that run's files, and only those.

:func:`replace_atomically` gives the temporary name that a plot, CSV or JSON file is
written to before it is renamed into place, so an interrupted or failed write leaves the
old file (or none), never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import shlex
import shutil
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "RUN_FILES",
    "OutputLock",
    "RunFound",
    "check_fresh",
    "describe_os_error",
    "find_run",
    "remove_run",
    "replace_atomically",
]

LOCK_NAME = ".jaxadv.lock"
_HELD: set[pathlib.Path] = set()  # the directories this process holds locked

RUN_FILES = (
    "config.json", "sequence.json", "metrics.csv", "summary.json", "returns.png", "reward.png",
    "telemetry.png", "checkpoints", "tb", "wandb", "chunks", "sweep.csv", "sweep.png", "eval",
    "eval.json", "search", "search.csv", "search.png", "pbt.csv", "pbt.png", "selection.png",
    "best.npz",
)
"""What jaxadv's commands write into ``--out``: :func:`remove_run` deletes these and nothing else."""


class RunFound:
    """A run found in a directory: its ``kind`` (``"train"``, ``"sequence"``, ``"sweep"``,
    ``"eval"``), whether it ``finished``, and ``progress`` (words, e.g. ``"update 8 of 20"``)."""

    def __init__(self, kind: str, finished: bool, progress: str = ""):
        self.kind, self.finished, self.progress = kind, finished, progress

    def __repr__(self) -> str:
        return f"RunFound({self.kind!r}, finished={self.finished}, progress={self.progress!r})"


def _checkpoint_steps(directory: pathlib.Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def find_run(directory: pathlib.Path) -> RunFound | None:
    """The run that ``directory`` holds, or ``None`` when nothing in it could be lost.

    A sweep has ``chunks/manifest.json`` (finished when it says so) or ``sweep.csv``; a
    search has ``search/`` (a halving search's saved rungs), ``search.csv`` or ``pbt.csv``,
    and is finished once it wrote ``summary.json``; a
    train or sequence run (``sequence.json`` marks the latter) has ``summary.json`` when
    finished and checkpoints when it can be resumed; ``eval.json`` is an evaluation. A
    ``config.json`` alone (a run stopped while compiling) holds nothing to lose.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return None
    manifest = directory / "chunks" / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            complete = bool(data.get("complete"))
            progress = f"{len(data.get('chunks', {}))} chunk(s) saved"
        except (OSError, ValueError, AttributeError):
            complete, progress = False, "an unreadable manifest"
        return RunFound("sweep", complete or (directory / "sweep.csv").is_file(), progress)
    if (directory / "sweep.csv").is_file():
        return RunFound("sweep", True)
    if any((directory / name).exists() for name in ("search", "search.csv", "pbt.csv")):
        saved = _checkpoint_steps(directory / "search")  # rungs (halving) or intervals (PBT)
        unit = "rung"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            settings = json.loads((directory / "search" / "settings.json").read_text())
            unit = "interval" if settings.get("search") == "pbt" else "rung"
        return RunFound("sweep", (directory / "summary.json").is_file(),
                        f"{saved[-1] if saved else 0} {unit}(s) saved")
    kind = "sequence" if (directory / "sequence.json").is_file() else "train"
    steps = _checkpoint_steps(directory / "checkpoints")
    total = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        total = _num_updates(json.loads((directory / "config.json").read_text())["train_config"])
    summary = (directory / "summary.json").is_file() and (directory / "config.json").is_file()
    if summary and (not steps or total is None or steps[-1] >= total):
        return RunFound(kind, True)
    if steps:
        return RunFound(kind, False, f"update {steps[-1]}" + (f" of {total}" if total else ""))
    if (directory / "eval.json").is_file():
        return RunFound("eval", True)
    return None


def _num_updates(config: dict[str, Any]) -> int:
    return config["total_timesteps"] // (config["num_envs"] * config["num_steps"])


def check_fresh(out: pathlib.Path, kind: str, *, overwrite: bool) -> None:
    """Refuse (``ValueError``, naming ``out``) to start a fresh ``kind`` run in ``out`` when it
    holds a run, unless ``overwrite``; an unfinished run of the same kind is pointed at
    ``--resume``. Also refuses when another process writes there (:meth:`OutputLock.check`)."""
    OutputLock(out).check()
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out`: {out} is a file, not a directory")
    found = find_run(out)
    if found is None or overwrite:
        return
    quoted = shlex.quote(str(out))
    run = "sweep" if found.kind == "sweep" else f"{found.kind} run"
    if not found.finished and found.kind == kind and kind != "eval":
        raise ValueError(
            f"`out`: {out} holds an unfinished {run} ({found.progress}); continue it with "
            f"`jaxadv {kind} --resume {quoted}`, or start over with --overwrite (which deletes it)")
    state = "a finished" if found.finished else "an unfinished"
    what = "an evaluation (eval.json)" if found.kind == "eval" else f"{state} {run}"
    raise ValueError(f"`out`: {out} holds {what}; choose another --out, or replace it with "
                     "--overwrite (which deletes it)")


def remove_run(out: pathlib.Path) -> list[str]:
    """Delete the files of a run in ``out`` (:data:`RUN_FILES`; nothing else); return their names."""
    removed = []
    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


class OutputLock:
    """An exclusive advisory lock on the directory ``out`` (``out/.jaxadv.lock``), held from
    :meth:`acquire` (which creates ``out``) until :meth:`release` or the process's end.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, OutputLock(pathlib.Path(d)):
    ...     OutputLock(pathlib.Path(d)).acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `out`: ... is in use by process ... (started ...); wait for it to end or choose another --out
    """

    def __init__(self, out: pathlib.Path):
        self.out = pathlib.Path(out)
        self.path = self.out / LOCK_NAME
        self._fd: int | None = None

    def _holder(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            pid, started = self.path.read_text().split(maxsplit=1)
            return f"process {int(pid)} (started {started.strip()})"
        return "another process"

    def _busy(self) -> ValueError:
        return ValueError(f"`out`: {self.out} is in use by {self._holder()}; wait for it to "
                          "end or choose another --out")

    def check(self) -> None:
        """Raise the in-use ``ValueError`` when another process holds the lock (takes nothing;
        a lock this process holds passes)."""
        if self.out.resolve() in _HELD or not self.path.is_file():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy() from None
        finally:
            os.close(fd)  # closing drops a lock taken here

    def acquire(self) -> OutputLock:
        """Create ``out`` and take the lock; ``ValueError`` when another process holds it,
        ``OSError`` when ``out`` cannot be created or written."""
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"`out`: {self.out} is a file, not a directory")
        self.out.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            try:  # the file may have been released (unlinked) between open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd
        _HELD.add(self.out.resolve())
        return self

    @staticmethod
    def unlink_held() -> None:
        """Delete the lock files of every directory this process holds locked, for an exit
        that skips :meth:`release` (``os._exit`` on a signal while compiling, or a second
        one): the flocks drop with the process, and the files go with them."""
        for out in list(_HELD):
            with contextlib.suppress(OSError):
                (out / LOCK_NAME).unlink()

    def release(self) -> None:
        """Delete the lock file and drop the lock (a process that dies drops it too, leaving
        the file, which the next :meth:`acquire` takes over)."""
        if self._fd is not None:
            _HELD.discard(self.out.resolve())
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def replace_atomically(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary name beside ``path`` (same suffix, so writers infer the format); on
    success rename it to ``path``, on failure delete it."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error: what failed, on which file, without a traceback.

    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device", "runs/a/x.csv"))
    'no space left on device while writing runs/a/x.csv'
    """
    where = exc.filename if exc.filename is not None else None
    if exc.errno == errno.ENOSPC:
        return "no space left on device" + (f" while writing {where}" if where else "")
    reason = (exc.strerror or str(exc)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    return f"{where}: {reason}" if where else reason
