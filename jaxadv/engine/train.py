"""The one training engine: rollout → estimator → epochs × minibatches of loss/grad/optax.

``make_train(config)`` returns a pure ``train(key, hparams) -> (TrainState, metrics)``;
training is a ``lax.scan`` over updates, so one seed is ``jax.jit(train)(key, hp)``,
sixteen seeds are ``jax.jit(jax.vmap(train, (0, None)))(keys, hp)`` and a grid of
hyperparameters is one more ``vmap`` over an :class:`HParams` with a leading axis.

Algorithms are rows of :data:`jaxadv.engine.algorithms.ALGORITHMS` (default estimator, policy
loss, epochs × minibatches, value clipping, advantage normalisation) and estimators rows of
:data:`jaxadv.engine.estimators.ESTIMATORS`; :class:`TrainConfig` picks one of each. The engine is
a few pure functions of a frozen :class:`Setup` (what a config fixes: environment,
network, policy, table rows), each readable on its own:

* :func:`init` — parameters, optimiser state and environments for one run;
* :func:`collect` — one rollout (with episodic group resets, the reference policy's
  log-probabilities and ReMax's greedy rollout where configured);
* :func:`estimate` — advantages and critic targets from the estimator table;
* :func:`loss_fn` — policy loss + value loss − entropy bonus (+ KL) on one minibatch;
* :func:`minibatch_gradient` — its gradient, summed over cache-sized micro-batches on CPU;
* :func:`optimise` — epochs × shuffled minibatches of gradient steps;
* :func:`update` — one update: the four above, then the update's metrics.

:func:`make_trainer` only assembles them.

``qv`` trains a critic with one output per discrete action on expected-SARSA targets; use
it with ``scale_rewards=True``: Q is trained only for the actions taken, so while the
values climb from 0 towards 1/(1 − γ) the rarer action's Q lags and its spurious negative
advantage can collapse the policy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeAlias, cast

import flax
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxadv import advantages as adv
from jaxadv import losses
from jaxadv.engine.algorithms import ALGORITHMS, CORRECTIONS, Algorithm, correction_weights
from jaxadv.engine.architectures import (
    NETWORK_NAMES,
    NETWORKS,
    check_network,
    default_network,
    training_sequences,
)
from jaxadv.engine.estimators import ESTIMATORS as ESTIMATOR_TABLE
from jaxadv.engine.estimators import SEQUENCE_ESTIMATORS, Estimator, EstimatorArgs, EstimatorInput
from jaxadv.engine.rollout import (
    Policy,
    Rollout,
    Transition,
    first_episode_mask,
    group_resets,
    make_policy,
    play_episodes,
    rollout,
)
from jaxadv.engine.warm_start import supervised_warm_start
from jaxadv.envs import (
    EnvSpec,
    RewardScaler,
    RunningMeanStd,
    env_spec,
    make,
    registered_names,
    reward_scaler_init,
    running_mean_std_init,
    running_mean_std_update,
)
from jaxadv.envs.token import check_token_env, metric_keys, response_length
from jaxadv.nets.transformer import last_position
from jaxadv.validate import attribute_docs, check_choice, hparam, hparam_specs, positive_int

__all__ = [
    "ALGOS",
    "AUTO_MICRO_BATCH",
    "BEHAVIOUR_PRECISIONS",
    "EVAL_STREAM",
    "HPARAM_SPECS",
    "NETWORK_NAMES",
    "NONFINITE",
    "SEQUENCE_ESTIMATORS",
    "TELEMETRY_METRICS",
    "Batch",
    "GradientMoments",
    "HParams",
    "Setup",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "accumulate_gradient",
    "advantage_telemetry",
    "collect",
    "estimate",
    "gradient_moments",
    "gradient_telemetry",
    "greedy_evaluation",
    "informative_mask",
    "init",
    "loss_fn",
    "make_setup",
    "make_train",
    "make_trainer",
    "micro_batch_size",
    "minibatch_gradient",
    "optimise",
    "optimizer",
    "permutations",
    "policy_outputs",
    "training_sequences",
    "truncated_importance_weights",
    "update",
]

ALGOS = tuple(ALGORITHMS)
"""The algorithm names, in table order."""
_DEPRECATED = {"ESTIMATORS": "the estimator names, tuple(jaxadv.engine.estimators.ESTIMATORS)"}


def __getattr__(name: str) -> Any:
    """``ESTIMATORS``, the estimator names of 0.3.0 (one name, one meaning: it is now only the
    table :data:`jaxadv.engine.estimators.ESTIMATORS`), with a ``DeprecationWarning``."""
    if name in _DEPRECATED:
        import warnings

        warnings.warn(f"jaxadv.engine.train.{name} is deprecated: use {_DEPRECATED[name]}",
                      DeprecationWarning, stacklevel=2)
        return tuple(ESTIMATOR_TABLE)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
NONFINITE = ("loss", "grad", "params")
"""What the ``nonfinite`` metric checks: bit ``i`` (value ``2**i``) is set when
``NONFINITE[i]`` held a NaN or ±inf at the update's first optimiser step that had one."""

AlgoName = Literal[ALGOS]  # type: ignore[valid-type]
NetworkName = Literal[NETWORK_NAMES]  # type: ignore[valid-type]
EstimatorName: TypeAlias = Literal[tuple(ESTIMATOR_TABLE)]  # type: ignore[valid-type]
"""An estimator's name: a key of :data:`jaxadv.engine.estimators.ESTIMATORS`, in table order.
The sequence-level ones give one advantage per episode, broadcast to its steps; they need
``episodic=True``."""
Reduction = Literal[losses.REDUCTIONS]  # type: ignore[valid-type]
KLEstimator = Literal[losses.KL_ESTIMATORS]  # type: ignore[valid-type]
KL_MODES = ("none", "loss", "reward")
"""Where the KL penalty against the reference policy goes: nowhere, the loss or the reward."""
BEHAVIOUR_PRECISIONS = ("float32", "bfloat16")
"""The precision of the sampler's logits (``behaviour_precision``): the trainer's own, or
rounded to bfloat16 as a lower-precision inference engine computes them."""
CorrectionName: TypeAlias = Literal[tuple(["none", *CORRECTIONS])]  # type: ignore[valid-type]


def _env_kwargs_pairs(kwargs: Any) -> tuple[tuple[str, Any], ...]:
    """``env_kwargs`` as a sorted, hashable tuple of ``(name, value)`` pairs (from a dict,
    pairs, or JSON lists)."""
    items = kwargs.items() if isinstance(kwargs, dict) else kwargs
    try:
        pairs = tuple(sorted((str(k), v) for k, v in items))
        hash(pairs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`env_kwargs` must be (name, value) pairs of hashable values, got {kwargs!r}") from exc
    return pairs


def _algo_defaults(algo: str, estimator: str | None) -> dict[str, Any]:
    """The fields ``algo``'s table row sets when a config leaves them ``None``."""
    row = ALGORITHMS[algo]
    estimator = row.estimator if estimator is None else estimator
    sequence_level = estimator in ESTIMATOR_TABLE and ESTIMATOR_TABLE[estimator].sequence_level
    return {"estimator": estimator, "update_epochs": row.update_epochs,
            "num_minibatches": row.num_minibatches,
            "normalize_advantages": row.normalize_advantages and not sequence_level,
            "correction": () if row.behaviour_loss else ("tis",)}


def _band(name: str, value: Any) -> tuple[float, float]:
    """``value`` as a mask range ``(lo, hi)`` with 0 <= lo < hi, or a ``ValueError`` naming
    the field ``name``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a mask range (lo, hi), got {value!r}") from None
    if not (0.0 <= lo < hi) or lo == float("inf"):
        raise ValueError(f"`{name}` = {value!r} is not a mask range: it needs 0 <= lo < hi, "
                         f"got lo = {lo:g}, hi = {hi:g}")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static settings: they fix array shapes or program structure; changing one recompiles."""

    env: str = "CartPole-v1"
    """environment id: any gymnax id, or a name added with jaxadv.envs.register."""
    algo: AlgoName = "ppo"
    """algorithm (jaxadv.engine.algorithms)."""
    estimator: EstimatorName | None = None
    """advantage estimator (jaxadv.engine.estimators); default: the algorithm's."""
    num_envs: int = 4
    """environments stepped in parallel (vmap)."""
    num_steps: int = 128
    """steps per environment per update (the rollout window T)."""
    total_timesteps: int = 500_000
    """environment steps in total (all environments together)."""
    update_epochs: int | None = None
    """passes over each rollout; default 4 for ppo, 1 otherwise."""
    num_minibatches: int | None = None
    """minibatches per epoch; default 4 for ppo, 1 otherwise."""
    hidden: tuple[int, ...] = (64, 64)
    """hidden layer widths of the actor and critic MLPs."""
    activation: Literal["tanh", "relu"] = "tanh"
    """hidden activation."""
    shared_torso: bool = False
    """actor and critic share one torso."""
    n_step: int = 5
    """n of the nstep estimator."""
    baseline: bool = True
    """learn a critic (for reinforce: the baseline; without it A = return)."""
    normalize_advantages: bool | None = None
    """standardise advantages per minibatch; default on for ppo (except the sequence-level estimators, which set their own scale), off for a2c and reinforce."""
    clip_value_loss: bool = True
    """ppo: clip the value loss around the rollout's values by clip_eps."""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training."""
    normalize_obs: bool = False
    """standardise observations with running statistics shared by all envs."""
    scale_rewards: bool = False
    """divide rewards by the running std of the discounted return."""
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    """keyword arguments of the environment's constructor, as (name, value) pairs."""
    network: NetworkName | None = None
    """the policy/critic network, a row of jaxadv.engine.architectures.NETWORKS (``--help`` lists them); default: the row that is the default for the env's observations (image or flat)."""
    seq_len: int | None = None
    """a recurrent --network (gru): steps per training sequence; the update re-runs the GRU along whole sequences (num_steps / seq_len per env, each from the hidden state the rollout stored at its first step), and a minibatch holds whole sequences, split over envs. Default: num_steps."""
    burn_in: int = 0
    """a recurrent --network (gru): steps before each training sequence that re-run the GRU from the state stored there to refresh the sequence's starting state, without loss or gradient (R2D2's burn-in); the window's first sequence has none."""
    layers: int = 2
    """transformer: blocks."""
    width: int = 64
    """transformer: model width."""
    heads: int = 4
    """transformer: attention heads."""
    episodic: bool = False
    """every update starts each env on a fresh episode and learns from that episode only (steps after it ends are masked); num_steps should cover the longest episode."""
    group_size: int = 1
    """with --episodic: envs per prompt; groups of group_size envs start from the same reset (GRPO/RLOO groups). num_envs must be a multiple."""
    loss_reduction: Reduction = "token"
    """with --episodic: average the per-step losses over all tokens, per sequence then over sequences, or divide by a constant (num_steps x envs)."""
    kl: Literal[KL_MODES] = "none"  # type: ignore[valid-type]
    """KL penalty against a frozen reference (the initial policy): none, in the loss, or subtracted from the rewards (per step, k1), weighted by kl_coef."""
    kl_estimator: KLEstimator = "k3"
    """estimator of KL(pi || ref) in the loss."""
    temperature: float = 1.0
    """sample from softmax(logits / temperature) — and learn that distribution's log-probabilities, as LM-RL pipelines do (discrete actions)."""
    warm_start_steps: int = 0
    """supervised warm start before RL: Adam steps of teacher-forced cross-entropy on correct responses (envs with demonstration(), transformer network); the warm-started policy is also the KL reference."""
    warm_start_prompts: int = 256
    """the warm start's fixed pool of prompts with their correct responses."""
    warm_start_lr: float = 1e-3
    """the warm start's Adam learning rate."""
    eval_every: int = 0
    """every this many updates, also play eval_episodes fresh episodes with the greedy policy inside the compiled program and report their mean return and length as eval_return and eval_length (NaN between evaluations); 0: never. Training itself is unchanged (the same bits)."""
    eval_episodes: int = 8
    """episodes of each --eval-every evaluation, each until its first end or the env's time limit."""
    behaviour_temperature: float | None = None
    """sample the rollouts at this temperature instead of `temperature` — a behaviour policy that differs from the one trained, as an inference engine's sampler may — and correct the loss by `correction` (default: truncated importance sampling, each step's advantage times min(π/π_b, tis_cap)), PPO's ratios taken against π (discrete actions; not with normalize_advantages)."""
    tis_cap: float = 2.0
    """with a behaviour policy and correction tis: the truncation C of the importance weights min(π/π_b, C)."""
    behaviour_precision: Literal[BEHAVIOUR_PRECISIONS] = "float32"  # type: ignore[valid-type]
    """the sampler's logits: float32 (the trained policy's own) or rounded to bfloat16 before the temperature — a lower-precision inference engine, a behaviour policy that differs from the one trained (corrected as with behaviour_temperature; discrete actions)."""
    correction: tuple[CorrectionName, ...] | None = None
    """with a behaviour policy (behaviour_temperature, behaviour_precision): the importance weights of π/π_b that multiply the advantages, at most one per level: tis (token ratio truncated at tis_cap), token_mis (token ratio, 0 outside mis_range), seq_tis (the response's ratio ρ truncated at seq_cap), seq_mis (ρ, 0 outside seq_range: the response dropped); the sequence-level ones need --episodic; none: no weight. Default: tis, none for icepop (which masks the token ratio itself)."""
    mis_range: tuple[float, float] = (0.5, 2.0)
    """correction token_mis: the band [lo, hi] (inclusive) of the token ratios kept."""
    seq_cap: float = 2.0
    """correction seq_tis: the truncation C of each response's ratio, min(ρ, C)."""
    seq_range: tuple[float, float] = (0.5, 2.0)
    """correction seq_mis: the band [lo, hi] (inclusive) of the responses' ratios kept."""
    seq_aggregate: Literal["product", "geometric"] = "product"
    """seq_tis, seq_mis: a response's ratio ρ is the product of its token ratios (the unbiased sequence ratio) or their geometric mean (per token, length-independent)."""
    value_warmup: int = 0
    """VAPO's value pre-training: for the first value_warmup updates only the critic learns (the advantages, the entropy bonus and the KL penalty in the loss are multiplied by 0)."""
    dynamic_sampling: bool = False
    """with --episodic and groups: DAPO's dynamic sampling in a fixed-shape program — the groups whose rewards are all equal (no signal) are masked out of the loss; metrics.csv's informative_groups is the fraction kept (the effective batch)."""
    micro_batch_size: int | None = None
    """samples per gradient micro-batch: each minibatch's gradient is summed over micro-batches of this many samples in a lax.scan, then one optimiser step (the same gradient up to float rounding; smaller working sets stay in cache). 0: the whole minibatch at once; default: 2048 on CPU where it divides a larger minibatch, else 0. Not with --episodic."""
    telemetry: bool = True
    """gradient-quality telemetry in metrics.csv and telemetry.png: from the first epoch's minibatch gradients, the update's gradient signal-to-noise ratio grad_snr (bias-corrected ‖E g‖² / tr Σ, from grad_signal and grad_noise) and the mean cosine grad_cosine of each minibatch gradient to their mean (not with one minibatch per epoch); the advantages' adv_mean and adv_std over the real steps; with a group estimator the fraction zero_adv_groups of groups whose advantages are all 0. On by default: it costs under 1% of steps/s (docs/benchmarks.md)."""

    def __post_init__(self) -> None:
        check_choice("env", self.env, tuple(registered_names()))
        check_choice("algo", self.algo, tuple(ALGORITHMS))  # the live tables: rows added at run time count
        defaults = _algo_defaults(self.algo, self.estimator)
        for field, default in defaults.items():
            if getattr(self, field) is None:
                object.__setattr__(self, field, default)
        check_choice("estimator", self.estimator, tuple(ESTIMATOR_TABLE))
        self._check_fields()
        self._check_corrections()
        self._check_combinations()

    def _check_fields(self) -> None:
        """Each field on its own: types, ranges, choices."""
        for field in ("num_envs", "num_steps", "total_timesteps", "update_epochs",
                      "num_minibatches", "n_step", "layers", "width", "heads", "group_size",
                      "warm_start_prompts", "eval_episodes"):
            positive_int(field, getattr(self, field))
        positive_int("eval_every", self.eval_every, minimum=0)
        positive_int("warm_start_steps", self.warm_start_steps, minimum=0)
        if not isinstance(self.hidden, (tuple, list)):
            raise ValueError(f"`hidden` must be a tuple of layer widths, e.g. (64, 64); got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                                  for h in self.hidden):
            raise ValueError(f"`hidden` must be a non-empty tuple of positive ints, got {self.hidden!r}")
        check_choice("activation", self.activation, ("tanh", "relu"))
        if not isinstance(self.telemetry, bool):
            raise ValueError(f"`telemetry` must be True or False, got {self.telemetry!r}")
        object.__setattr__(self, "env_kwargs", _env_kwargs_pairs(self.env_kwargs))
        if self.network is None:  # the table's default for these observations
            object.__setattr__(self, "network", default_network(self.spec.image_shape is not None))
        check_choice("network", self.network, tuple(NETWORKS))  # the live table
        check_choice("loss_reduction", self.loss_reduction, losses.REDUCTIONS)
        check_choice("kl", self.kl, KL_MODES)
        check_choice("kl_estimator", self.kl_estimator, losses.KL_ESTIMATORS)
        if not (isinstance(self.temperature, int | float) and 0 < self.temperature < float("inf")):
            raise ValueError(f"`temperature` must be a number > 0, got {self.temperature!r}")
        if not self.warm_start_lr > 0:
            raise ValueError(f"`warm_start_lr` must be > 0, got {self.warm_start_lr!r}")

    def _check_combinations(self) -> None:
        """Fields that constrain each other."""
        estimator = ESTIMATOR_TABLE[cast(str, self.estimator)]
        if self.temperature != 1.0 and not self.spec.discrete:
            raise ValueError(f"`temperature` = {self.temperature} needs discrete actions; `env` = {self.env!r} is continuous")
        if self.width % self.heads:
            raise ValueError(f"`heads` = {self.heads} must divide `width` = {self.width}")
        if self.num_envs % self.group_size:
            raise ValueError(f"`group_size` = {self.group_size} must divide `num_envs` = {self.num_envs}")
        if ALGORITHMS[self.algo].episodic_only and not self.episodic:
            raise ValueError(f"`algo` = {self.algo!r} weighs whole sequences: it needs "
                             "`episodic` = True")
        if not self.episodic and (self.group_size > 1 or estimator.sequence_level
                                  or self.loss_reduction != "token"):
            sequence_level = [n for n, e in ESTIMATOR_TABLE.items() if e.sequence_level]
            raise ValueError(
                "`episodic` must be True for group_size > 1, a sequence-level estimator "
                f"({', '.join(sequence_level)}) or a loss_reduction other than 'token'"
            )
        if self.behaviour_temperature is not None:
            if not (isinstance(self.behaviour_temperature, int | float) and self.behaviour_temperature > 0
                    and self.tis_cap > 0):
                raise ValueError("`behaviour_temperature` and `tis_cap` must be numbers > 0, got "
                                 f"{self.behaviour_temperature!r} and {self.tis_cap!r}")
            if not self.spec.discrete:
                raise ValueError("`behaviour_temperature` tempers a sampler's logits: it needs "
                                 f"discrete actions; `env` = {self.env!r} is continuous")
        if self.value_warmup and not (self.baseline and estimator.critic == "value"):
            raise ValueError(f"`value_warmup` = {self.value_warmup} trains the critic alone: it "
                             f"needs a value critic; `estimator` = {self.estimator!r} has none")
        positive_int("value_warmup", self.value_warmup, minimum=0)
        if self.dynamic_sampling and (not self.episodic or self.group_size < 2):
            raise ValueError("`dynamic_sampling` drops groups whose rewards are all equal: it "
                             f"needs `episodic` = True and `group_size` >= 2, got {self.episodic} "
                             f"and {self.group_size}")
        if self.group_size < estimator.min_group_size:
            raise ValueError(f"`estimator` = {self.estimator!r} compares samples within a group: "
                             f"`group_size` must be >= {estimator.min_group_size}, got "
                             f"{self.group_size}")
        if self.episodic and self.num_envs % cast(int, self.num_minibatches):
            raise ValueError(
                f"`num_minibatches` = {self.num_minibatches} must divide `num_envs` = "
                f"{self.num_envs}: with --episodic a minibatch holds whole episodes"
            )
        if self.batch_size % cast(int, self.num_minibatches):
            raise ValueError(
                f"`num_minibatches` = {self.num_minibatches} must divide the batch "
                f"num_envs * num_steps = {self.num_envs} * {self.num_steps} = {self.batch_size}"
            )
        if self.total_timesteps < self.batch_size:
            raise ValueError(
                f"`total_timesteps` = {self.total_timesteps} is less than one update's batch "
                f"num_envs * num_steps = {self.batch_size}"
            )
        if not self.baseline and estimator.critic != "none" and not estimator.baseline_optional:
            allowed = [n for n, e in ESTIMATOR_TABLE.items() if e.critic == "none" or e.baseline_optional]
            raise ValueError(f"`estimator` = {self.estimator!r} needs a critic; with `baseline` = False "
                             f"only {', '.join(repr(n) for n in allowed)} are allowed")
        if not estimator.continuous and not self.spec.discrete:
            raise ValueError(
                f"`estimator` = {self.estimator!r} needs a discrete action space; `env` = {self.env!r} is continuous"
            )
        if self.micro_batch_size:
            positive_int("micro_batch_size", self.micro_batch_size)
            if self.episodic:
                raise ValueError("`micro_batch_size` needs per-sample losses: not with --episodic")
            if self.minibatch_size % self.micro_batch_size:
                raise ValueError(
                    f"`micro_batch_size` = {self.micro_batch_size} must divide the minibatch "
                    f"num_envs * num_steps / num_minibatches = {self.minibatch_size}")
        self._check_network()

    def _check_network(self) -> None:
        """What the network's row needs and supports (:func:`~jaxadv.engine.architectures.
        check_network`), a token network's environment, and a sequence network's
        ``seq_len`` and ``burn_in``."""
        positive_int("burn_in", self.burn_in, minimum=0)
        check_network(self)
        row = NETWORKS[cast(str, self.network)]
        if row.tokens:
            self._check_token_env()
        if row.sequences is None:
            return
        if self.seq_len is None:
            object.__setattr__(self, "seq_len", self.num_steps)
        seq_len = cast(int, self.seq_len)
        positive_int("seq_len", seq_len)
        if self.num_steps % seq_len or seq_len + self.burn_in > self.num_steps:
            raise ValueError(f"`seq_len` = {seq_len} must divide `num_steps` = "
                             f"{self.num_steps}, and `seq_len` + `burn_in` = "
                             f"{seq_len + self.burn_in} must not exceed it")
        sequences = self.num_envs * (self.num_steps // seq_len)
        if sequences % cast(int, self.num_minibatches):
            raise ValueError(f"`num_minibatches` = {self.num_minibatches} must divide the "
                             f"{sequences} training sequences (num_envs * num_steps / seq_len): "
                             "a minibatch holds whole sequences")

    @property
    def off_policy(self) -> bool:
        """The rollouts come from a behaviour policy other than the one trained
        (``behaviour_temperature`` or ``behaviour_precision``)."""
        return self.behaviour_temperature is not None or self.behaviour_precision != "float32"

    def _check_corrections(self) -> None:
        """``behaviour_precision``, ``correction`` and their settings: one correction per
        level, none at the token level with a loss that masks the token ratio itself, the
        sequence-level ones only on whole responses."""
        check_choice("behaviour_precision", self.behaviour_precision, BEHAVIOUR_PRECISIONS)
        check_choice("seq_aggregate", self.seq_aggregate, ("product", "geometric"))
        for name in ("mis_range", "seq_range"):
            object.__setattr__(self, name, _band(name, getattr(self, name)))
        for name in ("tis_cap", "seq_cap"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"`{name}` must be a number > 0, got {value!r}")
        names = (self.correction,) if isinstance(self.correction, str) else self.correction
        if not isinstance(names, tuple | list):
            raise ValueError(f"`correction` must be a tuple of names, got {self.correction!r}")
        for name in names:
            check_choice("correction", name, ("none", *CORRECTIONS))
        if "none" in names and len(names) > 1:
            raise ValueError(f"`correction` = {tuple(names)!r}: 'none' excludes the others")
        names = tuple(n for n in names if n != "none")
        object.__setattr__(self, "correction", names)
        for level in ("token", "sequence"):
            same = [n for n in names if CORRECTIONS[n].level == level]
            if len(same) > 1:
                raise ValueError(f"`correction` = {names!r}: {' and '.join(same)} would both "
                                 f"reweight the {level} ratio π/π_b; give at most one "
                                 f"{level}-level correction")
        token = [n for n in names if CORRECTIONS[n].level == "token"]
        if token and ALGORITHMS[self.algo].behaviour_loss:
            raise ValueError(f"`correction` = {names!r}: {token[0]} and `algo` = {self.algo!r} "
                             "would both reweight the token ratio π/π_b (the loss masks it "
                             "itself); use correction=('none',) or a sequence-level one")
        sequence = [n for n in names if CORRECTIONS[n].level == "sequence"]
        if sequence and not self.episodic:
            raise ValueError(f"`correction` = {names!r}: {sequence[0]} weighs whole responses by "
                             "their sequence ratio: it needs sequence rewards on whole "
                             "episodes, `episodic` = True (e.g. jaxadv sequence)")
        if not self.off_policy and names not in ((), ("tis",)):
            raise ValueError(f"`correction` = {names!r} reweights by π/π_b: it needs a behaviour "
                             "policy (behaviour_temperature or behaviour_precision)")
        if self.behaviour_precision != "float32" and not self.spec.discrete:
            raise ValueError("`behaviour_precision` rounds a sampler's logits: it needs discrete "
                             f"actions; `env` = {self.env!r} is continuous")
        if self.off_policy and self.normalize_advantages and names:
            field = ("behaviour_temperature" if self.behaviour_temperature is not None
                     else "behaviour_precision")
            raise ValueError(f"`{field}` needs discrete actions and normalize_advantages = False "
                             f"(the importance weights of `correction` = {names!r} multiply the "
                             "advantages)")

    def _check_token_env(self) -> None:
        """A network that reads token ids (a row with ``tokens``): the env's demonstrations
        for a warm start, and with ``episodic`` room for its longest response."""
        raw = check_token_env(make(self.env, **dict(self.env_kwargs))[0], name=self.env,
                              demonstration=bool(self.warm_start_steps))
        if self.episodic and self.num_steps < response_length(raw):
            raise ValueError(f"`num_steps` = {self.num_steps} is shorter than the longest response "
                             f"({response_length(raw)} tokens): episodes would be cut unscored")

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes``; a new ``algo`` re-resolves its defaults.

        ``estimator``, ``update_epochs``, ``num_minibatches`` and ``normalize_advantages``
        that this config left at its algo's defaults (and that ``changes`` does not set) take
        the new algo's.

        >>> TrainConfig(algo="ppo").replace(algo="reinforce").estimator
        'mc'
        """
        algo = changes.get("algo", self.algo)
        if algo != self.algo:
            defaults = {**_algo_defaults(self.algo, self.estimator),
                        "estimator": ALGORITHMS[self.algo].estimator}
            for field, default in defaults.items():
                if field not in changes and getattr(self, field) == default:
                    changes[field] = None
        return dataclasses.replace(self, **changes)

    @property
    def minibatch_size(self) -> int:
        """Samples per minibatch (without --episodic): batch_size // num_minibatches."""
        return self.batch_size // cast(int, self.num_minibatches)

    @property
    def batch_size(self) -> int:
        """Transitions per update: num_envs × num_steps."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Updates in the whole run: total_timesteps // batch_size."""
        return self.total_timesteps // self.batch_size

    @functools.cached_property
    def spec(self) -> EnvSpec:
        """The environment's :class:`jaxadv.envs.EnvSpec` (built once per config)."""
        return env_spec(*make(self.env, **dict(self.env_kwargs)))


@flax.struct.dataclass
class HParams:
    """Numeric hyperparameters: a pytree of scalars, so ``train`` can be vmapped over them.

    Leaves are Python floats or arrays (with leading axes for a vmapped sweep). Each field's
    default, range and doc are written once, in its :func:`~jaxadv.validate.hparam` metadata
    (:data:`HPARAM_SPECS`): :meth:`validate`, ``--help``, every ``jaxadv sweep --grid.FIELD``
    and PBT's bounds read them there.
    """

    lr: float = hparam(2.5e-4, "Adam learning rate (the start of the linear decay with --anneal-lr).", gt=0)
    gamma: float = hparam(0.99, "discount factor γ.", ge=0, le=1)
    gae_lambda: float = hparam(0.95, "GAE λ: 0 is the one-step TD error, 1 the Monte Carlo return.",
                               ge=0, le=1)
    clip_eps: float = hparam(0.2, "ppo: clip range ε of the probability ratio (and of the value loss).",
                             gt=0)
    ent_coef: float = hparam(0.01, "weight of the entropy bonus.", ge=0)
    vf_coef: float = hparam(0.5, "weight of the value loss.", ge=0)
    max_grad_norm: float = hparam(0.5, "clip gradients to this global norm.", gt=0)
    kl_coef: float = hparam(0.0, "weight of the KL penalty against the reference policy (with --kl "
                            "loss or reward).", ge=0)
    clip_eps_high: float = hparam(0.28, "dapo, gspo, cispo: the upper clip range ε_high of the ratio "
                                  "(clip_eps is the lower, ε_low).", gt=0)
    critic_lambda: float = hparam(1.0, "vapo estimator: the GAE λ of the critic's targets (gae_lambda "
                                  "is the policy's).", ge=0, le=1)
    length_alpha: float = hparam(0.0, "vapo estimator: > 0 makes the policy's λ length-adaptive, 1 − "
                                 "1/(length_alpha · response length); 0 keeps gae_lambda.", ge=0)
    icepop_alpha: float = hparam(2.0, "icepop: tokens whose sampler mismatch π/π_b leaves "
                                 "[1/icepop_alpha, icepop_alpha] are dropped.", gt=1)
    sapo_tau_pos: float = hparam(1.0, "sapo: the gate's temperature for tokens with a positive "
                                 "advantage.", gt=0)
    sapo_tau_neg: float = hparam(1.05, "sapo: the gate's temperature for the others (the paper damps "
                                 "them faster: > sapo_tau_pos).", gt=0)

    def validate(self) -> HParams:
        """Check concrete values (any leading sweep axes) against each field's range in
        :data:`HPARAM_SPECS`; traced values pass unchecked."""
        for field, spec in HPARAM_SPECS.items():
            value = getattr(self, field)
            if not isinstance(value, jax.core.Tracer):
                spec.check(field, value)
        return self


HPARAM_SPECS = hparam_specs(HParams)
"""``field -> HParamSpec`` (:class:`~jaxadv.validate.HParamSpec`): each :class:`HParams` field's
doc and range, in field order — the one definition that validation, the command line's flags
and searches read."""
HParams.__doc__ = attribute_docs(HParams.__doc__, HPARAM_SPECS)


class TrainState(NamedTuple):
    """Everything one run carries between updates (array leaves only).

    ``params`` is the network's parameter pytree; ``opt_state`` is optax's state for
    the same parameters raveled into one vector (``jax.flatten_util.ravel_pytree``).
    """

    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    obs_stats: RunningMeanStd
    reward_scaler: RewardScaler
    key: jax.Array
    update: jax.Array
    ref_params: Any = None
    """the frozen reference policy's parameters (``kl`` ≠ ``"none"``), else ``None``."""
    hidden: Any = None
    """``[num_envs, H]`` a recurrent network's hidden state where the next rollout starts,
    else ``None``."""


class Trainer(NamedTuple):
    """Pure functions of one configuration.

    ``init(key, hp) -> TrainState``; ``update(state, hp) -> (state, metrics)`` (one
    update); ``run(state, hp, num_updates) -> (state, metrics[num_updates])`` (a
    ``lax.scan``; ``num_updates`` static); ``train(key, hp)`` = ``run(init(key, hp), hp,
    config.num_updates)``. ``network`` (:class:`~jaxadv.nets.networks.Network`), ``policy``
    (:class:`~jaxadv.engine.rollout.Policy`), ``env`` and ``env_params`` are the pieces they use.
    """

    config: TrainConfig
    init: Any
    update: Any
    run: Any
    train: Any
    network: Any = None
    policy: Any = None
    env: Any = None
    env_params: Any = None


def _nonfinite_flags(loss: jax.Array, grad_norm: jax.Array, params: jax.Array) -> jax.Array:
    """Bit ``i`` set where ``NONFINITE[i]`` holds a NaN or ±inf: an int32 scalar.

    ``loss`` is the minibatch's total loss, ``grad_norm`` its gradient's global norm (NaN or
    inf exactly when a gradient entry is, barring a norm beyond 3e38) and ``params`` the flat
    parameter vector after the optimiser step; ``params * 0`` sums to NaN exactly when an
    entry is not finite. One reduction beyond the norm the optimiser computes anyway.
    """
    bad = (~jnp.isfinite(loss), ~jnp.isfinite(grad_norm), jnp.isnan(jnp.sum(params * 0.0)))
    return cast(jax.Array, sum(b.astype(jnp.int32) << i for i, b in enumerate(bad)))


def permutations(key: jax.Array, num: int, size: int) -> jax.Array:
    """``[num, size]`` int32: independent random permutations of ``range(size)``.

    Items are ordered by i.i.d. 32-bit random keys (``jax.random.bits(key, (num, size))``),
    equal keys in index order: one round of ``jax.random.permutation``'s algorithm. A tie
    has probability ≈ size²/2³³ (3·10⁻⁵ for 512 items, 0.008 for 8192) and only fixes the
    order of the tied items. Only single-operand sorts are used — each sort key packed with
    a position in one 32-bit word — instead of the key–value sort of
    ``jax.random.permutation``, which is several times slower on CPU: up to 2¹⁶ items, each
    key's rank (a binary search in the sorted keys) above the item's index, in one sort;
    beyond, a least-significant-digit radix sort of the keys in digits of 32 − ⌈log₂ size⌉
    bits, each digit above the item's position so far (3 sorts for up to 2²¹ items).

    >>> import jax, numpy as np
    >>> p = permutations(jax.random.key(0), 3, 10)
    >>> p.shape, bool(np.all(np.sort(np.asarray(p), axis=1) == np.arange(10)))
    ((3, 10), True)
    """
    low = max(size - 1, 1).bit_length()  # bits of an index
    index = jnp.arange(size, dtype=jnp.uint32)[None, :]
    keys = jax.random.bits(key, (num, size), jnp.uint32)
    if 2 * low > 32:
        return jax.vmap(lambda k: _radix_order(k, low))(keys)
    rank = jax.vmap(jnp.searchsorted)(jnp.sort(keys, axis=1), keys).astype(jnp.uint32)
    return (jnp.sort(rank << low | index, axis=1) & ((1 << low) - 1)).astype(jnp.int32)


def _radix_order(keys: jax.Array, low: int) -> jax.Array:
    """The stable argsort of ``keys [size]`` (uint32, size ≤ 2^low), by LSD radix sort: per
    digit of ``32 − low`` bits, one sort of the digit packed above each item's position."""
    digit = 32 - low
    position = jnp.arange(keys.shape[0], dtype=jnp.uint32)
    order = position  # items in the order sorted so far
    for shift in range(0, 32, digit):
        bits = (keys[order] >> shift) & ((1 << min(digit, 32 - shift)) - 1)
        order = order[jnp.sort(bits << low | position) & ((1 << low) - 1)]
    return order.astype(jnp.int32)


def _tempered(network: Any, temperature: float) -> Any:
    """``network`` with its logits divided by ``temperature`` (``apply`` and any ``apply_all``;
    a recurrent network, whose ``unroll`` would not see it, is refused a temperature)."""
    scale = lambda out: (out[0] / temperature, out[1])
    changes = {"apply": lambda params, obs: scale(network.apply(params, obs))}
    if hasattr(network, "apply_all"):
        changes["apply_all"] = lambda params, tokens: scale(network.apply_all(params, tokens))
    return network._replace(**changes)


def _rounded(network: Any, temperature: float) -> Any:
    """``network`` seen through a lower-precision inference engine: its logits rounded to
    bfloat16 (round to nearest even), then divided by ``temperature`` in float32."""
    scale = lambda out: (out[0].astype(jnp.bfloat16).astype(out[0].dtype) / temperature, out[1])
    changes = {"apply": lambda params, obs: scale(network.apply(params, obs))}
    if hasattr(network, "apply_all"):
        changes["apply_all"] = lambda params, tokens: scale(network.apply_all(params, tokens))
    return network._replace(**changes)


def _sampler(setup: Setup) -> Any:
    """The network the rollouts sample from: the trained policy, or the behaviour policy of
    ``behaviour_temperature`` and ``behaviour_precision``."""
    config = setup.config
    if not config.off_policy:
        return setup.network
    if config.behaviour_precision == "float32":
        return _tempered(setup.base_network, cast(float, config.behaviour_temperature))
    temperature = (config.temperature if config.behaviour_temperature is None
                   else config.behaviour_temperature)
    return _rounded(setup.base_network, temperature)


def _correction_settings(config: TrainConfig) -> dict[str, Any]:
    """The keywords of :func:`~jaxadv.engine.algorithms.correction_weights` that ``config`` sets."""
    return {"tis_cap": config.tis_cap, "mis_range": config.mis_range, "seq_cap": config.seq_cap,
            "seq_range": config.seq_range, "seq_aggregate": config.seq_aggregate}


def _explained_variance(pred: jax.Array, target: jax.Array) -> jax.Array:
    """``1 − Var[target − pred] / Var[target]``; 0 where the targets are (nearly) constant."""
    var = jnp.var(target)
    ok = var > 1e-8 * (1.0 + jnp.mean(target**2))
    return jnp.where(ok, 1.0 - jnp.var(target - pred) / jnp.where(ok, var, 1.0), 0.0)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a :class:`TrainConfig` fixes, built once by :func:`make_setup`; every engine
    function takes it first (a Python object, never traced).

    Attributes:
      config: the configuration.
      env, env_params: the (wrapped) environment and its parameters.
      spec: the environment's :class:`~jaxadv.envs.EnvSpec`.
      network: the policy/critic network (logits divided by the temperature).
      base_network: the same at temperature 1 (the warm start fits demonstrations with it).
      policy: the action distribution's functions.
      algorithm, estimator: the configured rows of the two tables.
      use_critic: a critic is learned and used (``baseline`` and an estimator with one).
      info_keys: ``info`` entries the rollout keeps (a token env's ``metric_keys``).
      pad: the token id of padding where a transformer is teacher-forced on whole episodes,
        else ``None``.
      micro_batch: samples per gradient micro-batch (``config.micro_batch_size`` resolved:
        :func:`micro_batch_size`), or 0 for whole minibatches.
    """

    config: TrainConfig
    env: Any
    env_params: Any
    spec: EnvSpec
    network: Any  # a Network, a TransformerNetwork (apply_all) or a row's own tuple like them
    base_network: Any
    policy: Policy
    algorithm: Algorithm
    estimator: Estimator
    use_critic: bool
    info_keys: tuple[str, ...]
    pad: int | None
    micro_batch: int = 0

    @property
    def q_critic(self) -> bool:
        """The critic outputs ``Q(s, ·)``, one value per discrete action (``qv``)."""
        return self.estimator.critic == "q"

    @property
    def acting(self) -> dict[str, Any]:
        """How :func:`~jaxadv.engine.rollout.play_episodes` acts with the network: its ``apply`` (or
        a recurrent network's ``step``) and ``hidden_size``."""
        net = self.network
        return {"apply_fn": net.step if net.hidden_size else net.apply,
                "hidden_size": net.hidden_size}


def make_setup(config: TrainConfig) -> Setup:
    """Build the environment, network and policy ``config`` names, and look up its table rows."""
    env, env_params = make(config.env, **dict(config.env_kwargs))
    spec = env_spec(env, env_params)
    estimator = ESTIMATOR_TABLE[cast(str, config.estimator)]
    use_critic = config.baseline and estimator.critic != "none"
    size = cast(int, spec.num_actions if spec.discrete else spec.action_dim)
    row = NETWORKS[cast(str, config.network)]
    network = row.build(config, env, spec, use_critic=use_critic, q_critic=estimator.critic == "q")
    teacher_forced = config.episodic and row.tokens  # whole episodes in one pass
    return Setup(
        config=config, env=env, env_params=env_params, spec=spec,
        # the policy *is* softmax(logits / τ): sampled and learned
        network=network if config.temperature == 1.0 else _tempered(network, config.temperature),
        base_network=network,
        policy=make_policy(spec.discrete, size, spec.action_low, spec.action_high),
        algorithm=ALGORITHMS[config.algo], estimator=estimator, use_critic=use_critic,
        info_keys=metric_keys(env),
        pad=check_token_env(env, name=config.env).tokens.pad if teacher_forced else None,
        micro_batch=micro_batch_size(config),
    )


AUTO_MICRO_BATCH = 2048
"""Samples per micro-batch chosen on CPU (:func:`micro_batch_size`): of 1024, 2048 and 4096
the fastest on a 2-core x86 CPU (README, "Thousands of environments")."""


def micro_batch_size(config: TrainConfig, backend: str | None = None) -> int:
    """``config.micro_batch_size`` if set, else :data:`AUTO_MICRO_BATCH` on a CPU ``backend``
    (default: JAX's) when it divides a larger minibatch, else 0 (whole minibatches)."""
    if config.micro_batch_size is not None:
        return config.micro_batch_size
    if (config.episodic or NETWORKS[cast(str, config.network)].time_major
            or (backend or jax.default_backend()) != "cpu"):
        return 0
    mb = config.minibatch_size
    return AUTO_MICRO_BATCH if mb > AUTO_MICRO_BATCH and mb % AUTO_MICRO_BATCH == 0 else 0


def optimizer(setup: Setup, hp: HParams) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam (its learning rate decayed linearly to 0 over all
    optimiser steps with ``anneal_lr``)."""
    config = setup.config
    epochs, minibatches = cast(int, config.update_epochs), cast(int, config.num_minibatches)
    num_opt_steps = config.num_updates * epochs * minibatches
    lr = optax.linear_schedule(hp.lr, 0.0, num_opt_steps) if config.anneal_lr else hp.lr
    return optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(lr, eps=1e-5))


def init(setup: Setup, key: jax.Array, hp: HParams) -> TrainState:
    """A fresh run: ``num_envs`` reset environments, initial (optionally warm-started)
    parameters, the optimiser state of their raveled vector and the statistics' zeros."""
    config = setup.config
    key, key_net, key_env = jax.random.split(key, 3)
    obs, env_state = jax.vmap(setup.env.reset, in_axes=(0, None))(
        jax.random.split(key_env, config.num_envs), setup.env_params
    )
    params = setup.network.init(key_net, obs[0])
    if config.warm_start_steps:
        params, _ = supervised_warm_start(
            jax.random.fold_in(key_net, 1), params, apply_all=setup.base_network.apply_all,
            env=setup.env, env_params=setup.env_params, steps=config.warm_start_steps,
            num_prompts=config.warm_start_prompts, lr=config.warm_start_lr)
    return TrainState(
        ref_params=params if config.kl != "none" else None,
        params=params,
        opt_state=optimizer(setup, hp).init(ravel_pytree(params)[0]),
        env_state=env_state,
        obs=obs,
        obs_stats=running_mean_std_init((setup.spec.obs_dim,)),
        reward_scaler=reward_scaler_init(config.num_envs),
        key=key,
        update=jnp.zeros((), jnp.int32),
        hidden=jnp.zeros((config.num_envs, setup.network.hidden_size))
        if setup.network.hidden_size else None,
    )


def policy_outputs(setup: Setup, params: Any, traj: Transition,
                   mask: jax.Array | None) -> tuple[Any, jax.Array]:
    """``(policy, critic)`` at every step of ``traj.obs [T, B, ...]``.

    A causal transformer on episodes (``setup.pad`` set) does it in one teacher-forced
    pass over each episode's last observation, which holds every earlier step's tokens
    (T× fewer token evaluations). A recurrent network re-runs each column from its stored
    state at the first step (``traj.hidden[0]``), reset where episodes end; gradients flow
    into the carried state from each column's first step in ``mask`` on (a burn-in before)."""
    obs = traj.obs
    if setup.network.hidden_size:
        start = None if mask is None else jnp.argmax(mask > 0, axis=0)
        return setup.network.unroll(params, obs, traj.hidden[0], traj.episode_done, start)
    if setup.pad is None:
        return setup.network.apply(params, obs)
    last = jnp.maximum(jnp.sum(cast(jax.Array, mask), axis=0).astype(jnp.int32) - 1, 0)  # [B]
    final = jnp.take_along_axis(obs, last[None, :, None], axis=0)[0]  # [B, L]
    logits, values = setup.network.apply_all(params, final)  # [B, L, A], [B, L]
    pos = last_position(obs, setup.pad)  # [T, B]
    lanes = jnp.arange(obs.shape[1])[None, :]
    return logits[lanes, pos], values[lanes, pos]


class Batch(NamedTuple):
    """One update's experience (:func:`collect`), time-major ``[T, N, ...]``.

    Attributes:
      rollout: the :class:`~jaxadv.engine.rollout.Rollout` (environments' state after the window).
      traj: its transitions, rewards less the per-step KL with ``kl = "reward"``.
      mask: ``[T, N]`` each env's first episode (``episodic``), else ``None``.
      ref_log_prob: ``[T, N]`` the reference policy's log π(a_t|s_t) (``kl`` ≠ ``"none"``).
      greedy_returns: ``[N]`` the greedy response's return from the same start (``remax``).
      is_weight: ``[T, N]`` the importance weights of ``config.correction`` of each step (a
        behaviour policy: ``config.off_policy``; ``tis``: ``min(π/π_b, tis_cap)``), else
        ``None``; ``traj.log_prob`` is then the trained policy's, not the sampler's.
      behaviour_log_prob: ``[T, N]`` the sampler's log π_b(a_t|s_t) (``config.off_policy``).
    """

    rollout: Rollout
    traj: Transition
    mask: jax.Array | None
    ref_log_prob: jax.Array | None
    greedy_returns: jax.Array | None
    is_weight: jax.Array | None = None
    behaviour_log_prob: jax.Array | None = None


def collect(setup: Setup, state: TrainState, hp: HParams, key: jax.Array,
            start: tuple[Any, jax.Array], key_greedy: jax.Array | None = None) -> Batch:
    """Roll the policy ``state.params`` out from ``start = (env_state, obs)`` for
    ``num_steps`` steps, with what the configuration adds (see :class:`Batch`)."""
    config = setup.config
    sampler = _sampler(setup)
    roll = lambda key, **kw: rollout(  # the greedy rollout starts from the same state
        key, state.params, *start,
        state.obs_stats if config.normalize_obs else None,
        state.reward_scaler if config.scale_rewards else None,
        apply_fn=sampler.step if sampler.hidden_size else sampler.apply, policy=setup.policy,
        env=setup.env, env_params=setup.env_params, num_steps=config.num_steps, gamma=hp.gamma,
        q_critic=setup.q_critic, hidden=state.hidden, **kw,
    )
    collected = roll(key, info_keys=setup.info_keys)
    traj = collected.traj
    mask = first_episode_mask(traj.episode_done) if config.episodic else None
    is_weight = behaviour_log_prob = None
    if config.off_policy:  # π's own log-probs of the sampled actions
        log_prob = setup.policy.log_prob(policy_outputs(setup, state.params, traj, mask)[0],
                                         traj.action)
        behaviour_log_prob = traj.log_prob
        names = cast(tuple[str, ...], config.correction)  # set by TrainConfig
        is_weight = correction_weights(names, log_prob, behaviour_log_prob, mask,
                                       **_correction_settings(config))
        traj = traj._replace(log_prob=log_prob)
    ref_log_prob = None
    if config.kl != "none":
        ref_logits = policy_outputs(setup, state.ref_params, traj, mask)[0]
        ref_log_prob = setup.policy.log_prob(ref_logits, traj.action)
        if config.kl == "reward":  # the per-step k1 estimate, as RLHF pipelines do
            traj = traj._replace(reward=traj.reward - hp.kl_coef * (traj.log_prob - ref_log_prob))
    greedy_returns = None
    if setup.estimator.greedy_rollout:
        greedy = roll(key_greedy, greedy=True).traj
        greedy_returns = jnp.sum(first_episode_mask(greedy.episode_done) * greedy.reward, axis=0)
    return Batch(collected, traj, mask, ref_log_prob, greedy_returns, is_weight,
                 behaviour_log_prob)


def truncated_importance_weights(log_prob: jax.Array, behaviour_log_prob: jax.Array,
                                 cap: float) -> jax.Array:
    """``min(π/π_b, cap)`` per step, held constant (truncated importance sampling, Ionides
    2008; as LM-RL pipelines correct a sampler that differs from the trained policy).

    >>> import jax.numpy as jnp
    >>> truncated_importance_weights(jnp.log(jnp.array([0.5, 0.9])), jnp.log(jnp.array([0.25, 0.9])), 1.5)
    Array([1.5, 1. ], dtype=float32)
    """
    return jax.lax.stop_gradient(jnp.minimum(jnp.exp(log_prob - behaviour_log_prob), cap))


def estimate(setup: Setup, traj: Transition, hp: HParams, mask: jax.Array | None = None,
             greedy_returns: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Advantages and critic targets ``[T, N]`` of the configured estimator
    (:data:`jaxadv.engine.estimators.ESTIMATORS`); without a critic, ``V = 0``."""
    critic = (lambda x: x) if setup.use_critic else jnp.zeros_like
    x = EstimatorInput(reward=traj.reward, value=critic(traj.value),
                       next_value=critic(traj.next_value), terminated=traj.terminated,
                       truncated=traj.truncated, q_value=traj.q_value, mask=mask,
                       greedy_returns=greedy_returns)
    args = EstimatorArgs(gamma=hp.gamma, gae_lambda=hp.gae_lambda, n=setup.config.n_step,
                         group_size=setup.config.group_size, critic_lambda=hp.critic_lambda,
                         length_alpha=hp.length_alpha)
    return setup.estimator.fn(x, args)


def _value_loss(setup: Setup, critic: jax.Array, traj: Transition, targets: jax.Array,
                mask: jax.Array | None, hp: HParams) -> jax.Array:
    """The critic's loss: V(s_t) (or Q(s_t, a_t)) against ``targets``, clipped around the
    rollout's values where the algorithm clips and ``clip_value_loss`` is on."""
    config = setup.config
    if not setup.use_critic:
        return jnp.zeros(())
    if setup.q_critic:
        pred = jnp.take_along_axis(critic, traj.action[..., None], axis=-1)[..., 0]
        old = traj.q_value
    else:
        pred, old = critic, traj.value
    if setup.algorithm.clip_value and config.clip_value_loss:
        return losses.value_loss(pred, targets, mask, old_values=old, clip_eps=hp.clip_eps,
                                 reduction=config.loss_reduction)
    return losses.value_loss(pred, targets, mask, reduction=config.loss_reduction)


def loss_fn(setup: Setup, params: Any, batch: tuple, hp: HParams, *,
            normalize: bool | None = None) -> tuple[jax.Array, dict]:
    """``(total loss, metrics)`` of one minibatch ``batch = (traj, advantages, targets,
    mask, ref_log_prob)``: the algorithm's policy loss + ``vf_coef`` × value loss −
    ``ent_coef`` × entropy bonus (+ ``kl_coef`` × KL to the reference with ``kl = "loss"``).
    ``normalize``: standardise ``advantages`` first (default ``normalize_advantages``)."""
    traj, advantages, targets, mask, ref_log_prob = batch
    config = setup.config
    reduction = config.loss_reduction
    pi, critic = policy_outputs(setup, params, traj, mask)
    log_prob = setup.policy.log_prob(pi, traj.action)
    entropy = losses.entropy_bonus(setup.policy.entropy(pi), mask, reduction=reduction)
    if config.normalize_advantages if normalize is None else normalize:
        advantages = adv.normalize(advantages, mask)
    extra = {name: getattr(hp, name) for name in setup.algorithm.loss_hparams}
    if setup.algorithm.behaviour_loss:  # the sampler's log-probs (None: no mismatch)
        extra["behaviour_log_prob"] = (traj.extras or {}).get("behaviour_log_prob")
    policy_loss, info = setup.algorithm.policy_loss(
        log_prob, traj.log_prob, advantages, mask, clip_eps=hp.clip_eps, reduction=reduction,
        **extra)
    value_loss = _value_loss(setup, critic, traj, targets, mask, hp)
    total = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
    if config.kl == "loss":
        total = total + hp.kl_coef * losses.kl_penalty(
            log_prob, ref_log_prob, mask, estimator=config.kl_estimator, reduction=reduction)
    return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                   "approx_kl": info["approx_kl"], "clip_fraction": info["clip_fraction"]}


def minibatch_gradient(setup: Setup, loss: Callable, flat_params: jax.Array,
                       batch: tuple) -> tuple[tuple[jax.Array, dict], jax.Array]:
    """``((total, metrics), gradient)`` of ``loss(flat_params, batch, normalize)`` (a
    :func:`loss_fn` of the raveled parameters) on one minibatch.

    With ``setup.micro_batch`` > 0 the minibatch (per-sample losses, every leaf
    ``[M, ...]``) is cut into ``M / micro_batch`` micro-batches whose gradients and metrics
    are summed in a ``lax.scan`` and divided by their number; the advantages are
    standardised over the whole minibatch first. The losses are means over samples, so this
    is the whole-minibatch gradient up to the order of float additions."""
    grad = jax.value_and_grad(loss, has_aux=True)
    if not setup.micro_batch:
        return grad(flat_params, batch, None)
    traj, advantages, targets, mask, ref_log_prob = batch
    if setup.config.normalize_advantages:
        advantages = adv.normalize(advantages, mask)
    parts = advantages.shape[0] // setup.micro_batch
    cut = lambda x: x.reshape(parts, setup.micro_batch, *x.shape[1:])
    micro = jax.tree.map(cut, (traj, advantages, targets, ref_log_prob))

    def one(part):
        part_traj, part_adv, part_targets, part_ref = part
        return grad(flat_params, (part_traj, part_adv, part_targets, None, part_ref), False)

    add = lambda total, part: (jax.tree.map(jnp.add, total, one(part)), None)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(one, jax.tree.map(lambda x: x[0], micro)))
    total, _ = jax.lax.scan(add, zeros, micro)
    return jax.tree.map(lambda x: x / parts, total)


TELEMETRY_METRICS = ("grad_snr", "grad_cosine", "grad_signal", "grad_noise", "adv_mean",
                     "adv_std", "zero_adv_groups")
"""The metrics that ``TrainConfig.telemetry`` adds (:func:`gradient_telemetry`, with two
minibatches or more per epoch; :func:`advantage_telemetry`, ``zero_adv_groups`` with a
group estimator). They describe the update without steering it: the parameters,
optimiser state and other metrics are the same with and without them (``benchmarks/bitwise.py``
leaves them out of its fingerprints, so one fingerprint holds for both)."""


class GradientMoments(NamedTuple):
    """Running moments of minibatch gradients ``g_1 … g_k`` (each ``[P]``), one gradient at a
    time (:func:`accumulate_gradient`), so that no gradient is stored.

    Attributes:
      count: ``k`` ``[]``.
      mean: ``ḡ = Σ g_i / k`` ``[P]``.
      m2: ``Σ ‖g_i − ḡ‖²`` ``[]``.
      unit: ``Σ g_i / ‖g_i‖`` ``[P]`` (a zero gradient adds 0).
    """

    # mypy takes a field named like tuple.count for an override of the method
    count: jax.Array  # type: ignore[assignment]
    mean: jax.Array
    m2: jax.Array
    unit: jax.Array


def gradient_moments(size: int) -> GradientMoments:
    """:class:`GradientMoments` of no gradient yet, for gradients of ``size`` entries."""
    zeros, zero = jnp.zeros((size,), jnp.float32), jnp.zeros((), jnp.float32)
    return GradientMoments(zero, zeros, zero, zeros)


def accumulate_gradient(moments: GradientMoments, grad: jax.Array, norm: jax.Array | None = None,
                        keep: jax.Array | bool = True) -> GradientMoments:
    """``moments`` with one more gradient ``grad [P]`` (``norm``: its ``‖grad‖`` if known) where
    ``keep`` (a traced bool: a select, no branch), else ``moments`` unchanged. Welford's
    update, ``k ← k + 1``, ``ḡ ← ḡ + δ/k``, ``m2 ← m2 + (k − 1)/k · ‖δ‖²`` with ``δ = g − ḡ``:
    the spread is summed directly, not as a difference of two nearly equal sums (which would
    lose about ``log10(1 + SNR)`` of float32's 7 digits)."""
    norm = jnp.linalg.norm(grad) if norm is None else norm
    count = moments.count + 1.0
    delta = grad - moments.mean
    more = GradientMoments(count, moments.mean + delta / count,
                           moments.m2 + (count - 1.0) / count * jnp.vdot(delta, delta),
                           moments.unit + grad / jnp.where(norm > 0, norm, 1.0))
    return jax.tree.map(lambda new, old: jnp.where(keep, new, old), more, moments)


def gradient_telemetry(moments: GradientMoments) -> dict[str, jax.Array]:
    """The signal-to-noise ratio and agreement of the ``n = moments.count`` minibatch
    gradients ``g_i [P]`` of one update (independent samples at the same parameters), ``[]``
    each:

    * ``grad_noise`` ``v = Σ ‖g_i − ḡ‖² / (n − 1)``: ``tr Σ``, the variance of one minibatch
      gradient (unbiased);
    * ``grad_signal`` ``‖ḡ‖² − v / n``: ``‖E g‖²`` without bias (``‖ḡ‖²`` alone
      overstates it by ``tr Σ / n``; may be negative when the signal is lost in noise);
    * ``grad_snr`` ``grad_signal / grad_noise``, the same bias-corrected ratio as
      :func:`jaxadv.science.variance.gradient_statistics`' ``snr`` at this minibatch size.
      The plain ``‖ḡ‖² / v`` would be ``SNR + 1/n`` on average: with 4 minibatches a
      gradient of pure noise would read 0.25;
    * ``grad_cosine`` ``mean_i cos(g_i, ḡ) = ⟨ḡ, Σ g_i/‖g_i‖⟩ / (n ‖ḡ‖)``.

    With ``n < 2`` there is no spread to measure: all four are NaN (:func:`optimise` leaves
    them out of a run with ``num_minibatches = 1``).

    Three gradients: ``ḡ = (2, 2/3)``, ``Σ ‖g_i − ḡ‖² = 14/3``, so ``v = 7/3`` and
    ``‖ḡ‖² − v/3 = 40/9 − 7/9 = 11/3``:

    >>> moments = gradient_moments(2)
    >>> for g in ([1.0, 0.0], [3.0, 0.0], [2.0, 2.0]):
    ...     moments = accumulate_gradient(moments, jnp.array(g))
    >>> {k: round(float(v), 3) for k, v in gradient_telemetry(moments).items()}
    {'grad_snr': 1.571, 'grad_cosine': 0.931, 'grad_signal': 3.667, 'grad_noise': 2.333}
    """
    n, mean = moments.count, moments.mean
    several = n > 1
    noise = moments.m2 / jnp.where(several, n - 1.0, 1.0)
    mean_sq = jnp.vdot(mean, mean)
    signal = mean_sq - noise / jnp.maximum(n, 1.0)
    norm = jnp.sqrt(mean_sq)
    cosine = jnp.vdot(mean, moments.unit) / jnp.where(norm > 0, n * norm, jnp.inf)
    defined = lambda x: jnp.where(several, x, jnp.nan)
    return {"grad_snr": defined(signal / noise), "grad_cosine": defined(cosine),
            "grad_signal": defined(signal), "grad_noise": defined(noise)}


def advantage_telemetry(setup: Setup, advantages: jax.Array, mask: jax.Array | None,
                        episodes: jax.Array | None) -> dict[str, jax.Array]:
    """``adv_mean`` and ``adv_std`` (the population standard deviation) of the
    ``advantages [T, N]`` the loss sees, before any per-minibatch standardisation, over the
    steps of ``mask [T, N]`` (every step where ``None``); and where the estimator's row is
    group-based (``sequence_level`` or ``min_group_size`` ≥ 2) ``zero_adv_groups``: the
    fraction of groups (``group_size`` adjacent columns) whose advantages are all exactly 0
    on their ``episodes [T, N]`` steps (each column's first episode) — equal rewards within a
    group give exact zeros, and such a group adds no policy gradient."""
    weights = jnp.ones_like(advantages) if mask is None else mask.astype(advantages.dtype)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    mean = jnp.sum(weights * advantages) / count
    std = jnp.sqrt(jnp.sum(weights * (advantages - mean) ** 2) / count)
    metrics = {"adv_mean": mean, "adv_std": std}
    row = setup.estimator
    if episodes is not None and (row.sequence_level or row.min_group_size >= 2):
        zero = jnp.all((advantages == 0) | (episodes == 0), axis=0)  # [N]
        groups = zero.reshape(-1, setup.config.group_size)  # [G, K]
        metrics["zero_adv_groups"] = jnp.mean(jnp.all(groups, axis=1).astype(jnp.float32))
    return metrics


def optimise(setup: Setup, flat_params: jax.Array, opt_state: Any, unravel: Any, data: tuple,
             key: jax.Array, hp: HParams) -> tuple[jax.Array, Any, dict]:
    """``update_epochs`` passes of ``num_minibatches`` shuffled minibatches over ``data``
    (flat ``[batch, ...]``; with ``episodic`` or a time-major network, time-major ``[T, N,
    ...]`` split along the envs or sequences): one gradient step each on the raveled
    parameter vector ``flat_params``.

    Returns the parameters, the optimiser state and per-step metrics ``[epochs, minibatches]``;
    with ``telemetry`` and ``num_minibatches`` ≥ 2 also :func:`gradient_telemetry`'s ``[]``
    scalars of the first epoch's
    minibatch gradients (disjoint samples at nearly the same parameters; the later epochs
    reuse the samples), accumulated in the scan's carry (:func:`accumulate_gradient`, kept
    only where the epoch is the first). The scans are those without telemetry, so the
    parameters, optimiser state and other metrics keep their bits (running the first epoch
    outside the scan moved the last bit of some per-step metrics' means).
    """
    config = setup.config
    opt = optimizer(setup, hp)
    loss = lambda flat, batch, normalize: loss_fn(setup, unravel(flat), batch, hp,
                                                  normalize=normalize)
    time_major = config.episodic or NETWORKS[cast(str, config.network)].time_major
    axis = 1 if time_major else 0
    size = data[1].shape[axis]  # the envs (or sequences), else the samples
    mb = size // config.num_minibatches

    def minibatch(carry, batch, first=None):
        params, opt_state, moments = carry  # moments: None without telemetry
        (total, metrics), grads = minibatch_gradient(setup, loss, params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        metrics["grad_norm"] = optax.tree.norm(grads)
        if moments is not None:  # the first epoch's gradients only
            moments = accumulate_gradient(moments, grads, metrics["grad_norm"], keep=first)
        params = params + updates
        metrics["nonfinite"] = _nonfinite_flags(total, metrics["grad_norm"], params)
        return (params, opt_state, moments), metrics

    def epoch(carry, xs):
        perm, first = xs
        shuffled = data
        if config.num_minibatches > 1:  # one gather per epoch, then contiguous slices
            shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=axis), data)
        if time_major:
            split = lambda x: jnp.moveaxis(
                x.reshape(x.shape[0], config.num_minibatches, mb, *x.shape[2:]), 1, 0)
        else:
            split = lambda x: x.reshape(config.num_minibatches, mb, *x.shape[1:])
        step = lambda carry, batch: minibatch(carry, batch, first)
        return jax.lax.scan(step, carry, jax.tree.map(split, shuffled))

    perms = permutations(key, cast(int, config.update_epochs), size)
    gradients = config.telemetry and cast(int, config.num_minibatches) > 1
    moments = gradient_moments(flat_params.size) if gradients else None
    first = jnp.arange(config.update_epochs) == 0 if gradients else None
    (flat_params, opt_state, moments), metrics = jax.lax.scan(
        epoch, (flat_params, opt_state, moments), (perms, first))
    if gradients:
        metrics.update(gradient_telemetry(cast(GradientMoments, moments)))
    return flat_params, opt_state, metrics


def _rollout_metrics(setup: Setup, state: TrainState, batch: Batch,
                     targets: jax.Array) -> dict[str, jax.Array]:
    """The update's episode statistics (mean over the episodes that ended in the window, NaN
    if none; with ``episodic`` only each env's first), the critic's explained variance,
    ``env_steps``, the env's own metrics and, with a reference policy, ``kl_ref``."""
    traj, mask = batch.traj, batch.mask
    done = traj.episode_done.astype(jnp.float32)
    if mask is not None:
        done = done * mask
    episodes = done.sum()
    safe = jnp.maximum(episodes, 1.0)
    per_episode = lambda x: jnp.where(episodes > 0, (x * done).sum() / safe, jnp.nan)
    critic = traj.q_value if setup.q_critic else traj.value
    metrics = {
        "episodes": episodes,
        "episode_return": per_episode(traj.episode_return),
        "episode_length": per_episode(traj.episode_length),
        "explained_variance": _explained_variance(critic, targets)
        if setup.use_critic else jnp.zeros(()),
        "env_steps": (state.update + 1) * setup.config.batch_size,  # int32: exact to 2³¹ steps
    }
    for name, value in (traj.extras or {}).items():  # e.g. exact_match: mean over episodes
        metrics[name] = per_episode(value)
    if setup.config.kl != "none":  # k3 estimate of KL(π ‖ π_ref) on the rollout's steps
        metrics["kl_ref"] = losses.kl_penalty(traj.log_prob, batch.ref_log_prob, mask)
    return metrics


def informative_mask(rewards: jax.Array, mask: jax.Array, group_size: int) -> tuple[jax.Array, jax.Array]:
    """DAPO's dynamic sampling on a fixed-shape batch: ``mask [T, N]`` (each column's first
    episode) with the columns of every group whose returns are all equal
    (:func:`jaxadv.advantages.informative_groups`) masked out, and the fraction of groups
    kept. Columns ``g·K … g·K + K − 1`` are group ``g``."""
    returns = jnp.sum(mask * rewards, axis=0).reshape(-1, group_size)  # [G, K]
    keep = adv.informative_groups(returns)  # [G]
    columns = jnp.repeat(keep, group_size)  # [N]
    return mask * columns[None].astype(mask.dtype), jnp.mean(keep.astype(jnp.float32))


def _correction_metrics(setup: Setup, batch: Batch, mask: jax.Array | None,
                        hp: HParams) -> dict[str, jax.Array]:
    """Means over the real steps: ``tis_weight`` (``correction`` = ``("tis",)``) or
    ``is_weight``, the importance weights; ``masked_fraction``, the share of steps a masking
    correction (``token_mis``, ``seq_mis``) or the loss (IcePop's band) drops."""
    config, log_prob = setup.config, batch.traj.log_prob
    weights = jnp.ones_like(log_prob) if mask is None else mask
    mean = lambda x: jnp.sum(weights * x) / jnp.maximum(jnp.sum(weights), 1)
    metrics = {}
    if batch.is_weight is not None:
        name = "tis_weight" if config.correction == ("tis",) else "is_weight"
        metrics[name] = mean(batch.is_weight)
    dropped: jax.Array | None = None
    if {"token_mis", "seq_mis"} & set(cast(tuple[str, ...], config.correction)):
        dropped = cast(jax.Array, batch.is_weight) == 0
    if setup.algorithm.behaviour_loss:
        kept = cast(jax.Array, correction_weights(
            ("token_mis",), log_prob, cast(jax.Array, batch.behaviour_log_prob),
            mis_range=(1.0 / hp.icepop_alpha, hp.icepop_alpha))) > 0
        dropped = ~kept if dropped is None else dropped | ~kept
    if dropped is not None:
        metrics["masked_fraction"] = mean(dropped.astype(log_prob.dtype))
    return metrics


def update(setup: Setup, state: TrainState, hp: HParams) -> tuple[TrainState, dict]:
    """One update: :func:`collect` → :func:`estimate` → :func:`optimise`. Returns the new
    state and the update's metrics (see :func:`make_train`)."""
    config = setup.config
    key, key_roll, key_perm = jax.random.split(state.key, 3)
    start, key_greedy = (state.env_state, state.obs), None
    if config.episodic:
        key, key_reset, key_greedy = jax.random.split(key, 3)
        obs, env_state = group_resets(key_reset, setup.env, setup.env_params, config.num_envs,
                                      config.group_size)
        start = (env_state, obs)
    batch = collect(setup, state, hp, key_roll, start, key_greedy)
    obs_stats = (running_mean_std_update(state.obs_stats, batch.rollout.raw_obs)
                 if config.normalize_obs else state.obs_stats)
    advantages, targets = estimate(setup, batch.traj, hp, batch.mask, batch.greedy_returns)
    mask, kept = batch.mask, None
    if config.dynamic_sampling:
        mask, kept = informative_mask(batch.traj.reward, cast(jax.Array, mask), config.group_size)
    if batch.is_weight is not None:
        advantages = advantages * batch.is_weight
    if config.value_warmup:  # the critic learns alone first: no policy, entropy or KL term
        on = (state.update >= config.value_warmup).astype(advantages.dtype)
        advantages = advantages * on
        # flax.struct.dataclass adds replace(), which flax's types do not declare
        hp = hp.replace(ent_coef=hp.ent_coef * on, kl_coef=hp.kl_coef * on)  # type: ignore[attr-defined]
    extras = None  # a loss that corrects the mismatch itself reads the sampler's log-probs
    if setup.algorithm.behaviour_loss and batch.behaviour_log_prob is not None:
        extras = {"behaviour_log_prob": batch.behaviour_log_prob}
    data = (batch.traj._replace(extras=extras), advantages, targets, mask, batch.ref_log_prob)
    sequences = NETWORKS[cast(str, config.network)].sequences
    if sequences is not None:  # e.g. a GRU's: whole sequences, each from its stored state
        data = sequences(data, config)
    elif not config.episodic:  # steps are independent: one flat batch
        data = jax.tree.map(lambda x: x.reshape(config.batch_size, *x.shape[2:]), data)
    # The optimiser works on one flat parameter vector: a few fused ops per step instead
    # of several per parameter array.
    flat_params, unravel = ravel_pytree(state.params)
    flat_params, opt_state, metrics = optimise(setup, flat_params, state.opt_state, unravel,
                                               data, key_perm, hp)
    flags = metrics.pop("nonfinite").reshape(-1)  # [epochs * minibatches], in step order
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["nonfinite"] = flags[jnp.argmax(flags > 0)]  # the first bad step's flags, or 0
    metrics.update(_rollout_metrics(setup, state, batch, targets))
    if config.telemetry:
        metrics.update(advantage_telemetry(setup, advantages, mask, batch.mask))
    if kept is not None:
        metrics["informative_groups"] = kept
    if batch.behaviour_log_prob is not None:
        metrics.update(_correction_metrics(setup, batch, mask, hp))
    new_state = TrainState(
        params=unravel(flat_params),
        opt_state=opt_state,
        env_state=batch.rollout.env_state,
        obs=batch.rollout.obs,
        obs_stats=obs_stats,
        reward_scaler=(cast(RewardScaler, batch.rollout.reward_scaler) if config.scale_rewards
                       else state.reward_scaler),
        key=key,
        update=state.update + 1,
        ref_params=state.ref_params,
        hidden=batch.rollout.hidden,
    )
    return new_state, metrics


def run(setup: Setup, state: TrainState, hp: HParams, num_updates: int,
        start: Any = 0) -> tuple[TrainState, dict[str, jax.Array]]:
    """``num_updates`` (static) updates from ``state`` as one ``lax.scan``; metrics gain a
    leading ``[num_updates]`` axis.

    With ``config.eval_every`` = E, the updates whose number (``start`` + 1, …: ``start`` the
    updates done before, one int for every seed — not a vmapped value, so the evaluation is a
    real ``lax.cond``) is a multiple of E add :func:`greedy_evaluation`'s metrics, the
    others NaN."""
    hp = hp.validate()
    every = setup.config.eval_every
    if not every:
        return jax.lax.scan(lambda s, _: update(setup, s, hp), state, None, length=num_updates)

    nan = jnp.full((), jnp.nan, jnp.float32)
    skip = lambda: {"eval_return": nan, "eval_length": nan}

    def step(s: TrainState, i: jax.Array):
        s, metrics = update(setup, s, hp)
        due = (start + i + 1) % every == 0
        return s, {**metrics, **jax.lax.cond(due, lambda: greedy_evaluation(setup, s), skip)}

    return jax.lax.scan(step, state, jnp.arange(num_updates))


EVAL_STREAM = 0x6576616C
"""What :func:`greedy_evaluation` folds into the state's key: its episodes' randomness, drawn
without consuming the key that training goes on with."""


def greedy_evaluation(setup: Setup, state: TrainState) -> dict[str, jax.Array]:
    """``eval_return`` and ``eval_length``: the means over ``config.eval_episodes`` fresh
    episodes of ``state.params``' greedy policy that ended within the env's time limit (NaN
    if none did), from ``jax.random.fold_in(state.key, EVAL_STREAM)``."""
    config = setup.config
    episodes = play_episodes(
        jax.random.fold_in(state.key, EVAL_STREAM), state.params,
        state.obs_stats if config.normalize_obs else None, **setup.acting,
        policy=setup.policy, env=setup.env, env_params=setup.env_params,
        episodes=config.eval_episodes, max_steps=int(setup.env_params.max_steps_in_episode))
    count = jnp.sum(episodes.finished)
    mean = lambda x: jnp.where(count > 0, jnp.sum(x.astype(jnp.float32)) / jnp.maximum(count, 1),
                               jnp.nan)
    return {"eval_return": mean(episodes.returns), "eval_length": mean(episodes.lengths)}


def train(setup: Setup, key: jax.Array, hp: HParams) -> tuple[TrainState, dict[str, jax.Array]]:
    """The whole run: ``run(init(key, hp), hp, config.num_updates)``."""
    hp = hp.validate()
    return run(setup, init(setup, key, hp), hp, setup.config.num_updates)


def _bind(fn: Any, setup: Setup) -> Any:
    """``fn`` with ``setup`` as its first argument: a plain Python function (which ``inspect``
    and ``chex.assert_max_traces`` accept, unlike a ``functools.partial``) named as ``fn``."""

    def bound(*args: Any, **kwargs: Any) -> Any:
        return fn(setup, *args, **kwargs)

    bound.__name__, bound.__qualname__, bound.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return bound


def make_trainer(config: TrainConfig) -> Trainer:
    """The pure ``init``, ``update``, ``run`` and ``train`` functions of ``config``: the
    engine's functions with its :class:`Setup` bound."""
    setup = make_setup(config)
    bind = lambda fn: _bind(fn, setup)
    return Trainer(config=config, init=bind(init), update=bind(update), run=bind(run),
                   train=bind(train), network=setup.network, policy=setup.policy,
                   env=setup.env, env_params=setup.env_params)


def make_train(
    config: TrainConfig,
) -> Callable[[jax.Array, HParams], tuple[TrainState, dict[str, jax.Array]]]:
    """``train(key, hparams) -> (TrainState, metrics)``: the whole run as one pure function.

    ``metrics`` maps names to ``[num_updates]`` arrays: ``episode_return`` and
    ``episode_length`` (mean over episodes finished during the update, NaN if none),
    ``episodes``, ``env_steps``, ``policy_loss``, ``value_loss``, ``entropy``,
    ``approx_kl``, ``clip_fraction``, ``explained_variance``, ``grad_norm``, and
    ``nonfinite`` (int32: 0 while the total loss, its gradient and the parameters after each
    optimiser step are all finite; else the bit flags of :data:`NONFINITE` at the update's
    first step that was not); with ``telemetry`` also :data:`TELEMETRY_METRICS`
    (:func:`gradient_telemetry`, :func:`advantage_telemetry`).

    >>> import jax
    >>> config = TrainConfig(num_envs=2, num_steps=8, total_timesteps=32, hidden=(8,))
    >>> state, metrics = jax.jit(make_train(config))(jax.random.key(0), HParams())
    >>> metrics["env_steps"].tolist()
    [16, 32]
    """
    return make_trainer(config).train
