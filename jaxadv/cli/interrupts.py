"""SIGINT and SIGTERM while a command runs (:class:`Interrupts`): the command line's, not the
engine's. The driver (:func:`~jaxadv.engine.driver.drive`) only asks ``stop()`` after each
call; a command answers it from the signals received here.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import ClassVar, cast

from rich.console import Console

from jaxadv.cli.outdir import OutputLock
from jaxadv.engine.driver import RunStopped

__all__ = ["Interrupts"]


class Interrupts:
    """SIGINT and SIGTERM while a command runs: the first asks the driver to stop after the
    call in flight (``signum`` is set); a second ends the process at once with status
    128 + the signal. Checkpoints and sweep chunks are only ever renamed into place, so the
    last one stays good. ``stopping`` and ``intact`` word the two messages.

    ``at_once``: asked on the first signal; where it returns a message (``{signal}`` is
    replaced by the signal's name), the process prints it and ends at once with status
    128 + the signal, as where nothing in flight is worth waiting for (a compile). Where an
    outer guard is installed (the command line's, for a whole command), entering an inner one
    marks the outer ``deferring``: the run has started, so from then on its signal waits
    for the outputs to be written.

    A watcher thread reads the signal numbers that Python's C-level handler writes to a
    wakeup socket, so a signal acts even while the main thread waits on XLA.
    Outside the main thread (where signals cannot be caught) it does nothing.
    """

    _installed_guards: ClassVar[list[Interrupts]] = []

    def __init__(self, console: Console, *,
                 stopping: str = "the call in flight to save a checkpoint",
                 intact: str = "the last finished checkpoint is intact",
                 at_once: Callable[[], str | None] | None = None):
        self.console = console
        self.signum: int | None = None
        self.deferring = False
        self._installed = False
        self._stopping, self._intact, self._at_once = stopping, intact, at_once

    def stopped(self, progress: str, saved: str, resume: str) -> RunStopped:
        """The :class:`RunStopped` for the signal received: ``"<SIGNAL>: stopped after
        <progress>; saved <saved>"`` and the command that resumes, status 128 + the signal."""
        signum = cast(int, self.signum)  # a signal came
        name = signal.Signals(signum).name
        return RunStopped(f"{name}: stopped after {progress}; saved {saved}\nresume with: {resume}",
                          128 + signum, reason="stopped")

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        for outer in Interrupts._installed_guards:
            outer.deferring = True
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
        self._thread = threading.Thread(target=self._watch, name="jaxadv-signals", daemon=True)
        self._thread.start()
        self._installed = True
        Interrupts._installed_guards.append(self)
        return self

    def _watch(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                name = signal.Signals(signum).name
                if self.signum is None:
                    message = None if self.deferring or self._at_once is None else self._at_once()
                    if message is not None:
                        os.write(2, f"\n{message.format(signal=name)}\n".encode())
                        OutputLock.unlink_held()
                        os._exit(128 + signum)
                    self.signum = signum
                    self.console.print(f"{name}: stopping after {self._stopping}; again to "
                                       "quit at once")
                else:
                    os.write(2, f"\nquitting at once; {self._intact}\n".encode())
                    OutputLock.unlink_held()
                    os._exit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        if not self._installed:
            return
        Interrupts._installed_guards.remove(self)
        for s, handler in self._old.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(self._old_fd)
        self._writer.close()  # the watcher's recv returns b""
        self._thread.join(timeout=5)
        self._reader.close()
