"""The estimator table: every advantage estimator by name, as one pure function each.

An estimator maps a time-major batch (:class:`EstimatorInput`, arrays ``[T, N]``) and its
settings (:class:`EstimatorArgs`) to ``(advantages, targets)``, both ``[T, N]``:
``advantages`` weight ``∇ log π(a_t|s_t)`` in the policy loss and ``targets`` are what the
critic regresses on (zeros where the estimator learns no critic). The trainer
(:mod:`jaxadv.engine.train`), the gradient-variance study (:mod:`jaxadv.science.variance`) and the exact
sequence analysis (:mod:`jaxadv.science.sequence_exact`) all look estimators up in
:data:`ESTIMATORS`, so a name means the same computation everywhere:

==========  ==============================================================  ========
name        advantage ``A_t``                                               critic
==========  ==============================================================  ========
``gae``     GAE(λ): ``Σ_k (γλ)^k δ_{t+k}``                                  V
``vapo``    GAE(λ) for the policy (λ length-adaptive with ``length_alpha``),  V
            GAE(``critic_lambda``) λ-returns for the critic (VAPO)
``td``      the one-step TD error ``δ_t = r_t + γ V(s_{t+1}) − V(s_t)``     V
``nstep``   the n-step return minus ``V(s_t)``                              V
``mc``      the discounted return minus the baseline ``V(s_t)``             V
            (the plain return ``G_t`` where the run has no critic)
``return``  the plain discounted return ``G_t``, never a baseline           none
``qv``      ``Q(s_t, a_t) − Σ_a π(a|s_t) Q(s_t, a)``; Q is trained on        Q
            expected-SARSA targets ``r + γ(1 − term) Σ_a' π(a'|s') Q(s', a')``
``grpo`` …  one advantage per episode from the episodes' returns               none
            (:func:`jaxadv.advantages.sequence_advantages`), on each step
==========  ==============================================================  ========

The sequence-level ones are ``grpo``, ``drgrpo``, ``rloo``, ``batchmean``, ``rfpp`` and
``remax`` (:data:`SEQUENCE_ESTIMATORS`); they read ``mask`` (the first episode's steps)
and, for ``remax``, ``greedy_returns``.

Adding an estimator is one function and one row of :data:`ESTIMATORS`; the trainer's
``--estimator`` choices are read from the table.

>>> import jax.numpy as jnp
>>> x = EstimatorInput(reward=jnp.ones((3, 1)), value=jnp.zeros((3, 1)),
...                    next_value=jnp.zeros((3, 1)), terminated=jnp.array([[0], [0], [1]]),
...                    truncated=jnp.zeros((3, 1)))
>>> advantages, targets = ESTIMATORS["mc"].fn(x, EstimatorArgs(gamma=0.5))
>>> advantages[:, 0].tolist()
[1.75, 1.5, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp

from jaxadv import advantages as adv

__all__ = [
    "ESTIMATORS",
    "SEQUENCE_ESTIMATORS",
    "Estimator",
    "EstimatorArgs",
    "EstimatorInput",
]


class EstimatorInput(NamedTuple):
    """A time-major batch, as :mod:`jaxadv.advantages` defines its arrays (``[T, N]`` each).

    ``value`` and ``next_value`` are the critic's ``V(s_t)`` and ``V(s_{t+1})`` (zeros
    where there is no critic). ``q_value`` is ``Q(s_t, a_t)`` (``qv`` only), ``mask`` marks
    each column's first episode (sequence-level estimators), ``greedy_returns [N]`` is the
    return of a greedy response to the same prompt (``remax`` only).
    """

    reward: jax.Array
    value: jax.Array
    next_value: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    q_value: jax.Array | None = None
    mask: jax.Array | None = None
    greedy_returns: jax.Array | None = None


class EstimatorArgs(NamedTuple):
    """An estimator's settings: ``gamma`` and ``gae_lambda`` may be traced (swept by ``vmap``);
    ``n`` (``nstep``), ``group_size`` (``grpo``, ``drgrpo``, ``rloo``) are static ints and
    ``eps`` stabilises the std normalisations of ``grpo`` and ``rfpp``; ``critic_lambda``
    and ``length_alpha`` (traceable) are ``vapo``'s."""

    gamma: Any = 0.99
    gae_lambda: Any = 0.95
    n: int = 5
    group_size: int = 1
    eps: Any = 1e-6
    critic_lambda: Any = 1.0
    length_alpha: Any = 0.0


class Estimator(NamedTuple):
    """A row of :data:`ESTIMATORS`: the function and what it needs and allows. The trainer's
    checks (:class:`~jaxadv.engine.train.TrainConfig`), the command line's choices and the
    variance tooling (:mod:`jaxadv.science.variance`) read these fields, never a name.

    Attributes:
      fn: ``fn(x: EstimatorInput, args: EstimatorArgs) -> (advantages, targets)``, ``[T, N]``.
      critic: what the trainer learns beside the policy: ``"value"`` (V(s)), ``"q"`` (Q(s, ·),
        one output per discrete action) or ``"none"``.
      sequence_level: one advantage per episode (needs episodic rollouts and ``mask``).
      summary: one line for ``--help`` and error messages.
      baseline_optional: runs without a critic too, with ``value = next_value = 0``.
      min_group_size: the least ``group_size`` it takes (2: it compares the samples of a
        group).
      greedy_rollout: it reads ``greedy_returns``: the trainer rolls a greedy response out from
        the same start beside the sampled ones.
      continuous: it allows continuous actions (a Q critic needs discrete ones).
      hparams: the :class:`~jaxadv.engine.train.HParams` fields it reads.
      param: the :class:`EstimatorArgs` field that a one-number spec ``name:x`` of the variance
        tooling sets (``"gae_lambda"``: a number in [0, 1]; ``"n"``: an int >= 1), or ``None``.
      monte_carlo: the advantage is a sampled return (minus a baseline): it reads
        ``next_value`` only where the window cuts an episode.
      gae_lambda: the GAE λ whose advantages it equals (``td``: 0, ``mc``: 1), where the
        variance tooling plots it on GAE's λ axis; rows whose ``param`` is ``"gae_lambda"`` sit at
        their spec's λ.
      unbiased: on a sequence task with a loss of constant denominator, its expected gradient
        is a known positive multiple of ∇J (:func:`jaxadv.science.sequence_exact.sequence_report`'s
        ``unbiased_in_theory``).
    """

    fn: Callable[[EstimatorInput, EstimatorArgs], tuple[jax.Array, jax.Array]]
    critic: Literal["value", "q", "none"]
    sequence_level: bool
    summary: str
    baseline_optional: bool = False
    min_group_size: int = 1
    greedy_rollout: bool = False
    continuous: bool = True
    hparams: tuple[str, ...] = ("gamma",)
    param: Literal["gae_lambda", "n"] | None = None
    monte_carlo: bool = False
    gae_lambda: float | None = None
    unbiased: bool = False


def _baselined(a: jax.Array, x: EstimatorInput) -> tuple[jax.Array, jax.Array]:
    """``(A, A + V)``: a baselined advantage and the return it implies, the critic's target."""
    return a, a + x.value


def gae_estimator(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
    """GAE(λ) (:func:`jaxadv.advantages.gae`); targets are the λ-returns ``A + V``."""
    return _baselined(adv.gae(x.reward, x.value, x.next_value, x.terminated, x.truncated,
                              gamma=args.gamma, lambda_=args.gae_lambda), x)


def vapo(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
    """VAPO's decoupled GAE (Yue et al. 2025, arXiv:2504.05118): the policy's advantages are
    GAE(``gae_lambda``) — or, with ``length_alpha`` > 0, GAE with each column's length-adaptive
    λ = 1 − 1/(α·|y|) (:func:`jaxadv.advantages.length_adaptive_lambda`, |y| the steps of
    its first episode, ``mask``) — and the critic's targets are the GAE(``critic_lambda``)
    λ-returns (VAPO uses λ = 1: unbiased Monte Carlo targets for the value)."""
    policy_lambda = args.gae_lambda
    if x.mask is not None:
        adaptive = adv.length_adaptive_lambda(jnp.sum(x.mask, axis=0), alpha=args.length_alpha)
        policy_lambda = jnp.where(args.length_alpha > 0,
                                  jnp.broadcast_to(adaptive[None], x.reward.shape),
                                  jnp.broadcast_to(jnp.asarray(args.gae_lambda, jnp.float32), x.reward.shape))
    run = lambda lam: adv.gae(x.reward, x.value, x.next_value, x.terminated, x.truncated,
                              gamma=args.gamma, lambda_=lam)
    return run(policy_lambda), run(args.critic_lambda) + x.value


def td(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
    """The one-step TD error (:func:`jaxadv.advantages.td_errors`); targets ``r + γ V'``."""
    return _baselined(adv.td_errors(x.reward, x.value, x.next_value, x.terminated,
                                    gamma=args.gamma), x)


def nstep(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
    """The n-step return minus V (:func:`jaxadv.advantages.n_step_advantages`)."""
    return _baselined(adv.n_step_advantages(x.reward, x.value, x.next_value, x.terminated,
                                            x.truncated, gamma=args.gamma, n=args.n), x)


def mc(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
    """The discounted return (bootstrapped only at truncation) minus V."""
    returns = adv.discounted_returns(x.reward, x.next_value, x.terminated, x.truncated,
                                     gamma=args.gamma)
    return _baselined(returns - x.value, x)


def plain_return(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
    """The discounted return ``G_t`` with no baseline (bootstrapped only at truncation);
    no critic targets."""
    returns = adv.discounted_returns(x.reward, x.next_value, x.terminated, x.truncated,
                                     gamma=args.gamma)
    return returns, jnp.zeros_like(returns)


def qv(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
    """``Q(s_t, a_t) − V(s_t)`` with ``V = Σ_a π(a|s) Q(s, a)``, and expected-SARSA targets
    ``r + γ(1 − term) V(s_{t+1})`` for ``Q(s_t, a_t)``."""
    targets = x.reward + args.gamma * (1.0 - x.terminated.astype(x.reward.dtype)) * x.next_value
    return cast(jax.Array, x.q_value) - x.value, targets  # the q critic's estimators get q_value


def _sequence(advantages: Callable[..., jax.Array]
              ) -> Callable[[EstimatorInput, EstimatorArgs], tuple[jax.Array, jax.Array]]:
    """The sequence-level estimator of ``advantages`` (e.g.
    :func:`jaxadv.advantages.grpo_advantages`): the advantage of each column's first episode
    (its masked return), on each of its steps; no critic targets."""

    def fn(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
        mask = cast(jax.Array, x.mask)  # the sequence-level estimators get one
        a = advantages(jnp.sum(mask * x.reward, axis=0), group_size=args.group_size,
                       greedy_returns=x.greedy_returns, eps=args.eps)
        a = jnp.broadcast_to(a, x.reward.shape)
        return a, jnp.zeros_like(a)

    name = advantages.__name__.removesuffix("_advantages")
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}`` (:func:`jaxadv.advantages.{advantages.__name__}`) on each step."
    return fn


SEQUENCE_ESTIMATORS = adv.SEQUENCE_ESTIMATORS
"""The sequence-level estimators of :func:`jaxadv.advantages.sequence_advantages`: ``grpo``,
``drgrpo``, ``rloo``, ``batchmean``, ``rfpp``, ``remax`` (the rows of :data:`ESTIMATORS` with
``sequence_level`` also count rows added at run time)."""

ESTIMATORS: dict[str, Estimator] = {
    "gae": Estimator(gae_estimator, "value", False, "GAE(lambda)",
                     hparams=("gamma", "gae_lambda"), param="gae_lambda", unbiased=True),
    "vapo": Estimator(vapo, "value", False, "decoupled GAE: gae_lambda (or length-adaptive) "
                      "for the policy, critic_lambda for the critic's targets",
                      hparams=("gamma", "gae_lambda", "critic_lambda", "length_alpha"),
                      param="gae_lambda"),
    "td": Estimator(td, "value", False, "one-step TD error", gae_lambda=0.0),
    "nstep": Estimator(nstep, "value", False, "n-step return minus V", param="n"),
    "mc": Estimator(mc, "value", False, "discounted return minus V (the return without a critic)",
                    baseline_optional=True, monte_carlo=True, gae_lambda=1.0),
    "return": Estimator(plain_return, "none", False, "discounted return, no baseline",
                        monte_carlo=True, unbiased=True),
    "qv": Estimator(qv, "q", False, "Q(s,a) minus the policy's mean Q, expected-SARSA critic",
                    continuous=False),
    "grpo": Estimator(_sequence(adv.grpo_advantages), "none", True,
                      "sequence-level: group-relative, std-normalised (GRPO)",
                      min_group_size=2, hparams=()),
    "drgrpo": Estimator(_sequence(adv.drgrpo_advantages), "none", True,
                        "sequence-level: group mean baseline, no std (Dr. GRPO)",
                        min_group_size=2, hparams=(), unbiased=True),
    "rloo": Estimator(_sequence(adv.rloo_advantages), "none", True,
                      "sequence-level: leave-one-out group baseline (RLOO)",
                      min_group_size=2, hparams=(), unbiased=True),
    "batchmean": Estimator(_sequence(adv.batchmean_advantages), "none", True,
                           "sequence-level: REINFORCE, batch-mean baseline", hparams=(),
                           unbiased=True),
    "rfpp": Estimator(_sequence(adv.rfpp_advantages), "none", True,
                      "sequence-level: REINFORCE++ global normalisation", hparams=()),
    "remax": Estimator(_sequence(adv.remax_advantages), "none", True,
                       "sequence-level: the greedy response's return as baseline (ReMax; "
                       "one more, greedy rollout)", greedy_rollout=True, hparams=(),
                       unbiased=True),
}
"""Every estimator by name (see the module's table)."""
