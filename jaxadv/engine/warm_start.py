"""Supervised warm start: teacher-forced cross-entropy on correct responses.

RLHF-style pipelines start RL from a policy fine-tuned on demonstrations and keep a
frozen copy of it as the KL reference. :func:`supervised_warm_start` does that for any
token environment (:class:`~jaxadv.envs.token.TokenEnv`) with the optional
``demonstration(state) -> (tokens [L], labels [L])`` (e.g.
:class:`~jaxadv.envs.sequence.SequenceTask`) and a network with
``apply_all`` (:func:`~jaxadv.nets.transformer.make_transformer`): a fixed pool of
``num_prompts`` prompts — a fraction of all prompts — and ``steps`` Adam steps on
minibatches drawn from it. Pure and jittable; the trainer runs it inside ``init``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxadv.envs.token import check_token_env

__all__ = ["demonstrations", "supervised_warm_start"]


def demonstrations(key: jax.Array, env: Any, env_params: Any, num: int) -> tuple[jax.Array, jax.Array]:
    """``(tokens [num, L], labels [num, L])`` of ``num`` fresh prompts' correct responses.

    ``env`` (wrapped or not) must be a token environment with ``demonstration()``
    (:func:`~jaxadv.envs.token.check_token_env`), else ``ValueError``.
    """
    # a gymnax environment: the TokenEnv protocol names only the token members
    raw: Any = check_token_env(env, demonstration=True)
    _, states = jax.vmap(raw.reset, in_axes=(0, None))(jax.random.split(key, num), env_params)
    return jax.vmap(raw.demonstration)(states)


def supervised_warm_start(
    key: jax.Array,
    params: Any,
    *,
    apply_all: Any,
    env: Any,
    env_params: Any,
    steps: int,
    num_prompts: int = 256,
    batch_size: int = 64,
    lr: float = 1e-3,
) -> tuple[Any, jax.Array]:
    """``steps`` Adam steps of teacher-forced cross-entropy from ``params``.

    The loss of a batch is the mean over labelled positions of ``−log π(label | tokens ≤ t)``
    (``apply_all``'s logits). Returns ``(params, losses [steps])``.
    """
    key_pool, key_steps = jax.random.split(key)
    tokens, labels = demonstrations(key_pool, env, env_params, num_prompts)
    opt = optax.adam(lr)

    def loss_fn(p, idx):
        logits = apply_all(p, tokens[idx])[0]  # [B, L, A]
        mask = labels[idx] >= 0
        logp = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(logp, jnp.maximum(labels[idx], 0)[..., None], axis=-1)[..., 0]
        return -jnp.sum(jnp.where(mask, picked, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    def step(carry, key):
        p, opt_state = carry
        idx = jax.random.randint(key, (batch_size,), 0, num_prompts)
        loss, grads = jax.value_and_grad(loss_fn)(p, idx)
        updates, opt_state = opt.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key_steps, steps))
    return params, losses
