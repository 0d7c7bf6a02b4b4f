"""A conformance kit: check *your* advantage estimator against jaxadv's definitions.

:func:`check_advantages` runs a function that claims to compute one of the time-major
estimators (``kind`` in :data:`KINDS`: ``"returns"``, ``"td"``, ``"nstep"``, ``"gae"``,
``"lambda_returns"``) through a fixed list of checks, each against a plain-NumPy loop
written from the definitions in :mod:`jaxadv.advantages` (docs/design.md, "Truncation and
termination"): terminations stop the return and bootstrap nothing, truncations stop it and
bootstrap from the final observation's value ``next_values[t]``, and the end of the window
bootstraps from ``next_values[T − 1]``. :func:`check_sequence_advantages` does the same for
the critic-free sequence-level estimators (:data:`SEQUENCE_KINDS`). Both return a
:class:`Report`: one :class:`CheckResult` row per check with its worst absolute error and,
for a failure, the smallest failing input found, as small NumPy arrays.

:func:`check_policy_loss` checks a policy loss (``kind`` in :data:`POLICY_LOSS_KINDS`:
``"pg"``, ``"ppo"``, ``"dapo"``, ``"cispo"``, and the sequence-level ``"gspo"``) the same
way: its value and gradient with respect to the log-probabilities against
:func:`reference_policy_loss` (closed forms in NumPy) with and without padding, and, on
policy, its exact expected gradient against ∇J on a tabular MDP and on an enumerable token
task, every trajectory weighted by its exact probability (the exact tools are written here
in NumPy: ``jaxadv.testing`` is a pure module and imports nothing of ``jaxadv.science``).
A :class:`LossAdapter` (default :data:`LOSS_JAXADV`, :mod:`jaxadv.losses`' signatures; or
:func:`loss_style`) says how the loss is called.

An :class:`Adapter` says how the function's signature maps onto jaxadv's arrays. Ready-made
ones: :data:`JAXADV` (jaxadv's own signatures, the default), :data:`RLAX` (rlax's
per-sequence functions with a discount array and one value stream: no truncation input),
:data:`PUREJAXRL` (an inline GAE that takes ``done = terminated or truncated`` and returns
``(advantages, targets)``), and the factories :func:`jaxadv_style` (tuple outputs,
batch-major ``[B, T]`` arrays) and :func:`done_only`. Any callable
``call(fn, kind, rollout, hp)`` that returns what the function returns can be an adapter.

The inputs are consistent rollouts: ``next_values[t] == values[t + 1]`` wherever the
episode goes on past ``t`` inside the window, so a function that only sees one value stream
(``values`` plus a bootstrap value) can still be right wherever no episode is truncated.
Nothing here calls LAPACK (docs/design.md, "Batched LAPACK under vmap").

>>> import jaxadv
>>> report = check_advantages(jaxadv.gae, "gae", checks=("reference", "truncated_every_step"))
>>> report.passed
True
>>> report.raise_for_failures()  # an AssertionError with a diff when a check fails
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "JAXADV",
    "KINDS",
    "LOSS_JAXADV",
    "POLICY_LOSS_KINDS",
    "PUREJAXRL",
    "RLAX",
    "SEQUENCE_GROUPED",
    "SEQUENCE_JAXADV",
    "SEQUENCE_KINDS",
    "Adapter",
    "Case",
    "CheckResult",
    "Hyper",
    "LossAdapter",
    "LossHyper",
    "PolicyLossArrays",
    "Report",
    "RolloutArrays",
    "SequenceAdapter",
    "check_advantages",
    "check_policy_loss",
    "check_sequence_advantages",
    "done_only",
    "jaxadv_style",
    "loss_style",
    "reference_advantages",
    "reference_policy_loss",
    "reference_sequence_advantages",
    "rlax_style",
]

KINDS = ("returns", "td", "nstep", "gae", "lambda_returns")
"""The time-major estimators :func:`check_advantages` knows: :func:`jaxadv.discounted_returns`,
:func:`jaxadv.td_errors`, :func:`jaxadv.n_step_advantages`, :func:`jaxadv.gae` and
:func:`jaxadv.lambda_returns`."""

SEQUENCE_KINDS = ("grpo", "drgrpo", "rloo", "batchmean", "rfpp", "remax")
"""The sequence-level estimators :func:`check_sequence_advantages` knows (the names of
:func:`jaxadv.advantages.sequence_advantages`)."""



def __getattr__(name: str) -> Any:
    """``Rollout``, :class:`RolloutArrays`' name of 0.3.0 (a rollout of the engine is
    :class:`jaxadv.engine.rollout.Rollout`), with a ``DeprecationWarning``."""
    if name == "Rollout":
        import warnings

        warnings.warn("jaxadv.testing.Rollout is deprecated: use RolloutArrays",
                      DeprecationWarning, stacklevel=2)
        return RolloutArrays
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_GROUP_KINDS = ("grpo", "drgrpo", "rloo")
_EPS_KINDS = ("grpo", "rfpp")
_OWN = {"returns": "targets", "td": "advantages", "nstep": "advantages", "gae": "advantages",
        "lambda_returns": "targets"}  # what each kind computes: an advantage or a return
_FLAGS = ("terminated", "truncated")


class RolloutArrays(NamedTuple):
    """The arrays of one check, time-major ``[T, B]``, named as :func:`jaxadv.gae` names them:
    ``next_values[t]`` is the value of the observation after step ``t`` (the final one where
    the episode ended at ``t``); ``terminated`` and ``truncated`` are flags."""

    rewards: Any
    values: Any
    next_values: Any
    terminated: Any
    truncated: Any


class Hyper(NamedTuple):
    """The settings passed to an adapter: ``gamma`` and ``lambda_`` (Python floats, or
    traced under the ``jit`` and ``vmap`` checks) and the static ``n`` of ``"nstep"``."""

    gamma: Any
    lambda_: Any
    n: int


# ------------------------------------------------------------------ NumPy references


def _column_return(r, nv, term, trunc, gamma: float, n: int | None) -> np.ndarray:
    """The (at most ``n``-step) return from each ``t`` of one column, walking forward: stop
    at a termination (no bootstrap), or at a truncation, the window's end or the n-th reward
    (bootstrap from ``nv`` there)."""
    T, out = len(r), np.zeros(len(r))
    for t in range(T):
        g, k = 0.0, t
        while True:
            g += gamma ** (k - t) * r[k]
            if term[k]:
                break
            if trunc[k] or k == T - 1 or (n is not None and k - t + 1 == n):
                g += gamma ** (k - t + 1) * nv[k]
                break
            k += 1
        out[t] = g
    return out


def _column_gae(r, v, nv, term, trunc, gamma: float, lambda_: float) -> np.ndarray:
    """GAE of one column as the forward sum ``Σ_k (γλ)^(k−t) δ_k`` up to the first
    termination, truncation or the window's end."""
    T = len(r)
    delta = [r[k] + gamma * (1.0 - term[k]) * nv[k] - v[k] for k in range(T)]
    out = np.zeros(T)
    for t in range(T):
        k = t
        while True:
            out[t] += (gamma * lambda_) ** (k - t) * delta[k]
            if term[k] or trunc[k] or k == T - 1:
                break
            k += 1
    return out


def reference_advantages(kind: str, rollout: RolloutArrays, *, gamma: float, lambda_: float = 0.95,
                         n: int = 3) -> dict[str, np.ndarray]:
    """The NumPy float64 reference of ``kind`` on ``rollout`` (arrays ``[T, B]``), one loop
    per batch column, written from the definitions and not from the library's recursions.

    Returns ``{"advantages": ..., "targets": ...}``, both ``[T, B]``: the advantage and the
    return it implies (``targets = advantages + values``); ``"returns"`` and
    ``"lambda_returns"`` compute the targets, the others the advantages.

    >>> z, r = np.zeros((2, 1)), np.ones((2, 1))
    >>> reference_advantages("returns", RolloutArrays(r, z, z, z, z), gamma=0.5)["targets"][:, 0]
    array([1.5, 1. ])
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
    r, v, nv = (np.asarray(a, np.float64) for a in rollout[:3])
    term, trunc = (np.asarray(a, np.float64) != 0 for a in rollout[3:])
    gamma, lambda_ = float(gamma), float(lambda_)
    cols = range(r.shape[1])
    if kind == "td":
        targets = r + gamma * (1.0 - term) * nv
    elif kind in ("returns", "nstep"):
        steps = n if kind == "nstep" else None
        targets = np.stack([_column_return(r[:, j], nv[:, j], term[:, j], trunc[:, j], gamma,
                                           steps) for j in cols], axis=1)
    else:
        targets = v + np.stack([_column_gae(r[:, j], v[:, j], nv[:, j], term[:, j],
                                            trunc[:, j], gamma, lambda_) for j in cols], axis=1)
    return {"advantages": targets - v, "targets": targets}


def reference_sequence_advantages(kind: str, returns: ArrayLike, *, group_size: int = 1,
                                  greedy_returns: ArrayLike | None = None,
                                  eps: float = 1e-6) -> np.ndarray:
    """The NumPy float64 reference of the sequence-level estimator ``kind`` on ``returns
    [N]`` (groups of ``group_size`` adjacent samples), as
    :func:`jaxadv.advantages.sequence_advantages` defines it:

    * ``grpo``: ``(r − mean_g) / (std_g + eps)`` (population std), ``drgrpo``: ``r − mean_g``;
    * ``rloo``: ``r`` minus the mean of the group's other samples;
    * ``batchmean``: ``R − mean(R)``; ``rfpp``: ``(R − mean(R)) / (std(R) + eps)``;
    * ``remax``: ``R − greedy_returns``.

    A constant group (a constant batch for ``rfpp``) gets exactly 0, even at ``eps = 0``.

    >>> reference_sequence_advantages("rloo", [1.0, 0.0, 0.0, 2.0], group_size=2)
    array([ 1., -1., -2.,  2.])
    """
    if kind not in SEQUENCE_KINDS:
        raise ValueError(f"`kind` must be one of {SEQUENCE_KINDS}, got {kind!r}")
    r = np.asarray(returns, np.float64)
    if kind == "remax":
        return r - np.asarray(greedy_returns, np.float64)
    g = r.reshape(-1, group_size) if kind in _GROUP_KINDS else r.reshape(1, -1)
    centred = g - g.mean(axis=1, keepdims=True)
    centred[np.all(g == g[:, :1], axis=1)] = 0.0  # a constant group: exact zeros
    if kind == "rloo":
        others = (g.sum(axis=1, keepdims=True) - g) / (group_size - 1)
        out = np.where(np.all(g == g[:, :1], axis=1, keepdims=True), 0.0, g - others)
    elif kind in _EPS_KINDS:
        scale = np.sqrt((centred**2).mean(axis=1, keepdims=True)) + float(eps)
        out = centred / np.where(scale > 0, scale, 1.0)
    else:
        out = centred
    return out.reshape(-1)


# ------------------------------------------------------------------------ adapters


@dataclasses.dataclass(frozen=True)
class Adapter:
    """How a user's estimator is called on jaxadv's arrays, and what it returns.

    Attributes:
      name: shown in the report's title.
      call: ``call(fn, kind, rollout, hp) -> fn's output``: calls ``fn`` on the time-major
        :class:`RolloutArrays` (JAX arrays ``[T, B]``) with the :class:`Hyper` ``hp``, converting
        the arrays to ``fn``'s conventions and its output back to time-major ``[T, B]``.
        It runs under ``jax.jit`` and ``jax.vmap`` in those checks.
      outputs: what ``fn`` returns: ``None``, one array, the kind's own quantity (advantages
        for ``td``/``nstep``/``gae``, returns for ``returns``/``lambda_returns``); a name,
        one array that is ``"advantages"`` or ``"targets"`` (the return, ``advantages +
        values``); a tuple of names (``None`` for an element to ignore), a tuple of arrays;
        or a mapping from kind to any of these.
    """

    name: str
    call: Callable[[Callable, str, RolloutArrays, Hyper], Any]
    outputs: Any = None

    def outputs_for(self, kind: str) -> tuple[tuple[str | None, ...], bool]:
        """``(names, is_tuple)``: the names of ``fn``'s outputs for ``kind``."""
        spec = self.outputs.get(kind) if isinstance(self.outputs, Mapping) else self.outputs
        if spec is None:
            return (_OWN[kind],), False
        if isinstance(spec, str):
            return (spec,), False
        return tuple(spec), True


def _hyper_kwargs(kind: str, hp: Hyper) -> dict[str, Any]:
    kw: dict[str, Any] = {"gamma": hp.gamma}
    if kind in ("gae", "lambda_returns"):
        kw["lambda_"] = hp.lambda_
    if kind == "nstep":
        kw["n"] = hp.n
    return kw


def _swap(tree):
    """Batch-major ``[B, T]`` <-> time-major ``[T, B]`` for every array of ``tree``."""
    return jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, -1, -2), tree)


def jaxadv_style(*, outputs: Any = None, batch_major: bool = False, name: str = "jaxadv") -> Adapter:
    """An adapter for functions with jaxadv's signatures: ``fn(rewards, next_values,
    terminated, truncated, *, gamma)`` for ``"returns"``, ``fn(rewards, values, next_values,
    terminated, *, gamma)`` for ``"td"``, and ``fn(rewards, values, next_values, terminated,
    truncated, *, gamma, lambda_)`` (``n=`` instead of ``lambda_=`` for ``"nstep"``).

    ``batch_major=True``: ``fn`` takes and returns ``[B, T]`` arrays. ``outputs``: as for
    :class:`Adapter` (e.g. ``("advantages", "targets")``).
    """

    def call(fn, kind, x: RolloutArrays, hp: Hyper):
        x = _swap(x) if batch_major else x
        if kind == "returns":
            args = (x.rewards, x.next_values, x.terminated, x.truncated)
        elif kind == "td":
            args = (x.rewards, x.values, x.next_values, x.terminated)
        else:
            args = tuple(x)
        out = fn(*args, **_hyper_kwargs(kind, hp))
        return _swap(out) if batch_major else out

    return Adapter(name, call, outputs)


def done_only(*, outputs: Any = ("advantages", "targets"), batch_major: bool = False,
              name: str = "done_only") -> Adapter:
    """An adapter for functions that see one ``done`` flag, ``terminated or truncated``, and
    one value stream: ``fn(rewards, values, dones, last_value, *, gamma, ...)`` with
    ``last_value [B]`` the value after the window and keywords as for :func:`jaxadv_style`,
    returning ``(advantages, targets)`` by default (PureJaxRL's inline GAE). The value of a
    truncated episode's final observation cannot be passed: such a function cannot be right
    where an episode is truncated inside the window.
    """

    def call(fn, kind, x: RolloutArrays, hp: Hyper):
        dones = jnp.logical_or(x.terminated, x.truncated).astype(jnp.asarray(x.terminated).dtype)
        args = (x.rewards, x.values, dones)
        args = _swap(args) if batch_major else args
        out = fn(*args, x.next_values[-1], **_hyper_kwargs(kind, hp))
        return _swap(out) if batch_major else out

    return Adapter(name, call, outputs)


def rlax_style(*, name: str = "rlax") -> Adapter:
    """An adapter for rlax's per-sequence functions, ``jax.vmap``-ed over the batch columns:
    ``discount_t = γ (1 − terminated_t)`` and one value stream ``values = [V(s_0), …,
    V(s_{T−1}), next_values[T − 1]]`` (``v_t = values[1:]``); there is no truncation input.
    ``"gae"``: ``fn(r_t, discount_t, lambda_, values)``
    (``rlax.truncated_generalized_advantage_estimation``); ``"lambda_returns"``: ``fn(r_t,
    discount_t, v_t, lambda_)`` (``rlax.lambda_returns``); ``"returns"``: ``fn(r_t,
    discount_t, v_t)`` (``rlax.discounted_returns``); ``"nstep"``: ``fn(r_t, discount_t, v_t,
    n)``, returning the n-step *returns* (``rlax.n_step_bootstrapped_returns``); ``"td"``:
    ``fn(v_tm1, r_t, discount_t, v_t)`` on scalars (``rlax.td_learning``).
    """

    def call(fn, kind, x: RolloutArrays, hp: Hyper):
        dtype = x.rewards.dtype
        discount = (hp.gamma * (1.0 - x.terminated.astype(dtype))).astype(dtype)
        values = jnp.concatenate([x.values, x.next_values[-1:]], axis=0).astype(dtype)
        per_sequence = {
            "gae": lambda r, d, v: fn(r, d, hp.lambda_, v),
            "lambda_returns": lambda r, d, v: fn(r, d, v[1:], hp.lambda_),
            "returns": lambda r, d, v: fn(r, d, v[1:]),
            "nstep": lambda r, d, v: fn(r, d, v[1:], hp.n),
            "td": lambda r, d, v: jax.vmap(fn)(v[:-1], r, d, v[1:]),
        }[kind]
        return jax.vmap(per_sequence, in_axes=1, out_axes=1)(x.rewards, discount, values)

    return Adapter(name, call, {"nstep": "targets"})


JAXADV = jaxadv_style()
"""jaxadv's own signatures (:func:`jaxadv_style`), the default adapter: pass
``jaxadv.gae`` with ``kind="gae"``, ``jaxadv.td_errors`` with ``"td"``, …"""

RLAX = rlax_style()
"""rlax's per-sequence signatures (:func:`rlax_style`), e.g.
``check_advantages(rlax.truncated_generalized_advantage_estimation, "gae", adapter=RLAX)``."""

PUREJAXRL = done_only(name="purejaxrl")
"""A PureJaxRL-style GAE (:func:`done_only`): ``fn(rewards, values, dones, last_value, *,
gamma, lambda_) -> (advantages, targets)`` with ``dones = terminated | truncated``."""


# -------------------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class Case:
    """One input of a check, with what the reference and the function gave on it.

    Attributes:
      arrays: the inputs, NumPy (time-major ``[T, B]`` for :func:`check_advantages`).
      settings: the hyperparameters (lists where the check sweeps them with ``vmap``).
      expected: the reference's outputs by name; ``got``: the function's (``None`` where it
        could not run).
      time_major: print the arrays one batch column per line.
    """

    arrays: dict[str, np.ndarray]
    settings: dict[str, Any]
    expected: dict[str, np.ndarray] | None = None
    got: dict[str, np.ndarray] | None = None
    time_major: bool = True

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the first array (``(T, B)`` or ``(N,)``)."""
        return next(iter(self.arrays.values())).shape

    def _fmt(self, a) -> str:
        a = np.asarray(a)
        a = a if a.dtype.kind in "biuf" and a.dtype.name != "bfloat16" else a.astype(np.float64)
        if self.time_major and a.ndim >= 2:
            a = np.swapaxes(a, -1, -2)  # one batch column per row, along time
            a = a[..., 0, :] if a.shape[-2] == 1 else a[..., 0] if a.shape[-1] == 1 else a
        text = np.array2string(a, precision=4, suppress_small=True, max_line_width=100)
        return text.replace("\n", "\n" + " " * 16)

    def __str__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        layout = "; [T, B] arrays: one row per batch column" if self.time_major else ""
        lines = [f"input of shape {self.shape} ({settings}{layout}):"]
        lines += [f"  {name:<13} {self._fmt(a)}" for name, a in self.arrays.items()]
        for name, want in (self.expected or {}).items():
            lines.append(f"{name}:")
            lines.append(f"  {'expected':<13} {self._fmt(want)}")
            if self.got is not None and name in self.got:
                diff = np.asarray(self.got[name], np.float64) - want
                lines.append(f"  {'got':<13} {self._fmt(self.got[name])}")
                lines.append(f"  {'got−expected':<13} {self._fmt(diff)}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One row of a :class:`Report`.

    Attributes:
      name: the check; ``doc``: what it checks.
      passed: whether the function agreed with the reference within ``tolerance``.
      worst_error: the largest ``|got − expected|`` on the check's input (``inf`` where an
        output was not finite but the reference was; ``nan`` where the check could not run).
      tolerance: ``"rtol=…, atol=…"``: an element passes if ``|got − expected| <= atol +
        rtol·|expected|``.
      reason: why the check failed or could not run (``None`` where it passed).
      case: the smallest failing input found (``None`` where it passed).
      note: what the check measured, shown where it passed too (the exact-gradient checks
        of :func:`check_policy_loss`: the cosine and relative error against ∇J).
    """

    name: str
    doc: str
    passed: bool
    worst_error: float
    tolerance: str
    reason: str | None = None
    case: Case | None = None
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Report:
    """The rows of one conformance run. ``report.passed`` is true when every check passed;
    ``str(report)`` is a table; ``report["jit"]`` is a row; ``report.failed`` the names of the
    failed rows; :meth:`raise_for_failures` raises for pytest."""

    title: str
    rows: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """Every check passed."""
        return all(row.passed for row in self.rows)

    @property
    def failed(self) -> tuple[str, ...]:
        """The names of the checks that failed or could not run."""
        return tuple(row.name for row in self.rows if not row.passed)

    def __getitem__(self, name: str) -> CheckResult:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no check {name!r}; the checks are {[r.name for r in self.rows]}")

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.rows] + [5])
        ok = sum(r.passed for r in self.rows)
        lines = [f"{self.title}: {ok}/{len(self.rows)} checks passed",
                 f"{'check':<{width}}  result  worst |err|  tolerance             detail"]
        for r in self.rows:
            err = "—" if np.isnan(r.worst_error) else f"{r.worst_error:.3g}"
            detail = (r.note or "") if r.passed else (r.reason or "")
            if r.case is not None and r.case.expected is not None:
                detail += f" (smallest failing input: shape {r.case.shape})"
            lines.append(f"{r.name:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {err:>11}"
                         f"  {r.tolerance:<20}  {detail}".rstrip())
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise an ``AssertionError`` with the table and, for every failed check, its smallest
        failing input, the expected and the actual outputs and their difference."""
        if self.passed:
            return
        parts = [str(self)]
        for r in self.rows:
            if not r.passed:
                parts.append(f"\n--- {r.name}: {r.doc}\n{r.reason}")
                if r.case is not None:
                    parts.append(str(r.case))
        raise AssertionError("\n".join(parts))


# ---------------------------------------------------------------- running checks


class _Unfit(Exception):
    """The function's output does not fit its kind (a wrong shape, tuple or dtype)."""


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A check: an input maker, how the function is called, and the tolerance."""

    name: str
    doc: str
    make: Callable[[np.random.Generator], dict[str, np.ndarray]] | None  # None: an exact check
    mode: str = "plain"  # "plain" (jit, settings static), "jit" (settings traced) or "vmap"
    dtype: Any = np.float32
    float_flags: bool = False
    low_precision: bool = False
    want_dtype: Any = None
    group_size: int = 0  # sequence-level checks: K


def _compare(got: dict, want: dict, rtol: float, atol: float):
    """``(worst |error|, per-column failure mask)``; columns are the last axis."""
    worst, bad = 0.0, None
    for name, w in want.items():
        g = np.asarray(got[name], np.float64)
        err = np.abs(g - w)
        err = np.where(np.isnan(err) & ~np.isnan(w), np.inf, err)
        fails = ~(err <= atol + rtol * np.abs(w))
        col = fails.reshape(-1, fails.shape[-1]).any(axis=0)
        bad = col if bad is None else bad | col
        worst = max(worst, float(err.max(initial=0.0)))
    return worst, bad


def _unpack(raw, names, is_tuple, shape, fn_kind: str) -> dict[str, jax.Array]:
    if is_tuple != isinstance(raw, (tuple, list)) or (is_tuple and len(raw) != len(names)):
        what = f"a tuple of {len(raw)}" if isinstance(raw, (tuple, list)) else "one array"
        want = f"a tuple of {len(names)} {names}" if is_tuple else "one array"
        raise _Unfit(f"could not run: the function returned {what}, the adapter expects {want}")
    raw = raw if is_tuple else (raw,)
    out = {}
    for name, a in zip(names, raw):
        if name is None:
            continue
        if getattr(a, "shape", None) != shape:
            raise _Unfit(f"could not run: output {name!r} has shape {getattr(a, 'shape', None)}, "
                         f"but {fn_kind} needs the inputs' shape {shape}")
        out[name] = a
    return out


def _to_numpy(out: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(jnp.asarray(v).astype(jnp.float32), np.float64) for k, v in out.items()}


_SWEEP_GAMMAS, _SWEEP_LAMBDAS = (0.5, 0.9, 1.0), (0.0, 0.7, 1.0)
_T, _B, _SHRINK_COLUMNS = 16, 8, 8  # most checks' [T, B] (shared shapes compile once)


def _settings(spec: _Spec, kind: str, hp: Hyper) -> dict[str, Any]:
    sweep = spec.mode == "vmap"
    s: dict[str, Any] = {"gamma": list(_SWEEP_GAMMAS) if sweep else hp.gamma}
    if kind in ("gae", "lambda_returns"):
        s["lambda_"] = list(_SWEEP_LAMBDAS) if sweep else hp.lambda_
    if kind == "nstep":
        s["n"] = hp.n
    return s


def _with_fallback(static, once):
    """``static`` (a jitted ``once``), or ``once`` itself eagerly where it cannot be traced
    (the ``jit`` check reports that)."""

    def plain(*args):
        try:
            return static(*args)
        except _Unfit:
            raise
        except Exception:
            return once(*args)

    return plain


def _check_dtype(spec: _Spec, out: dict) -> None:
    if spec.want_dtype is not None:
        wrong = {k: str(v.dtype) for k, v in out.items() if v.dtype != spec.want_dtype}
        if wrong:
            raise _Unfit(f"output dtype {wrong} for {np.dtype(spec.want_dtype).name} inputs")


def _time_major_runner(fn, kind: str, adapter: Adapter, hp: Hyper):
    """``run_case(spec, arrays) -> (got, expected)``; it raises :class:`_Unfit` or what
    ``fn`` raises."""
    names, is_tuple = adapter.outputs_for(kind)

    def once(x, gamma, lambda_):
        raw = adapter.call(fn, kind, x, Hyper(gamma, lambda_, hp.n))
        return _unpack(raw, names, is_tuple, x.rewards.shape, f"kind {kind!r}")

    # jitted once per check_advantages call, so checks with the same shapes share programs
    plain = _with_fallback(jax.jit(once, static_argnums=(1, 2)), once)
    traced, swept = jax.jit(once), jax.jit(jax.vmap(once, in_axes=(None, 0, 0)))

    def run_case(spec: _Spec, arrays):
        floats = [jnp.asarray(arrays[k], spec.dtype) for k in ("rewards", "values", "next_values")]
        flags = [jnp.asarray(arrays[k], spec.dtype if spec.float_flags else bool) for k in _FLAGS]
        x = RolloutArrays(*floats, *flags)
        if spec.mode == "vmap":
            out = swept(x, jnp.asarray(_SWEEP_GAMMAS, jnp.float32),
                        jnp.asarray(_SWEEP_LAMBDAS, jnp.float32))
            points = zip(np.asarray(_SWEEP_GAMMAS, np.float32).tolist(),
                         np.asarray(_SWEEP_LAMBDAS, np.float32).tolist())
            refs = [reference_advantages(kind, x, gamma=g, lambda_=l, n=hp.n) for g, l in points]
            want = {k: np.stack([ref[k] for ref in refs]) for k in out}
        else:
            out = (traced if spec.mode == "jit" else plain)(x, hp.gamma, hp.lambda_)
            ref = reference_advantages(kind, x, gamma=hp.gamma, lambda_=hp.lambda_, n=hp.n)
            want = {k: ref[k] for k in out}
        _check_dtype(spec, out)
        return _to_numpy(out), want

    return run_case


def _windows(arrays: dict[str, np.ndarray], column: int, length: int):
    """Every window of ``length`` steps of one column, side by side as batch columns, in
    chunks of 8 (the last chunk padded by repeats), so shrunk inputs share their shapes."""
    T = next(iter(arrays.values())).shape[0]
    starts = list(range(T - length + 1))
    for i in range(0, len(starts), _SHRINK_COLUMNS):
        chunk = [starts[(i + j) % len(starts)] for j in range(_SHRINK_COLUMNS)]
        yield {k: np.stack([a[s:s + length, column] for s in chunk], axis=1)
               for k, a in arrays.items()}


def _shrink_time_major(run, arrays, bad_columns):
    """``(input, run(input))`` of the smallest sub-input that still fails: the shortest
    window of a failing column (alone if it fails alone), else the whole input."""
    column = int(np.flatnonzero(bad_columns)[0])
    T = next(iter(arrays.values())).shape[0]
    candidates = (c for length in range(1, T + 1) for c in _windows(arrays, column, length))
    for candidate in candidates:
        try:
            result = run(candidate)
        except Exception:  # a smaller input that crashes fails another way: keep looking
            continue
        if result[1].any():
            j = int(np.flatnonzero(result[1])[0])
            single = {k: a[:, j:j + 1] for k, a in candidate.items()}
            try:
                single_result = run(single)
            except Exception:
                return candidate, result
            return (single, single_result) if single_result[1].any() else (candidate, result)
    return arrays, run(arrays)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def _check(spec: _Spec, run_case, shrink, settings: dict, seed: int, tol: tuple[float, float],
           time_major: bool) -> CheckResult:
    """Run one check: make its input, compare with the reference, shrink a failure."""
    rtol, atol = tol
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    make = cast(Callable[[np.random.Generator], dict[str, np.ndarray]], spec.make)  # not exact
    arrays = make(np.random.default_rng(seed))

    def run(a):
        got, want = run_case(spec, a)
        return (got, want), _compare(got, want, rtol, atol)[1]

    try:
        got, want = run_case(spec, arrays)
    except Exception as e:
        reason = str(e) if isinstance(e, _Unfit) else f"could not run: {_first_line(e)}"
        return CheckResult(spec.name, spec.doc, False, float("nan"), tolerance, reason,
                           Case(arrays, settings, time_major=time_major))
    worst, bad = _compare(got, want, rtol, atol)
    if not bad.any():
        return CheckResult(spec.name, spec.doc, True, worst, tolerance)
    small, ((small_got, small_want), _) = shrink(run, arrays, bad)
    return CheckResult(spec.name, spec.doc, False, worst, tolerance,
                       f"worst |error| {worst:.3g} is over the tolerance",
                       Case(small, settings, small_want, small_got, time_major=time_major))


# ------------------------------------------------------- time-major checks and inputs


def _rollout(rng, T: int, B: int, *, p_term=0.0, p_trunc=0.0, p_both=0.0, flag=None,
             at=None) -> dict[str, np.ndarray]:
    """A consistent random rollout ``[T, B]``: flags at random (probabilities ``p_*``) or
    ``flag`` (``"terminated"``, ``"truncated"`` or ``"both"``) on the ``at`` = ``"last"`` or
    ``"every"`` step; ``next_values[t] = values[t + 1]`` where the episode goes on, a fresh
    final observation's value where it ended."""
    r, v, final = (rng.normal(size=(T, B)) for _ in range(3))
    term, trunc, both = (rng.random((T, B)) < p for p in (p_term, p_trunc, p_both))
    term, trunc = term | both, trunc | both
    if flag is not None:
        placed = np.zeros((T, B), bool)
        placed[-1 if at == "last" else slice(None)] = True
        term |= placed if flag in ("terminated", "both") else False
        trunc |= placed if flag in ("truncated", "both") else False
    nv = final.copy()
    nv[:-1] = np.where(~(term | trunc)[:-1], v[1:], final[:-1])
    f32 = lambda a: a.astype(np.float32)
    return {"rewards": f32(r), "values": f32(v), "next_values": f32(nv), "terminated": term,
            "truncated": trunc}


def _rollouts(T: int, B: int, **kw) -> Callable[[np.random.Generator], dict[str, np.ndarray]]:
    return lambda rng: _rollout(rng, T, B, **kw)


_FLAG_WORDS = {"terminated": "terminated", "truncated": "truncated (not terminated)",
               "both": "terminated and truncated (termination wins)"}


def _time_major_specs() -> list[_Spec]:
    """Every check of :func:`check_advantages`, in the report's order."""
    shape = f"[{_T}, {_B}]"
    specs = [
        _Spec("reference", f"random rollouts {shape}, terminations and no truncations",
              _rollouts(_T, _B, p_term=0.15)),
        _Spec("reference_truncation", f"random rollouts {shape}, terminations and truncations",
              _rollouts(_T, _B, p_term=0.15, p_trunc=0.15)),
    ]
    for at in ("last", "every"):
        for flag, words in _FLAG_WORDS.items():
            specs.append(_Spec(f"{flag}_{at}_step", f"{words} on {at} step only {shape}",
                               _rollouts(_T, _B, flag=flag, at=at)))
    return [*specs,
        _Spec("both_same_step", f"terminated and truncated on the same random steps {shape}",
              _rollouts(_T, _B, p_both=0.3)),
        _Spec("T=1", f"a window of one step [1, {_B}], half of it terminated",
              _rollouts(1, _B, p_term=0.5)),
        _Spec("B=1", f"a batch of one column [{_T}, 1], with terminations",
              _rollouts(_T, 1, p_term=0.15)),
        _Spec("float32", "float32 arrays, flags as 0.0/1.0 floats; the outputs are float32",
              _rollouts(_T, _B, p_term=0.15), float_flags=True, want_dtype=np.float32),
        _Spec("bfloat16", "bfloat16 rewards and values (reference on the rounded inputs, "
              "in float64)", _rollouts(_T, _B, p_term=0.15), dtype=jnp.bfloat16,
              low_precision=True),
        _Spec("jit", "under jax.jit, with gamma (and lambda_) traced arguments",
              _rollouts(_T, _B, p_term=0.15), mode="jit"),
        _Spec("vmap", f"jax.vmap over traced gamma {_SWEEP_GAMMAS} (and lambda_ "
              f"{_SWEEP_LAMBDAS}, pairwise)", _rollouts(_T, _B, p_term=0.15), mode="vmap"),
    ]


def _select(specs: list[_Spec], checks: Sequence[str] | None) -> list[tuple[int, _Spec]]:
    """``(index, spec)`` of the chosen checks (all by default); the index seeds the input, so
    a check sees the same input whichever others run."""
    names = [s.name for s in specs]
    if checks is None:
        return list(enumerate(specs))
    unknown = [c for c in checks if c not in names]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {names}")
    return [(i, s) for i, s in enumerate(specs) if s.name in checks]


_AnyAdapter = TypeVar("_AnyAdapter", "Adapter", "SequenceAdapter", "LossAdapter")


def _as_adapter(adapter: _AnyAdapter | Callable | None, default: _AnyAdapter) -> _AnyAdapter:
    if adapter is None:
        return default
    if isinstance(adapter, (Adapter, SequenceAdapter, LossAdapter)):
        return adapter
    if callable(adapter):
        return type(default)(getattr(adapter, "__name__", "custom"), adapter)
    raise TypeError(f"`adapter` must be an Adapter or a callable, got {adapter!r}")


def _name(fn) -> str:
    if isinstance(fn, functools.partial):
        return f"partial({', '.join([_name(fn.func), *map(repr, fn.args)])})"
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def check_advantages(fn: Callable, kind: str, *, adapter: Adapter | Callable | None = None,
                     gamma: float = 0.9, lambda_: float = 0.8, n: int = 3, seed: int = 0,
                     rtol: float = 1e-4, atol: float = 1e-4, bf16_rtol: float = 0.05,
                     bf16_atol: float = 0.1, checks: Sequence[str] | None = None) -> Report:
    """Check ``fn``, an estimator of ``kind``, against the NumPy references.

    The checks (one :class:`CheckResult` each, in this order): ``reference`` (random
    rollouts with terminations), ``reference_truncation`` (terminations and truncations),
    ``{terminated,truncated,both}_{last,every}_step`` (one kind of flag on the last step or
    on every step), ``both_same_step``, ``T=1``, ``B=1``, ``float32`` (float flags; the
    output stays float32), ``bfloat16`` (with ``bf16_rtol``/``bf16_atol``), ``jit`` and
    ``vmap`` (over traced γ, and λ for ``"gae"``/``"lambda_returns"``). The checks whose
    inputs truncate an episode before the window's end are ``reference_truncation`` and
    ``truncated_every_step``; ``truncated_last_step`` equals the end of the window.

    Each check calls ``fn`` through ``adapter`` under ``jax.jit`` with the settings as
    compile-time constants (eagerly where ``fn`` cannot be traced; the ``jit`` check then
    fails), compiled once per input shape; ``jit`` passes γ and λ as traced arguments.

    A check whose call raises, or whose output has the wrong shape, tuple length or dtype,
    is a failed row that says why; nothing propagates except a bad ``kind``, ``checks`` or
    ``adapter``. A failed row carries the smallest failing input found (the shortest window
    of a failing column) with the expected and actual outputs.

    Args:
      fn: the estimator; ``adapter`` says how it is called (default :data:`JAXADV`).
      kind: one of :data:`KINDS`.
      gamma, lambda_, n: the settings of the checks that do not sweep them.
      seed: seeds the random inputs.
      rtol, atol: float32 tolerance; ``bf16_rtol``, ``bf16_atol``: the ``bfloat16`` one.
      checks: names of the checks to run (default: all).
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
    adapter = _as_adapter(adapter, JAXADV)
    hp = Hyper(gamma, lambda_, n)
    run_case = _time_major_runner(fn, kind, adapter, hp)
    rows = []
    for i, spec in _select(_time_major_specs(), checks):
        tol = (bf16_rtol, bf16_atol) if spec.low_precision else (rtol, atol)
        rows.append(_check(spec, run_case, _shrink_time_major, _settings(spec, kind, hp),
                           seed * 1000 + i, tol, time_major=True))
    return Report(f"check_advantages({_name(fn)}, {kind!r}, adapter={adapter.name})", tuple(rows))


# ------------------------------------------------------------- sequence-level checks


@dataclasses.dataclass(frozen=True)
class SequenceAdapter:
    """How a sequence-level estimator is called.

    Attributes:
      name: shown in the report's title.
      call: ``call(fn, kind, returns [N], greedy_returns [N] or None, group_size, eps) ->
        advantages [N]``; ``eps`` may be traced (``jit`` and ``vmap`` checks).
    """

    name: str
    call: Callable[..., Any]


def _call_sequence_jaxadv(fn, kind, returns, greedy, group_size, eps):
    kw: dict[str, Any] = {}
    if kind in _GROUP_KINDS:
        kw["group_size"] = group_size
    if kind == "remax":
        kw["greedy_returns"] = greedy
    if kind in _EPS_KINDS:
        kw["eps"] = eps
    return fn(returns, **kw)


def _call_grouped(fn, kind, returns, greedy, group_size, eps):
    kw = {"eps": eps} if kind in _EPS_KINDS else {}
    if kind == "remax":
        return fn(returns, greedy)
    if kind not in _GROUP_KINDS:
        return fn(returns, **kw)
    grouped = returns.reshape(-1, group_size)
    out = fn(grouped, **kw)
    if getattr(out, "shape", None) != grouped.shape:
        raise _Unfit(f"could not run: output has shape {getattr(out, 'shape', None)}, "
                           f"but the groups are {grouped.shape}")
    return out.reshape(-1)


SEQUENCE_JAXADV = SequenceAdapter("jaxadv", _call_sequence_jaxadv)
"""The default sequence adapter: ``fn(returns [N], *, group_size=K)`` for grpo, drgrpo and
rloo, ``eps=`` for grpo and rfpp, ``greedy_returns=`` for remax (the keywords of
:func:`jaxadv.advantages.sequence_advantages`, e.g.
``functools.partial(sequence_advantages, "grpo")``)."""

SEQUENCE_GROUPED = SequenceAdapter("grouped", _call_grouped)
"""Grouped arrays: ``fn(rewards [G, K], [eps=]) -> [G, K]`` for grpo, drgrpo and rloo (as
:func:`jaxadv.group_relative` and :func:`jaxadv.leave_one_out`), ``fn(returns [N], [eps=])``
for batchmean and rfpp, ``fn(returns, greedy_returns)`` for remax."""

_SWEEP_EPS = (1e-6, 1e-3, 0.1)


def _groups(G: int, K: int, constant: Sequence[float] = (), stack: int = 0):
    """Random returns (and greedy returns) of ``G`` groups of ``K``; the first groups
    constant at the values ``constant``; ``stack`` > 0: that many batches, stacked."""

    def make(rng):
        shape = (stack, G, K) if stack else (G, K)
        returns, greedy = rng.normal(size=shape), rng.normal(size=shape)
        for g, value in enumerate(constant):
            returns[..., g, :] = greedy[..., g, :] = value
        flat = lambda a: a.reshape(*a.shape[:-2], -1).astype(np.float32)
        return {"returns": flat(returns), "greedy_returns": flat(greedy)}

    return make


def _sequence_specs() -> list[_Spec]:
    """Every check of :func:`check_sequence_advantages`, in the report's order; ``K`` is
    ``group_size``."""
    return [
        _Spec("reference", "6 groups of 4 random returns", _groups(6, 4), group_size=4),
        _Spec("constant_groups", "3 of 6 groups constant (0.1, 1/3, -7.3): exactly 0 there",
              _groups(6, 4, constant=(0.1, 1 / 3, -7.3)), group_size=4),
        _Spec("single_group", "one group of 5", _groups(1, 5), group_size=5),
        _Spec("pairs", "groups of 2 (the smallest RLOO group)", _groups(5, 2), group_size=2),
        _Spec("bfloat16", "bfloat16 returns (reference on the rounded inputs, in float64)",
              _groups(6, 4), group_size=4, dtype=jnp.bfloat16, low_precision=True),
        _Spec("jit", "under jax.jit, eps a traced argument", _groups(6, 4), group_size=4,
              mode="jit"),
        _Spec("vmap", f"jax.vmap over 3 stacked batches and traced eps {_SWEEP_EPS}",
              _groups(6, 4, stack=3), group_size=4, mode="vmap"),
    ]


def _sequence_runner(fn, kind: str, adapter: SequenceAdapter, eps):
    """``run_case(spec, arrays) -> (got, expected)``; it raises :class:`_Unfit` or what
    ``fn`` raises."""

    def once(x, eps, K):
        returns, greedy = x
        out = adapter.call(fn, kind, returns, greedy, K, eps)
        if getattr(out, "shape", None) != returns.shape:
            raise _Unfit(f"could not run: output has shape {getattr(out, 'shape', None)}, "
                         f"but {kind!r} needs the returns' shape {returns.shape}")
        return out

    plain = _with_fallback(jax.jit(once, static_argnums=(1, 2)), once)
    traced = jax.jit(once, static_argnums=2)
    swept = jax.jit(lambda x, e, K: jax.vmap(lambda x, e: once(x, e, K))(x, e), static_argnums=2)

    def run_case(spec: _Spec, arrays):
        K = spec.group_size
        returns = jnp.asarray(arrays["returns"], spec.dtype)
        greedy = jnp.asarray(arrays["greedy_returns"], spec.dtype) if kind == "remax" else None
        ref = lambda r, g, e: reference_sequence_advantages(kind, r, group_size=K, eps=e,
                                                            greedy_returns=g)
        if spec.mode == "vmap":
            sweep = np.asarray(_SWEEP_EPS, np.float32)
            out = swept((returns, greedy), jnp.asarray(sweep), K)
            want = np.stack([ref(returns[i], None if greedy is None else greedy[i], float(e))
                             for i, e in enumerate(sweep)])
        else:
            out = (traced if spec.mode == "jit" else plain)((returns, greedy), eps, K)
            want = ref(returns, greedy, eps)
        return _to_numpy({"advantages": out}), {"advantages": want}

    return run_case


def _shrink_groups(group_size: int):
    """The first single group that fails on its own, else the shortest failing prefix of
    whole groups."""

    def shrink(run, arrays, bad_columns):
        N = arrays["returns"].shape[-1]
        singles = [slice(i, i + group_size) for i in range(0, N, group_size)]
        prefixes = [slice(0, stop) for stop in range(2 * group_size, N, group_size)]
        for part in singles + prefixes:
            candidate = {k: a[..., part] for k, a in arrays.items()}
            try:
                result = run(candidate)
            except Exception:
                continue
            if result[1].any():
                return candidate, result
        return arrays, run(arrays)

    return shrink


def check_sequence_advantages(fn: Callable, kind: str, *,
                              adapter: SequenceAdapter | Callable | None = None,
                              eps: float = 1e-6, seed: int = 0, rtol: float = 1e-4,
                              atol: float = 1e-5, bf16_rtol: float = 0.05,
                              bf16_atol: float = 0.05,
                              checks: Sequence[str] | None = None) -> Report:
    """Check ``fn``, a sequence-level estimator of ``kind`` (one of :data:`SEQUENCE_KINDS`),
    against :func:`reference_sequence_advantages`.

    The checks: ``reference`` (6 groups of 4), ``constant_groups`` (a constant group gets
    exactly 0, at the given ``eps``), ``single_group``, ``pairs`` (groups of 2),
    ``bfloat16``, ``jit`` (traced ``eps``) and ``vmap`` (3 stacked batches, traced ``eps``).
    Rows, failures and ``adapter`` (default :data:`SEQUENCE_JAXADV`) work as in
    :func:`check_advantages`; a failure's smallest input is the shortest failing prefix of
    whole groups.
    """
    if kind not in SEQUENCE_KINDS:
        raise ValueError(f"`kind` must be one of {SEQUENCE_KINDS}, got {kind!r}")
    adapter = _as_adapter(adapter, SEQUENCE_JAXADV)
    keys = ("returns", "greedy_returns") if kind == "remax" else ("returns",)
    run_case = _sequence_runner(fn, kind, adapter, eps)
    rows = []
    for i, spec in _select(_sequence_specs(), checks):
        settings = {"group_size": spec.group_size,
                    "eps": list(_SWEEP_EPS) if spec.mode == "vmap" else eps}
        tol = (bf16_rtol, bf16_atol) if spec.low_precision else (rtol, atol)
        spec = dataclasses.replace(spec, make=_only(spec.make, keys))
        rows.append(_check(spec, run_case, _shrink_groups(spec.group_size), settings,
                           seed * 1000 + i, tol, time_major=False))
    return Report(f"check_sequence_advantages({_name(fn)}, {kind!r}, adapter={adapter.name})",
                  tuple(rows))


def _only(make, keys):
    return lambda rng: {k: v for k, v in make(rng).items() if k in keys}


# ------------------------------------------------------------------ policy-loss checks

POLICY_LOSS_KINDS = ("pg", "ppo", "dapo", "cispo", "gspo")
"""The policy losses :func:`check_policy_loss` knows, as :mod:`jaxadv.losses` defines them:
``"pg"`` (:func:`~jaxadv.losses.policy_gradient_loss`, −mean(A log π)), ``"ppo"``
(:func:`~jaxadv.losses.ppo_clip_loss`, −mean(min(ρA, clip(ρ, 1−ε, 1+ε)A))), ``"dapo"``
(:func:`~jaxadv.losses.dapo_clip_loss`, the same with ε_low ≠ ε_high), ``"cispo"``
(:func:`~jaxadv.losses.cispo_loss`, −mean(sg(clip(ρ)) A log π)), all per token and reduced
as ``reduction`` says, and the sequence-level ``"gspo"`` (:func:`~jaxadv.losses.gspo_loss`:
one advantage per sequence, the clipped geometric-mean ratio, a mean over sequences)."""

_SEQUENCE_LOSS_KINDS = ("gspo",)  # one advantage per sequence: advantages [B]
_REDUCTIONS = ("token", "sequence", "constant")
_LOSS_SWEEP = ((0.1, 0.15), (0.2, 0.28), (0.3, 0.3))  # (ε_low, ε_high) of the vmap check


class PolicyLossArrays(NamedTuple):
    """The arrays of one policy-loss call, time-major ``[T, B]``: ``log_probs`` (the input
    the gradient is taken with respect to), ``old_log_probs`` (the rollout's), ``advantages``
    (``[B]``, one per sequence, for ``"gspo"``) and ``mask`` (boolean, ``True`` = a real
    token; padded entries may hold anything, ``nan`` included)."""

    log_probs: Any
    old_log_probs: Any
    advantages: Any
    mask: Any


class LossHyper(NamedTuple):
    """The settings passed to a loss adapter: ``clip_low`` (ε, ε_low), ``clip_high``
    (ε_high; equal to ``clip_low`` for ``"ppo"``), traced under the ``jit`` and ``vmap``
    checks, and the static ``reduction``."""

    clip_low: Any
    clip_high: Any
    reduction: str


def _reduction_weights(mask: np.ndarray, reduction: str) -> np.ndarray:
    """Each token's weight in the masked mean ``reduction`` (:func:`jaxadv.losses.masked_mean`)."""
    m = mask.astype(np.float64)
    if reduction == "token":
        return m / max(m.sum(), 1.0)
    if reduction == "sequence":
        lengths = m.sum(axis=0)
        return m / np.maximum(lengths, 1.0) / max(int((lengths > 0).sum()), 1)
    return m / max(m.size, 1)


def reference_policy_loss(kind: str, log_probs: ArrayLike, old_log_probs: ArrayLike,
                          advantages: ArrayLike, mask: ArrayLike | None = None, *,
                          reduction: str = "token", clip_low: float = 0.2,
                          clip_high: float | None = None) -> tuple[float, np.ndarray]:
    """The NumPy float64 reference of the policy loss ``kind`` (one of
    :data:`POLICY_LOSS_KINDS`) on time-major ``[T, B]`` arrays: ``(loss, ∂loss/∂log_probs)``,
    the gradient written in closed form, not by differentiation.

    With w the reduction's token weights (``"token"``: m/Σm; ``"sequence"``: m/(|y_b|·|S|),
    S the sequences with a token; ``"constant"``: m/(T·B)) and ρ = exp(log π − log π_old):
    ``pg``: −Σ w A log π, gradient −w A; ``ppo``/``dapo``: −Σ w min(ρA, clip(ρ)A), gradient
    −w ρA where ρA is the smaller (0 where the clipped term is); ``cispo``: −Σ w clip(ρ) A
    log π, gradient −w clip(ρ) A. ``gspo``: s_b = exp(mean over b's tokens of log ρ),
    −(1/|S|) Σ_b min(s_b A_b, clip(s_b) A_b), gradient −s_b A_b m/(|y_b|·|S|) where s_b A_b
    is the smaller. Padded entries (``mask`` false) are never read; all-masked input gives 0.
    ``clip_high=None``: ``clip_low``.

    >>> loss, grad = reference_policy_loss("pg", [[-1.0, -2.0]], None, [[1.0, 3.0]])
    >>> float(loss), grad.tolist()
    (3.5, [[-0.5, -1.5]])
    """
    if kind not in POLICY_LOSS_KINDS:
        raise ValueError(f"`kind` must be one of {POLICY_LOSS_KINDS}, got {kind!r}")
    m = np.ones(np.shape(log_probs), bool) if mask is None else np.asarray(mask) != 0
    lp = np.where(m, np.asarray(log_probs, np.float64), 0.0)
    old = lp if old_log_probs is None else np.where(m, np.asarray(old_log_probs, np.float64), 0.0)
    low, high = 1.0 - clip_low, 1.0 + (clip_low if clip_high is None else clip_high)
    if kind == "gspo":
        a = np.asarray(advantages, np.float64)
        lengths = m.sum(axis=0)
        s = np.exp((lp - old).sum(axis=0) / np.maximum(lengths, 1))
        real, count = lengths > 0, max(int((lengths > 0).sum()), 1)
        clipped = np.clip(s, low, high)
        loss = -np.sum(np.where(real, np.minimum(s * a, clipped * a), 0.0)) / count
        per_sequence = real * (s * a <= clipped * a) * s * a / np.maximum(lengths, 1) / count
        return float(loss), -per_sequence[None] * m
    a = np.where(m, np.asarray(advantages, np.float64), 0.0)
    w = _reduction_weights(m, reduction)
    if kind == "pg":
        return float(-np.sum(w * a * lp)), -w * a
    ratio = np.exp(lp - old)
    clipped = np.clip(ratio, low, high)
    if kind == "cispo":
        return float(-np.sum(w * clipped * a * lp)), -w * clipped * a
    surrogate = np.minimum(ratio * a, clipped * a)
    return float(-np.sum(w * surrogate)), -w * ratio * a * (ratio * a <= clipped * a)


@dataclasses.dataclass(frozen=True)
class LossAdapter:
    """How a user's policy loss is called.

    Attributes:
      name: shown in the report's title.
      call: ``call(fn, kind, arrays, hp) -> fn's output``: calls ``fn`` on the time-major
        :class:`PolicyLossArrays` (JAX arrays) with the :class:`LossHyper` ``hp``. ``fn``'s
        output is the scalar loss, or a tuple or list whose first element is (``(loss,
        metrics)``). It runs under ``jax.grad``, ``jax.jit``, ``jax.vmap`` and ``lax.map``.
    """

    name: str
    call: Callable[[Callable, str, PolicyLossArrays, LossHyper], Any]


def loss_style(*, batch_major: bool = False, name: str = "jaxadv") -> LossAdapter:
    """An adapter for losses with :mod:`jaxadv.losses`' signatures: ``fn(log_probs,
    advantages, mask, *, reduction)`` for ``"pg"``; ``fn(log_probs, old_log_probs,
    advantages, mask, *, clip_eps, reduction)`` for ``"ppo"``; ``clip_low=, clip_high=``
    instead of ``clip_eps=`` for ``"dapo"`` and ``"cispo"``; ``fn(log_probs, old_log_probs,
    advantages [B], mask, *, clip_low, clip_high)`` for ``"gspo"``. ``batch_major=True``:
    ``fn`` takes ``[B, T]`` arrays.
    """

    def call(fn, kind, x: PolicyLossArrays, hp: LossHyper):
        if batch_major:
            swap = lambda a: jnp.swapaxes(a, -1, -2)
            x = PolicyLossArrays(swap(x.log_probs), swap(x.old_log_probs),
                                 x.advantages if kind in _SEQUENCE_LOSS_KINDS else swap(x.advantages),
                                 swap(x.mask))
        if kind == "pg":
            return fn(x.log_probs, x.advantages, x.mask, reduction=hp.reduction)
        kw: dict[str, Any] = {"clip_low": hp.clip_low, "clip_high": hp.clip_high}
        if kind == "ppo":
            kw = {"clip_eps": hp.clip_low}
        if kind not in _SEQUENCE_LOSS_KINDS:
            kw["reduction"] = hp.reduction
        return fn(*x, **kw)

    return LossAdapter(name, call)


LOSS_JAXADV = loss_style()
""":mod:`jaxadv.losses`' signatures (:func:`loss_style`), the default loss adapter: pass
``jaxadv.losses.ppo_clip_loss`` with ``kind="ppo"``, ..."""


def _loss_batch(T: int, B: int, *, sequence: bool, masked: float = 0.0, garbage: str = "none",
                on_policy: bool = False, all_masked: bool = False, stack: int = 0):
    """A random loss input ``[T, B]`` (``stack`` > 0: that many, stacked): log-probabilities
    in [log 0.05, 0], log-ratios of scale 0.3 (0 ``on_policy``), normal advantages (``[B]``
    where ``sequence``); ``masked``: the chance a token is padding, and the second column
    empty; ``garbage``: what padding holds (``"finite"``: values of scale 10, ``"nan"``:
    ``nan`` log-probs and ±``inf`` elsewhere)."""

    def make(rng):
        lead = (stack,) if stack else ()
        shape = (*lead, T, B)
        lp = np.log(rng.uniform(0.05, 1.0, shape))
        old = lp if on_policy else lp - rng.normal(0.0, 0.3, shape)
        adv = rng.normal(size=(*lead, B) if sequence else shape)
        mask = rng.random(shape) >= masked
        if masked and B > 1:
            mask[..., 1] = False
        mask &= not all_masked
        if garbage != "none":
            pad = ~mask
            fill = (lambda v: rng.normal(0.0, 10.0, shape)) if garbage == "finite" else (
                lambda v: np.full(shape, v))
            lp, old = np.where(pad, fill(np.nan), lp), np.where(pad, fill(-np.inf), old)
            if not sequence:
                adv = np.where(pad, fill(np.inf), adv)
        f32 = lambda a: np.asarray(a, np.float32)
        return {"log_probs": f32(lp), "old_log_probs": f32(old), "advantages": f32(adv),
                "mask": mask}

    return make


def _loss_specs(kind: str) -> list[_Spec]:
    """Every random-input check of :func:`check_policy_loss`, in the report's order."""
    seq, shape = kind in _SEQUENCE_LOSS_KINDS, f"[{_LT}, {_LB}]"
    batch = lambda **kw: _loss_batch(_LT, _LB, sequence=seq, **kw)
    return [
        _Spec("reference", f"value and ∂loss/∂log_probs, random batch {shape}, no padding, "
              "ratios spread around 1 (clipping active)", batch()),
        _Spec("mask", f"a quarter of the tokens padded, one sequence empty {shape}; padding "
              "holds values of scale 10", batch(masked=0.25, garbage="finite")),
        _Spec("padding_nan", "as mask, padding holds nan and ±inf: the loss and gradient stay "
              "finite and the same", batch(masked=0.25, garbage="nan")),
        _Spec("all_masked", "every token padded: the loss and its gradient are exactly 0",
              batch(all_masked=True, garbage="finite")),
        _Spec("float32", "float32 inputs: the loss and gradient are float32",
              batch(masked=0.25), want_dtype=np.float32),
        _Spec("bfloat16", "bfloat16 inputs on-policy (reference on the rounded inputs, in "
              "float64)", batch(on_policy=True, masked=0.25), dtype=jnp.bfloat16,
              low_precision=True),
        _Spec("jit", "under jax.jit, the clip range a traced argument", batch(masked=0.25),
              mode="jit"),
        _Spec("vmap", f"jax.vmap over 3 stacked batches and traced clip ranges {_LOSS_SWEEP}",
              batch(masked=0.25, stack=3), mode="vmap"),
    ]


_LT, _LB = 8, 6  # the loss checks' [T, B]
_TIME_KEYS = ("log_probs", "old_log_probs", "mask")


def _loss_runner(fn, kind: str, adapter: LossAdapter, hp: LossHyper):
    """``run_case(spec, arrays) -> (got, expected)`` for :func:`_check`: ``"loss"`` (with a
    trailing axis of 1, so that a failing loss fails every column) and ``"grad"``."""

    def loss_of(log_probs, rest, clip_low, clip_high):
        out = adapter.call(fn, kind, PolicyLossArrays(log_probs, *rest),
                           LossHyper(clip_low, clip_high, hp.reduction))
        out = out[0] if isinstance(out, (tuple, list)) else out
        if jnp.shape(out) != ():
            raise _Unfit(f"could not run: the loss has shape {jnp.shape(out)}, not a scalar")
        return out

    once = jax.value_and_grad(loss_of)
    plain = _with_fallback(jax.jit(once, static_argnums=(2, 3)), once)
    traced, swept = jax.jit(once), jax.jit(jax.vmap(once))
    sweep = np.asarray(_LOSS_SWEEP, np.float32)
    if kind == "ppo":
        sweep[:, 1] = sweep[:, 0]

    def run_case(spec: _Spec, arrays):
        lp, old, adv = (jnp.asarray(arrays[k], spec.dtype)
                        for k in ("log_probs", "old_log_probs", "advantages"))
        rest = (old, adv, jnp.asarray(arrays["mask"]))
        def ref(i, lo, hi):
            lp_i, old_i, adv_i = (np.asarray(jnp.asarray(a[i], jnp.float32)) for a in (lp, old, adv))
            return reference_policy_loss(kind, lp_i, old_i, adv_i, arrays["mask"][i],
                                         reduction=hp.reduction, clip_low=lo, clip_high=hi)
        if spec.mode == "vmap":
            loss, grad = swept(lp, rest, jnp.asarray(sweep[:, 0]), jnp.asarray(sweep[:, 1]))
            refs = [ref(i, float(lo), float(hi)) for i, (lo, hi) in enumerate(sweep)]
        else:
            call = traced if spec.mode == "jit" else plain
            loss, grad = call(lp, rest, hp.clip_low, hp.clip_high)
            refs = [ref(slice(None), hp.clip_low, hp.clip_high)]
        want = {"loss": np.reshape([r[0] for r in refs], (*loss.shape, 1)),
                "grad": np.reshape(np.stack([r[1] for r in refs]), grad.shape)}
        got = {"loss": loss[..., None], "grad": grad}
        _check_dtype(spec, got)
        return _to_numpy(got), want

    return run_case


def _shrink_loss(sequence: bool):
    """The first sequence (batch column) that fails alone, cut to its shortest failing prefix
    of tokens; else the whole input. Columns share one shape, so they compile once."""
    time_keys = _TIME_KEYS if sequence else (*_TIME_KEYS, "advantages")

    def attempt(run, candidate):
        try:
            result = run(candidate)
        except Exception:  # a smaller input that crashes fails another way: keep looking
            return None
        return result if result[1].any() else None

    def shrink(run, arrays, bad_columns):
        B, T = arrays["mask"].shape[-1], arrays["mask"].shape[-2]
        for j in range(B):
            column = {k: a[..., j:j + 1] for k, a in arrays.items()}
            if (found := attempt(run, column)) is None:
                continue
            for length in range(1, T):
                prefix = {k: a[..., :length, :] if k in time_keys else a
                          for k, a in column.items()}
                if (shorter := attempt(run, prefix)) is not None:
                    return prefix, shorter
            return column, found
        return arrays, run(arrays)

    return shrink


# ------------------------------------------ the exact on-policy gradient of a loss


class _Paths(NamedTuple):
    """Every trajectory of a tiny tabular task with a tabular softmax policy ``logits [S, A]``
    (one row per state or token prefix): ``states``/``actions [N, T]``, ``env_prob [N]`` (the
    environment's share of each trajectory's probability: the initial state and the
    transitions), ``returns [N]`` (the summed rewards) and ``advantages [N, T]`` (the exact
    per-step advantage where the task has one, else the return less J)."""

    name: str
    logits: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    env_prob: np.ndarray
    returns: np.ndarray
    advantages: np.ndarray | None


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _mdp_paths(rng, S: int = 3, A: int = 2, T: int = 3) -> _Paths:
    """A random MDP (no termination, horizon ``T``, undiscounted) and every one of its
    ``(S·A)^T`` trajectories; ``advantages`` are Q_t(s, a) − V_t(s) by backward induction."""
    P = rng.dirichlet(np.ones(S), size=(S, A))
    r, mu, logits = rng.normal(size=(S, A)), rng.dirichlet(np.ones(S)), rng.normal(size=(S, A))
    pi = _softmax(logits)
    q, v = np.zeros((T, S, A)), np.zeros((T + 1, S))
    for t in reversed(range(T)):
        q[t] = r + P @ v[t + 1]
        v[t] = (pi * q[t]).sum(axis=1)
    steps = list(itertools.product(itertools.product(range(S), range(A)), repeat=T))
    states = np.array([[s for s, _ in path] for path in steps])
    actions = np.array([[a for _, a in path] for path in steps])
    env_prob = mu[states[:, 0]] * np.prod(P[states[:, :-1], actions[:, :-1], states[:, 1:]],
                                           axis=1)
    steps_t = np.arange(T)
    advantages = q[steps_t, states, actions] - v[steps_t, states]
    return _Paths(f"tabular MDP S={S}, A={A}, T={T} ({len(steps)} trajectories)", logits,
                  states, actions, env_prob, r[states, actions].sum(axis=1), advantages)


def _token_paths(rng, V: int = 3, T: int = 3) -> _Paths:
    """A token task: responses of ``T`` tokens from ``V``, an autoregressive tabular policy
    (one row of logits per prefix) and a random reward per response at its end."""
    offsets = np.cumsum([0] + [V**k for k in range(T)])  # prefix rows: by length, then code
    responses = np.array(list(itertools.product(range(V), repeat=T)))
    codes = np.zeros(len(responses), int)
    states = np.zeros_like(responses)
    for t in range(T):
        states[:, t] = offsets[t] + codes
        codes = codes * V + responses[:, t]
    logits = rng.normal(size=(int(offsets[-1]), V))
    return _Paths(f"token task V={V}, T={T} ({len(responses)} responses, reward at the end)",
                  logits, states, responses, np.ones(len(responses)),
                  rng.normal(size=len(responses)), None)


def _objective(paths: _Paths, logits: np.ndarray) -> float:
    """J(θ) = Σ_τ p_θ(τ) R(τ), summed over every trajectory."""
    pi = _softmax(logits)
    return float(np.sum(np.prod(pi[paths.states, paths.actions], axis=1) * paths.env_prob
                        * paths.returns))


def _exact_gradient_of_objective(paths: _Paths, h: float = 1e-6) -> np.ndarray:
    """∇J by central differences of the exact J(θ) in float64 (errors near 1e-10), not by
    the score-function identity the loss relies on."""
    grad = np.zeros_like(paths.logits)
    for index in np.ndindex(*grad.shape):
        step = np.zeros_like(paths.logits)
        step[index] = h
        grad[index] = (_objective(paths, paths.logits + step)
                       - _objective(paths, paths.logits - step)) / (2 * h)
    return grad


def _expected_loss_gradient(fn, kind: str, adapter: LossAdapter, hp: LossHyper,
                            paths: _Paths) -> np.ndarray:
    """E_τ[∇θ(−loss(τ))] on-policy, the loss of one trajectory ``[T, 1]`` (ρ = 1), exactly:
    Σ_τ p(τ) Σ_t ∂(−loss)/∂log π_t · ∇θ log π(a_t|s_t), with ∇θ log π = e_a − π(·|s) on row s."""
    pi = _softmax(paths.logits)
    prob = np.prod(pi[paths.states, paths.actions], axis=1) * paths.env_prob
    objective = _objective(paths, paths.logits)
    lp = np.log(pi[paths.states, paths.actions]).astype(np.float32)  # [N, T]
    if kind in _SEQUENCE_LOSS_KINDS:
        adv = (paths.returns - objective)[:, None]  # [N, 1]
    elif paths.advantages is not None:
        adv = paths.advantages[..., None]  # [N, T, 1]
    else:
        adv = np.repeat((paths.returns - objective)[:, None, None], lp.shape[1], axis=1)
    adv = adv.astype(np.float32)

    def minus_loss_grad(x):
        lp_n, adv_n = x[0][:, None], x[1]

        def loss(lp_n):
            old = jax.lax.stop_gradient(lp_n)  # the rollout's: equal in value, held constant
            x = PolicyLossArrays(lp_n, old, adv_n, jnp.ones_like(lp_n, bool))
            out = adapter.call(fn, kind, x, LossHyper(hp.clip_low, hp.clip_high, hp.reduction))
            return -(out[0] if isinstance(out, (tuple, list)) else out)

        return jax.grad(loss)(lp_n)[:, 0]

    xs = (jnp.asarray(lp), jnp.asarray(adv))
    try:
        g = jax.jit(lambda xs: jax.lax.map(minus_loss_grad, xs))(xs)
    except Exception:  # cannot be traced: one trajectory at a time, eagerly
        g = jnp.stack([minus_loss_grad((xs[0][n], xs[1][n])) for n in range(len(lp))])
    g = np.asarray(jnp.asarray(g, jnp.float32), np.float64) * prob[:, None]  # [N, T]
    out = np.zeros_like(paths.logits)
    for t in range(lp.shape[1]):
        s, a = paths.states[:, t], paths.actions[:, t]
        np.add.at(out, (s, a), g[:, t])
        np.add.at(out, s, -g[:, t:t + 1] * pi[s])
    return out


def _exact_row(name: str, doc: str, fn, kind, adapter, hp, paths: _Paths,
               tol: float) -> CheckResult:
    """``T · E[∇(−loss)]`` against ∇J: the relative error is the row's worst error."""
    T = paths.states.shape[1]
    settings = {"task": paths.name, "advantages": "Q_t − V_t" if paths.advantages is not None
                and kind not in _SEQUENCE_LOSS_KINDS else "R − J", "scale": f"1/T = 1/{T}"}
    tolerance = f"rel ≤ {tol:g}"
    truth = _exact_gradient_of_objective(paths)
    try:
        got = T * _expected_loss_gradient(fn, kind, adapter, hp, paths)
    except Exception as e:
        reason = str(e) if isinstance(e, _Unfit) else f"could not run: {_first_line(e)}"
        return CheckResult(name, doc, False, float("nan"), tolerance, reason,
                           Case({"logits": paths.logits}, settings, time_major=False))
    norm = lambda a: float(np.sqrt(np.sum(a * a)))
    rel = norm(got - truth) / norm(truth)
    cos = float(np.sum(got * truth)) / max(norm(got) * norm(truth), 1e-300)
    note = f"cosine {cos:.6f}, relative error {rel:.2g}"
    if rel <= tol:
        return CheckResult(name, doc, True, rel, tolerance, note=note)
    reason = (f"T·E[∇(−loss)] is not ∇J: {note}, norm ratio {norm(got) / norm(truth):.3g}")
    return CheckResult(name, doc, False, rel if np.isfinite(rel) else float("inf"), tolerance,
                       reason, Case({"logits": paths.logits}, settings, {"∇J": truth},
                                    {"∇J": got}, time_major=False))


_EXACT_CHECKS = ("exact_mdp", "exact_tokens")


def check_policy_loss(fn: Callable, kind: str, *, reduction: str = "token",
                      adapter: LossAdapter | Callable | None = None, clip_eps: float = 0.2,
                      clip_high: float | None = None, seed: int = 0, rtol: float = 1e-4,
                      atol: float = 1e-6, bf16_rtol: float = 0.05, bf16_atol: float = 0.01,
                      exact_tol: float = 1e-4, checks: Sequence[str] | None = None) -> Report:
    """Check ``fn``, a policy loss of ``kind`` (one of :data:`POLICY_LOSS_KINDS`) reduced as
    ``reduction`` says, against :func:`reference_policy_loss` and the exact policy gradient.

    The checks (one :class:`CheckResult` each, in this order), each comparing the loss and
    its gradient with respect to ``log_probs`` with the reference: ``reference`` (a random
    batch [8, 6], no padding, ratios spread so that clipping is active), ``mask`` (a quarter
    of the tokens padded and one sequence empty; padding holds large finite values),
    ``padding_nan`` (padding holds ``nan`` and ±``inf``), ``all_masked`` (the loss and
    gradient are 0), ``float32`` (they stay float32), ``bfloat16`` (on-policy bf16 inputs,
    ``bf16_rtol``/``bf16_atol``), ``jit`` (the clip range traced) and ``vmap`` (3 stacked
    batches, traced clip ranges). Then the on-policy exact-gradient checks: ``exact_mdp`` (a
    random tabular MDP, 3 states, 2 actions, horizon 3, every one of its 216 trajectories)
    and ``exact_tokens`` (27 responses of 3 tokens from 3, an autoregressive tabular policy,
    a reward at the end). Each applies the loss to one trajectory ``[T, 1]`` at ρ = 1 with
    exact advantages (Q_t − V_t on the MDP for per-token kinds; R − J otherwise, per token or
    per sequence), weights ∇θ(−loss) by the trajectory's exact probability, and compares
    ``T·E[∇θ(−loss)]`` with ∇J by central differences of J = Σ_τ p(τ) R(τ) in float64
    (not by the score-function identity the loss relies on): the fixed length
    makes every reduction scale the gradient by 1/T. The row's worst error is the relative
    error ‖T·E[∇(−loss)] − ∇J‖/‖∇J‖ (passing under ``exact_tol``); its note also gives the
    cosine.

    Rows, failures and their smallest inputs (the first sequence that fails alone, cut to its
    shortest failing prefix) work as in :func:`check_advantages`; ``adapter`` defaults to
    :data:`LOSS_JAXADV`.

    Args:
      fn: the loss; ``adapter`` says how it is called.
      kind: one of :data:`POLICY_LOSS_KINDS`.
      reduction: ``"token"``, ``"sequence"`` or ``"constant"`` (not for ``"gspo"``, which
        averages over sequences).
      clip_eps: ε (``"ppo"``), ε_low (``"dapo"``, ``"cispo"``, ``"gspo"``; ``inf``: no bound).
      clip_high: ε_high (default ``clip_eps``; not for ``"ppo"``).
      seed: seeds the random inputs and tasks.
      rtol, atol: float32 tolerance; ``bf16_rtol``, ``bf16_atol``: bfloat16's.
      exact_tol: the exact checks' relative tolerance.
      checks: names of the checks to run (default: all).
    """
    if kind not in POLICY_LOSS_KINDS:
        raise ValueError(f"`kind` must be one of {POLICY_LOSS_KINDS}, got {kind!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    if kind == "ppo" and clip_high not in (None, clip_eps):
        raise ValueError("`clip_high`: ppo clips symmetrically (clip_eps); use kind 'dapo'")
    adapter = _as_adapter(adapter, LOSS_JAXADV)
    hp = LossHyper(clip_eps, clip_eps if clip_high is None else clip_high, reduction)
    specs = _loss_specs(kind)
    chosen = _select([*specs, *(_Spec(n, "", None) for n in _EXACT_CHECKS)], checks)
    settings: dict[str, Any] = {} if kind in _SEQUENCE_LOSS_KINDS else {"reduction": reduction}
    if kind != "pg":
        settings["clip"] = hp.clip_low if kind == "ppo" else (hp.clip_low, hp.clip_high)
    run_case = _loss_runner(fn, kind, adapter, hp)
    shrink = _shrink_loss(kind in _SEQUENCE_LOSS_KINDS)
    rows = []
    for i, spec in chosen:
        if spec.name == "exact_mdp":
            rows.append(_exact_row(spec.name, "on-policy E[∇(−loss)] on a tabular MDP = ∇J/T",
                                   fn, kind, adapter, hp,
                                   _mdp_paths(np.random.default_rng(seed * 1000 + i)), exact_tol))
        elif spec.name == "exact_tokens":
            rows.append(_exact_row(spec.name, "on-policy E[∇(−loss)] on a token task = ∇J/T",
                                   fn, kind, adapter, hp,
                                   _token_paths(np.random.default_rng(seed * 1000 + i)), exact_tol))
        else:
            tol = (bf16_rtol, bf16_atol) if spec.low_precision else (rtol, atol)
            swept = {"clip": [p[0] if kind == "ppo" else p for p in _LOSS_SWEEP]} if (
                spec.mode == "vmap" and kind != "pg") else {}
            rows.append(_check(spec, run_case, shrink, {**settings, **swept},
                               seed * 1000 + i, tol, time_major=True))
    title = f"check_policy_loss({_name(fn)}, {kind!r}"
    title += ")" if kind in _SEQUENCE_LOSS_KINDS else f", reduction={reduction!r})"
    return Report(f"{title[:-1]}, adapter={adapter.name})", tuple(rows))
