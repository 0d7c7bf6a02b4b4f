"""``jaxadv train``: one :class:`~jaxadv.engine.train.TrainConfig` on several seeds at once.

``jaxadv train --env CartPole-v1 --algo ppo --seeds 16 --out runs/cartpole`` runs
:func:`~jaxadv.engine.driver.drive` (compiled chunks of updates, progress between them,
checkpoints under ``--out/checkpoints/``, Ctrl-C/SIGTERM save and exit, non-finite stops)
and writes ``config.json``, ``metrics.csv``, ``summary.json``, ``returns.png`` and
``telemetry.png`` under ``--out``. ``jaxadv train --resume runs/cartpole`` continues a run
from its latest good checkpoint, bit for bit as if it had not stopped. The run's schema and machinery
(:class:`~jaxadv.cli.runs.TrainArgs`) are shared with ``jaxadv sequence``
(:mod:`jaxadv.cli.runs`).
"""

from __future__ import annotations

from typing import Any

from jaxadv.cli.outdir import OutputLock
from jaxadv.cli.runs import TrainArgs, drive_logged, prepare_out, write_run_outputs

__all__ = ["TrainArgs", "train_command"]


def train_command(args: TrainArgs) -> dict[str, Any]:
    """Run ``args`` with :func:`~jaxadv.engine.driver.drive`; write ``config.json`` first and
    ``summary.json`` and ``returns.png`` at the end; return the summary. Raises
    :class:`~jaxadv.engine.driver.RunStopped` when interrupted, on non-finite values, or with no
    usable checkpoint to resume."""
    with OutputLock(args.out):
        args.check()
        prepare_out(args)
        return drive_logged(args, lambda result: write_run_outputs(result, args.out,
                                                                   quiet=args.quiet)).summary
