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

__all__ = ["TrainOptions", "network_help", "row_default_help", "table_help"]


def table_help(table: dict[str, Any], what: str) -> str:
    """``--help`` text of a choice among a table's rows: ``what: name (summary); ...``."""
    return f"{what}: " + "; ".join(f"{name} ({row.summary})" for name, row in table.items()) + "."


def network_help() -> str:
    """``--network``'s help: each row of :data:`~jaxadv.engine.architectures.NETWORKS` with its
    summary, then the rows that are the default for image and for flat observations."""
    defaults = [f"{name} for {row.default_for} observations" for name, row in NETWORKS.items()
                if row.default_for]
    return f"{table_help(NETWORKS, 'network')[:-1]}; default: {', '.join(defaults)}."


def row_default_help(what: str, field: str, values: dict[Any, str] | None = None) -> str:
    """``--help`` of a setting whose default is the algorithm's: ``what``, then the
    :data:`~jaxadv.engine.algorithms.ALGORITHMS` rows grouped by their ``field`` (each value
    written as ``values`` says, else as it is), e.g. ``"...; default: 4 for ppo, dapo; 1 for
    a2c."``."""
    groups: dict[Any, list[str]] = {}
    for name, row in ALGORITHMS.items():
        groups.setdefault(getattr(row, field), []).append(name)
    parts = [f"{(values or {}).get(v, v)} for {', '.join(names)}" for v, names in groups.items()]
    return f"{what}; default: the algorithm's, {'; '.join(parts)}."


def _clipping_help() -> str:
    """``--clip-value-loss``'s help, naming the algorithms whose rows clip the value loss."""
    rows = ", ".join(name for name, row in ALGORITHMS.items() if row.clip_value)
    return ("clip the value loss around the rollout's values by clip_eps, with the algorithms "
            f"whose row clips it ({rows}).")


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
    update_epochs: Annotated[int | None, tyro.conf.arg(help=row_default_help(
        "passes over each rollout", "update_epochs"))] = None
    num_minibatches: Annotated[int | None, tyro.conf.arg(help=row_default_help(
        "minibatches per epoch", "num_minibatches"))] = None
    normalize_advantages: Annotated[bool | None, tyro.conf.arg(help=row_default_help(
        "standardise advantages per minibatch (never by default with a sequence-level "
        "estimator, which sets its own scale)", "normalize_advantages",
        {True: "on", False: "off"}))] = None
    clip_value_loss: Annotated[bool, tyro.conf.arg(help=_clipping_help())] = True
    env_kwargs: tyro.conf.Suppress[tuple[tuple[str, Any], ...]] = ()

