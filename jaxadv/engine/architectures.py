"""The network table: each network kind is a row the trainer reads, never a name it compares.

============  ================================  ==============  ==================================
network       builder                           time-major      needs / does not support
============  ================================  ==============  ==================================
mlp           actor-critic MLPs of ``hidden``   no              —
cnn           a 3×3 convolution, then MLPs      no              needs image observations
gru           dense layers, the last a GRU      yes: training   not episodic, shared_torso, image
                                                sequences       observations, kl, temperature,
                                                (``seq_len``,   behaviour_temperature/precision,
                                                ``burn_in``)    micro_batch_size
transformer   a causal transformer over tokens  no              needs a token env; not continuous
                                                                actions, normalize_obs, a Q critic
============  ================================  ==============  ==================================

Only the transformer takes ``warm_start_steps`` (its demonstrations are teacher-forced) and only
the GRU ``seq_len`` and ``burn_in``. A row (:class:`Architecture`) gives the network's builder (:mod:`jaxadv.nets`), whether it
trains time-major, its training-sequences hook, and the optional features of a
configuration (:data:`FEATURES`) that it needs and that it supports.
:class:`~jaxadv.engine.train.TrainConfig`'s checks (:func:`check_network`), its default
network, ``--network``'s choices and help, and the trainer's branches are read from the rows:
adding a network is a builder and one row of :data:`NETWORKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.engine.estimators import ESTIMATORS
from jaxadv.envs import EnvSpec, make
from jaxadv.envs.token import check_token_env, token_env
from jaxadv.nets.networks import Network, make_network
from jaxadv.nets.transformer import TransformerNetwork, make_transformer

__all__ = ["FEATURES", "NETWORKS", "NETWORK_NAMES", "Architecture", "Builder", "Feature",
           "check_network", "compatible", "default_network", "training_sequences"]

Builder = Callable[..., Network | TransformerNetwork]
"""``build(config, env, spec, *, use_critic, q_critic) -> Network``: the network of a
:class:`~jaxadv.engine.train.TrainConfig` on the (wrapped) environment ``env`` with the
:class:`~jaxadv.envs.EnvSpec` ``spec``; ``use_critic``: a critic is learned, ``q_critic``: it
outputs one value per discrete action."""


class Feature(NamedTuple):
    """An optional feature of a configuration that a network may need or not support.

    Attributes:
      label: how messages name it (a field's name, or what the environment provides).
      used: ``used(config) -> bool``: the configuration uses it.
      shown: ``shown(config) -> str``: the settings that make it used, for messages.
    """

    label: str
    used: Callable[[Any], bool]
    shown: Callable[[Any], str]


def _field(name: str, used: Callable[[Any], bool]) -> Feature:
    """The feature of setting the field ``name`` (``used``: it is set), shown as its value."""
    return Feature(name, used, lambda c: f"`{name}` = {getattr(c, name)!r}")


FEATURES: dict[str, Feature] = {
    "image_obs": Feature("image observations", lambda c: c.spec.image_shape is not None,
                         lambda c: f"`env` = {c.env!r} observes " + (
                             f"images {c.spec.image_shape}" if c.spec.image_shape is not None
                             else f"shape {c.spec.obs_shape}, not images (H, W, C)")),
    "token_env": Feature("a token environment (with vocab_size and tokens.pad, e.g. Sequence-v0)",
                         lambda c: token_env(make(c.env, **dict(c.env_kwargs))[0]) is not None,
                         lambda c: f"`env` = {c.env!r} is "
                                   f"{'one' if FEATURES['token_env'].used(c) else 'not one'}"),
    "continuous": Feature("continuous actions", lambda c: not c.spec.discrete,
                          lambda c: f"`env` = {c.env!r}"),
    "q_critic": Feature("a Q critic", lambda c: ESTIMATORS[c.estimator].critic == "q",
                        lambda c: f"`estimator` = {c.estimator!r}"),
    "normalize_obs": _field("normalize_obs", lambda c: bool(c.normalize_obs)),
    "episodic": _field("episodic", lambda c: bool(c.episodic)),
    "shared_torso": _field("shared_torso", lambda c: bool(c.shared_torso)),
    "kl": _field("kl", lambda c: c.kl != "none"),
    "temperature": _field("temperature", lambda c: c.temperature != 1.0),
    "behaviour_temperature": _field("behaviour_temperature",
                                    lambda c: c.behaviour_temperature is not None),
    "behaviour_precision": _field("behaviour_precision",
                                  lambda c: c.behaviour_precision != "float32"),
    "micro_batch_size": _field("micro_batch_size", lambda c: bool(c.micro_batch_size)),
    "warm_start_steps": _field("warm_start_steps", lambda c: bool(c.warm_start_steps)),
    "seq_len": _field("seq_len", lambda c: c.seq_len is not None),
    "burn_in": _field("burn_in", lambda c: bool(c.burn_in)),
}
"""The optional features of a configuration that a network row needs (``needs``) or supports
(``supports``), by name; :func:`check_network` refuses a configuration that uses a feature its
network does not support, or lacks one it needs."""


class Architecture(NamedTuple):
    """A row of :data:`NETWORKS`: how to build the network and what the trainer does with it.
    The trainer's checks and branches read these fields, never the network's name.

    Attributes:
      build: the :data:`Builder`.
      summary: one line for ``--help``.
      supports: the :data:`FEATURES` a configuration may use with it.
      needs: the :data:`FEATURES` a configuration must have for it (e.g. image observations).
      default_for: the observations it is the default network for (``"flat"`` or ``"image"``).
      recurrent: it carries a hidden state through the rollout (its action in a state depends
        on the path there).
      time_major: the update keeps the window time-major ``[T, N, ...]`` and splits minibatches
        along its columns, even without ``episodic`` (no per-sample micro-batches).
      sequences: ``sequences(data, config) -> data``: cuts a window's time-major ``data``
        (:func:`training_sequences`' layout) into the columns it trains on; ``None``: the steps
        are independent (flattened without ``episodic``). The fields ``seq_len`` and ``burn_in``
        belong to it.
      tokens: it reads a token environment's ids; with ``episodic`` the trainer evaluates each
        episode in one teacher-forced pass (``Setup.pad``).
    """

    build: Builder
    summary: str
    supports: frozenset[str] = frozenset()
    needs: frozenset[str] = frozenset()
    default_for: Literal["flat", "image"] | None = None
    recurrent: bool = False
    time_major: bool = False
    sequences: Callable[[tuple, Any], tuple] | None = None
    tokens: bool = False


def _actor_critic(image: bool = False, recurrent: bool = False) -> Builder:
    """The builder of :func:`~jaxadv.nets.networks.make_network`'s actor-critic: MLPs of
    ``hidden``, after a convolution of image observations (``image``), the last width a GRU
    (``recurrent``)."""

    def build(config: Any, env: Any, spec: EnvSpec, *, use_critic: bool, q_critic: bool) -> Network:
        size = cast(int, spec.num_actions if spec.discrete else spec.action_dim)
        return make_network(size, discrete=spec.discrete, hidden=config.hidden,
                            activation=config.activation, shared_torso=config.shared_torso,
                            q_critic=q_critic, image_shape=spec.image_shape if image else None,
                            recurrent=recurrent)

    return build


def _transformer(config: Any, env: Any, spec: EnvSpec, *, use_critic: bool,
                 q_critic: bool) -> TransformerNetwork:
    """The causal transformer (:func:`~jaxadv.nets.transformer.make_transformer`) over the
    token environment ``env``'s ids; a value head where a critic is learned."""
    raw = check_token_env(env, name=config.env)
    num_actions = cast(int, spec.num_actions)  # a token env's actions are discrete
    return make_transformer(raw.vocab_size, spec.obs_dim, num_actions, pad=raw.tokens.pad,
                            layers=config.layers, width=config.width, heads=config.heads,
                            value_head=use_critic)


def training_sequences(data: tuple, seq_len: int, burn_in: int = 0) -> tuple:
    """Cut a window's time-major ``data = (traj, advantages, targets, mask, ref_log_prob)``
    (leaves ``[T, N, ...]``, ``mask`` ``None``) into ``C = T / seq_len`` training sequences per
    env, each ``burn_in + seq_len`` steps long: leaves ``[burn_in + seq_len, N·C, ...]``,
    sequence ``n·C + c`` holding env ``n``'s steps from ``s = clip(c·seq_len − burn_in, 0,
    T − burn_in − seq_len)``, and ``mask`` 1 on the ``seq_len`` steps ``c·seq_len …`` that it
    trains on (0 on the burn-in before them, or on the steps after them for ``c = 0``).
    ``traj.hidden[0]`` of each sequence is the state stored at its first step.

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(6.0)[:, None]  # T = 6, one env
    >>> _, a, _, mask, _ = training_sequences((None, x, None, None, None), 2, burn_in=1)
    >>> a.T.tolist(), mask.T.tolist()  # three sequences of 1 + 2 steps
    ([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    """
    traj, advantages, targets, _, ref_log_prob = data
    steps, envs = advantages.shape
    chunks, length = steps // seq_len, burn_in + seq_len
    if chunks == 1 and not burn_in:
        return traj, advantages, targets, jnp.ones_like(advantages), ref_log_prob
    first = np.arange(chunks) * seq_len
    start = np.clip(first - burn_in, 0, steps - length)  # [C]
    time = start[None, :] + np.arange(length)[:, None]  # [L, C]
    trained = (time >= first) & (time < first + seq_len)
    rows = np.repeat(time[:, None, :], envs, axis=1).reshape(length, envs * chunks)
    cols = np.repeat(np.arange(envs), chunks)[None, :]
    gather = lambda x: None if x is None else x[rows, cols]
    mask = jnp.asarray(np.tile(trained, (1, envs)), advantages.dtype)
    return (jax.tree.map(gather, traj), gather(advantages), gather(targets), mask,
            gather(ref_log_prob))


def _recurrent_sequences(data: tuple, config: Any) -> tuple:
    """The GRU's training sequences: :func:`training_sequences` of ``config.seq_len`` steps
    after ``config.burn_in``, each from its stored hidden state."""
    return training_sequences(data, config.seq_len, config.burn_in)


_COMMON = frozenset({"image_obs", "token_env", "continuous", "q_critic", "normalize_obs", "episodic",
                     "shared_torso", "kl", "temperature", "behaviour_temperature",
                     "behaviour_precision", "micro_batch_size"})

NETWORKS: dict[str, Architecture] = {
    "mlp": Architecture(_actor_critic(), "actor-critic MLPs of --hidden", _COMMON,
                        default_for="flat"),
    "cnn": Architecture(
        _actor_critic(image=True), "a 3x3 convolution of 16 channels before each MLP torso, for "
        "image observations such as MinAtar's 10x10xC grids", _COMMON - {"image_obs"},
        needs=frozenset({"image_obs"}), default_for="image"),
    "gru": Architecture(
        _actor_critic(recurrent=True), "a recurrent actor-critic: dense layers of --hidden, the "
        "last width a GRU whose state is carried through the rollout and reset at episode ends; "
        "for partial observability", frozenset({"token_env", "continuous", "q_critic",
                                                "normalize_obs", "seq_len", "burn_in"}),
        recurrent=True, time_major=True, sequences=_recurrent_sequences),
    "transformer": Architecture(
        _transformer, "causal, over a token observation: envs with vocab_size and tokens.pad, "
        "e.g. Sequence-v0", _COMMON - {"continuous", "q_critic", "normalize_obs"}
        | {"warm_start_steps"}, needs=frozenset({"token_env"}), tokens=True),
}
"""The networks by name (``TrainConfig.network``); a row added at run time is a choice too."""

NETWORK_NAMES = tuple(NETWORKS)
"""The network names of the table as the package defines it, in table order."""


def _problems(row: Architecture, used: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """``(unsupported, missing)``: the features used that ``row`` does not support and those
    it needs that are not used."""
    unsupported = [f for f in FEATURES if f not in row.supports | row.needs and used(f)]
    missing = [f for f in FEATURES if f in row.needs and not used(f)]
    return unsupported, missing


def _uses(config: Any) -> Callable[[str], bool]:
    """``used(feature)``: whether ``config`` uses it, each feature evaluated once."""
    seen: dict[str, bool] = {}

    def used(name: str) -> bool:
        if name not in seen:
            seen[name] = bool(FEATURES[name].used(config))
        return seen[name]

    return used


def compatible(config: Any, features: Any = None) -> list[str]:
    """The networks that support every feature of ``features`` (default: all of
    :data:`FEATURES`) that ``config`` uses and need none of them that it lacks."""
    used = _uses(config)
    features = set(FEATURES if features is None else features)
    names = []
    for name, row in NETWORKS.items():
        unsupported, missing = _problems(row, used)
        if not features & {*unsupported, *missing}:
            names.append(name)
    return names


def default_network(image: bool) -> str:
    """The default network for image (``image``) or flat observations: the first row whose
    ``default_for`` names them."""
    kind = "image" if image else "flat"
    return next(name for name, row in NETWORKS.items() if row.default_for == kind)


def check_network(config: Any) -> None:
    """A ``ValueError`` naming ``network`` and the features at fault where ``config`` uses a
    feature (:data:`FEATURES`) its network row does not support or lacks one the row needs;
    it lists the networks that the whole configuration allows (:func:`compatible`), or where
    none does, those that allow the features at fault."""
    used = _uses(config)
    unsupported, missing = _problems(NETWORKS[config.network], used)
    if not unsupported and not missing:
        return
    faults = []
    if unsupported:
        faults.append("does not support " + ", ".join(
            f"{FEATURES[f].label} ({FEATURES[f].shown(config)})" for f in unsupported))
    faults += [f"needs {FEATURES[f].label}; {FEATURES[f].shown(config)}" for f in missing]
    allowed = compatible(config) or compatible(config, unsupported + missing)
    shown = ", ".join(repr(n) for n in allowed) or "none"
    raise ValueError(f"`network` = {config.network!r} {'; it '.join(faults)}; `network` "
                     f"may be one of: {shown}")
