"""The token-environment protocol: what a transformer policy needs from a gymnax env.

A *token environment* is a gymnax environment whose observation is a sequence of token
ids and whose actions write the next token (e.g. :class:`~jaxadv.envs.sequence.SequenceTask`,
``"Sequence-v0"``). Nothing has to subclass anything: the trainer, the warm start and the
sequence CLI look at the raw (unwrapped) environment's attributes, listed in
:class:`TokenEnv`. Two are required — ``vocab_size`` and ``tokens.pad`` — and four are
optional, each with a default that :func:`metric_keys`, :func:`response_length` and
:func:`decode_tokens` apply, and that :func:`check_token_env` enforces where a feature
needs one (``demonstration`` for the supervised warm start).

>>> from jaxadv.envs import make
>>> env, _ = make("Sequence-v0", task="sort", prompt_length=3)
>>> raw = check_token_env(env, name="Sequence-v0")
>>> raw.vocab_size, raw.tokens.pad, response_length(env), metric_keys(env)
(14, 12, 4, ('exact_match', 'response_length'))
>>> token_env(make("CartPole-v1")[0]) is None
True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "SpecialTokens",
    "TokenEnv",
    "check_token_env",
    "decode_tokens",
    "metric_keys",
    "response_length",
    "token_env",
]


@runtime_checkable
class SpecialTokens(Protocol):
    """The special token ids of a :class:`TokenEnv`; only ``pad`` is required.

    Attributes:
      pad: the PAD id (an ``int`` in ``[0, vocab_size)``). PAD fills the unused parts
        of an observation; the transformer ignores PAD positions and acts at the last
        non-PAD one (:func:`jaxadv.nets.transformer.last_position`).

    :class:`~jaxadv.envs.sequence.Tokens` (``sep``, ``eos``, ``pad``, ``plus``) is one.
    """

    pad: int


@runtime_checkable
class TokenEnv(Protocol):
    """A raw gymnax environment whose observations are token ids (see the module docstring).

    The observation is float32 ``[L]`` (as :func:`jaxadv.envs.make` returns it) holding
    int token ids in ``[0, vocab_size)``, ``PAD`` where unused; the action space is
    ``Discrete(A)`` and an action writes the next token, which shows up in the next
    observation.

    Required (:func:`token_env` checks them; what a transformer policy needs):

    * ``vocab_size: int`` — number of token ids (the embedding table's size).
    * ``tokens`` — a :class:`SpecialTokens`: at least ``tokens.pad: int``, the PAD id.

    Optional (read with a default; not part of the ``isinstance`` check):

    * ``response_length: int`` — the most tokens one response (episode) may write, so
      that a trainer can check that a rollout of ``num_steps`` holds a whole episode.
      Default (:func:`response_length`): ``0``, no bound known.
    * ``demonstration(state) -> (tokens, labels)`` — the correct response to ``state``'s
      prompt for teacher forcing (the supervised warm start): ``tokens`` float32 ``[L]``
      is the observation with the correct response written in, ``labels`` int32 ``[L]``
      the action that should follow each position, ``-1`` where none (prompt, padding).
      Pure and jittable (it is vmapped over reset states). Default: none — the warm
      start is unavailable (:func:`check_token_env` with ``demonstration=True`` raises).
    * ``decode(tokens) -> str`` — render one token sequence (an observation ``[L]``) as
      text. Default (:func:`decode_tokens`): the ids, space-separated, PAD dropped.
    * ``metric_keys: tuple[str, ...]`` — ``info`` entries a trainer keeps and logs per
      episode (e.g. ``("exact_match", "response_length")``); each must be in every
      step's ``info``, set at the episode's last step. Any environment may have it.
      Default (:func:`metric_keys`): ``()``.

    ``isinstance(env, TokenEnv)`` (``runtime_checkable``) only checks that ``vocab_size``
    and ``tokens`` exist — not ``tokens.pad``, nor any type: use :func:`token_env`.

    >>> from jaxadv.envs.sequence import SequenceTask
    >>> isinstance(SequenceTask(), TokenEnv)
    True
    """

    vocab_size: int
    tokens: SpecialTokens


def _raw(env: Any) -> Any:
    return getattr(env, "unwrapped", env)


def token_env(env: Any) -> TokenEnv | None:
    """The raw environment under ``env`` if it is a :class:`TokenEnv`, else ``None``.

    Unwraps (``env.unwrapped`` where there is one) and checks the required members:
    ``vocab_size`` and ``tokens.pad``.

    >>> from jaxadv.envs import make
    >>> env, _ = make("Sequence-v0")
    >>> type(token_env(env)).__name__, token_env(make("CartPole-v1")[0])
    ('SequenceTask', None)
    """
    raw = _raw(env)
    if hasattr(raw, "vocab_size") and hasattr(getattr(raw, "tokens", None), "pad"):
        return raw
    return None


def check_token_env(env: Any, *, name: str | None = None, demonstration: bool = False) -> TokenEnv:
    """:func:`token_env` of ``env``, or a ``ValueError`` saying what is missing.

    Args:
      env: a gymnax environment, wrapped or not.
      name: the environment's name in the messages (e.g. the config's ``env`` string);
        ``None`` means the raw environment's ``name`` (or its class name).
      demonstration: also require ``demonstration()`` (the supervised warm start).

    Returns:
      The raw (unwrapped) environment.

    >>> from jaxadv.envs import make
    >>> check_token_env(make("CartPole-v1")[0], name="CartPole-v1")
    Traceback (most recent call last):
    ...
    ValueError: `network` = 'transformer' needs a token environment (with vocab_size and tokens.pad, e.g. Sequence-v0); `env` = 'CartPole-v1' is not one
    """
    raw = token_env(env)
    if name is None:
        inner = _raw(env)
        name = getattr(inner, "name", type(inner).__name__)
    if raw is None:
        raise ValueError(
            "`network` = 'transformer' needs a token environment (with vocab_size and "
            f"tokens.pad, e.g. Sequence-v0); `env` = {name!r} is not one"
        )
    if demonstration and not hasattr(raw, "demonstration"):
        raise ValueError(f"`warm_start_steps` needs an env with demonstration(); `env` = {name!r} has none")
    return raw


def response_length(env: Any) -> int:
    """The raw environment's ``response_length`` (most tokens per response), ``0`` if it has none.

    >>> from jaxadv.envs import make
    >>> response_length(make("Sequence-v0", prompt_length=3)[0]), response_length(make("CartPole-v1")[0])
    (4, 0)
    """
    return int(getattr(_raw(env), "response_length", 0))


def metric_keys(env: Any) -> tuple[str, ...]:
    """The raw environment's ``metric_keys`` (``info`` entries to log per episode), ``()`` if none.

    Works for any environment, token or not.

    >>> from jaxadv.envs import make
    >>> metric_keys(make("Sequence-v0")[0]), metric_keys(make("CartPole-v1")[0])
    (('exact_match', 'response_length'), ())
    """
    return tuple(getattr(_raw(env), "metric_keys", ()))


def decode_tokens(env: Any, tokens: Any) -> str:
    """One token sequence (e.g. an observation ``[L]``) as text, by the raw env's ``decode``.

    Without ``decode``: the ids, space-separated, with ``tokens.pad`` (if any) dropped.

    >>> from jaxadv.envs import make
    >>> decode_tokens(make("Sequence-v0")[0], [12, 3, 1, 10, 1, 11])
    '31 → 1<eos>'
    """
    raw = _raw(env)
    if hasattr(raw, "decode"):
        return raw.decode(tokens)
    pad = getattr(getattr(raw, "tokens", None), "pad", None)
    return " ".join(str(int(t)) for t in np.asarray(tokens).reshape(-1) if int(t) != pad)
