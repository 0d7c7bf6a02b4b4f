"""Exact ground truth for sequence-level policy gradients on tiny token tasks.

On a :class:`~jaxadv.envs.sequence.SequenceTask` with ``D`` digits and responses of at
most ``R`` digits, a complete response is ``n < R`` digits followed by ``EOS``, or ``R``
digits (the episode ends there), so there are

    ``M = Σ_{n<R} Dⁿ + D^R``   responses (121 for ``D = 3, R = 4``).

Every one of them is enumerated (:func:`enumerate_responses`) and scored
(:func:`response_rewards`, :meth:`SequenceTask.score`, length penalty included), and a
causal transformer (:func:`jaxadv.nets.transformer.make_transformer`) gives the
log-probability of each, teacher-forced, in one ``apply_all`` over all ``Np × M``
(prompt, response) rows (:func:`token_log_probs`). For a fixed set of ``Np`` prompts
(drawn uniformly)

    ``J(θ) = (1/Np) Σ_p Σ_m π_θ(m | p) r(p, m)``      (:func:`exact_objective`)

and ``∇J`` is its ``jax.grad`` (:func:`exact_gradient`). :func:`prefix_values` computes
the value of every prefix by backward recursion over the prefix tree,
``V(c) = Σ_{a<D} π(a | c) V(c·a) + π(EOS | c) r(c, EOS)`` with ``V = r`` at ``R`` digits,
so ``V(∅) = J_p``.

:func:`sample_sequence_gradients` draws ``num_batches`` independent batches of ``G``
prompts (uniform, with replacement) × ``K`` responses, sampled exactly from ``π`` as
categorical draws over the enumerated ``log π(m | p)`` (Gumbel-max; no rollout), and
forms every estimator's estimate ``ĝ = ∇ Σ_{i,t} A_{i,t} log π(a_t | prefix_t) / norm``
with ``norm`` as :func:`jaxadv.losses.policy_gradient_loss`'s ``reduction`` sets it:

* ``"token"``: ``Σ_i n_i`` (``n_i`` = the response's action tokens, ``EOS`` included);
* ``"sequence"``: ``G·K·n_i`` (the mean over responses of per-response token means);
* ``"constant"``: ``G·K·R``.

Estimators (:data:`REPORT_ESTIMATORS`, rows of the estimator table :data:`jaxadv.engine.estimators.ESTIMATORS`):
``"return"`` (``A = r``, no baseline; ``"reinforce"`` is read as ``"return"``), the
critic-free ones of :func:`jaxadv.advantages.sequence_advantages` (``"batchmean"``,
``"grpo"``, ``"drgrpo"``, ``"rloo"``, ``"rfpp"``, ``"remax"`` with the exact greedy
response), and ``"gae"``: :func:`jaxadv.advantages.gae` with ``γ = λ = 1`` and the
*exact* prefix values as critic, i.e. ``A_t = r − V(prefix_t)``.

Which pairs are unbiased. With ``s_i = Σ_t ∇ log π(a_{i,t} | ·)``, the ``"constant"``
reduction gives ``ĝ = (1/(G K R)) Σ_i Σ_t A_{i,t} ∇ log π``, so ``R·ĝ`` is unbiased for
``∇J`` when the baseline of sample ``i`` does not depend on sample ``i``: ``return``,
``rloo``, ``remax`` (the greedy response is a function of the prompt) and ``gae`` with
the exact critic (a baseline that depends only on the prefix). Two more are unbiased up
to an exactly known constant: ``batchmean`` (the batch mean contains ``r_i``:
``E ĝ = (1 − 1/(G K)) ∇J / R``) and ``drgrpo`` (``= (K−1)/K × rloo``, sample by sample).
``"sequence"`` weights response ``i`` by ``1/n_i`` (a length bias in the *direction*),
``"token"`` divides by the random ``Σ n_i`` (a ratio: consistent up to a constant,
biased at finite batch size), ``grpo``'s per-prompt ``1/std`` reweights prompts by
difficulty, and ``rfpp``'s global std is random. :func:`sequence_report` therefore
compares ``ĝ · scale / target_scale`` with ``∇J``, where

* ``scale`` undoes the reduction's constant: ``R`` for ``"constant"``, ``n̄`` (the exact
  expected number of action tokens per response) for ``"token"`` and ``"sequence"``;
* ``target_scale`` is the known constant of the estimator: ``1`` for the unbiased ones,
  ``1 − 1/(G K)`` (``batchmean``), ``1 − 1/K`` (``drgrpo``), ``1/(σ + eps)`` with ``σ``
  the exact std of the reward over prompts and responses (``rfpp``: its large-batch
  limit), and for ``grpo`` ``(1 − 1/K)·⟨h, ∇J⟩/‖∇J‖²`` with
  ``h = (1/Np) Σ_p ∇J_p / (σ_p + eps)`` (the projection onto ``∇J`` of its
  infinite-group expectation; a heuristic constant).

Because no constant can be exactly right for the biased ones, each row also has the
scale-free *perpendicular* bias: the statistics of the estimates' component orthogonal
to ``∇J`` against 0, which is 0 for every estimator with ``E ĝ ∥ ∇J``.

Everything here is plain ``jnp`` (no LAPACK), so it may be vmapped (docs/design.md,
"Batched LAPACK under vmap"); the statistics run in numpy (float64) on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxadv import losses
from jaxadv.engine.devices import map_over_devices
from jaxadv.engine.estimators import ESTIMATORS as ESTIMATOR_TABLE
from jaxadv.engine.estimators import EstimatorArgs, EstimatorInput
from jaxadv.envs.sequence import SequenceParams, SequenceTask
from jaxadv.losses import REDUCTIONS
from jaxadv.science.variance import gradient_statistics
from jaxadv.validate import positive_int

__all__ = [
    "LEGACY_ESTIMATORS",
    "REDUCTIONS",
    "REPORT_ESTIMATORS",
    "Responses",
    "SequenceTables",
    "enumerate_responses",
    "exact_gradient",
    "exact_objective",
    "greedy_responses",
    "make_prompts",
    "prefix_index",
    "prefix_values",
    "response_rewards",
    "response_tokens",
    "sample_sequence_gradients",
    "sequence_estimators",
    "sequence_report",
    "sequence_tables",
    "token_log_probs",
]

REPORT_ESTIMATORS = ("return", "batchmean", "grpo", "drgrpo", "rloo", "rfpp", "remax", "gae")
"""The estimators :func:`sequence_report` compares by default (the module's analysis knows
each one's scale): rows of :data:`jaxadv.engine.estimators.ESTIMATORS`."""
LEGACY_ESTIMATORS = {"reinforce": "return"}
"""Older spellings still read: ``reinforce`` (the reward, no baseline) is ``return``."""
_DEPRECATED = {"ESTIMATORS": "REPORT_ESTIMATORS", "LEGACY_NAMES": "LEGACY_ESTIMATORS"}


def __getattr__(name: str) -> Any:
    """The names of 0.3.0 renamed since (``ESTIMATORS``, ``LEGACY_NAMES``), with a
    ``DeprecationWarning``."""
    if name in _DEPRECATED:
        import warnings

        warnings.warn(f"jaxadv.science.sequence_exact.{name} is deprecated: use "
                      f"{_DEPRECATED[name]}", DeprecationWarning, stacklevel=2)
        return globals()[_DEPRECATED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sequence_estimators() -> tuple[str, ...]:
    """Every row of :data:`jaxadv.engine.estimators.ESTIMATORS` this module computes, in table
    order (rows added at run time included): all but a Q critic's. Those outside
    :data:`REPORT_ESTIMATORS` are compared with a target scale of 1."""
    return tuple(name for name, row in ESTIMATOR_TABLE.items() if row.critic != "q")
_MAX_RESPONSES = 200_000

ApplyAll = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]


def _raw(env: Any) -> SequenceTask:
    # Not the TokenEnv protocol (jaxadv.envs.token): the enumeration needs SequenceTask's
    # internals — num_digits, prompt_size, target_for, score, reset_env, the obs layout.
    raw = getattr(env, "unwrapped", env)
    if not isinstance(raw, SequenceTask):
        raise ValueError(f"`env` must be a SequenceTask (or wrap one), got {type(raw).__name__}")
    return raw


def _params(env: SequenceTask, env_params: SequenceParams | None) -> SequenceParams:
    return env.default_params if env_params is None else env_params


def _num_responses(d: int, r: int) -> int:
    return sum(d**n for n in range(r)) + d**r


class Responses(NamedTuple):
    """Every complete response of a task, ``M`` of them.

    Attributes:
      actions: int32 ``[M, R]`` action ids: digits ``a < D``, then action ``D`` (``EOS``)
        if the response ended before ``R`` digits, then ``-1`` (padding). Ordered by
        length: the ``D⁰, D¹, …, D^{R−1}`` responses that end with ``EOS`` after ``0, 1,
        …, R−1`` digits, then the ``D^R`` of ``R`` digits; lexicographic within a length.
      lengths: int32 ``[M]`` digits written (``EOS`` excluded), as the environment's
        ``response_length``; the response has ``min(lengths + 1, R)`` action tokens.
    """

    actions: jax.Array
    lengths: jax.Array


def _digits(codes: np.ndarray, width: int, base: int) -> np.ndarray:
    """Base-``base`` digits of ``codes [N]``, most significant first: ``[N, width]``."""
    powers = base ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (codes[:, None] // powers[None, :]) % base


def _enumerate_np(d: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    actions, lengths = [], []
    for n in range(r + 1):
        block = np.full((d**n, r), -1, np.int64)
        block[:, :n] = _digits(np.arange(d**n), n, d)
        if n < r:
            block[:, n] = d  # EOS
        actions.append(block)
        lengths.append(np.full(d**n, n, np.int64))
    return np.concatenate(actions).astype(np.int32), np.concatenate(lengths).astype(np.int32)


def enumerate_responses(env: Any) -> Responses:
    """All ``M = Σ_{n<R} Dⁿ + D^R`` complete responses of ``env`` (see :class:`Responses`).

    Args:
      env: a :class:`SequenceTask` (or a wrapper of one); ``D = num_digits``,
        ``R = response_length``.

    Returns:
      :class:`Responses`: ``actions [M, R]``, ``lengths [M]``.

    >>> from jaxadv.envs.sequence import SequenceTask
    >>> env = SequenceTask("reverse", num_digits=2, prompt_length=1, response_length=2)
    >>> actions, lengths = enumerate_responses(env)
    >>> actions.tolist(), lengths.tolist()          # "", "0", "1", "00", "01", "10", "11"
    ([[2, -1], [0, 2], [1, 2], [0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 2, 2, 2, 2])
    """
    raw = _raw(env)
    d, r = raw.num_digits, raw.response_length
    if _num_responses(d, r) > _MAX_RESPONSES:
        raise ValueError(
            f"`env` has {_num_responses(d, r)} responses (num_digits={d}, response_length={r}); "
            f"exact enumeration allows at most {_MAX_RESPONSES}"
        )
    actions, lengths = _enumerate_np(d, r)
    return Responses(jnp.asarray(actions), jnp.asarray(lengths))


def _action_mask(env: SequenceTask, responses: Responses) -> jax.Array:
    """bool ``[M, R]``: action slot ``t`` is a real token (``t < min(n + 1, R)``)."""
    count = jnp.minimum(responses.lengths + 1, env.response_length)
    return jnp.arange(env.response_length)[None, :] < count[:, None]


def make_prompts(
    key: jax.Array, env: Any, num_prompts: int, env_params: SequenceParams | None = None
) -> jax.Array:
    """``num_prompts`` prompt regions drawn as ``env.reset`` draws them: int32 ``[Np, P]``.

    >>> import jax
    >>> from jaxadv.envs.sequence import SequenceTask
    >>> env = SequenceTask("reverse", num_digits=3, prompt_length=3, min_prompt_length=1)
    >>> make_prompts(jax.random.key(0), env, 4).shape
    (4, 3)
    """
    raw = _raw(env)
    params = _params(raw, env_params)
    reset = jax.jit(jax.vmap(lambda k, p: raw.reset_env(k, p)[1].prompt, in_axes=(0, None)))
    return reset(jax.random.split(key, num_prompts), params)


def _check_prompts(env: SequenceTask, prompts: Any) -> jax.Array:
    prompts = jnp.asarray(prompts, jnp.int32)
    if prompts.ndim != 2 or prompts.shape[1] != env.prompt_size or prompts.shape[0] < 1:
        raise ValueError(
            f"`prompts` must be int [Np, P] with P = prompt_size = {env.prompt_size}, "
            f"got shape {prompts.shape}"
        )
    return prompts


def response_tokens(env: Any, prompts: Any, responses: Responses) -> jax.Array:
    """The token rows of every (prompt, response): int32 ``[Np, M, L]``.

    Row = the prompt region ``[P]``, ``SEP``, then the response region ``[R]``: digits,
    ``EOS`` (token ``D + 1``) if emitted, ``PAD`` — the environment's final observation.

    Args:
      env: the task.
      prompts: int ``[Np, P]`` prompt regions (left-padded with ``PAD``).
      responses: :func:`enumerate_responses`.
    """
    raw = _raw(env)
    prompts = _check_prompts(raw, prompts)
    a = responses.actions
    tok = jnp.where(a < 0, raw.tokens.pad, jnp.where(a == raw.num_digits, raw.tokens.eos, a))
    n_p, m = prompts.shape[0], a.shape[0]
    sep = jnp.full((n_p, m, 1), raw.tokens.sep, jnp.int32)
    return jnp.concatenate(
        [jnp.broadcast_to(prompts[:, None, :], (n_p, m, raw.prompt_size)), sep,
         jnp.broadcast_to(tok[None], (n_p, m, raw.response_length))],
        axis=-1,
    ).astype(jnp.int32)


def _row_log_probs(env: SequenceTask, params: Any, apply_all: ApplyAll, rows: jax.Array,
                   actions: jax.Array, mask: jax.Array) -> jax.Array:
    """Teacher-forced ``log π(a_t | prefix_t)``: ``rows [*B, L]``, ``actions, mask [*B, R]``
    -> ``[*B, R]`` (0 at padding). Action ``t`` is read at position ``P + t``."""
    logits, _ = apply_all(params, rows)
    start = env.prompt_size
    logits = logits[..., start:start + env.response_length, :]
    logp = jax.nn.log_softmax(logits, axis=-1)
    taken = jnp.take_along_axis(logp, jnp.maximum(actions, 0)[..., None], axis=-1)[..., 0]
    return jnp.where(mask, taken, 0.0)


def token_log_probs(
    params: Any, apply_all: ApplyAll, env: Any, prompts: Any, responses: Responses | None = None
) -> jax.Array:
    """``log π(a_t | prompt, a_{<t})`` of every action of every response: ``[Np, M, R]``.

    One teacher-forced ``apply_all`` over the ``Np · M`` rows of :func:`response_tokens`;
    padding slots are 0, so ``.sum(-1)`` is ``log π(m | p)``.

    Args:
      params: the transformer's parameters.
      apply_all: ``(params, tokens [*B, L]) -> (logits [*B, L, A], values [*B, L])``
        (:func:`jaxadv.nets.transformer.make_transformer`, ``A = D + 1``, ``max_len ≥ L``).
      env: the task.
      prompts: int ``[Np, P]``.
      responses: default :func:`enumerate_responses` ``(env)``.
    """
    raw = _raw(env)
    responses = enumerate_responses(raw) if responses is None else responses
    rows = response_tokens(raw, prompts, responses)
    mask = jnp.broadcast_to(_action_mask(raw, responses)[None], (*rows.shape[:2], raw.response_length))
    actions = jnp.broadcast_to(responses.actions[None], mask.shape)
    return _row_log_probs(raw, params, apply_all, rows, actions, mask)


def response_rewards(
    env: Any, prompts: Any, responses: Responses | None = None,
    env_params: SequenceParams | None = None,
) -> jax.Array:
    """``r(p, m)``, float32 ``[Np, M]``: :meth:`SequenceTask.score` of every response
    (the environment's reward at the final step, length penalty included)."""
    raw = _raw(env)
    prompts = _check_prompts(raw, prompts)
    responses = enumerate_responses(raw) if responses is None else responses
    target, target_length = raw.target_for(prompts)  # [Np, T], [Np]
    a = responses.actions
    tok = jnp.where(a < 0, raw.tokens.pad, jnp.where(a == raw.num_digits, raw.tokens.eos, a))
    reward, _ = raw.score(target[:, None, :], target_length[:, None], tok[None, :, :],
                          responses.lengths[None, :], _params(raw, env_params))
    return reward


def _objectives(params, apply_all, env, prompts, env_params, responses=None) -> jax.Array:
    """``J_p = Σ_m π(m | p) r(p, m)``: ``[Np]``."""
    responses = enumerate_responses(env) if responses is None else responses
    logp = token_log_probs(params, apply_all, env, prompts, responses).sum(-1)
    rewards = response_rewards(env, prompts, responses, env_params)
    return jnp.sum(jnp.exp(logp) * rewards, axis=-1)


def exact_objective(
    params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
    env_params: SequenceParams | None = None,
) -> jax.Array:
    """``J = (1/Np) Σ_p Σ_m π(m | p) r(p, m)`` over every complete response: a scalar.

    Args:
      params, apply_all: the policy (see :func:`token_log_probs`).
      env: the task (its ``reward`` mode; ``env_params.length_penalty``).
      prompts: int ``[Np, P]``, weighed equally.
      env_params: default ``env.default_params``.

    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.envs.sequence import SequenceTask
    >>> from jaxadv.nets.transformer import make_transformer
    >>> env = SequenceTask("reverse", num_digits=2, prompt_length=2, response_length=3)
    >>> net = make_transformer(env.vocab_size, env.obs_length, 3, pad=env.tokens.pad,
    ...                        layers=1, width=8, heads=1)
    >>> params = jax.jit(net.init)(jax.random.key(0), jnp.zeros(env.obs_length))
    >>> prompts = jnp.array([[0, 1], [1, 1]])
    >>> j = jax.jit(lambda p: exact_objective(p, net.apply_all, env, prompts))(params)
    >>> bool(0.0 < j < 1.0)
    True
    """
    return jnp.mean(_objectives(params, apply_all, _raw(env), prompts, env_params))


def exact_gradient(
    params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
    env_params: SequenceParams | None = None,
) -> jax.Array:
    """``∇_θ J``, flattened with ``ravel_pytree(params)``: ``[D]`` (``jax.grad`` of
    :func:`exact_objective`)."""
    flat, unravel = ravel_pytree(params)
    return jax.grad(lambda f: exact_objective(unravel(f), apply_all, env, prompts, env_params))(flat)


# ------------------------------------------------------------------ the prefix tree


def _offsets(d: int, r: int) -> np.ndarray:
    """``off[t] = Σ_{s<t} D^s``: the first flat index of the prefixes of ``t`` digits."""
    return np.concatenate([[0], np.cumsum([d**t for t in range(r + 1)])]).astype(np.int64)


def prefix_index(env: Any) -> jax.Array:
    """int32 ``[M, R]``: the flat prefix index of the state before action ``t`` of response
    ``m`` (0 at padding). A prefix of ``t`` digits with base-``D`` code ``c`` (most
    significant first) has index ``Σ_{s<t} D^s + c``; there are ``Σ_{t≤R} D^t`` of them."""
    raw = _raw(env)
    d, r = raw.num_digits, raw.response_length
    actions, lengths = _enumerate_np(d, r)
    off = _offsets(d, r)
    index = np.zeros(actions.shape, np.int64)
    code = np.zeros(actions.shape[0], np.int64)
    for t in range(r):
        index[:, t] = np.where(t < np.minimum(lengths + 1, r), off[t] + code, 0)
        code = code * d + np.maximum(actions[:, t], 0)
    return jnp.asarray(index, jnp.int32)


def _tree_tables(d: int, r: int):
    """Static index tables: for each level ``t < R``, ``rep[t] [D^t, D+1]`` (a response
    whose action ``t`` from prefix ``c`` is ``a``) and ``eos[t] [D^t]`` (the response
    ``c, EOS``); ``full [D^R]`` the responses of ``R`` digits."""
    block = np.concatenate([[0], np.cumsum([d**n for n in range(r + 1)])])  # response blocks
    full_start = block[r]
    reps, eos = [], []
    for t in range(r):
        codes = np.arange(d**t)
        rep = np.empty((d**t, d + 1), np.int64)
        for a in range(d):  # the first response of R digits that extends c·a
            rep[:, a] = full_start + (codes * d + a) * d ** (r - t - 1)
        rep[:, d] = block[t] + codes
        reps.append(rep)
        eos.append(block[t] + codes)
    return reps, eos, full_start + np.arange(d**r)


def _tree_values(env: SequenceTask, token_logp: jax.Array, rewards: jax.Array):
    """Backward recursion from the enumerated tables ``[Np, M, R]`` and ``[Np, M]``:
    ``(values [Np, Σ_{t≤R} D^t], probs: per level t < R, π(· | c) [Np, D^t, D+1])``."""
    d, r = env.num_digits, env.response_length
    reps, eos, full = _tree_tables(d, r)
    probs = [jnp.exp(token_logp[:, reps[t], t]) for t in range(r)]
    levels = [rewards[:, full]]  # V at R digits: the reward
    for t in reversed(range(r)):
        n_p = rewards.shape[0]
        children = levels[0].reshape(n_p, d**t, d)
        v = jnp.sum(probs[t][..., :d] * children, axis=-1) + probs[t][..., d] * rewards[:, eos[t]]
        levels.insert(0, v)
    return jnp.concatenate(levels, axis=1), probs


def prefix_values(
    params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
    env_params: SequenceParams | None = None,
) -> jax.Array:
    """``V(p, c)`` of every prefix ``c`` by backward recursion over the prefix tree: ``[Np, N]``.

    ``V(c) = Σ_{a<D} π(a | c) V(c·a) + π(EOS | c) r(c, EOS)`` for ``|c| < R``, ``V(c) =
    r(c)`` for ``|c| = R``; ``N = Σ_{t≤R} D^t``, indexed as in :func:`prefix_index`, so
    ``V[:, 0]`` (the empty prefix) is ``J_p``. ``π(· | c)`` is read from the
    teacher-forced pass over the enumerated responses (causal: any response that
    extends ``c`` gives it).
    """
    raw = _raw(env)
    responses = enumerate_responses(raw)
    logp = token_log_probs(params, apply_all, raw, prompts, responses)
    return _tree_values(raw, logp, response_rewards(raw, prompts, responses, env_params))[0]


def _greedy(env: SequenceTask, probs: list) -> jax.Array:
    """Walk the tree by ``argmax π(· | c)`` from the root: response indices ``[Np]``."""
    d, r = env.num_digits, env.response_length
    block = np.concatenate([[0], np.cumsum([d**n for n in range(r + 1)])])
    n_p = probs[0].shape[0]
    code = jnp.zeros(n_p, jnp.int32)
    index = jnp.full(n_p, -1, jnp.int32)
    for t in range(r):
        a = jnp.argmax(probs[t][jnp.arange(n_p), code], axis=-1).astype(jnp.int32)
        stop = (index < 0) & (a == d)
        index = jnp.where(stop, block[t] + code, index)
        code = jnp.where(index < 0, code * d + a, code)
    return jnp.where(index < 0, block[r] + code, index)


def greedy_responses(params: Any, apply_all: ApplyAll, env: Any, prompts: Any) -> jax.Array:
    """The greedy response (``argmax`` at each step, ties to the lowest action) of each
    prompt, as an index into :func:`enumerate_responses`: int32 ``[Np]``."""
    raw = _raw(env)
    responses = enumerate_responses(raw)
    logp = token_log_probs(params, apply_all, raw, prompts, responses)
    return _greedy(raw, _tree_values(raw, logp, jnp.zeros(logp.shape[:2]))[1])


# ------------------------------------------------------------------ sampled estimates


class SequenceTables(NamedTuple):
    """Everything the sampled estimates need, computed exactly once.

    Attributes:
      log_probs: ``[Np, M]`` ``log π(m | p)``.
      rewards: ``[Np, M]`` ``r(p, m)``.
      mask: bool ``[M, R]`` real action slots.
      values: ``[Np, M, R]`` exact ``V(prefix_t)`` before each action (0 at padding).
      greedy_rewards: ``[Np]`` the reward of each prompt's greedy response.
      jacobian: ``[Np, M, R, D]`` ``∇_θ log π(a_t | prefix_t)`` (0 at padding), flattened.
      objectives: ``[Np]`` ``J_p``.
      prompt_gradients: ``[Np, D]`` ``∇J_p = Σ_m π(m | p) r(p, m) Σ_t ∇ log π(a_t | ·)``
        (the score-function identity, from ``jacobian``).
      gradient: ``[D]`` ``∇J`` by ``jax.grad`` of :func:`exact_objective` (equal to the
        mean of ``prompt_gradients`` up to rounding).
    """

    log_probs: jax.Array
    rewards: jax.Array
    mask: jax.Array
    values: jax.Array
    greedy_rewards: jax.Array
    jacobian: jax.Array
    objectives: jax.Array
    prompt_gradients: jax.Array
    gradient: jax.Array


def sequence_tables(
    params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
    env_params: SequenceParams | None = None,
) -> SequenceTables:
    """:class:`SequenceTables` for a policy and a prompt set (``Np · M · R`` backward passes
    of one row each for the per-token Jacobian, vmapped; no LAPACK)."""
    raw = _raw(env)
    prompts = _check_prompts(raw, prompts)
    responses = enumerate_responses(raw)
    flat, unravel = ravel_pytree(params)
    rows = response_tokens(raw, prompts, responses)  # [Np, M, L]
    mask = _action_mask(raw, responses)  # [M, R]
    shape = (*rows.shape[:2], raw.response_length)
    logp = _row_log_probs(raw, params, apply_all, rows,
                          jnp.broadcast_to(responses.actions[None], shape),
                          jnp.broadcast_to(mask[None], shape))
    rewards = response_rewards(raw, prompts, responses, env_params)
    tree, probs = _tree_values(raw, logp, rewards)
    values = jnp.where(mask[None], jnp.take(tree, prefix_index(raw), axis=1), 0.0)
    greedy = _greedy(raw, probs)
    greedy_rewards = rewards[jnp.arange(rewards.shape[0]), greedy]

    def row_jacobian(row, actions, row_mask):  # [L], [R], [R] -> [R, D]
        f = lambda p: _row_log_probs(raw, unravel(p), apply_all, row[None], actions[None],
                                     row_mask[None])[0]
        return jax.jacrev(f)(flat)

    n_p, m = shape[:2]
    jac = jax.vmap(row_jacobian)(
        rows.reshape(n_p * m, -1),
        jnp.broadcast_to(responses.actions[None], shape).reshape(n_p * m, -1),
        jnp.broadcast_to(mask[None], shape).reshape(n_p * m, -1),
    ).reshape(*shape, -1)
    weights = jnp.exp(logp.sum(-1)) * rewards  # [Np, M]
    prompt_gradients = jnp.einsum("pm,pmtd->pd", weights, jac)
    gradient = exact_gradient(params, apply_all, raw, prompts, env_params)
    return SequenceTables(logp.sum(-1), rewards, mask, values, greedy_rewards, jac,
                          weights.sum(-1), prompt_gradients, gradient)


def _check_names(estimators, reductions, shapes):
    """The names as tuples (older spellings replaced) and the shapes as int pairs, or a
    ``ValueError`` naming the bad one."""
    estimators = tuple(LEGACY_ESTIMATORS.get(e, e) for e in estimators)
    reductions = tuple(reductions)
    for e in estimators:
        if e not in sequence_estimators():
            raise ValueError(f"`estimators`: {e!r} is not one of {sequence_estimators()}")
    for r in reductions:
        if r not in REDUCTIONS:
            raise ValueError(f"`reductions`: {r!r} is not one of {REDUCTIONS}")
    if not estimators or not reductions:
        raise ValueError("`estimators` and `reductions` must not be empty")
    shapes = tuple((int(g), int(k)) for g, k in shapes)
    if not shapes or any(g < 1 or k < 2 for g, k in shapes):
        raise ValueError(f"`shapes` must be (G >= 1 prompts, K >= 2 samples) pairs, got {shapes}")
    return estimators, reductions, shapes


def _advantages(name, returns, values, mask, greedy, group_size, eps):
    """Time-major ``[R, N]`` advantages of one estimator for ``N`` responses, by the
    estimator table: each response is an episode whose reward ``returns [N]`` arrives at
    its last action, with the exact prefix ``values [N, R]`` as critic, ``γ = λ = 1``."""
    r_len = mask.shape[1]
    last = jnp.sum(mask, axis=1) - 1  # [N] the last action's slot
    step = jnp.arange(r_len)[:, None]
    terminated = step >= last[None, :]
    rewards = jnp.where(step == last[None, :], returns[None, :], 0.0)
    v = values.T
    next_v = jnp.concatenate([v[1:], jnp.zeros_like(v[:1])], axis=0)
    x = EstimatorInput(rewards, v, next_v, terminated, jnp.zeros_like(terminated), mask=mask.T,
                       greedy_returns=greedy if ESTIMATOR_TABLE[name].greedy_rollout else None)
    args = EstimatorArgs(gamma=1.0, gae_lambda=1.0, group_size=group_size, eps=eps)
    return ESTIMATOR_TABLE[name].fn(x, args)[0]


def _coefficients(advantages: jax.Array, mask: jax.Array, reduction: str) -> jax.Array:
    """``c = ∂(−policy_gradient_loss)/∂ log π`` (``[R, N]``): the estimate is
    ``Σ c ∇ log π``, normalised exactly as the trainer's loss is."""
    loss = lambda lp: -losses.policy_gradient_loss(lp, advantages, mask, reduction=reduction)
    return jax.grad(loss)(jnp.zeros_like(advantages))


def sample_sequence_gradients(
    key: jax.Array,
    tables: SequenceTables,
    *,
    estimators: Sequence[str] = REPORT_ESTIMATORS,
    reductions: Sequence[str] = REDUCTIONS,
    shapes: Sequence[tuple[int, int]] = ((4, 4),),
    num_batches: int = 1000,
    eps: float = 1e-6,
    devices: int | None = None,
) -> jax.Array:
    """Every estimator's gradient estimate from ``num_batches`` independent batches.

    A batch draws ``G_max`` prompts uniformly (with replacement) and ``K_max`` responses
    per prompt exactly from ``π(· | p)`` (``jax.random.categorical`` over the enumerated
    ``log π(m | p)``); shape ``(G, K)`` uses the first ``G`` prompts and their first ``K``
    responses (common random numbers across shapes). For each estimator and reduction
    ``ĝ = Σ_{i,t} c_{i,t} ∇ log π(a_{i,t} | ·)`` with ``c = −∂ policy_gradient_loss(logπ,
    A, mask, reduction) / ∂ logπ`` (:func:`jaxadv.losses.policy_gradient_loss`, time-major
    ``[R, G·K]``), so the normalisers are exactly the trainer's. Unscaled.

    Args:
      key: PRNG key.
      tables: :func:`sequence_tables`.
      estimators: names from :func:`sequence_estimators` (static).
      reductions: names from :data:`REDUCTIONS` (static).
      shapes: ``(G, K)`` pairs (static), ``K ≥ 2``.
      num_batches: independent batches (static); run by ``jax.lax.map``, one compile,
        spread over at most ``devices`` local devices (default: all;
        :func:`~jaxadv.engine.devices.map_over_devices`: the same bits on any count).
      eps: the std normalisers' stabiliser (``grpo``, ``rfpp``).

    Returns:
      ``[len(shapes), len(estimators), len(reductions), num_batches, D]`` (float32; that
      many numbers are held in memory at once).
    """
    estimators, reductions, shapes = _check_names(estimators, reductions, shapes)
    g_max, k_max = max(g for g, _ in shapes), max(k for _, k in shapes)
    n_p = tables.log_probs.shape[0]

    def one_batch(key):
        key_prompt, key_response = jax.random.split(key)
        p = jax.random.randint(key_prompt, (g_max,), 0, n_p)
        m = jax.random.categorical(key_response, tables.log_probs[p][:, None, :], axis=-1,
                                   shape=(g_max, k_max))
        pp = jnp.broadcast_to(p[:, None], (g_max, k_max))
        out = []
        for g, k in shapes:
            pi, mi = pp[:g, :k].reshape(-1), m[:g, :k].reshape(-1)  # [N]
            returns, mask = tables.rewards[pi, mi], tables.mask[mi]  # [N], [N, R]
            jac = tables.jacobian[pi, mi]  # [N, R, D]
            per_est = []
            for name in estimators:
                a = _advantages(name, returns, tables.values[pi, mi], mask,
                                tables.greedy_rewards[pi], k, eps)
                per_red = []
                for red in reductions:
                    coef = _coefficients(a, mask.T, red)  # [R, N]
                    per_red.append(jnp.einsum("tn,ntd->d", coef, jac))
                per_est.append(jnp.stack(per_red))
            out.append(jnp.stack(per_est))
        return jnp.stack(out)  # [S, E, Rd, D]

    estimates = map_over_devices(one_batch, jax.random.split(key, num_batches), devices)
    return jnp.moveaxis(estimates, 0, 3)


def _perp_statistics(x: np.ndarray, g: np.ndarray, confidence: float) -> dict[str, float]:
    """Bias of the component of ``x [M, D]`` orthogonal to ``g``, against 0."""
    g_norm = float(np.linalg.norm(g))
    u = g / g_norm
    perp = x - np.outer(x @ u, u)
    with np.errstate(invalid="ignore"):  # cosines to a zero reference: nan, unused
        s = gradient_statistics(perp, np.zeros_like(g), confidence=confidence)
    return {"perp_bias": s["bias"], "perp_bias_lo": s["bias_lo"], "perp_bias_hi": s["bias_hi"],
            "rel_perp_bias": s["bias"] / g_norm, "rel_perp_bias_lo": s["bias_lo"] / g_norm,
            "rel_perp_bias_hi": s["bias_hi"] / g_norm,
            "mean_scale": float(x.mean(0) @ g) / g_norm**2}


def sequence_report(
    key: jax.Array,
    params: Any,
    apply_all: ApplyAll,
    env: Any,
    prompts: Any,
    *,
    estimators: Sequence[str] = REPORT_ESTIMATORS,
    reductions: Sequence[str] = REDUCTIONS,
    shapes: Sequence[tuple[int, int]] = ((4, 4),),
    num_batches: int = 1000,
    env_params: SequenceParams | None = None,
    confidence: float = 0.95,
    eps: float = 1e-6,
    tables: SequenceTables | None = None,
    devices: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Bias and variance of every sequence estimator × reduction × ``(G, K)`` against the
    exact ``∇J`` (rows like :func:`jaxadv.science.variance.mdp_report`'s).

    Each row compares ``ĝ · scale / target_scale`` with ``∇J`` (module docstring) through
    :func:`jaxadv.science.variance.gradient_statistics`, and adds the perpendicular bias
    (``perp_bias``, ``perp_bias_lo``/``_hi``, ``rel_perp_bias…``: the component orthogonal
    to ``∇J``, scale-free) and ``mean_scale = ⟨mean ĝ, ∇J⟩/‖∇J‖²`` (after scaling).

    Args:
      key: PRNG key; all estimators and shapes share the same samples.
      params, apply_all: the policy (:func:`jaxadv.nets.transformer.make_transformer`).
      env: a tiny :class:`SequenceTask` (:func:`enumerate_responses`).
      prompts: int ``[Np, P]`` prompt regions, drawn uniformly in each batch.
      estimators, reductions, shapes, num_batches, eps, devices: :func:`sample_sequence_gradients`.
      env_params: default ``env.default_params``.
      confidence: of the bias intervals.
      tables: :func:`sequence_tables` of these ``params``, ``prompts`` and ``env_params``
        if already computed (default: computed here, under ``jax.jit``).

    Returns:
      ``(rows, info)``: one dict per (shape, estimator, reduction) with ``estimator``,
      ``reduction``, ``prompts`` (G), ``group_size`` (K), ``batch_size`` (G·K), ``scale``,
      ``target_scale``, ``unbiased_in_theory`` (the ``"constant"`` reduction with an
      estimator whose row declares ``unbiased``: ``return``, ``rloo``, ``remax``, ``gae``,
      ``batchmean``, ``drgrpo``; the scaled estimate is unbiased for ``∇J``), the statistics
      and the perpendicular ones; ``info``: ``objective`` (J), ``objectives`` (``[Np]`` list),
      ``gradient_norm``, ``mean_tokens`` (n̄), ``reward_std`` (σ), ``reward_stds``
      (``[Np]``), ``num_responses``, ``num_prompts``, ``num_params``, ``num_batches``.
    """
    raw = _raw(env)
    estimators, reductions, shapes = _check_names(estimators, reductions, shapes)
    positive_int("num_batches", num_batches, minimum=3)
    prompts = _check_prompts(raw, prompts)
    if tables is None:
        tables = jax.jit(lambda p: sequence_tables(p, apply_all, raw, prompts, env_params))(params)
    elif tables.log_probs.shape[0] != prompts.shape[0]:
        raise ValueError(f"`tables` hold {tables.log_probs.shape[0]} prompts, `prompts` {prompts.shape[0]}")
    sample = jax.jit(lambda k, t: sample_sequence_gradients(
        k, t, estimators=estimators, reductions=reductions, shapes=shapes,
        num_batches=num_batches, eps=eps, devices=devices))
    estimates = np.asarray(sample(key, tables))  # float32; float64 one slice at a time

    pi = np.exp(np.asarray(tables.log_probs, np.float64))  # [Np, M]
    rewards = np.asarray(tables.rewards, np.float64)
    tokens = np.asarray(tables.mask, np.float64).sum(-1)  # [M]
    g = np.asarray(tables.gradient, np.float64)
    j_p = (pi * rewards).sum(-1)
    second = (pi * rewards**2).sum(-1)
    std_p = np.sqrt(np.maximum(second - j_p**2, 0.0))
    std = math.sqrt(max(float(second.mean() - j_p.mean() ** 2), 0.0))
    mean_tokens = float((pi @ tokens).mean())
    # grpo's K → ∞ expectation h = (1/Np) Σ_p ∇J_p / (σ_p + eps), projected on ∇J
    h = np.mean(np.asarray(tables.prompt_gradients, np.float64) / (std_p + eps)[:, None], axis=0)
    g_sq = float(g @ g)

    rows = []
    for s, (g_count, k) in enumerate(shapes):
        target = {"return": 1.0, "rloo": 1.0, "remax": 1.0, "gae": 1.0,
                  "batchmean": 1.0 - 1.0 / (g_count * k), "drgrpo": 1.0 - 1.0 / k,
                  "rfpp": 1.0 / (std + eps), "grpo": (1.0 - 1.0 / k) * float(h @ g) / g_sq}
        for e, name in enumerate(estimators):
            for r, red in enumerate(reductions):
                scale = float(raw.response_length) if red == "constant" else mean_tokens
                x = estimates[s, e, r].astype(np.float64) * (scale / target.get(name, 1.0))
                rows.append({
                    "estimator": name, "reduction": red, "prompts": g_count, "group_size": k,
                    "batch_size": g_count * k, "scale": scale,
                    "target_scale": target.get(name, 1.0),
                    "unbiased_in_theory": red == "constant" and ESTIMATOR_TABLE[name].unbiased,
                    **gradient_statistics(x, g, confidence=confidence),
                    **_perp_statistics(x, g, confidence),
                })
    info = {"objective": float(j_p.mean()), "objectives": j_p.tolist(),
            "gradient_norm": math.sqrt(g_sq), "mean_tokens": mean_tokens, "reward_std": std,
            "reward_stds": std_p.tolist(), "num_responses": int(pi.shape[1]),
            "num_prompts": int(pi.shape[0]), "num_params": int(g.shape[0]),
            "num_batches": num_batches}
    return rows, info
