"""The command line (``jaxadv train | sweep | eval | sequence | variance | check``): the top layer.

Each command is one module (:mod:`jaxadv.cli.train`, :mod:`jaxadv.cli.sweep`, ...) with its
argument schema and help; :mod:`jaxadv.cli.app` parses and dispatches. What the commands
share sits beside them: output directories (:mod:`jaxadv.cli.outdir`), plots and summaries
(:mod:`jaxadv.cli.report`) and the TensorBoard / W&B loggers (:mod:`jaxadv.cli.tracking`).
Commands import from these and from the layers below, never from each other.

Importing this package imports nothing else (the W&B logger's process imports only
:mod:`jaxadv.cli.tracking`, without jax).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """``jaxadv ...``: parse ``argv`` (default ``sys.argv[1:]``) and run the command;
    returns the exit status."""
    from jaxadv.cli.app import main as run

    return run(argv)
