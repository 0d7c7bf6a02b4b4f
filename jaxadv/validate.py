"""Argument checks shared by every command and estimator: each refuses a bad value with a
``ValueError`` that names the field (or array) and what is allowed."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["SEED_LIMIT", "HParamSpec", "attribute_docs", "check_choice", "check_positive", "check_seed",
           "field_changes", "hparam", "hparam_specs", "positive_int", "refuse_changes", "same_shape"]


def check_choice(field: str, value: Any, allowed: Sequence) -> None:
    """Refuse ``value`` unless it is one of ``allowed`` (suggesting the closest one).

    >>> check_choice("algo", "ppo", ("ppo", "a2c"))
    >>> check_choice("algo", "pp0", ("ppo", "a2c"))
    Traceback (most recent call last):
    ...
    ValueError: `algo` = 'pp0' is not allowed; choose one of ['ppo', 'a2c']. Did you mean 'ppo'?
    """
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        extra = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"`{field}` = {value!r} is not allowed; choose one of {list(allowed)}.{extra}")


SEED_LIMIT = 2**62
"""Seeds are integers in (−SEED_LIMIT, SEED_LIMIT): a 64-bit PRNG seed, with room for the
offsets that commands add to it."""


def check_seed(value: Any, field: str = "seed") -> None:
    """Refuse a seed that is not an ``int`` in (−2⁶², 2⁶²) (``jax.random.key`` takes 64 bits).

    >>> check_seed(99999999999999999999)
    Traceback (most recent call last):
    ...
    ValueError: `seed` = 99999999999999999999 is not allowed; it must be an integer with |seed| < 2**62
    """
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= SEED_LIMIT:
        raise ValueError(f"`{field}` = {value!r} is not allowed; it must be an integer with "
                         f"|{field}| < 2**62")


def positive_int(field: str, value: Any, *, minimum: int = 1) -> None:
    """Refuse ``value`` unless it is an ``int`` (not a ``bool``) of at least ``minimum``.

    >>> positive_int("seeds", 0)
    Traceback (most recent call last):
    ...
    ValueError: `seeds` must be a positive integer, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{field}` must be {what}, got {value!r}")


def same_shape(**arrays: Any) -> tuple[int, ...]:
    """The one shape that all of ``arrays`` share; else a ``ValueError`` naming the first
    array whose shape differs from the first one's, with both shapes (and, for three or
    more arrays, every shape).

    Works on NumPy and JAX arrays, traced ones included (only shapes are read).

    >>> same_shape(mean=np.zeros((3, 2)), log_std=np.zeros((3, 2)))
    (3, 2)
    >>> same_shape(mean=np.zeros((3, 2)), log_std=np.zeros(2))
    Traceback (most recent call last):
    ...
    ValueError: log_std must have the same shape as mean: log_std.shape=(2,), mean.shape=(3, 2)
    """
    if not arrays:
        raise TypeError("same_shape() needs at least one array")
    shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
    first_name, first = next(iter(shapes.items()))
    for name, shape in shapes.items():
        if shape != first:
            listing = ""
            if len(shapes) > 2:
                listing = " (all: " + ", ".join(f"{k}.shape={v}" for k, v in shapes.items()) + ")"
            raise ValueError(f"{name} must have the same shape as {first_name}: "
                             f"{name}.shape={shape}, {first_name}.shape={first}{listing}")
    return first


def check_positive(args: Any, *fields: str) -> None:
    """:func:`positive_int` for each of ``fields`` of ``args`` that is not ``None``."""
    for field in fields:
        value = getattr(args, field)
        if value is not None:
            positive_int(field, value)


def field_changes(old: Any, new: Any, names: Sequence[str] = (),
                   prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(prefix + name, old value, new value)`` for each of ``names`` (default: every field
    of the dataclass ``old``) that differs between ``old`` and ``new``."""
    for name in names or [f.name for f in dataclasses.fields(old)]:
        if getattr(old, name) != getattr(new, name):
            yield prefix + name, getattr(old, name), getattr(new, name)


def refuse_changes(changes: Iterator[tuple[str, Any, Any]], what: str, where: pathlib.Path) -> None:
    """Raise a ValueError naming the first ``(field, old, new)`` that would change the resumed
    ``what`` ("run" or "sweep") stored in ``where``."""
    for field, old, new in changes:
        raise ValueError(
            f"`{field}` = {new!r} would change the {what} being resumed, which has "
            f"{field} = {old!r} (in {where}); a resumed {what} keeps its settings: leave the "
            f"flag out, or start a new {what} with another --out"
        )


@dataclasses.dataclass(frozen=True)
class HParamSpec:
    """One numeric hyperparameter's definition, kept as its dataclass field's metadata
    (:func:`hparam`): what it means (``doc``) and its range, bounded below by ``low`` and
    above by ``high`` (``None``: unbounded), each bound included unless ``low_open`` /
    ``high_open``. Checks, command-line flags and search bounds are read from it.

    >>> HParamSpec("discount factor γ.", low=0.0, high=1.0).allowed
    'in [0, 1]'
    >>> HParamSpec("Adam learning rate.", low=0.0, low_open=True).check("lr", -1.0)
    Traceback (most recent call last):
    ...
    ValueError: `lr` = -1.0 is not allowed; it must be > 0
    """

    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def allowed(self) -> str:
        """The range in words: ``> 0``, ``>= 0``, ``<= 1``, ``in [0, 1]``, ``in (0, 1]``, ``any``."""
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                    f"{self.high:g}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "any"

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` with ``-inf`` / ``inf`` for a missing bound (an open bound as given)."""
        return (-math.inf if self.low is None else self.low,
                math.inf if self.high is None else self.high)

    def contains(self, value: Any) -> np.ndarray:
        """Elementwise: whether ``value`` (any shape) lies in the range."""
        x = np.asarray(value, dtype=np.float64)
        ok = np.ones(x.shape, dtype=bool)
        if self.low is not None:
            ok &= (x > self.low) if self.low_open else (x >= self.low)
        if self.high is not None:
            ok &= (x < self.high) if self.high_open else (x <= self.high)
        return ok

    def check(self, field: str, value: Any) -> None:
        """Refuse ``value`` (a number or an array of them) unless every entry is finite and
        in the range, with a ``ValueError`` naming ``field``."""
        arr = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{field}` = {value!r} is not allowed; it must be a finite "
                             f"number {self.allowed}")
        if not np.all(self.contains(arr)):
            raise ValueError(f"`{field}` = {value!r} is not allowed; it must be {self.allowed}")


def hparam(default: float, doc: str, *, gt: float | None = None, ge: float | None = None,
           lt: float | None = None, le: float | None = None) -> Any:
    """A dataclass field with ``default`` whose metadata ``"hparam"`` is its
    :class:`HParamSpec`: ``doc`` and the range ``> gt`` or ``>= ge``, ``< lt`` or ``<= le``.

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class H:
    ...     gamma: float = hparam(0.99, "discount factor γ.", ge=0.0, le=1.0)
    >>> hparam_specs(H)["gamma"].allowed, H().gamma
    ('in [0, 1]', 0.99)
    """
    if (gt is not None and ge is not None) or (lt is not None and le is not None):
        raise TypeError("hparam() takes at most one lower (gt, ge) and one upper (lt, le) bound")
    low, high = ge if gt is None else gt, le if lt is None else lt
    spec = HParamSpec(doc, low=None if low is None else float(low),
                      high=None if high is None else float(high),
                      low_open=gt is not None, high_open=lt is not None)
    return dataclasses.field(default=default, metadata={"hparam": spec})


def hparam_specs(cls: Any) -> dict[str, HParamSpec]:
    """``field name -> HParamSpec`` for each field of the dataclass ``cls`` made with
    :func:`hparam`, in field order."""
    return {f.name: f.metadata["hparam"] for f in dataclasses.fields(cls) if "hparam" in f.metadata}


def attribute_docs(doc: str | None, specs: dict[str, HParamSpec]) -> str:
    """The class docstring ``doc`` (cleaned of its indentation) followed by a Google-style
    ``Attributes:`` section of ``specs``' docs, one field a line: what Sphinx and tyro's
    ``--help`` read for a field without a docstring of its own."""
    lines = "".join(f"    {name}: {spec.doc}\n" for name, spec in specs.items())
    return f"{inspect.cleandoc(doc or '')}\n\nAttributes:\n{lines}"
