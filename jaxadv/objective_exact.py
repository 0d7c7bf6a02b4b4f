"""Each policy objective's exact expected gradient, on-policy and off-policy, against ∇J.

The objectives of :data:`jaxadv.algorithms.ALGORITHMS` — REINFORCE's ``−log π · A``, PPO's
clipped ratio, DAPO's clip-higher, GSPO's per-response geometric-mean ratio, CISPO's
clipped stop-gradient weight — differ in where the importance ratio sits and how it is
clipped, which matters once the samples come from a *behaviour* policy ``π_b`` other than
the trained ``π_θ``: after some update epochs on the same batch (``θ`` has moved) or when
the samples were drawn at another temperature. On a tiny
:class:`~jaxadv.envs.sequence.SequenceTask` every response is enumerated
(:mod:`jaxadv.sequence_exact`), so both sides are exact:

* the **truth**, ``∇J(θ)`` at the trained policy (:func:`~jaxadv.sequence_exact.exact_gradient`);
* each objective's **population gradient**, the gradient its loss takes in the limit of
  infinitely many samples from ``π_b`` with the infinite-group advantage
  ``A(p, m) = r(p, m) − J_p(π_b)`` (the group-mean baseline of Dr. GRPO and RLOO as
  ``K → ∞``; it keeps an on-policy estimator unbiased, so what differs is the objective):

  ``g_o = −∇_θ Σ_p Σ_m π_b(m | p) ℓ_o(θ; p, m) / norm``,

  with ``ℓ_o`` the objective's own loss (the row's ``policy_loss``) on response ``m``
  alone, summed over its tokens, and ``norm = Np · E_b[n]`` (the large-batch limit of a
  token mean; GSPO's loss is already a per-response mean, ``norm = Np``).

:func:`objective_report` puts them side by side for each behaviour setting
(:class:`Behaviour`): the cosine of ``g_o`` with ``∇J``, its relative perpendicular part
``‖g_⊥‖ / |⟨g_o, u⟩|`` (``u = ∇J/‖∇J‖``: 0 when ``g_o ∥ ∇J``) and scale
``⟨g_o, ∇J⟩/‖∇J‖²``, the share of clipped tokens; and, at equal samples, the statistics of
``num_batches`` sampled estimates (``G`` prompts × ``K`` responses drawn from ``π_b``,
RLOO's group advantages — unbiased on-policy, so what remains is the objective's and the
token mean's — the objective's loss with its token mean,
:func:`~jaxadv.variance.gradient_statistics` against ``∇J`` after dividing by
``‖g_o‖/‖∇J‖``, which equalises the lengths and keeps the directions): their relative bias
to ``∇J`` and their variance.

On-policy (``π_b = π_θ``) every ratio is 1, so REINFORCE, PPO, DAPO and CISPO all give
``g ∥ ∇J``; GSPO does not: its sequence ratio ``s = exp(mean_t log ρ_t)`` has gradient
``s · (1/|y|) Σ_t ∇ log π``, which weighs each response's score by ``1/|y|`` (a length bias
in the direction, as GRPO's ``"sequence"`` reduction has). Off-policy none of them is
``∇J``: the token ratios ignore the state distribution's change, and clipping drops (PPO,
DAPO, GSPO) or caps (CISPO) the weights of the tokens that moved most.

Plain ``jnp`` throughout (no LAPACK); statistics in numpy float64 on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxadv.advantages import leave_one_out
from jaxadv.algorithms import ALGORITHMS
from jaxadv.devices import map_over_devices
from jaxadv.sequence_exact import (
    ApplyAll,
    enumerate_responses,
    exact_gradient,
    response_rewards,
    sequence_tables,
    token_log_probs,
)
from jaxadv.validate import positive_int
from jaxadv.variance import gradient_statistics

__all__ = ["OBJECTIVES", "Behaviour", "ascend", "objective_report", "population_gradients",
           "sample_objective_gradients"]

OBJECTIVES: dict[str, tuple[str, float, float]] = {
    "reinforce": ("a2c", 0.2, 0.2),
    "ppo": ("ppo", 0.2, 0.2),
    "dapo": ("dapo", 0.2, 0.28),
    "gspo": ("gspo", 3e-4, 4e-4),
    "cispo": ("cispo", 1.0, 0.28),
}
"""Each objective: its :data:`~jaxadv.algorithms.ALGORITHMS` row and clip ranges
``(ε_low, ε_high)`` as their papers set them (``reinforce``: the a2c row, no ratio)."""


class Behaviour(NamedTuple):
    """Who drew the samples: ``name`` (a label), ``params`` and ``apply_all`` of ``π_b``
    (``temperature`` divides its logits)."""

    name: str
    params: Any
    apply_all: ApplyAll
    temperature: float = 1.0


def _tempered(apply_all: ApplyAll, temperature: float) -> ApplyAll:
    if temperature == 1.0:
        return apply_all
    return lambda params, rows: (lambda out: (out[0] / temperature, out[1]))(apply_all(params, rows))


def ascend(params: Any, apply_all: ApplyAll, env: Any, prompts: Any, *, steps: int,
           step_size: float) -> Any:
    """``steps`` normalised exact gradient-ascent steps ``θ ← θ + step_size · ∇J/‖∇J‖``:
    the policy after ``steps`` updates on data from ``params`` (an idealised epoch)."""
    flat, unravel = ravel_pytree(params)
    for _ in range(steps):
        g = exact_gradient(unravel(flat), apply_all, env, prompts)
        flat = flat + step_size * g / jnp.maximum(jnp.linalg.norm(g), 1e-12)
    return unravel(flat)


def _loss_fn(objective: str) -> Callable:
    """``(log_prob, old, adv, mask, reduction) -> loss`` of ``objective`` at its clip ranges."""
    row, low, high = ALGORITHMS[OBJECTIVES[objective][0]], *OBJECTIVES[objective][1:]
    extra = {"clip_eps_high": high} if row.loss_hparams else {}
    return lambda lp, old, a, mask, reduction: row.policy_loss(
        lp, old, a, mask, clip_eps=low, reduction=reduction, **extra)


class _Inputs(NamedTuple):
    """The enumerated batch: behaviour token log-probs ``[Np, M, R]``, its sequence log-probs
    ``[Np, M]``, advantages ``A = r − J_p(π_b)`` ``[Np, M]``, rewards, the action mask
    ``[M, R]`` and the expected tokens per response under ``π_b``."""

    old: jax.Array
    old_seq: jax.Array
    advantages: jax.Array
    rewards: jax.Array
    mask: jax.Array
    mean_tokens: jax.Array


def _inputs(behaviour: Behaviour, env: Any, prompts: Any, env_params: Any = None) -> _Inputs:
    responses = enumerate_responses(env)
    apply_b = _tempered(behaviour.apply_all, behaviour.temperature)
    old = token_log_probs(behaviour.params, apply_b, env, prompts, responses)
    old_seq = old.sum(-1)
    rewards = response_rewards(env, prompts, responses, env_params)
    pi_b = jnp.exp(old_seq)
    advantages = rewards - jnp.sum(pi_b * rewards, axis=-1, keepdims=True)
    count = jnp.minimum(responses.lengths + 1, getattr(env, "unwrapped", env).response_length)
    mask = jnp.arange(old.shape[-1])[None, :] < count[:, None]
    mean_tokens = jnp.mean(pi_b @ mask.sum(-1).astype(jnp.float32))
    return _Inputs(old, old_seq, advantages, rewards, mask, mean_tokens)


def population_gradients(params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
                         behaviour: Behaviour, objectives: Sequence[str] = tuple(OBJECTIVES),
                         env_params: Any = None) -> tuple[jax.Array, jax.Array]:
    """Each objective's population gradient ``g_o`` (module docstring), ``[O, D]`` flattened
    like ``ravel_pytree(params)``, and each one's clipped share of tokens (or responses, for
    GSPO) under ``π_b`` ``[O]``."""
    x = _inputs(behaviour, env, prompts, env_params)
    flat, unravel = ravel_pytree(params)
    n_p, m, r = x.old.shape
    mask = jnp.broadcast_to(x.mask[None], (n_p, m, r)).reshape(-1, r)
    weights = jnp.exp(x.old_seq).reshape(-1)  # [Np·M]
    adv = jnp.broadcast_to(x.advantages[..., None], (n_p, m, r)).reshape(-1, r)
    old = x.old.reshape(-1, r)
    grads, clipped = [], []
    for name in objectives:
        loss = _loss_fn(name)

        def per_response(lp, old_i, a_i, mask_i, loss=loss):  # one response as a [R, 1] batch
            value, info = loss(lp[:, None], old_i[:, None], a_i[:, None], mask_i[:, None], "constant")
            return value * r, info["clip_fraction"]

        def population(f, per_response=per_response, name=name):
            lp = token_log_probs(unravel(f), apply_all, env, prompts).reshape(-1, r)
            values, fraction = jax.vmap(per_response)(lp, old, adv, mask)
            if name == "gspo":  # its loss is a mean over its response's tokens already
                values = values / r
                norm = jnp.asarray(n_p, jnp.float32)
            else:
                norm = n_p * x.mean_tokens
            return -jnp.sum(weights * values) / norm, jnp.sum(weights * fraction) / n_p

        g, frac = jax.grad(population, has_aux=True)(flat)
        grads.append(g)
        clipped.append(frac)
    return jnp.stack(grads), jnp.stack(clipped)


def sample_objective_gradients(key: jax.Array, params: Any, apply_all: ApplyAll, env: Any,
                               prompts: Any, behaviour: Behaviour, *,
                               objectives: Sequence[str] = tuple(OBJECTIVES),
                               group_size: int = 4, num_prompts: int = 4, num_batches: int = 200,
                               env_params: Any = None, devices: int | None = None) -> jax.Array:
    """``[O, num_batches, D]`` sampled estimates ``ĝ = −Σ_{t,i} ∂loss/∂log π_θ(a_ti) ·
    ∇ log π_θ(a_ti)``: each batch draws ``num_prompts`` prompts uniformly and
    ``group_size`` responses per prompt from ``π_b``, with advantages ``r − mean of its
    group`` and each objective's loss with a token mean (GSPO: its own mean over responses),
    exactly as the trainer computes it (``[R, G·K]`` time-major)."""
    positive_int("group_size", group_size, minimum=2)
    positive_int("num_prompts", num_prompts)
    positive_int("num_batches", num_batches, minimum=3)
    x = _inputs(behaviour, env, prompts, env_params)
    tables = sequence_tables(params, apply_all, env, prompts, env_params)
    theta = token_log_probs(params, apply_all, env, prompts)  # [Np, M, R]
    n_p = x.old.shape[0]
    losses = [_loss_fn(name) for name in objectives]

    def one_batch(key):
        key_prompt, key_response = jax.random.split(key)
        p = jax.random.randint(key_prompt, (num_prompts,), 0, n_p)
        m = jax.random.categorical(key_response, x.old_seq[p][:, None, :], axis=-1,
                                   shape=(num_prompts, group_size))
        pi, mi = jnp.repeat(p, group_size), m.reshape(-1)  # [N]
        returns = x.rewards[pi, mi].reshape(num_prompts, group_size)
        a = leave_one_out(returns).reshape(-1)
        mask = x.mask[mi].T  # [R, N]
        adv = jnp.broadcast_to(a[None], mask.shape)
        lp, old = theta[pi, mi].T, x.old[pi, mi].T
        jac = tables.jacobian[pi, mi]  # [N, R, D]
        out = []
        for loss in losses:
            coef = jax.grad(lambda l, loss=loss: -loss(l, old, adv, mask, "token")[0])(lp)
            out.append(jnp.einsum("tn,ntd->d", coef, jac))
        return jnp.stack(out)

    estimates = map_over_devices(one_batch, jax.random.split(key, num_batches), devices)
    return jnp.moveaxis(estimates, 0, 1)


def _exact_row(g: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    u = truth / np.linalg.norm(truth)
    along = float(g @ u)
    perp = float(np.linalg.norm(g - along * u))
    return {"cosine_exact": along / max(float(np.linalg.norm(g)), 1e-300),
            "rel_perp_exact": perp / max(abs(along), 1e-300),
            "scale_exact": along / float(np.linalg.norm(truth))}


def _mean_token_kl(behaviour: Behaviour, params: Any, apply_all: ApplyAll, env: Any,
                   prompts: Any) -> float:
    """``E_b[Σ_t log π_b − log π_θ] / E_b[n]``: the per-token KL(π_b ‖ π_θ) on π_b's responses."""
    x = _inputs(behaviour, env, prompts)
    theta = token_log_probs(params, apply_all, env, prompts)
    pi_b = jnp.exp(x.old_seq)
    kl = jnp.sum(pi_b * (x.old - theta).sum(-1), axis=-1).mean()
    return float(kl / x.mean_tokens)


def objective_report(key: jax.Array, params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
                     behaviours: Sequence[Behaviour], *,
                     objectives: Sequence[str] = tuple(OBJECTIVES), group_size: int = 4,
                     num_prompts: int = 4, num_batches: int = 200, confidence: float = 0.95,
                     devices: int | None = None) -> list[dict[str, Any]]:
    """One row per behaviour setting × objective (module docstring): ``setting``,
    ``objective``, ``token_kl`` (per-token KL(π_b ‖ π_θ)), ``clip_fraction``, the exact
    ``cosine_exact``, ``rel_perp_exact``, ``scale_exact``, and the sampled estimates'
    :func:`~jaxadv.variance.gradient_statistics` against ``∇J`` after dividing by
    ``‖g_o‖/‖∇J‖`` (``rel_bias``, ``variance``, ``mse``, ``cosine``, …), with
    ``batch_size = num_prompts × group_size``."""
    for name in objectives:
        if name not in OBJECTIVES:
            raise ValueError(f"`objectives`: {name!r} is not one of {', '.join(OBJECTIVES)}")
    truth = np.asarray(jax.jit(lambda p: exact_gradient(p, apply_all, env, prompts))(params),
                       np.float64)
    rows = []
    for i, behaviour in enumerate(behaviours):
        pop = jax.jit(lambda p, bp, behaviour=behaviour: population_gradients(
            p, apply_all, env, prompts, behaviour._replace(params=bp), objectives))
        grads, clipped = (np.asarray(a, np.float64) for a in pop(params, behaviour.params))
        sample = jax.jit(lambda k, p, bp, behaviour=behaviour: sample_objective_gradients(
            k, p, apply_all, env, prompts, behaviour._replace(params=bp), objectives=objectives,
            group_size=group_size, num_prompts=num_prompts, num_batches=num_batches,
            devices=devices))
        estimates = np.asarray(sample(jax.random.fold_in(key, i), params, behaviour.params),
                               np.float64)
        kl = _mean_token_kl(behaviour, params, apply_all, env, prompts)
        for o, name in enumerate(objectives):
            exact = _exact_row(grads[o], truth)
            scale = float(np.linalg.norm(grads[o]) / np.linalg.norm(truth))  # > 0: signs kept
            stats = gradient_statistics(estimates[o] / scale, truth, confidence=confidence) \
                if scale > 1e-12 else {}
            rows.append({"setting": behaviour.name, "objective": name, "token_kl": kl,
                         "clip_fraction": float(clipped[o]), **exact,
                         "batch_size": num_prompts * group_size, "prompts": num_prompts,
                         "group_size": group_size, **stats})
    return rows
