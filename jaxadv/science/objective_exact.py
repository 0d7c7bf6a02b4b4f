"""Each policy objective's exact expected gradient, on-policy and off-policy, against ∇J.

The objectives of :data:`jaxadv.engine.algorithms.ALGORITHMS` — REINFORCE's ``−log π · A``, PPO's
clipped ratio, DAPO's clip-higher, GSPO's per-response geometric-mean ratio, CISPO's
clipped stop-gradient weight, SAPO's sigmoid gate, GMPO's geometric mean of clipped token
ratios — differ in where the importance ratio sits and how it is
clipped, which matters once the samples come from a *behaviour* policy ``π_b`` other than
the trained ``π_θ``: after some update epochs on the same batch (``θ`` has moved) or when
the samples were drawn by another sampler (another temperature, logits rounded to bfloat16
as a lower-precision inference engine computes them). These objectives take their ratio
against ``π_b`` itself. The off-policy corrections (:data:`jaxadv.engine.algorithms.CORRECTIONS`:
``tis``, ``token_mis``, ``seq_tis``, ``seq_mis``, and IcePop's loss) are measured as the
trainer applies them with a behaviour policy: PPO's clipped ratio (IcePop: DAPO's) against
``π_old``, the *trained* network at the behaviour's parameters (at temperature 1, in float32),
with each token's advantage times the correction's weight of ``π_old/π_b`` (IcePop: the loss
masks that ratio per token itself). With stale samples ``π_old = π_b``, so every weight is 1
and a corrected row equals PPO's (IcePop: DAPO's). On a tiny
:class:`~jaxadv.envs.sequence.SequenceTask` every response is enumerated
(:mod:`jaxadv.science.sequence_exact`), so both sides are exact:

* the **truth**, ``∇J(θ)`` at the trained policy (:func:`~jaxadv.science.sequence_exact.exact_gradient`);
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
:func:`~jaxadv.science.variance.gradient_statistics` against ``∇J`` after dividing by
``‖g_o‖/‖∇J‖``, which equalises the lengths and keeps the directions): their relative bias
to ``∇J`` and their variance.

On-policy (``π_b = π_θ``) every ratio is 1, so REINFORCE, PPO, DAPO, CISPO, SAPO and every
correction give ``g ∥ ∇J``; GSPO and GMPO do not: their sequence ratio
``s = exp(mean_t log ρ_t)`` has gradient ``s · (1/|y|) Σ_t ∇ log π``, which weighs each
response's score by ``1/|y|`` (a length bias in the direction, as GRPO's ``"sequence"``
reduction has). Off-policy none of them is
``∇J``: the token ratios ignore the state distribution's change, and clipping drops (PPO,
DAPO, GSPO) or caps (CISPO) the weights of the tokens that moved most.

Plain ``jnp`` throughout (no LAPACK); statistics in numpy float64 on the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxadv.advantages import leave_one_out
from jaxadv.engine.algorithms import ALGORITHMS, correction_weights
from jaxadv.engine.devices import map_over_devices
from jaxadv.engine.train import HParams
from jaxadv.science.sequence_exact import (
    ApplyAll,
    enumerate_responses,
    exact_gradient,
    response_rewards,
    sequence_tables,
    token_log_probs,
)
from jaxadv.science.variance import gradient_statistics
from jaxadv.validate import positive_int

__all__ = ["CORRECTION_SETTINGS", "LOSS_SETTINGS", "OBJECTIVES", "Behaviour", "ExactObjective",
           "ascend", "objective_report", "objective_rows", "population_gradients",
           "population_gradients_and_masks", "sample_objective_gradients"]


class ExactObjective(NamedTuple):
    """A row of :data:`OBJECTIVES`: the :data:`~jaxadv.engine.algorithms.ALGORITHMS` row, its clip
    ranges ``(ε_low, ε_high)`` (the HParams fields ``clip_eps``, ``clip_eps_high``) and ``correction``: ``None`` takes the ratio against the
    sampler ``π_b``; a tuple of :data:`~jaxadv.engine.algorithms.CORRECTIONS` names (``()``: none)
    takes it against ``π_old`` and weighs the advantages as the trainer does with a
    behaviour policy (module docstring)."""

    algo: str
    clip_eps: float
    clip_eps_high: float
    correction: tuple[str, ...] | None = None


OBJECTIVES: dict[str, ExactObjective] = {
    "reinforce": ExactObjective("a2c", 0.2, 0.2),
    "ppo": ExactObjective("ppo", 0.2, 0.2),
    "dapo": ExactObjective("dapo", 0.2, 0.28),
    "gspo": ExactObjective("gspo", 3e-4, 4e-4),
    "cispo": ExactObjective("cispo", 1.0, 0.28),
    "sapo": ExactObjective("sapo", 0.2, 0.2),
    "gmpo": ExactObjective("gmpo", 0.4, 0.4),
    "tis": ExactObjective("ppo", 0.2, 0.2, ("tis",)),
    "token_mis": ExactObjective("ppo", 0.2, 0.2, ("token_mis",)),
    "seq_tis": ExactObjective("ppo", 0.2, 0.2, ("seq_tis",)),
    "seq_mis": ExactObjective("ppo", 0.2, 0.2, ("seq_mis",)),
    "icepop": ExactObjective("icepop", 0.2, 0.28, ()),
}
"""Each objective or correction and its settings, clip ranges as their papers set them
(``reinforce``: the a2c row, no ratio; ``sapo``: no clip; ``gmpo``: bounds of the
log-ratio). :func:`objective_rows` adds the algorithms that none of them names."""


def objective_rows() -> dict[str, ExactObjective]:
    """:data:`OBJECTIVES`, then one row for each row of the live
    :data:`~jaxadv.engine.algorithms.ALGORITHMS` that no objective names (as its key or its
    ``algo``), at :class:`~jaxadv.engine.train.HParams`' default clip ranges (a row with a
    ``behaviour_loss`` is measured as the corrections are, against ``π_old``): an algorithm
    added to the table is measured by :func:`objective_report` and offered by
    ``jaxadv variance --objectives``."""
    named = set(OBJECTIVES) | {row.algo for row in OBJECTIVES.values()}
    defaults = HParams()
    return {**OBJECTIVES, **{
        name: ExactObjective(name, defaults.clip_eps, defaults.clip_eps_high,
                             () if row.behaviour_loss else None)
        for name, row in ALGORITHMS.items() if name not in named}}


def _names(objectives: Sequence[str] | None) -> tuple[str, ...]:
    """The objectives asked for, checked against :func:`objective_rows` (``None``: all of
    them)."""
    table = objective_rows()
    if objectives is None:
        return tuple(table)
    for name in objectives:
        if name not in table:
            raise ValueError(f"`objectives`: {name!r} is not one of {', '.join(table)}")
    return tuple(objectives)


LOSS_SETTINGS: dict[str, float] = {"sapo_tau_pos": 1.0, "sapo_tau_neg": 1.05,
                                   "icepop_alpha": 2.0}
"""The other hyperparameters the losses take (:class:`~jaxadv.engine.train.HParams`' defaults)."""
CORRECTION_SETTINGS: dict[str, Any] = {"tis_cap": 2.0, "mis_range": (0.5, 2.0), "seq_cap": 2.0,
                                       "seq_range": (0.5, 2.0), "seq_aggregate": "product"}
"""The corrections' settings (:class:`~jaxadv.engine.train.TrainConfig`'s defaults)."""
_MASKING = ("token_mis", "seq_mis")


class Behaviour(NamedTuple):
    """Who drew the samples: ``name`` (a label), ``params`` and ``apply_all`` of ``π_b``
    (``precision`` = ``"bfloat16"`` rounds its logits to bfloat16, then ``temperature``
    divides them; inside ``jax.jit`` ``precision`` may also be a boolean scalar array,
    ``True`` for bfloat16)."""

    name: str
    params: Any
    apply_all: ApplyAll
    temperature: float = 1.0
    precision: Any = "float32"


def _sampler(apply_all: ApplyAll, temperature: Any, precision: Any = "float32") -> ApplyAll:
    """``apply_all`` of the sampler: logits rounded to ``precision`` (``"float32"``,
    ``"bfloat16"``, or a boolean scalar array: bfloat16 where ``True``), then divided by
    ``temperature`` (a number or a traced scalar); ``apply_all`` itself at 1, float32."""
    traced = not isinstance(precision, str)
    if not traced and precision not in ("float32", "bfloat16"):
        raise ValueError(f"`precision` must be 'float32' or 'bfloat16', got {precision!r}")
    if isinstance(temperature, int | float) and temperature == 1.0 and (
            not traced and precision == "float32"):
        return apply_all

    def apply(params, rows):
        logits, values = apply_all(params, rows)
        # an inference engine's logits: rounded to nearest even
        rounded = lambda: logits.astype(jnp.bfloat16).astype(logits.dtype)
        if traced:
            logits = jnp.where(precision, rounded(), logits)
        elif precision == "bfloat16":
            logits = rounded()
        return logits / temperature, values

    return apply


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
    """``(log_prob, old, old_train, adv, mask, reduction) -> (loss, info)`` of ``objective``
    at its settings: ``old`` the sampler's log-probs, ``old_train`` the trained network's at
    the behaviour's parameters; ``info`` holds ``clip_fraction`` and ``masked_fraction`` (the
    real tokens a correction drops)."""
    entry = objective_rows()[objective]
    row = ALGORITHMS[entry.algo]
    values = {"clip_eps_high": entry.clip_eps_high, **LOSS_SETTINGS}
    extra = {name: values[name] for name in row.loss_hparams}

    def loss(lp, old, old_train, a, mask, reduction):
        if entry.correction is None:
            value, info = row.policy_loss(lp, old, a, mask, clip_eps=entry.clip_eps,
                                          reduction=reduction, **extra)
            return value, {**info, "masked_fraction": jnp.zeros(())}
        w = correction_weights(entry.correction, old_train, old, mask, **CORRECTION_SETTINGS)
        behaviour = {"behaviour_log_prob": old} if row.behaviour_loss else {}
        value, info = row.policy_loss(lp, old_train, a if w is None else a * w, mask,
                                      clip_eps=entry.clip_eps, reduction=reduction,
                                      **extra, **behaviour)
        dropped = jnp.zeros(mask.shape, bool)
        if set(entry.correction) & set(_MASKING):
            dropped = w == 0
        if row.behaviour_loss:
            alpha = LOSS_SETTINGS["icepop_alpha"]
            dropped = dropped | (correction_weights(("token_mis",), old_train, old, mask,
                                                    mis_range=(1.0 / alpha, alpha)) == 0)
        real = mask.astype(jnp.float32)
        masked = jnp.sum(real * dropped) / jnp.maximum(jnp.sum(real), 1.0)
        return value, {**info, "masked_fraction": masked}

    return loss


class _Inputs(NamedTuple):
    """The enumerated batch: behaviour token log-probs ``[Np, M, R]``, its sequence log-probs
    ``[Np, M]``, advantages ``A = r − J_p(π_b)`` ``[Np, M]``, rewards, the action mask
    ``[M, R]``, the expected tokens per response under ``π_b`` and the trained network's
    token log-probs at the behaviour's parameters ``[Np, M, R]`` (``old`` itself where the
    sampler is that network: temperature 1, float32)."""

    old: jax.Array
    old_seq: jax.Array
    advantages: jax.Array
    rewards: jax.Array
    mask: jax.Array
    mean_tokens: jax.Array
    old_train: jax.Array


def _inputs(behaviour: Behaviour, env: Any, prompts: Any, env_params: Any = None) -> _Inputs:
    responses = enumerate_responses(env)
    apply_b = _sampler(behaviour.apply_all, behaviour.temperature, behaviour.precision)
    old = token_log_probs(behaviour.params, apply_b, env, prompts, responses)
    old_train = old if apply_b is behaviour.apply_all else token_log_probs(
        behaviour.params, behaviour.apply_all, env, prompts, responses)
    old_seq = old.sum(-1)
    rewards = response_rewards(env, prompts, responses, env_params)
    pi_b = jnp.exp(old_seq)
    advantages = rewards - jnp.sum(pi_b * rewards, axis=-1, keepdims=True)
    count = jnp.minimum(responses.lengths + 1, getattr(env, "unwrapped", env).response_length)
    mask = jnp.arange(old.shape[-1])[None, :] < count[:, None]
    mean_tokens = jnp.mean(pi_b @ mask.sum(-1).astype(jnp.float32))
    return _Inputs(old, old_seq, advantages, rewards, mask, mean_tokens, old_train)


def population_gradients(params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
                         behaviour: Behaviour, objectives: Sequence[str] | None = None,
                         env_params: Any = None) -> tuple[jax.Array, jax.Array]:
    """Each objective's population gradient ``g_o`` (module docstring), ``[O, D]`` flattened
    like ``ravel_pytree(params)``, and each one's clipped share of tokens (or responses, for
    GSPO) under ``π_b`` ``[O]``. :func:`population_gradients_and_masks` also returns the
    share of tokens a correction drops."""
    grads, clipped, _ = population_gradients_and_masks(params, apply_all, env, prompts,
                                                       behaviour, objectives, env_params)
    return grads, clipped


def population_gradients_and_masks(params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
                                   behaviour: Behaviour,
                                   objectives: Sequence[str] | None = None,
                                   env_params: Any = None,
                                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`population_gradients` and each objective's share of tokens under ``π_b`` that
    its correction drops (``masked_fraction``: MIS outside its band, IcePop's mismatch
    outside [1/α, α]) ``[O]``."""
    rows, objectives = objective_rows(), _names(objectives)
    x = _inputs(behaviour, env, prompts, env_params)
    flat, unravel = ravel_pytree(params)
    n_p, m, r = x.old.shape
    mask = jnp.broadcast_to(x.mask[None], (n_p, m, r)).reshape(-1, r)
    weights = jnp.exp(x.old_seq).reshape(-1)  # [Np·M]
    adv = jnp.broadcast_to(x.advantages[..., None], (n_p, m, r)).reshape(-1, r)
    old, old_train = x.old.reshape(-1, r), x.old_train.reshape(-1, r)
    grads, clipped, masked = [], [], []
    for name in objectives:
        loss = _loss_fn(name)

        def per_response(lp, old_i, train_i, a_i, mask_i, loss=loss):  # a [R, 1] batch
            col = lambda v: v[:, None]
            value, info = loss(col(lp), col(old_i), col(train_i), col(a_i), col(mask_i),
                               "constant")
            return value * r, (info["clip_fraction"], info["masked_fraction"])

        def population(f, per_response=per_response, name=name):
            lp = token_log_probs(unravel(f), apply_all, env, prompts).reshape(-1, r)
            values, (fraction, drop) = jax.vmap(per_response)(lp, old, old_train, adv, mask)
            if ALGORITHMS[rows[name].algo].response_mean:  # each response's token mean
                values = values / r
                norm = jnp.asarray(n_p, jnp.float32)
            else:
                norm = n_p * x.mean_tokens
            share = lambda v: jnp.sum(weights * v) / n_p
            return -jnp.sum(weights * values) / norm, (share(fraction), share(drop))

        g, (frac, drop) = jax.grad(population, has_aux=True)(flat)
        grads.append(g)
        clipped.append(frac)
        masked.append(drop)
    return jnp.stack(grads), jnp.stack(clipped), jnp.stack(masked)


def sample_objective_gradients(key: jax.Array, params: Any, apply_all: ApplyAll, env: Any,
                               prompts: Any, behaviour: Behaviour, *,
                               objectives: Sequence[str] | None = None,
                               group_size: int = 4, num_prompts: int = 4, num_batches: int = 200,
                               env_params: Any = None, devices: int | None = None) -> jax.Array:
    """``[O, num_batches, D]`` sampled estimates ``ĝ = −Σ_{t,i} ∂loss/∂log π_θ(a_ti) ·
    ∇ log π_θ(a_ti)``: each batch draws ``num_prompts`` prompts uniformly and
    ``group_size`` responses per prompt from ``π_b``, with advantages ``r − mean of its
    group`` and each objective's loss with a token mean (GSPO, GMPO: their own mean over
    responses), its correction's weights of ``π_old/π_b`` on the advantages, exactly as the
    trainer computes it (``[R, G·K]`` time-major)."""
    positive_int("group_size", group_size, minimum=2)
    positive_int("num_prompts", num_prompts)
    positive_int("num_batches", num_batches, minimum=3)
    x = _inputs(behaviour, env, prompts, env_params)
    tables = sequence_tables(params, apply_all, env, prompts, env_params)
    theta = token_log_probs(params, apply_all, env, prompts)  # [Np, M, R]
    n_p = x.old.shape[0]
    losses = [_loss_fn(name) for name in _names(objectives)]

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
        lp, old, old_train = theta[pi, mi].T, x.old[pi, mi].T, x.old_train[pi, mi].T
        jac = tables.jacobian[pi, mi]  # [N, R, D]
        out = []
        for loss in losses:
            coef = jax.grad(lambda l, loss=loss: -loss(l, old, old_train, adv, mask, "token")[0])(lp)
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
                   prompts: Any) -> jax.Array:
    """``E_b[Σ_t log π_b − log π_θ] / E_b[n]``: the per-token KL(π_b ‖ π_θ) on π_b's responses
    (a scalar array; traceable)."""
    x = _inputs(behaviour, env, prompts)
    theta = token_log_probs(params, apply_all, env, prompts)
    pi_b = jnp.exp(x.old_seq)
    kl = jnp.sum(pi_b * (x.old - theta).sum(-1), axis=-1).mean()
    return kl / x.mean_tokens


@functools.lru_cache(maxsize=8)
def _exact_gradient_fn(apply_all: ApplyAll, env: Any) -> Callable:
    """The jitted ``∇J`` ``(θ, prompts)`` of :func:`objective_report` (one compile for
    every call with the same network and task)."""
    return jax.jit(lambda p, prompts: exact_gradient(p, apply_all, env, prompts))


@functools.lru_cache(maxsize=8)
def _compiled(apply_all: ApplyAll, apply_b: ApplyAll, env: Any, objectives: tuple[str, ...],
              group_size: int, num_prompts: int, num_batches: int,
              devices: int | None) -> tuple[Callable, Callable, Callable]:
    """The jitted population gradients ``(θ, θ_b, prompts, temperature, bf16)``, sampled
    estimates ``(key, θ, θ_b, prompts, temperature, bf16)`` and per-token KL ``(θ, θ_b,
    prompts, temperature, bf16)`` of :func:`objective_report`, the temperature and the
    sampler's precision traced (``bf16``: a boolean scalar): one compile serves every
    behaviour setting (the five settings of ``jaxadv variance --objectives`` call it once
    each)."""
    behaviour = lambda bp, temperature, bf16: Behaviour("", bp, apply_b, temperature, bf16)
    pop = jax.jit(lambda p, bp, prompts, temperature, bf16: population_gradients_and_masks(
        p, apply_all, env, prompts, behaviour(bp, temperature, bf16), objectives))
    sample = jax.jit(lambda k, p, bp, prompts, temperature, bf16: sample_objective_gradients(
        k, p, apply_all, env, prompts, behaviour(bp, temperature, bf16), objectives=objectives,
        group_size=group_size, num_prompts=num_prompts, num_batches=num_batches,
        devices=devices))
    kl = jax.jit(lambda p, bp, prompts, temperature, bf16: _mean_token_kl(
        behaviour(bp, temperature, bf16), p, apply_all, env, prompts))
    return pop, sample, kl


def objective_report(key: jax.Array, params: Any, apply_all: ApplyAll, env: Any, prompts: Any,
                     behaviours: Sequence[Behaviour], *,
                     objectives: Sequence[str] | None = None, group_size: int = 4,
                     num_prompts: int = 4, num_batches: int = 200, confidence: float = 0.95,
                     devices: int | None = None) -> list[dict[str, Any]]:
    """One row per behaviour setting × objective (module docstring): ``setting``,
    ``objective``, ``token_kl`` (per-token KL(π_b ‖ π_θ)), ``clip_fraction``,
    ``masked_fraction`` (the share of tokens under π_b that a correction drops), the exact
    ``cosine_exact``, ``rel_perp_exact``, ``scale_exact``, and the sampled estimates'
    :func:`~jaxadv.science.variance.gradient_statistics` against ``∇J`` after dividing by
    ``‖g_o‖/‖∇J‖`` (``rel_bias``, ``variance``, ``mse``, ``cosine``, …), with
    ``batch_size = num_prompts × group_size``."""
    objectives = _names(objectives)
    for behaviour in behaviours:
        _sampler(behaviour.apply_all, 1.0, behaviour.precision)  # refuses another precision
    truth = np.asarray(_exact_gradient_fn(apply_all, env)(params, prompts), np.float64)
    rows = []
    for i, behaviour in enumerate(behaviours):
        pop, sample, token_kl = _compiled(apply_all, behaviour.apply_all, env, tuple(objectives),
                                          group_size, num_prompts, num_batches, devices)
        setting = (prompts, jnp.asarray(behaviour.temperature, jnp.float32),
                   jnp.asarray(behaviour.precision == "bfloat16"))
        grads, clipped, masked = (np.asarray(a, np.float64) for a in pop(
            params, behaviour.params, *setting))
        estimates = np.asarray(sample(jax.random.fold_in(key, i), params, behaviour.params,
                                      *setting), np.float64)
        kl = float(token_kl(params, behaviour.params, *setting))
        for o, name in enumerate(objectives):
            exact = _exact_row(grads[o], truth)
            scale = float(np.linalg.norm(grads[o]) / np.linalg.norm(truth))  # > 0: signs kept
            stats = gradient_statistics(estimates[o] / scale, truth, confidence=confidence) \
                if scale > 1e-12 else {}
            rows.append({"setting": behaviour.name, "objective": name, "token_kl": kl,
                         "clip_fraction": float(clipped[o]),
                         "masked_fraction": float(masked[o]), **exact,
                         "batch_size": num_prompts * group_size, "prompts": num_prompts,
                         "group_size": group_size, **stats})
    return rows
