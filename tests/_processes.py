"""Subprocess and signal helpers shared by the interrupt tests."""

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Sequence


def interrupt_when(cmd: Sequence[str], ready: Callable[[], bool], *, within: float) -> tuple[int, str]:
    """Start ``cmd``, send SIGINT once ``ready()`` holds (failing if it does not within
    ``within`` seconds), and return ``(exit status, stderr)``; the process is always killed."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + within
        while not ready() and proc.poll() is None:
            assert time.monotonic() < deadline, f"not ready within {within} s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err


class ModulesLogger:
    """A logger (for :class:`jaxadv.cli.tracking.OtherProcess`) that writes, when built, whether
    its process has imported jax to ``path``."""

    seconds = 0.0

    def __init__(self, path):
        import sys

        with open(path, "w") as f:
            f.write(str("jax" in sys.modules))

    def close(self):
        pass


@contextlib.contextmanager
def signalled_searches():
    """While it is open, the searches' interrupts (``jaxadv.cli.search.Interrupts``) have seen
    SIGINT from the start: a halving or PBT search stops after its first save, as after a
    Ctrl-C during its first rung or call (the signal handling itself is the other commands'
    tests')."""
    import pytest

    from jaxadv.cli import search

    class SignalledAtStart(search.Interrupts):
        def __enter__(self):
            self.signum = signal.SIGINT
            return self

        def __exit__(self, *exc):
            return False

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "Interrupts", SignalledAtStart)
        yield
