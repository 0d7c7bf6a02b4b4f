"""``jaxadv check MODULE:FUNCTION --kind gae``: run the conformance kit on anyone's estimator
or policy loss.

Imports ``FUNCTION`` from ``MODULE`` (a module on ``sys.path`` or a ``.py`` file path), runs
:func:`~jaxadv.testing.check_advantages` (``--kind`` one of :data:`~jaxadv.testing.KINDS`),
:func:`~jaxadv.testing.check_sequence_advantages` (one of
:data:`~jaxadv.testing.SEQUENCE_KINDS`) or :func:`~jaxadv.testing.check_policy_loss` (one of
:data:`~jaxadv.testing.POLICY_LOSS_KINDS`, with ``--reduction``, ``--clip-eps`` and
``--clip-high``) with the ``--adapter`` that says how its signature maps onto jaxadv's
arrays, prints the report's table and returns exit status 0 when every check passed, 1 when
one failed (:class:`CheckFailed`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pathlib
from collections.abc import Callable
from typing import Annotated, Literal

import tyro

from jaxadv.testing import (
    JAXADV,
    KINDS,
    LOSS_JAXADV,
    POLICY_LOSS_KINDS,
    PUREJAXRL,
    RLAX,
    SEQUENCE_GROUPED,
    SEQUENCE_JAXADV,
    SEQUENCE_KINDS,
    Adapter,
    LossAdapter,
    Report,
    SequenceAdapter,
    check_advantages,
    check_policy_loss,
    check_sequence_advantages,
    jaxadv_style,
    loss_style,
)

__all__ = ["ADAPTERS", "CheckArgs", "CheckFailed", "check_command", "load_function"]

_Adapters = tuple[Adapter | None, SequenceAdapter | None, LossAdapter | None]

ADAPTERS: dict[str, _Adapters] = {
            "jaxadv": (JAXADV, SEQUENCE_JAXADV, LOSS_JAXADV), "rlax": (RLAX, None, None),
            "purejaxrl": (PUREJAXRL, None, None), "grouped": (None, SEQUENCE_GROUPED, None),
            "batch-major": (jaxadv_style(batch_major=True, name="batch-major"), None,
                            loss_style(batch_major=True, name="batch-major"))}
"""``--adapter`` choices: the kit's adapter for a time-major kind, a sequence-level kind and
a policy loss (``None``: not for that family)."""

_REDUCTIONS = ("token", "sequence", "constant")


def _family(kind: str) -> int:
    """0: a time-major estimator, 1: a sequence-level one, 2: a policy loss."""
    return 1 if kind in SEQUENCE_KINDS else 2 if kind in POLICY_LOSS_KINDS else 0


@dataclasses.dataclass(frozen=True)
class CheckArgs:
    """Check an advantage estimator or a policy loss of yours against jaxadv's definitions
    (estimators: numpy loop references, termination and truncation on the same, last and
    every step, T = 1, a batch of one, bf16, jit and vmap over a traced γ/λ; losses: numpy
    references of the value and gradient with padding, nan padding, bf16, jit, vmap, and the
    exact on-policy gradient against ∇J on a tabular MDP and a token task); exit status 1 if
    a check fails."""

    target: Annotated[str, tyro.conf.Positional]
    """MODULE:FUNCTION, e.g. mypkg.returns:gae or path/to/file.py:gae."""
    kind: Literal[KINDS + SEQUENCE_KINDS + POLICY_LOSS_KINDS]  # type: ignore[valid-type]
    """what the function claims to compute: an estimator (returns ... lambda_returns), a sequence-level one (grpo ... remax) or a policy loss (pg, ppo, dapo, cispo, gspo)."""
    adapter: Literal[tuple(ADAPTERS)] = "jaxadv"  # type: ignore[valid-type]
    """how its signature maps onto jaxadv's arrays: jaxadv (jaxadv's own signatures), rlax (per sequence, a discount array, no truncation input), purejaxrl (done = terminated or truncated, returns (advantages, targets)), grouped (group estimators over [groups, K] returns), batch-major (jaxadv's signatures on [B, T] arrays; estimators and losses)."""
    reduction: Literal[_REDUCTIONS] = "token"  # type: ignore[valid-type]
    """policy losses but gspo: how the loss averages its tokens (token: over all tokens; sequence: per sequence, then over sequences; constant: divided by T·B)."""
    clip_eps: float = 0.2
    """policy losses: ε of ppo, ε_low of dapo, cispo and gspo (inf: no lower bound)."""
    clip_eps_high: Annotated[float | None, tyro.conf.arg(aliases=("--clip-high",))] = None
    """dapo, cispo, gspo: ε_high (default: clip-eps); HParams' name, --clip-high also works."""

    def check(self) -> CheckArgs:
        """Refuse a target that is not MODULE:FUNCTION, does not import or names no function,
        and an adapter of the other family, with a ``ValueError``."""
        if self.target.count(":") != 1 or not all(self.target.split(":")):
            raise ValueError(f"`target` {self.target!r} must be MODULE:FUNCTION, e.g. "
                             "mypkg.returns:gae")
        family = _family(self.kind)
        if self.kind == "ppo" and self.clip_eps_high is not None:
            raise ValueError("`clip_eps_high`: ppo clips symmetrically (--clip-eps); use --kind dapo")
        if ADAPTERS[self.adapter][family] is None:
            fits = sorted(name for name, pair in ADAPTERS.items() if pair[family] is not None)
            raise ValueError(f"`adapter` {self.adapter!r} does not fit kind {self.kind!r}; "
                             f"choose one of {fits}")
        load_function(self.target)
        return self


class CheckFailed(Exception):
    """At least one check failed (exit status 1); ``report`` holds them all."""

    def __init__(self, report: Report):
        super().__init__(f"{len(report.failed)} check(s) failed: {', '.join(report.failed)}")
        self.report = report


def load_function(target: str) -> Callable:
    """``FUNCTION`` of ``MODULE:FUNCTION`` (``MODULE`` dotted, or a ``.py`` path); raises
    ``ValueError`` naming what could not be imported or found."""
    module_name, _, name = target.partition(":")
    try:
        if module_name.endswith(".py"):
            path = pathlib.Path(module_name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.is_file():
                raise ImportError(f"no file {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any error while importing it
        raise ValueError(f"`target`: {module_name!r} does not import "
                         f"({type(exc).__name__}: {exc})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"`target`: {module_name!r} has no function {name!r}")
    return fn


def check_command(args: CheckArgs) -> Report:
    """Run the kit on ``args.target`` (checked by :meth:`CheckArgs.check`), print its table,
    return the report; raises :class:`CheckFailed` when a check failed."""
    fn = load_function(args.target)
    family = _family(args.kind)
    adapters = ADAPTERS[args.adapter]
    if family == 2:
        report = check_policy_loss(fn, args.kind, adapter=adapters[2], reduction=args.reduction,
                                   clip_eps=args.clip_eps, clip_high=args.clip_eps_high)
    elif family:
        report = check_sequence_advantages(fn, args.kind, adapter=adapters[1])
    else:
        report = check_advantages(fn, args.kind, adapter=adapters[0])
    print(report)
    if not report.passed:
        raise CheckFailed(report)
    return report
