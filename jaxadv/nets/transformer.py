"""A small causal transformer policy for token-by-token generation, behind ``(init, apply)``.

The observation is a row of token ids ``obs [*B, L]`` (float32 from a gymnax
environment, cast to int32 here): prompt, separator, the response so far, with
PAD tokens wherever a slot is empty — after the filled part, and possibly also
left-padding a variable-length prompt. The policy acts at the *last* non-PAD
token, ``last_position(obs, pad)``, and its actions are the next token.

Each block is pre-LayerNorm: ``x ← x + Attn(LN(x))``, ``x ← x + MLP(LN(x))``
(GELU, hidden 4·width), then a final LayerNorm (GPT-2; Radford et al., 2019).
Query i attends to key j iff ``j ≤ i`` and (token j is not PAD or ``j = i``), so
PAD tokens influence nothing but their own (unused) output, and every query sees
at least itself (no empty softmax, no NaN, even for an all-PAD row). The learned
position of a token is its index among the non-PAD tokens, ``cumsum(obs ≠ pad) − 1``
(as for left-padded batched generation), so the outputs at the real tokens do
not depend on where, or how many, PADs there are.

Initialisation uses flax's defaults (LeCun normal; no QR, hence no LAPACK in a
vmapped ``init``: docs/design.md, "Batched LAPACK under vmap"), with a policy head scaled
by 0.01 so that the initial policy is close to uniform.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["TransformerNetwork", "TransformerPolicy", "last_position", "make_transformer"]

Params = Any


def _as_tokens(obs: jax.Array) -> jax.Array:
    """Token ids as int32 (float observations are rounded first)."""
    obs = jnp.asarray(obs)
    if jnp.issubdtype(obs.dtype, jnp.floating):
        obs = jnp.rint(obs)
    return obs.astype(jnp.int32)


def last_position(obs: jax.Array, pad: int) -> jax.Array:
    """Index of the last non-PAD token of each row: ``max{i : obs[..., i] ≠ pad}``, 0 if none.

    Correct whether PADs trail the filled part, left-pad a prompt region, or both.

    Args:
      obs: token ids ``[*B, L]`` (any numeric dtype).
      pad: the PAD token id.

    Returns:
      int32 ``[*B]``.

    >>> import jax.numpy as jnp
    >>> last_position(jnp.array([[0, 0, 5, 6, 0], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]]), 0)
    Array([3, 0, 0], dtype=int32)
    """
    tokens = _as_tokens(obs)
    if tokens.ndim < 1:
        raise ValueError(f"`obs` must have shape [*B, L], got {tokens.shape}")
    index = jnp.arange(tokens.shape[-1], dtype=jnp.int32)
    return jnp.max(jnp.where(tokens != pad, index, 0), axis=-1)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked softmax attention: ``q, k, v [*B, L, H, D]``, ``mask [*B, L, L]`` (query, key) -> ``[*B, L, H, D]``.

    Masked scores are set to the most negative float, so their weights are exactly 0.
    """
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k) * q.shape[-1] ** -0.5
    scores = jnp.where(mask[..., None, :, :], scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("...hqk,...khd->...qhd", weights, v)


def _attention_mask(nonpad: jax.Array) -> jax.Array:
    """``[*B, L] -> [*B, L, L]``: query i sees key j iff j ≤ i and (j is not PAD or j = i)."""
    length = nonpad.shape[-1]
    shape = (1,) * (nonpad.ndim - 1) + (length, length)  # same rank as the batched mask
    query = jax.lax.broadcasted_iota(jnp.int32, shape, nonpad.ndim - 1)
    key = jax.lax.broadcasted_iota(jnp.int32, shape, nonpad.ndim)
    return (key <= query) & (nonpad[..., None, :] | (key == query))


class _Block(nn.Module):
    """Pre-LayerNorm block: causal multi-head self-attention, then a GELU MLP (4·width)."""

    width: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        head_dim = self.width // self.heads
        h = nn.LayerNorm(name="ln_attn")(x)
        qkv = nn.Dense(3 * self.width, name="qkv")(h)
        qkv = qkv.reshape(*qkv.shape[:-1], 3, self.heads, head_dim)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        out = _attend(q, k, v, mask)
        x = x + nn.Dense(self.width, name="attn_out")(out.reshape(*out.shape[:-2], self.width))
        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.gelu(nn.Dense(4 * self.width, name="mlp_in")(h))
        return x + nn.Dense(self.width, name="mlp_out")(h)


class _Trunk(nn.Module):
    """Token + position embeddings, ``layers`` blocks, final LayerNorm: ``[*B, L] -> [*B, L, width]``."""

    vocab_size: int
    max_len: int
    pad: int
    layers: int
    width: int
    heads: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        nonpad = tokens != self.pad
        positions = jnp.maximum(jnp.cumsum(nonpad, axis=-1, dtype=jnp.int32) - 1, 0)
        x = nn.Embed(self.vocab_size, self.width, name="token_embed")(tokens)
        x = x + nn.Embed(self.max_len, self.width, name="position_embed")(positions)
        mask = _attention_mask(nonpad)
        for i in range(self.layers):
            x = _Block(self.width, self.heads, name=f"block_{i}")(x, mask)
        return nn.LayerNorm(name="ln_final")(x)


def _at(hidden: jax.Array, position: jax.Array) -> jax.Array:
    """``hidden [*B, L, W]`` read at ``position [*B]`` -> ``[*B, W]``."""
    return jnp.take_along_axis(hidden, position[..., None, None], axis=-2)[..., 0, :]


class TransformerPolicy(nn.Module):
    """Causal transformer: next-token logits and (optionally) a value, read at a token.

    ``__call__(tokens [*B, L]) -> (logits [*B, A], value [*B])`` at ``last_position``;
    ``all_positions(tokens [*B, L]) -> (logits [*B, L, A], values [*B, L])`` at every
    token (teacher forcing). ``value`` is zero when there is no value head.

    Attributes:
      vocab_size: number of token ids; tokens (and ``pad``) lie in ``[0, vocab_size)``.
      max_len: the most tokens a sequence may have (size of the position table).
      num_actions: A, the number of logits.
      pad: the PAD token id.
      layers: number of transformer blocks.
      width: model width (divisible by ``heads``).
      heads: attention heads.
      value_head: add a value head.
      separate_critic: the value head reads a second, independent trunk of the same size.
    """

    vocab_size: int
    max_len: int
    num_actions: int
    pad: int
    layers: int = 2
    width: int = 64
    heads: int = 4
    value_head: bool = True
    separate_critic: bool = False

    def setup(self):
        trunk = lambda name: _Trunk(
            self.vocab_size, self.max_len, self.pad, self.layers, self.width, self.heads, name=name
        )
        self.trunk = trunk("trunk")
        self.policy_head = nn.Dense(
            self.num_actions,
            kernel_init=nn.initializers.variance_scaling(0.01**2, "fan_in", "truncated_normal"),
            name="policy_head",
        )
        if self.value_head:
            self.critic_trunk = trunk("critic_trunk") if self.separate_critic else None
            self.critic_head = nn.Dense(1, name="critic_head")

    def _tokens(self, obs: jax.Array) -> jax.Array:
        tokens = _as_tokens(obs)
        if tokens.ndim < 1 or tokens.shape[-1] > self.max_len:
            raise ValueError(
                f"`obs` must have shape [*B, L] with L ≤ max_len={self.max_len}, got {tokens.shape}"
            )
        return tokens

    def _outputs(self, tokens: jax.Array, read: Callable[[jax.Array], jax.Array]):
        hidden = read(self.trunk(tokens))
        logits = self.policy_head(hidden)
        if not self.value_head:
            return logits, jnp.zeros(logits.shape[:-1], logits.dtype)
        critic_hidden = read(self.critic_trunk(tokens)) if self.separate_critic else hidden
        return logits, self.critic_head(critic_hidden)[..., 0]

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``obs [*B, L]`` -> ``(logits [*B, A], value [*B])`` at ``last_position(obs, pad)``."""
        tokens = self._tokens(obs)
        position = last_position(tokens, self.pad)
        return self._outputs(tokens, lambda hidden: _at(hidden, position))

    def all_positions(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``obs [*B, L]`` -> ``(logits [*B, L, A], values [*B, L])``, one output per token."""
        return self._outputs(self._tokens(obs), lambda hidden: hidden)


class TransformerNetwork(NamedTuple):
    """``init(key, obs[L]) -> params``; ``apply(params, obs[*B, L]) -> (logits [*B, A], value [*B])``
    at the last non-PAD token; ``apply_all(params, tokens[*B, L]) -> (logits [*B, L, A], values [*B, L])``.
    """

    init: Callable[[jax.Array, jax.Array], Params]
    apply: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
    apply_all: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
    hidden_size: int = 0
    """no recurrent state (the interface of :class:`~jaxadv.nets.networks.Network`)."""
    step: Callable | None = None


def make_transformer(
    vocab_size: int,
    max_len: int,
    num_actions: int,
    *,
    pad: int,
    layers: int = 2,
    width: int = 64,
    heads: int = 4,
    value_head: bool = True,
    separate_critic: bool = False,
) -> TransformerNetwork:
    """Build the causal transformer policy's ``(init, apply, apply_all)`` (see :class:`TransformerPolicy`).

    ``apply_all(params, tokens)[0][..., t, :]`` are the logits of token ``t + 1``
    given tokens ``0..t``: one teacher-forced pass gives the log-probability of a
    whole response. ``apply(params, obs)`` equals ``apply_all`` read at
    ``last_position(obs, pad)``.

    >>> import jax, jax.numpy as jnp
    >>> net = make_transformer(8, 6, 8, pad=0, layers=1, width=16, heads=2)
    >>> params = net.init(jax.random.key(0), jnp.zeros(6))
    >>> obs = jnp.array([[0., 3, 4, 1, 5, 0], [2, 2, 1, 0, 0, 0]])
    >>> [x.shape for x in net.apply(params, obs) + net.apply_all(params, obs)]
    [(2, 8), (2,), (2, 6, 8), (2, 6)]
    """
    for name, value in (("vocab_size", vocab_size), ("max_len", max_len),
                        ("num_actions", num_actions), ("layers", layers),
                        ("width", width), ("heads", heads)):  # fmt: skip
        if value < 1:
            raise ValueError(f"`{name}` must be ≥ 1, got {value}")
    if not 0 <= pad < vocab_size:
        raise ValueError(f"`pad` must lie in [0, vocab_size={vocab_size}), got {pad}")
    if width % heads:
        raise ValueError(f"`width` ({width}) must be divisible by `heads` ({heads})")
    if separate_critic and not value_head:
        raise ValueError("`separate_critic=True` needs `value_head=True`")
    module = TransformerPolicy(
        vocab_size, max_len, num_actions, pad, layers, width, heads, value_head, separate_critic
    )
    return TransformerNetwork(
        init=module.init,
        # flax types apply's result as maybe (out, state), which it is only with mutable=
        apply=module.apply,  # type: ignore[arg-type]
        apply_all=lambda params, tokens: module.apply(  # type: ignore[arg-type, return-value]
            params, tokens, method=TransformerPolicy.all_positions
        ),
    )
