"""The command line's view of the engine's settings.

:class:`~jaxadv.engine.train.TrainConfig` is a plain dataclass of the engine, which imports no
command-line library. Here it gains what ``--help`` shows beyond its field docstrings: the
choices of ``--algo``, ``--estimator`` and ``--network`` described from their tables' rows, and the
fields that are not flags (``env_kwargs``, set by Python callers and by presets). Commands
parse a :class:`TrainOptions`, which is a ``TrainConfig`` with the same fields, checks and
behaviour, and hand it to the engine as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import tyro

from jaxadv.engine.algorithms import ALGORITHMS
from jaxadv.engine.architectures import NETWORKS
from jaxadv.engine.estimators import ESTIMATORS
from jaxadv.engine.train import TrainConfig

__all__ = ["TrainOptions", "network_help", "table_help"]


def table_help(table: dict[str, Any], what: str) -> str:
    """``--help`` text of a choice among a table's rows: ``what: name (summary); ...``."""
    return f"{what}: " + "; ".join(f"{name} ({row.summary})" for name, row in table.items()) + "."


def network_help() -> str:
    """``--network``'s help: each row of :data:`~jaxadv.engine.architectures.NETWORKS` with its
    summary, then the rows that are the default for image and for flat observations."""
    defaults = [f"{name} for {row.default_for} observations" for name, row in NETWORKS.items()
                if row.default_for]
    return f"{table_help(NETWORKS, 'network')[:-1]}; default: {', '.join(defaults)}."


@dataclasses.dataclass(frozen=True)
class TrainOptions(TrainConfig):
    """Static settings: they fix array shapes or program structure; changing one recompiles."""

    # Strings under ``from __future__ import annotations``, evaluated when tyro reads the class:
    # the choices and help of the tables as they are then (rows added at run time count).
    algo: Annotated[Literal[tuple(ALGORITHMS)],  # type: ignore[valid-type]
                    tyro.conf.arg(help=table_help(ALGORITHMS, "algorithm"))] = "ppo"
    estimator: Annotated[Literal[tuple(ESTIMATORS)] | None,  # type: ignore[valid-type]
                         tyro.conf.arg(help=table_help(
        ESTIMATORS, "advantage estimator (default: the algorithm's; the sequence-level "
        "ones need --episodic)"))] = None
    # A string under ``from __future__ import annotations``, evaluated when tyro reads the
    # class: the choices and help of the table as it is then (rows added at run time count).
    network: Annotated[Literal[tuple(NETWORKS)] | None,  # type: ignore[valid-type]
                       tyro.conf.arg(help=network_help())] = None
    env_kwargs: tyro.conf.Suppress[tuple[tuple[str, Any], ...]] = ()

