"""Bias and variance of policy-gradient estimators, measured against a reference gradient.

For a policy ``π_θ`` the objective is ``J(θ) = E[Σ_t γ^t r_t]`` from the initial
distribution. One *trajectory* ``i`` (an episode from ``t = 0`` to its end, at most
``horizon`` steps) gives the estimate

    ``ĝ_i = Σ_t w_t Â_t ∇_θ log π_θ(a_t | s_t)``,   ``w_t = γ^t`` (or 1: "unweighted"),

with ``Â_t`` one of the estimators of :mod:`jaxadv.advantages` (:class:`EstimatorSpec`);
a batch of ``N`` trajectories averages ``N`` of them. With ``w_t = γ^t`` and
``E[Â_t | s_t, a_t] = Q(s_t, a_t) − b(s_t)`` the estimate is unbiased (policy-gradient
theorem); dropping ``γ^t`` — as most implementations do — is not, and neither is a
bootstrapping estimator with a wrong critic.

:func:`sample_gradients` draws ``M`` independent batches for every estimator and batch
size at once: the trajectories come from :func:`jaxadv.engine.rollout.rollout` (``N_max``
environments, ``horizon`` steps, only each environment's first episode counted) and
every estimator and every ``N ≤ N_max`` reuses the same trajectories (the first ``N``
of each batch), so estimators are compared at equal sample budgets, in trajectories
and in env steps, with common random numbers. :func:`gradient_statistics` turns the
``M`` estimates into bias, variance, MSE, cosines, ascent probability and SNR.

:func:`mdp_report` measures them on a :class:`~jaxadv.science.exact.TabularMDP` (the reference
is the exact gradient; critics: exact ``V^π``, zero, exact + noise, or fitted by
regression on separate trajectories); :func:`network_report` on any environment for a
trained actor-critic, against a reference from a batch ``100×`` larger than the largest
``N``, whose own standard error is reported.

Everything vmapped here is LAPACK-free (docs/design.md, "Batched LAPACK under vmap"); the
statistics run in numpy (float64) on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxadv import advantages as adv
from jaxadv.engine.devices import map_over_devices
from jaxadv.engine.estimators import ESTIMATORS, EstimatorArgs, EstimatorInput
from jaxadv.engine.rollout import Policy, first_episode_mask, make_policy, rollout
from jaxadv.engine.train import HPARAM_SPECS
from jaxadv.envs import make
from jaxadv.science import exact
from jaxadv.validate import positive_int

__all__ = [
    "ESTIMATOR_NAMES",
    "LEGACY_SPECS",
    "EstimatorSpec",
    "GradientSamples",
    "critic_values",
    "gradient_statistics",
    "mdp_report",
    "measurable_estimators",
    "network_report",
    "parse_critic",
    "parse_estimator",
    "sample_gradients",
    "spec_forms",
    "train_state_report",
]


def measurable_estimators() -> tuple[str, ...]:
    """The rows of :data:`jaxadv.engine.estimators.ESTIMATORS` this module measures, in table
    order (rows added at run time included): those of one advantage per step with a value
    critic or none (not the sequence-level ones, not a Q critic's)."""
    return tuple(name for name, row in ESTIMATORS.items()
                 if not row.sequence_level and row.critic != "q")


ESTIMATOR_NAMES = measurable_estimators()
"""The estimators this module measures, as the table held them at import
(:func:`measurable_estimators`): ``gae``, ``vapo``, ``td``, ``nstep``, ``mc``, ``return``."""
LEGACY_SPECS = {"mcb": "mc"}
"""Older spellings :func:`parse_estimator` still reads: ``mcb`` (return minus the critic)
is ``mc``, as everywhere else in jaxadv."""
_UNWEIGHTED = "unweighted"
_PARAM_METAVARS = {"gae_lambda": "LAMBDA", "n": "N"}  # an EstimatorArgs field -> its spec's metavar
_DEPRECATED = {"Estimator": "EstimatorSpec", "LEGACY_NAMES": "LEGACY_SPECS"}


def __getattr__(name: str) -> Any:
    """The names of 0.3.0 renamed since (:data:`_DEPRECATED`), with a ``DeprecationWarning``."""
    if name in _DEPRECATED:
        import warnings

        warnings.warn(f"jaxadv.science.variance.{name} is deprecated: use {_DEPRECATED[name]}",
                      DeprecationWarning, stacklevel=2)
        return globals()[_DEPRECATED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EstimatorSpec(NamedTuple):
    """One advantage estimator applied inside ``ĝ = Σ_t w_t Â_t ∇ log π(a_t|s_t)``.

    Attributes:
      name: a row of :data:`jaxadv.engine.estimators.ESTIMATORS` this module measures
        (:func:`measurable_estimators`: ``"gae"`` (GAE(λ)), ``"vapo"``, ``"td"`` (``δ_t``),
        ``"nstep"`` (n-step return ``− V̂``), ``"mc"`` (``G_t − V̂(s_t)``), ``"return"``
        (discounted return ``G_t``, no baseline)), computed by the row's function. The
        objective here ends at the window's end, so the Monte Carlo rows (``monte_carlo``)
        get ``V(s_{t+1}) = 0`` where the window cuts an episode (the return is the
        objective's, never bootstrapped); the critic-based ones bootstrap there as in
        training.
      param: the value of the row's ``param`` (``λ`` for ``gae``, ``n`` for ``nstep``), else
        ``None``.
      weighted: weight step ``t`` by ``γ^t`` (the gradient of the discounted objective);
        ``False`` gives the common estimator that drops it.
    """

    name: str
    param: float | None = None
    weighted: bool = True

    @property
    def label(self) -> str:
        """The spec string :func:`parse_estimator` reads back, e.g. ``"gae:0.95"``."""
        parts = [self.name]
        if self.param is not None:
            parts.append(f"{self.param:g}")
        if not self.weighted:
            parts.append(_UNWEIGHTED)
        return ":".join(parts)


def spec_forms() -> tuple[str, ...]:
    """The spec forms :func:`parse_estimator` reads, one per row of
    :func:`measurable_estimators`: its name, with ``:LAMBDA`` or ``:N`` for a row whose
    ``param`` is ``λ`` or ``n`` (e.g. ``"gae:LAMBDA"``, ``"td"``)."""
    return tuple(name if ESTIMATORS[name].param is None
                 else f"{name}:{_PARAM_METAVARS[cast(str, ESTIMATORS[name].param)]}"
                 for name in measurable_estimators())


def _allowed() -> str:
    return f"{', '.join(spec_forms())} (each optionally with ':unweighted')"


def _spec_param(text: str, field: str, value: str) -> float | int:
    """The number of a spec ``name:value`` for the :class:`EstimatorArgs` ``field``."""
    if field == "n":
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"estimator {text!r}: n must be an integer >= 1, got {value!r}")
        return int(value)
    try:
        lam = float(value)
    except ValueError:
        lam = math.nan
    spec = HPARAM_SPECS[field]  # HParams' own definition of the field's range
    if not (math.isfinite(lam) and spec.contains(lam)):
        raise ValueError(f"estimator {text!r}: λ must be a number {spec.allowed}, got {value!r}")
    return lam


def parse_estimator(text: str) -> EstimatorSpec:
    """Read a spec ``name``, or ``name:x`` for a row with a ``param`` (``"gae:λ"``,
    ``"nstep:N"``), each optionally followed by ``":unweighted"`` (and the older spelling
    ``"mcb"`` of ``"mc"``); ``name`` is one of :func:`measurable_estimators`.

    >>> parse_estimator("gae:0.95")
    EstimatorSpec(name='gae', param=0.95, weighted=True)
    >>> parse_estimator("nstep:5:unweighted").label
    'nstep:5:unweighted'
    """
    parts = str(text).strip().split(":")
    weighted = parts[-1] != _UNWEIGHTED
    if not weighted:
        parts = parts[:-1]
    name, args = LEGACY_SPECS.get(parts[0], parts[0]), parts[1:]
    if name not in measurable_estimators():
        raise ValueError(f"estimator {text!r}: unknown name {name!r}; allowed: {_allowed()}")
    field = ESTIMATORS[name].param
    if len(args) != int(field is not None):
        raise ValueError(f"estimator {text!r}: {name} takes {'no' if field is None else 'one'} "
                         f"parameter; allowed: {_allowed()}")
    return EstimatorSpec(name, None if field is None else _spec_param(text, field, args[0]),
                         weighted)


def estimator_advantages(
    est: EstimatorSpec,
    reward: jax.Array,
    value: jax.Array,
    next_value: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    *,
    gamma: Any,
) -> jax.Array:
    """``Â [T, *B]`` of ``est`` from time-major ``[T, *B]`` arrays, by the estimator table
    (:data:`jaxadv.engine.estimators.ESTIMATORS`). The Monte Carlo rows (``monte_carlo``:
    ``return``, ``mc``) never bootstrap: the episode's end, truncation included, ends the
    objective. Settings the spec does not give: ``λ = 1``, ``n = 1``."""
    row = ESTIMATORS[est.name]
    if row.monte_carlo:
        next_value = jnp.zeros_like(next_value)
    x = EstimatorInput(reward, value, next_value, terminated, truncated)
    settings: dict[str, Any] = {"gae_lambda": 1.0, "n": 1}
    if row.param is not None:
        settings[row.param] = est.param
    return row.fn(x, EstimatorArgs(gamma=gamma, **settings))[0]


class GradientSamples(NamedTuple):
    """``M`` independent batch estimates per estimator and batch size.

    Attributes:
      estimates: ``[E, len(batch_sizes), M, D]`` flattened gradient estimates.
      env_steps: ``[len(batch_sizes), M]`` env steps each batch consumed (int).
    """

    estimates: jax.Array
    env_steps: jax.Array


def sample_gradients(
    key: jax.Array,
    params: Any,
    critic_params: Any,
    *,
    policy_fn: Callable[[Any, jax.Array], Any],
    critic_fn: Callable[[Any, jax.Array], jax.Array],
    policy: Policy,
    env: Any,
    env_params: Any,
    horizon: int,
    gamma: float,
    estimators: Sequence[EstimatorSpec],
    batch_sizes: Sequence[int],
    num_batches: int,
    obs_stats: Any = None,
    devices: int | None = None,
) -> GradientSamples:
    """Draw ``num_batches`` batches of ``max(batch_sizes)`` trajectories and return every
    estimator's gradient estimate for every batch size.

    Args:
      key: PRNG key; the trajectories depend only on it, ``params`` and the environment
        (not on the critic or the estimators), so reports share random numbers.
      params: policy parameters ``θ``; gradients are taken with respect to all of them
        (flattened with ``ravel_pytree``; ``D`` entries).
      critic_params: passed to ``critic_fn``.
      policy_fn: ``(params, obs[*B, obs_dim]) -> policy output`` (e.g. logits ``[*B, A]``).
      critic_fn: ``(critic_params, obs[*B, obs_dim]) -> V̂ [*B]``.
      policy: the action distribution's functions (:func:`jaxadv.engine.rollout.make_policy`).
      env, env_params: a wrapped environment (:func:`jaxadv.envs.make`).
      horizon: steps per trajectory window (static); episodes still running at the end
        are truncated there.
      gamma: the discount of the objective, the returns and ``w_t``.
      estimators: the estimators (static).
      batch_sizes: the ``N``s (static, each ``>= 1``).
      num_batches: ``M`` (static).
      obs_stats: observation statistics the policy and critic see observations normalised
        by (:func:`jaxadv.envs.normalize_obs`; ``None``: raw observations).
      devices: the batches are spread over at most this many local devices (default: all;
        :func:`~jaxadv.engine.devices.map_over_devices`). Pass the arrays (``params``,
        ``critic_params``, ``env_params``, ``obs_stats``) as arguments of the enclosing
        ``jax.jit``, not as constants it closes over: then every batch is the same bits on
        any count.

    Returns:
      :class:`GradientSamples`.
    """
    sizes = tuple(int(n) for n in batch_sizes)
    n_max = max(sizes)
    flat, unravel = ravel_pytree(params)
    apply_fn = lambda p, x: (policy_fn(unravel(p), x), critic_fn(critic_params, x))
    discount = gamma ** jnp.arange(horizon, dtype=jnp.float32)

    def one_batch(key):
        key_reset, key_roll = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, n_max), env_params)
        traj = rollout(
            key_roll, flat, state, obs, obs_stats, None, apply_fn=apply_fn, policy=policy,
            env=env, env_params=env_params, num_steps=horizon,
        ).traj
        alive = first_episode_mask(traj.episode_done)
        coef = []
        for est in estimators:
            a = estimator_advantages(est, traj.reward, traj.value, traj.next_value,
                                     traj.terminated, traj.truncated, gamma=gamma)
            w = discount[:, None] if est.weighted else 1.0
            coef.append(alive * w * a)
        coef = jnp.moveaxis(jnp.stack(coef), 2, 0)  # [N, E, T]

        def lane(obs_i, action_i, coef_i):  # one trajectory's [E, D] gradients
            log_prob = lambda p: policy.log_prob(policy_fn(unravel(p), obs_i), action_i)
            _, vjp = jax.vjp(log_prob, flat)
            return jax.vmap(lambda c: vjp(c)[0])(coef_i)

        grads = jax.vmap(lane, in_axes=(1, 1, 0))(traj.obs, traj.action, coef)  # [N, E, D]
        idx = jnp.array(sizes) - 1
        means = jnp.cumsum(grads, axis=0)[idx] / jnp.array(sizes, jnp.float32)[:, None, None]
        steps = jnp.cumsum(jnp.sum(alive, axis=0))[idx]
        return jnp.moveaxis(means, 1, 0), steps.astype(jnp.int32)  # [E, nN, D], [nN]

    # one batch after another on each device (lax.map without batch_size): vmapping several
    # batches together would make a larger program to compile
    means, steps = map_over_devices(one_batch, jax.random.split(key, num_batches), devices)
    return GradientSamples(jnp.moveaxis(means, 0, 2), jnp.moveaxis(steps, 0, 1))


def gradient_statistics(estimates: Any, reference: Any, *, confidence: float = 0.95) -> dict[str, float]:
    """Bias, variance and agreement of ``M`` independent estimates ``[M, D]`` of ``g [D]``.

    With ``x_m = ĝ_m − g``, ``b = E[ĝ] − g`` and ``Σ = Cov[ĝ]``:

    * ``bias_sq``: ``‖b‖²`` by the unbiased U-statistic ``Σ_{m≠k} ⟨x_m, x_k⟩ / (M(M−1))``
      (may be negative when ``b ≈ 0``); ``bias_sq_se`` its standard error
      ``√(4 bᵀΣb/M + 2 tr(Σ²)/(M(M−1)))`` with plug-in ``Σ`` and ``b``;
      ``bias``: ``√max(bias_sq, 0)`` and ``bias_lo``/``bias_hi`` the normal interval
      ``bias_sq ± z·se`` mapped through ``√max(·, 0)`` (``bias_lo = 0``: no detectable
      bias); ``rel_bias = bias / ‖g‖``, and ``rel_bias_lo``/``rel_bias_hi`` likewise;
    * ``variance``: ``tr Σ`` (unbiased, ``M − 1`` denominator);
    * ``mse``: ``E‖ĝ − g‖² = ‖b‖² + tr Σ`` (the mean of ``‖x_m‖²``);
    * ``cosine``: mean ``cos(ĝ_m, g)``; ``pairwise_cosine``: mean ``cos(ĝ_m, ĝ_k)``, ``m ≠ k``;
    * ``p_ascent``: the fraction of ``⟨ĝ_m, g⟩ > 0``;
    * ``snr``: ``‖E ĝ‖² / tr Σ`` with ``‖E ĝ‖²`` estimated without bias (``‖mean‖² − tr Σ/M``).

    >>> rng = np.random.default_rng(0)
    >>> s = gradient_statistics(1.0 + rng.normal(size=(4000, 3)), np.ones(3))
    >>> round(s["variance"], 1), s["bias_lo"], round(s["cosine"], 2) > 0.5
    (3.0, 0.0, True)
    """
    x_hat = np.asarray(estimates, np.float64)
    g = np.asarray(reference, np.float64)
    if x_hat.ndim != 2 or g.shape != x_hat.shape[1:]:
        raise ValueError(f"`estimates` must be [M, D] and `reference` [D]; got {x_hat.shape}, {g.shape}")
    m = x_hat.shape[0]
    if m < 3:
        raise ValueError(f"need at least 3 estimates, got {m}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must lie in (0, 1), got {confidence}")
    x = x_hat - g
    total, sq = x.sum(0), np.einsum("md,md->m", x, x)
    cross = total @ total - sq.sum()
    bias_sq = cross / (m * (m - 1))
    # Var[U] = 4 bᵀΣb / M + 2 tr(Σ²) / (M(M−1)) (Hoeffding); tr(S²) = ‖S‖_F² from the
    # smaller of the [D, D] covariance S or the [M, M] Gram matrix of the centred samples
    centred = x_hat - x_hat.mean(0)
    small = centred.T @ centred if centred.shape[1] <= m else centred @ centred.T
    tr_s_sq, tr_s = float(np.sum(small * small)) / (m - 1) ** 2, float(np.trace(small)) / (m - 1)
    # unbiased for Gaussian samples (Srivastava 2005); the plug-in ‖S‖_F² overshoots when D ≫ M
    tr_sigma_sq = max((m - 1) ** 2 / ((m - 2) * (m + 1)) * (tr_s_sq - tr_s**2 / (m - 1)), 0.0)
    b_hat = x.mean(0)
    b_sigma_b = max(float(np.sum((centred @ b_hat) ** 2)) / (m - 1) - tr_sigma_sq / m, 0.0)
    se = math.sqrt(4.0 * b_sigma_b / m + 2.0 * tr_sigma_sq / (m * (m - 1)))
    z = math.sqrt(2.0) * _erfinv(confidence)
    variance = float(np.sum(np.var(x_hat, axis=0, ddof=1)))
    g_norm = float(np.linalg.norm(g))
    est_norm = np.linalg.norm(x_hat, axis=1)
    inner = x_hat @ g
    unit = x_hat / np.where(est_norm > 0, est_norm, 1.0)[:, None]
    unit_sum = unit.sum(0)
    mean = x_hat.mean(0)
    signal = float(mean @ mean) - variance / m
    bias = math.sqrt(max(bias_sq, 0.0))
    lo, hi = math.sqrt(max(bias_sq - z * se, 0.0)), math.sqrt(max(bias_sq + z * se, 0.0))
    return {
        "bias": bias,
        "bias_lo": lo,
        "bias_hi": hi,
        "bias_sq": float(bias_sq),
        "bias_sq_se": se,
        "rel_bias": bias / g_norm if g_norm > 0 else math.nan,
        "rel_bias_lo": lo / g_norm if g_norm > 0 else math.nan,
        "rel_bias_hi": hi / g_norm if g_norm > 0 else math.nan,
        "variance": variance,
        "mse": float(sq.mean()),
        "cosine": float(np.mean(inner / np.where(est_norm > 0, est_norm * g_norm, np.inf))),
        "pairwise_cosine": float((unit_sum @ unit_sum - np.sum(unit * unit)) / (m * (m - 1))),
        "p_ascent": float(np.mean(inner > 0)),
        "snr": signal / variance if variance > 0 else math.inf,
        "num_estimates": m,
        "confidence": confidence,
    }


def _erfinv(p: float) -> float:
    """``erf⁻¹(p)`` by Newton's method on ``math.erf`` (for the normal quantile)."""
    y = 0.0
    for _ in range(60):
        y -= (math.erf(y) - p) / (2.0 / math.sqrt(math.pi) * math.exp(-y * y))
    return y


# ----------------------------------------------------------------- tabular MDPs

CRITIC_KINDS = ("exact", "zero", "noisy:SIGMA", "fitted:K")


def parse_critic(text: str) -> tuple[str, float | None]:
    """``"exact"``, ``"zero"``, ``"noisy:σ"`` (σ ≥ 0) or ``"fitted:K"`` (K ≥ 1 trajectories).

    >>> parse_critic("noisy:0.2")
    ('noisy', 0.2)
    """
    name, _, arg = str(text).strip().partition(":")
    allowed = ", ".join(CRITIC_KINDS)
    if name in ("exact", "zero") and not arg:
        return name, None
    if name == "noisy" and arg:
        try:
            sigma = float(arg)
        except ValueError:
            sigma = -1.0
        if sigma >= 0.0 and math.isfinite(sigma):
            return name, sigma
    if name == "fitted" and arg.isdigit() and int(arg) >= 1:
        return name, int(arg)
    raise ValueError(f"critic {text!r} is not one of: {allowed} (σ a number >= 0, K an integer >= 1)")


def _tabular_fns():
    """Policy ``obs @ logits`` and critic ``obs @ V̂`` for one-hot observations."""
    return (lambda logits, x: x @ logits), (lambda v, x: x @ v)


def default_horizon(mdp: exact.TabularMDP, tol: float = 1e-4, cap: int = 2000) -> int:
    """The smallest ``H`` with ``ρ^H ≤ tol`` (at most ``cap``), where ``ρ`` is the largest
    probability of surviving a step, ``max_{s,a} Σ_s' P(s'|s,a)``, or ``γ`` without
    termination: what truncating at ``H`` drops — of the discounted objective, and (with
    termination) of the undiscounted visitation the unweighted estimator sums over."""
    rate = float(jnp.max(jnp.sum(mdp.transitions, axis=-1)))
    rate = rate if rate < 1.0 - 1e-6 else float(mdp.gamma)
    if rate <= 0.0:
        return 1
    if rate >= 1.0:
        return cap
    return min(cap, max(1, math.ceil(math.log(tol) / math.log(rate))))


def critic_values(
    kind: str, mdp: exact.TabularMDP, logits: jax.Array, key: jax.Array, *, horizon: int
) -> jax.Array:
    """``V̂ [S]`` for a critic spec (:func:`parse_critic`).

    * ``exact``: ``V^π``; ``zero``: 0;
    * ``noisy:σ``: ``V^π + e`` with a fixed Gaussian ``e`` rescaled so that
      ``rms(e) = σ · rms(V^π)`` (drawn once from ``key``);
    * ``fitted:K``: the least-squares tabular fit to Monte Carlo returns — each state's
      mean discounted return-to-go over every visit in ``K`` trajectories sampled from
      ``key`` (separate from the measured batches); unvisited states get the mean of all.
    """
    name, arg = parse_critic(kind)
    v = exact.values(mdp, logits)[0]
    if name == "exact":
        return v
    if name == "zero":
        return jnp.zeros_like(v)
    if name == "noisy":
        e = jax.random.normal(key, v.shape)
        rms = lambda u: jnp.sqrt(jnp.mean(u * u))
        return v + cast(float, arg) * rms(v) * e / rms(e)
    env, env_params = make("Tabular-v0", mdp=mdp, max_steps=horizon)
    policy_fn, critic_fn = _tabular_fns()
    num = cast(int, arg)  # fitted:K

    @jax.jit  # one program (op by op it compiled about 40)
    def fitted(logits, key, env_params):
        key_reset, key_roll = jax.random.split(key)
        reset = jax.vmap(env.reset, in_axes=(0, None))
        obs, state = reset(jax.random.split(key_reset, num), env_params)
        apply_fn = lambda p, x: (policy_fn(p, x), critic_fn(jnp.zeros(x.shape[-1]), x))
        traj = rollout(key_roll, logits, state, obs, None, None, apply_fn=apply_fn,
                       policy=make_policy(True, logits.shape[1]), env=env,
                       env_params=env_params, num_steps=horizon).traj
        ret = adv.discounted_returns(traj.reward, jnp.zeros_like(traj.reward), traj.terminated,
                                     traj.truncated, gamma=mdp.gamma)  # [T, K]
        alive = first_episode_mask(traj.episode_done)
        counts = jnp.einsum("tk,tks->s", alive, traj.obs)
        sums = jnp.einsum("tk,tks->s", alive * ret, traj.obs)
        overall = jnp.sum(sums) / jnp.maximum(jnp.sum(counts), 1.0)
        return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), overall)

    return fitted(logits, key, env_params)


def mdp_report(
    key: jax.Array,
    mdp: exact.TabularMDP,
    logits: jax.Array,
    *,
    estimators: Sequence[str | EstimatorSpec],
    batch_sizes: Sequence[int],
    critics: Sequence[str] = ("exact",),
    num_batches: int = 200,
    horizon: int | None = None,
    confidence: float = 0.95,
    devices: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every estimator × critic × batch size on a tabular MDP, against the exact gradient.

    Args:
      key: PRNG key. The same trajectories serve every critic and estimator.
      mdp: the MDP (``gamma`` is the objective's discount).
      logits: ``[S, A]`` the softmax policy's parameters.
      estimators: :func:`parse_estimator` specs (or :class:`EstimatorSpec` s).
      batch_sizes: trajectories per batch, ``N``.
      critics: :func:`parse_critic` specs.
      num_batches: ``M`` independent batches per ``N``.
      horizon: steps per trajectory (default :func:`default_horizon`).
      confidence: of the bias interval.
      devices: spread the batches over at most this many local devices (default: all);
        the results are the same bits on any count.

    Returns:
      ``(rows, info)``: one dict per (critic, estimator, N) with ``critic``,
      ``estimator``, ``batch_size``, ``env_steps`` (mean per batch) and
      :func:`gradient_statistics`; ``info`` has ``gradient_norm`` (``‖g‖``),
      ``horizon``, ``num_batches`` and the critics' relative errors ``‖V̂ − V‖/‖V‖``.
    """
    ests = _check_common(estimators, batch_sizes, num_batches)
    kinds = [str(c) for c in critics]
    for c in kinds:
        parse_critic(c)
    logits = jnp.asarray(logits, jnp.float32)
    horizon = default_horizon(mdp) if horizon is None else int(horizon)
    env, env_params = make("Tabular-v0", mdp=mdp, max_steps=horizon)
    g = exact.policy_gradient(mdp, logits).reshape(-1)
    v = exact.values(mdp, logits)[0]
    policy_fn, critic_fn = _tabular_fns()
    sample = jax.jit(lambda k, logits, v_hat, env_params: sample_gradients(
        k, logits, v_hat, policy_fn=policy_fn, critic_fn=critic_fn,
        policy=make_policy(True, logits.shape[1]), env=env, env_params=env_params,
        horizon=horizon, gamma=mdp.gamma, estimators=ests, batch_sizes=batch_sizes,
        num_batches=num_batches, devices=devices))
    key_sample, key_critic = jax.random.split(key)
    rows, critic_error = [], {}
    for kind in kinds:
        v_hat = critic_values(kind, mdp, logits, key_critic, horizon=horizon)
        critic_error[kind] = float(jnp.linalg.norm(v_hat - v) / jnp.linalg.norm(v))
        rows += _rows(sample(key_sample, logits, v_hat, env_params), g, ests, batch_sizes,
                      confidence, critic=kind)
    info = {"gradient_norm": float(jnp.linalg.norm(g)), "horizon": horizon,
            "num_batches": num_batches, "critic_relative_error": critic_error}
    return rows, info


def _check_common(estimators, batch_sizes, num_batches) -> tuple[EstimatorSpec, ...]:
    ests = tuple(e if isinstance(e, EstimatorSpec) else parse_estimator(e) for e in estimators)
    if not ests:
        raise ValueError("`estimators` must not be empty")
    if not batch_sizes or any(not isinstance(n, int | np.integer) or n < 1 for n in batch_sizes):
        raise ValueError(f"`batch_sizes` must be integers >= 1, got {list(batch_sizes)}")
    positive_int("num_batches", num_batches, minimum=3)
    return ests


def _rows(samples: GradientSamples, g, ests, batch_sizes, confidence, **extra) -> list[dict]:
    estimates, steps = jax.device_get(samples)
    rows = []
    for e, est in enumerate(ests):
        for j, n in enumerate(batch_sizes):
            stats = gradient_statistics(estimates[e, j], g, confidence=confidence)
            rows.append({**extra, "estimator": est.label, "batch_size": int(n),
                         "env_steps": float(np.mean(steps[j])), **stats})
    return rows


# ----------------------------------------------------------------- any environment

def network_report(
    key: jax.Array,
    params: Any,
    *,
    policy_fn: Callable[[Any, jax.Array], Any],
    critic_fn: Callable[[Any, jax.Array], jax.Array],
    critic_params: Any,
    env: Any,
    env_params: Any,
    policy: Policy,
    gamma: float,
    horizon: int,
    estimators: Sequence[str | EstimatorSpec],
    batch_sizes: Sequence[int],
    num_batches: int = 100,
    reference_factor: int = 100,
    confidence: float = 0.95,
    obs_stats: Any = None,
    devices: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Like :func:`mdp_report` for any environment, against a large-batch reference.

    The reference gradient is the ``mc`` estimate (unbiased whatever the critic) from
    ``reference_factor × max(batch_sizes)`` trajectories drawn with a separate key, in
    100 batches (``info["reference"]``, ``[D]``); ``info["reference_error"]`` is its standard error ``√(tr Cov / R)`` —
    the expected norm of its own error, which adds ``reference_error²`` to every
    ``bias_sq`` and ``mse`` (negligible when ``R ≫ N``). ``obs_stats`` and ``devices``: as
    for :func:`sample_gradients`.
    """
    ests = _check_common(estimators, batch_sizes, num_batches)
    positive_int("reference_factor", reference_factor)
    def draw(key, ests, sizes, num):  # the arrays are arguments: the same bits on any devices
        fn = lambda key, arrays: sample_gradients(
            key, *arrays[:2], env_params=arrays[2], obs_stats=arrays[3], policy_fn=policy_fn,
            critic_fn=critic_fn, policy=policy, env=env, horizon=horizon, gamma=gamma,
            estimators=ests, batch_sizes=sizes, num_batches=num, devices=devices)
        return jax.jit(fn)(key, (params, critic_params, env_params, obs_stats))

    key_sample, key_ref = jax.random.split(key)
    n_max, ref_batches = max(batch_sizes), 100
    ref_size = max(1, math.ceil(reference_factor * n_max / ref_batches))
    ref = draw(key_ref, (EstimatorSpec("mc"),), (ref_size,), ref_batches)
    ref_means = np.asarray(ref.estimates[0, 0], np.float64)  # [100, D]
    g = ref_means.mean(0)
    ref_error = math.sqrt(float(np.sum(np.var(ref_means, axis=0, ddof=1))) / ref_batches)
    samples = draw(key_sample, ests, batch_sizes, num_batches)
    rows = _rows(samples, g, ests, batch_sizes, confidence)
    info = {"reference": g, "gradient_norm": float(np.linalg.norm(g)), "reference_error": ref_error,
            "reference_trajectories": ref_size * ref_batches,
            "reference_env_steps": float(np.sum(np.asarray(ref.env_steps))),
            "horizon": horizon, "num_batches": num_batches}
    return rows, info


def train_state_report(
    key: jax.Array,
    trainer: Any,
    params: Any,
    *,
    gamma: float,
    obs_stats: Any = None,
    critic: str = "network",
    estimators: Sequence[str | EstimatorSpec],
    batch_sizes: Sequence[int],
    num_batches: int = 100,
    reference_factor: int = 100,
    horizon: int | None = None,
    confidence: float = 0.95,
    devices: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`network_report` for the actor-critic of a :func:`jaxadv.engine.train.make_trainer`
    run: ``params`` (one seed's ``TrainState.params``, e.g. a mid-training checkpoint).

    Args:
      trainer: :func:`~jaxadv.engine.train.make_trainer`'s result (network, policy, env).
      params: the network parameters.
      gamma: the objective's discount (the run's ``HParams.gamma``).
      obs_stats: the run's observation statistics where it normalised observations.
      critic: ``"network"`` (the run's own critic, ``V`` or ``Σ_a π Q`` for a Q critic)
        or ``"zero"``.
      horizon: trajectory window (default: the environment's time limit).
      others: as for :func:`network_report`.
    """
    config = trainer.config
    if trainer.network.hidden_size:
        raise ValueError("`checkpoint`: a recurrent policy (network = 'gru') depends on its "
                         "history; the gradient report needs a feed-forward policy")
    if critic not in ("network", "zero"):
        raise ValueError(f"`critic` must be 'network' or 'zero' for a trained network, got {critic!r}")
    if critic == "network" and config.scale_rewards:
        raise ValueError("`critic` 'network' was trained on scaled rewards (scale_rewards=True); "
                         "its values do not match raw returns: use critic='zero'")
    if config.normalize_obs and obs_stats is None:
        raise ValueError("the run normalised observations: pass its `obs_stats`")
    apply = trainer.network.apply  # on observations normalised by obs_stats
    q_critic = ESTIMATORS[config.estimator].critic == "q"

    def critic_fn(p, x):
        if critic == "zero":
            return jnp.zeros(x.shape[:-1])
        pi, c = apply(p, x)
        return jnp.sum(jax.nn.softmax(pi, axis=-1) * c, axis=-1) if q_critic else c

    if horizon is None:
        horizon = int(trainer.env_params.max_steps_in_episode)
    rows, info = network_report(
        key, params, policy_fn=lambda p, x: apply(p, x)[0], critic_fn=critic_fn,
        critic_params=params, env=trainer.env, env_params=trainer.env_params,
        policy=trainer.policy, gamma=gamma, horizon=horizon, estimators=estimators,
        batch_sizes=batch_sizes, num_batches=num_batches, reference_factor=reference_factor,
        confidence=confidence, obs_stats=obs_stats, devices=devices)
    for row in rows:
        row["critic"] = critic
    return rows, info
