"""Token-by-token sequence tasks (reverse, sort, add) as a gymnax environment.

A language-model-style RL problem small enough to sample with the ordinary rollout:
each episode shows a prompt of digits, the policy writes a response one token per
step, and the reward arrives at the end, when the response is compared with the
target.

* Tasks (``D = num_digits``, digits ``0..D−1``):

  - ``"reverse"``: the prompt's digits in reverse order;
  - ``"sort"``: the prompt's digits sorted ascending;
  - ``"add"``: prompt ``a PLUS b`` with two ``k = prompt_length // 2``-digit operands
    (most significant digit first, leading zeros allowed); target: ``a + b`` in base
    ``D`` written with exactly ``k + 1`` digits (leading zero allowed).

* Tokens: digits ``0..D−1``, then ``SEP = D``, ``EOS = D+1``, ``PAD = D+2``,
  ``PLUS = D+3`` (:attr:`SequenceTask.tokens`); ``vocab_size = D + 4``.
* Actions: ``Discrete(D + 1)``; action ``a < D`` writes digit ``a``, action ``D``
  writes ``EOS`` (token ``D+1``) and ends the episode.
* Observation: float32 ``[L]`` token ids, ``L = P + 1 + R``::

      [ PAD … PAD  p_1 … p_n | SEP | r_1 … r_t  (EOS)  PAD … PAD ]
        prompt region [P]      index P   response region [R]

  ``P`` = ``prompt_length`` (+1 for the ``PLUS`` of ``"add"``), ``R`` =
  ``response_length``. The prompt is **left-padded**, so it always ends right
  before ``SEP`` (at index ``P``), whatever its length. Response tokens are never
  ``PAD``, so **the last filled position** — where a causal model reads off the next
  token — is the index of the last non-``PAD`` token: ``last_token_position(obs, pad) =
  P + t`` after ``t`` response tokens (``P``, i.e. ``SEP``, before the first).
* Episode: terminates (``terminated=True``, never ``truncated``) when the policy
  emits ``EOS`` or has written ``R`` digits; the reward comes at that step and is 0
  before. ``max_steps_in_episode = R + 1``, so gymnax's time limit never fires first.
* Reward (:func:`score`): ``"exact"``: 1 if the response (before ``EOS``) equals the
  target, else 0; ``"partial"``: ``#{i < len(target): response[i] = target[i]} /
  max(len(target), len(response))``; either minus ``length_penalty · len(response) / R``.
  ``info["exact_match"]`` (float32 0/1) and ``info["response_length"]`` (int32, digits
  written, ``EOS`` excluded) are set at the final step and 0 elsewhere.

Registered with :func:`jaxadv.envs.make` as ``"Sequence-v0"``:
``make("Sequence-v0", task="sort", prompt_length=5)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from jaxadv.advantages import overlong_penalty

__all__ = [
    "SequenceParams",
    "SequenceState",
    "SequenceTask",
    "Tokens",
    "decode",
    "last_token_position",
    "make_sequence",
    "score",
    "target_for",
]

_TASKS = ("reverse", "sort", "add")
_REWARDS = ("exact", "partial")


class Tokens(NamedTuple):
    """Special token ids for ``D`` digits: ``sep = D``, ``eos = D+1``, ``pad = D+2``, ``plus = D+3``.

    >>> Tokens.for_digits(10)
    Tokens(sep=10, eos=11, pad=12, plus=13)
    """

    sep: int
    eos: int
    pad: int
    plus: int

    @classmethod
    def for_digits(cls, num_digits: int) -> Tokens:
        """The special tokens that follow digits ``0..num_digits−1``."""
        return cls(sep=num_digits, eos=num_digits + 1, pad=num_digits + 2, plus=num_digits + 3)


@struct.dataclass
class SequenceState(environment.EnvState):
    """One episode, all int32 (``time``: steps taken this episode).

    Attributes:
      prompt: ``[P]`` the prompt region, left-padded with ``PAD``.
      target: ``[T]`` the target digits, left-aligned, then ``PAD`` (``T`` = the
        longest target: ``prompt_length``, or ``k + 1`` for ``"add"``).
      target_length: ``[]`` number of target digits.
      response: ``[R]`` tokens written so far (digits, then ``EOS`` if emitted), then ``PAD``.
      response_length: ``[]`` digits written so far (``EOS`` excluded).
    """

    prompt: jax.Array
    target: jax.Array
    target_length: jax.Array
    response: jax.Array
    response_length: jax.Array


@struct.dataclass
class SequenceParams(environment.EnvParams):
    """Per-run numbers (traceable, so one program can be vmapped over them).

    Attributes:
      max_steps_in_episode: gymnax's time limit (default ``R + 1``: never reached).
      length_penalty: reward ``−= length_penalty · len(response) / R``.
      min_prompt_length: ``"reverse"``/``"sort"``: the prompt length is uniform in
        ``[min_prompt_length, prompt_length]`` (ignored for ``"add"``).
      overlong_buffer: DAPO's soft overlong punishment over the last ``overlong_buffer``
        digits before ``R`` (:func:`jaxadv.advantages.overlong_penalty`); 0: none.
    """

    length_penalty: float = 0.0
    min_prompt_length: int = 1
    overlong_buffer: int = 0


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        bound = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ValueError(f"`{name}` must be {bound}, got {value!r}")


def target_for(prompt: jax.Array, *, task: str, num_digits: int) -> tuple[jax.Array, jax.Array]:
    """The target of a left-padded prompt region: ``(target [..., T], target_length [...])``.

    ``"reverse"``: the prompt reversed; ``"sort"``: sorted ascending (``T = P``; ``PAD``
    sorts last); ``"add"`` (``prompt = a_1…a_k PLUS b_1…b_k``): the ``k + 1`` base-``D``
    digits of ``a + b``, most significant first, carried digit by digit (no integer
    overflow for long operands). The target is left-aligned and padded with ``PAD``.

    Args:
      prompt: int ``[..., P]`` prompt tokens as in :class:`SequenceState` (any leading
        batch shape).
      task: ``"reverse"``, ``"sort"`` or ``"add"``.
      num_digits: ``D``.

    >>> import jax.numpy as jnp
    >>> t, n = target_for(jnp.array([1, 2, 13, 9, 9]), task="add", num_digits=10)
    >>> t.tolist(), int(n)                                  # 12 + 99 = 111
    ([1, 1, 1], 3)
    """
    if task not in _TASKS:
        raise ValueError(f"`task` must be one of {', '.join(map(repr, _TASKS))}; got {task!r}")
    prompt = jnp.asarray(prompt, jnp.int32)
    pad = Tokens.for_digits(num_digits).pad
    if task == "add":
        k = prompt.shape[-1] // 2
        a, b = prompt[..., :k], prompt[..., k + 1 :]
        carry = jnp.zeros(prompt.shape[:-1], jnp.int32)
        digits = []
        for i in reversed(range(k)):  # k is static: a short unrolled carry chain
            total = a[..., i] + b[..., i] + carry
            digits.append(total % num_digits)
            carry = total // num_digits
        target = jnp.stack([carry, *reversed(digits)], axis=-1)
        return target, jnp.full(prompt.shape[:-1], k + 1, jnp.int32)
    length = jnp.sum(prompt != pad, axis=-1).astype(jnp.int32)
    if task == "reverse":  # left-padded prompt reversed = target left-aligned, PAD after
        return jnp.flip(prompt, axis=-1), length
    return jnp.sort(prompt, axis=-1), length  # PAD = D+2 > every digit


def score(
    target: jax.Array,
    target_length: jax.Array,
    response: jax.Array,
    response_length: jax.Array,
    *,
    reward: str = "exact",
    length_penalty: Any = 0.0,
    max_response_length: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Score a finished response against its target: ``(reward, exact_match)``, float32.

    With ``m = target_length``, ``n = response_length`` and ``hits = #{i < min(m, n):
    response[i] = target[i]}``: ``exact_match = [n = m ∧ hits = m]``; the reward is
    ``exact_match`` (``"exact"``) or ``hits / max(m, n)`` (``"partial"``), minus
    ``length_penalty · n / max_response_length``. Tokens at ``i ≥ n`` (``EOS``, ``PAD``)
    are ignored.

    Args:
      target: int ``[..., T]`` target digits, left-aligned.
      target_length: int ``[...]`` ``m ≥ 1``.
      response: int ``[..., R]`` the response's digits, left-aligned.
      response_length: int ``[...]`` ``n`` (``EOS`` excluded). The batch shapes
        ``[...]`` are broadcast together explicitly (a scalar length serves a batch).
      reward: ``"exact"`` or ``"partial"`` (a Python value: it picks the formula).
      length_penalty: traceable scalar.
      max_response_length: ``R`` in the penalty; ``None`` means ``response.shape[-1]``.

    >>> import jax.numpy as jnp
    >>> r, e = score(jnp.array([5, 1, 4]), 3, jnp.array([5, 1, 9, 11]), 3, reward="partial")
    >>> round(float(r), 4), float(e)                        # 2 of 3 digits right
    (0.6667, 0.0)
    """
    if reward not in _REWARDS:
        raise ValueError(
            f"`reward` must be one of {', '.join(map(repr, _REWARDS))}; got {reward!r}"
        )
    target, response = jnp.asarray(target, jnp.int32), jnp.asarray(response, jnp.int32)
    m = jnp.asarray(target_length, jnp.int32)
    n = jnp.asarray(response_length, jnp.int32)
    if max_response_length is None:
        max_response_length = response.shape[-1]
    width = min(target.shape[-1], response.shape[-1])
    batch = jnp.broadcast_shapes(target.shape[:-1], response.shape[:-1], m.shape, n.shape)
    m, n = jnp.broadcast_to(m, batch), jnp.broadcast_to(n, batch)
    index = jax.lax.broadcasted_iota(jnp.int32, (*batch, width), len(batch))
    compared = (index < jnp.minimum(m, n)[..., None]) & (
        jnp.broadcast_to(response[..., :width], (*batch, width))
        == jnp.broadcast_to(target[..., :width], (*batch, width))
    )
    hits = jnp.sum(compared, axis=-1)
    exact = ((n == m) & (hits == m)).astype(jnp.float32)
    if reward == "exact":
        value = exact
    else:
        value = hits.astype(jnp.float32) / jnp.maximum(jnp.maximum(m, n), 1).astype(jnp.float32)
    penalty = jnp.asarray(length_penalty, jnp.float32) * n.astype(jnp.float32) / max_response_length
    return value - penalty, exact


def __getattr__(name: str) -> Any:
    """``last_position``, :func:`last_token_position`'s name of 0.3.0 (the transformer's own
    is :func:`jaxadv.nets.transformer.last_position`), with a ``DeprecationWarning``."""
    if name == "last_position":
        import warnings

        warnings.warn("jaxadv.envs.sequence.last_position is deprecated: use "
                      "last_token_position", DeprecationWarning, stacklevel=2)
        return last_token_position
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def last_token_position(obs: jax.Array, pad: int) -> jax.Array:
    """Index of the last non-``PAD`` token in ``obs [..., L]`` (int32 ``[...]``).

    In a :class:`SequenceTask` observation this is ``P + t`` after ``t`` response
    tokens — ``SEP``'s index ``P`` before the first — for prompts of any length (they
    are left-padded), i.e. the position whose causal-model output predicts the next
    token. ``obs`` may be float (as :func:`jaxadv.envs.make` returns it) or int. (An
    all-``PAD`` ``obs``, which no task observes, gives ``L − 1``, where
    :func:`jaxadv.nets.transformer.last_position` gives 0.)

    >>> import jax.numpy as jnp
    >>> int(last_token_position(jnp.array([12, 3, 1, 10, 1, 12, 12.0]), pad=12))
    4
    """
    filled = jnp.asarray(obs) != pad
    length = filled.shape[-1]
    return (length - 1 - jnp.argmax(jnp.flip(filled, axis=-1), axis=-1)).astype(jnp.int32)


def _token_text(token: int, num_digits: int) -> str:
    tokens = Tokens.for_digits(num_digits)
    if 0 <= token < num_digits:
        return "0123456789abcdefghijklmnopqrstuvwxyz"[token] if num_digits <= 36 else f"[{token}]"
    return {tokens.sep: " → ", tokens.eos: "<eos>", tokens.pad: "", tokens.plus: "+"}.get(
        token, f"<?{token}>"
    )


def decode(tokens: Any, *, num_digits: int = 10) -> str:
    """Render one token sequence (an observation, a prompt or a response) as text.

    Digits print as ``0-9`` (then ``a-z`` for ``D ≤ 36``, else ``[d]``), ``SEP`` as
    ``" → "``, ``EOS`` as ``<eos>``, ``PLUS`` as ``+``; ``PAD`` is dropped.

    >>> decode([12, 12, 3, 1, 4, 10, 4, 1, 3, 11, 12], num_digits=10)
    '314 → 413<eos>'
    """
    flat = np.asarray(tokens).reshape(-1)
    return "".join(_token_text(int(t), num_digits) for t in flat)


class SequenceTask(environment.Environment[SequenceState, SequenceParams]):
    """Write the target of a digit prompt token by token (see the module docstring).

    Args:
      task: ``"reverse"``, ``"sort"`` or ``"add"``.
      num_digits: ``D ≥ 2``, the digit alphabet (and the base for ``"add"``).
      prompt_length: prompt digits (``"add"``: even ``≥ 2``, two operands of half).
      min_prompt_length: ``"reverse"``/``"sort"`` only: draw each episode's prompt
        length uniformly from ``[min_prompt_length, prompt_length]`` (``None``: always
        ``prompt_length``). Stored in the params.
      response_length: ``R``, the most digits a response may have (``≥`` the longest
        target); ``None`` means the longest target + 1 (room for ``EOS``).
      reward: ``"exact"`` or ``"partial"`` (see :func:`score`).
      length_penalty: ``≥ 0``, stored in the params.
      overlong_buffer: DAPO's overlong buffer ``L_cache`` in ``[0, R]`` (0: none), stored in
        the params: a response of ``n`` digits gains ``min(0, (R − L_cache − n) / L_cache)``.

    Attributes: ``tokens`` (:class:`Tokens`), ``vocab_size = D + 4``, ``prompt_size``
    (``P``, = ``SEP``'s index), ``target_size`` (``T``), ``response_length`` (``R``),
    ``obs_length`` (``L = P + 1 + R``).

    >>> import jax
    >>> env = SequenceTask("reverse", prompt_length=3)
    >>> params = env.default_params
    >>> obs, state = env.reset(jax.random.key(0), params)
    >>> env.decode(obs)
    '117 → '
    >>> for action in [*state.target[:3].tolist(), env.num_digits]:  # the target, then EOS
    ...     obs, state, reward, terminated, truncated, info = env.step(
    ...         jax.random.key(1), state, action, params)
    >>> env.decode(info["final_observation"])
    '117 → 711<eos>'
    >>> float(reward), bool(terminated), bool(truncated), float(info["exact_match"])
    (1.0, True, False, 1.0)
    """

    def __init__(
        self,
        task: str = "reverse",
        num_digits: int = 10,
        prompt_length: int = 5,
        min_prompt_length: int | None = None,
        response_length: int | None = None,
        reward: str = "exact",
        length_penalty: float = 0.0,
        overlong_buffer: int = 0,
    ):
        super().__init__()
        if task not in _TASKS:
            raise ValueError(f"`task` must be one of {', '.join(map(repr, _TASKS))}; got {task!r}")
        if reward not in _REWARDS:
            raise ValueError(
                f"`reward` must be one of {', '.join(map(repr, _REWARDS))}; got {reward!r}"
            )
        _check_int("num_digits", num_digits, 2)
        _check_int("prompt_length", prompt_length, 1)
        if task == "add" and (prompt_length < 2 or prompt_length % 2):
            raise ValueError(
                f"`prompt_length` must be an even int >= 2 for task 'add', got {prompt_length!r}"
            )
        if min_prompt_length is not None:
            if task == "add":
                raise ValueError("`min_prompt_length` must be None for task 'add'")
            _check_int("min_prompt_length", min_prompt_length, 1, prompt_length)
        target_size = prompt_length // 2 + 1 if task == "add" else prompt_length
        if response_length is None:
            response_length = target_size + 1
        _check_int("response_length", response_length, target_size)
        if (
            not isinstance(length_penalty, int | float)
            or isinstance(length_penalty, bool)
            or not (0.0 <= length_penalty < float("inf"))
        ):
            raise ValueError(
                f"`length_penalty` must be a finite float >= 0, got {length_penalty!r}"
            )
        _check_int("overlong_buffer", overlong_buffer, 0, response_length)
        self.task, self.reward = task, reward
        self.metric_keys = ("exact_match", "response_length")  # info a trainer logs per episode
        self.num_digits = int(num_digits)
        self.prompt_length = int(prompt_length)
        self.tokens = Tokens.for_digits(self.num_digits)
        self.vocab_size = self.num_digits + 4
        self.prompt_size = self.prompt_length + (task == "add")
        self.target_size = int(target_size)
        self.response_length = int(response_length)
        self.obs_length = self.prompt_size + 1 + self.response_length
        self._params = SequenceParams(
            max_steps_in_episode=self.response_length + 1,
            length_penalty=float(length_penalty),
            overlong_buffer=int(overlong_buffer),
            min_prompt_length=int(
                prompt_length if min_prompt_length is None else min_prompt_length
            ),
        )

    @property
    def default_params(self) -> SequenceParams:
        return self._params

    def target_for(self, prompt: jax.Array) -> tuple[jax.Array, jax.Array]:
        """:func:`target_for` with this task's ``task`` and ``num_digits``."""
        return target_for(prompt, task=self.task, num_digits=self.num_digits)

    def score(
        self,
        target: jax.Array,
        target_length: jax.Array,
        response: jax.Array,
        response_length: jax.Array,
        params: SequenceParams | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """:func:`score` with this task's reward mode, ``R`` and ``params.length_penalty``,
        plus DAPO's overlong penalty over ``params.overlong_buffer`` digits before ``R``."""
        params = self.default_params if params is None else params
        reward, exact = score(
            target,
            target_length,
            response,
            response_length,
            reward=self.reward,
            length_penalty=params.length_penalty,
            max_response_length=self.response_length,
        )
        buffer = jnp.asarray(params.overlong_buffer, jnp.float32)
        overlong = overlong_penalty(jnp.broadcast_to(response_length, reward.shape),
                                    max_length=self.response_length, buffer=jnp.maximum(buffer, 1.0))
        return reward + jnp.where(buffer > 0, overlong, 0.0), exact

    def decode(self, tokens: Any) -> str:
        """:func:`decode` with this task's ``num_digits``."""
        return decode(tokens, num_digits=self.num_digits)

    def demonstration(self, state: SequenceState) -> tuple[jax.Array, jax.Array]:
        """The correct response to ``state``'s prompt, for teacher forcing.

        Returns ``(tokens [L] float32, labels [L] int32)``: the observation with the
        target and ``EOS`` (if there is room) written into the response region, and at
        each position the action that should follow it — ``labels[P + t]`` is the
        ``t``-th response action (a digit, or ``num_digits`` for ``EOS``) — or ``-1``.
        """
        t = jnp.arange(self.response_length)
        target = jnp.zeros((self.response_length,), jnp.int32).at[: self.target_size].set(state.target)
        length = state.target_length
        response = jnp.where(t < length, target, jnp.where(t == length, self.tokens.eos, self.tokens.pad))
        actions = jnp.where(t < length, target, jnp.where(t == length, self.num_digits, -1))
        labels = jnp.concatenate([jnp.full((self.prompt_size,), -1, jnp.int32), actions,
                                  jnp.full((1,), -1, jnp.int32)])
        return self._obs(state.replace(response=response.astype(jnp.int32))), labels.astype(jnp.int32)

    def _obs(self, state: SequenceState) -> jax.Array:
        sep = jnp.full((1,), self.tokens.sep, jnp.int32)
        return jnp.concatenate([state.prompt, sep, state.response]).astype(jnp.float32)

    def reset_env(self, key: jax.Array, params: SequenceParams) -> tuple[jax.Array, SequenceState]:
        key_digits, key_length = jax.random.split(key)
        digits = jax.random.randint(
            key_digits, (self.prompt_length,), 0, self.num_digits, jnp.int32
        )
        if self.task == "add":
            k = self.prompt_length // 2
            plus = jnp.full((1,), self.tokens.plus, jnp.int32)
            prompt = jnp.concatenate([digits[:k], plus, digits[k:]])
        else:
            length = jax.random.randint(
                key_length, (), params.min_prompt_length, self.prompt_length + 1, jnp.int32
            )
            padded = jnp.arange(self.prompt_length) < self.prompt_length - length
            prompt = jnp.where(padded, self.tokens.pad, digits)
        target, target_length = self.target_for(prompt)
        state = SequenceState(
            time=jnp.zeros((), jnp.int32),
            prompt=prompt,
            target=target,
            target_length=target_length,
            response=jnp.full((self.response_length,), self.tokens.pad, jnp.int32),
            response_length=jnp.zeros((), jnp.int32),
        )
        return self._obs(state), state

    def step_env(
        self, key: jax.Array, state: SequenceState, action: Any, params: SequenceParams
    ) -> tuple[jax.Array, SequenceState, jax.Array, jax.Array, dict]:
        action = jnp.clip(jnp.asarray(action, jnp.int32), 0, self.num_digits)
        is_eos = action == self.num_digits
        token = jnp.where(is_eos, self.tokens.eos, action)
        # While the episode runs, response_length < R, so the write is in bounds.
        response = state.response.at[state.response_length].set(token)
        length = state.response_length + (~is_eos).astype(jnp.int32)
        terminated = is_eos | (length >= self.response_length)
        reward, exact = self.score(state.target, state.target_length, response, length, params)
        state = state.replace(time=state.time + 1, response=response, response_length=length)
        info = {
            "exact_match": jnp.where(terminated, exact, 0.0),
            "response_length": jnp.where(terminated, length, 0),
        }
        return self._obs(state), state, jnp.where(terminated, reward, 0.0), terminated, info

    @property
    def name(self) -> str:
        return "Sequence-v0"

    @property
    def num_actions(self) -> int:
        return self.num_digits + 1

    def action_space(self, params: SequenceParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_digits + 1)

    def observation_space(self, params: SequenceParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, float(self.vocab_size - 1), (self.obs_length,), jnp.float32)


def make_sequence(**kwargs: Any) -> tuple[SequenceTask, SequenceParams]:
    """``(env, params)`` for ``SequenceTask(**kwargs)`` — the factory behind
    ``make("Sequence-v0", task=..., ...)``."""
    env = SequenceTask(**kwargs)
    return env, env.default_params
