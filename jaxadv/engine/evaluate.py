"""A trained policy on fresh episodes: returns and lengths, and the states to draw them.

:func:`evaluate` plays ``episodes`` independent episodes, one environment each, from fresh
resets for at most ``max_steps`` steps, with the trained network acting greedily (the most
likely action, or the Gaussian's mean) or by sampling, and keeps each environment's first
episode: its undiscounted return and length as the training metrics count them
(:class:`~jaxadv.envs.EpisodeStatisticsWrapper`), whether it ended within ``max_steps``,
and the environment's own metrics at its end (e.g. ``exact_match`` of ``Sequence-v0``). It
is a pure function of the parameters: ``jax.jit`` it, or ``jax.vmap`` it over the seeds of
a run. :func:`episode_states` plays one episode and returns the raw gymnax state before each
step, what gymnax's visualiser draws.

:func:`load_run` reads a ``jaxadv train`` or ``jaxadv sequence`` output directory — its
``config.json`` and its latest checkpoint that reads back intact — without writing
anything there.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv.engine.checkpoint import CheckpointError, CheckpointStore, checkpoint_steps
from jaxadv.engine.rollout import Episodes, play_episodes
from jaxadv.engine.train import HParams, Setup, TrainConfig, TrainState, init, make_setup
from jaxadv.envs import normalize_obs

__all__ = ["Episodes", "RunCheckpoint", "episode_states", "evaluate", "load_run"]


def evaluate(setup: Setup, key: jax.Array, params: Any, obs_stats: Any = None, *,
             episodes: int, max_steps: int, greedy: bool = True,
             final_observation: bool = False) -> Episodes:
    """Play ``episodes`` fresh episodes (static) of at most ``max_steps`` steps (static)
    with the network ``params`` of ``setup`` (:func:`~jaxadv.engine.train.make_setup`), observations
    normalised by ``obs_stats`` where the run normalised them: :func:`jaxadv.engine.rollout.play_episodes`
    with the setup's network, policy, environment and metrics."""
    return play_episodes(key, params, obs_stats, **setup.acting,
                         policy=setup.policy, env=setup.env, env_params=setup.env_params,
                         episodes=episodes, max_steps=max_steps, greedy=greedy,
                         info_keys=setup.info_keys, final_observation=final_observation)


def episode_states(setup: Setup, key: jax.Array, params: Any, obs_stats: Any = None, *,
                   max_steps: int, greedy: bool = True) -> tuple[Any, jax.Array, jax.Array]:
    """One episode of at most ``max_steps`` steps (static) from a fresh reset: ``(states,
    rewards [max_steps], length)``, ``states`` the raw (unwrapped) gymnax state before each
    step, stacked ``[max_steps, ...]``; the episode's frames are the first ``length`` (0
    where it did not end)."""
    env, env_params, policy = setup.env, setup.env_params, setup.policy
    norm = (lambda x: x) if obs_stats is None else (lambda x: normalize_obs(obs_stats, x))
    key_reset, key_noise, key_env = jax.random.split(key, 3)
    obs, state = env.reset(key_reset, env_params)
    noise = policy.noise(key_noise, (max_steps,))
    if greedy:
        noise = jnp.zeros_like(noise)
    net = setup.network

    def step(carry, xs):
        obs, state, h = carry
        noise_t, key_t = xs
        if net.hidden_size:  # one episode: the state is never reset within it
            (pi, _), h = net.step(params, norm(obs)[None], h)
        else:
            pi, _ = net.apply(params, norm(obs)[None])
        action = policy.sample(jax.tree.map(lambda x: x[0], pi), noise_t)
        raw = _unwrapped_state(state)
        obs, state, reward, _, _, info = env.step(key_t, state, policy.to_env(action), env_params)
        return (obs, state, h), (raw, reward, info["episode_done"])

    h0 = jnp.zeros((1, net.hidden_size))
    _, (states, rewards, done) = jax.lax.scan(
        step, (obs, state, h0), (noise, jax.random.split(key_env, max_steps)))
    length = jnp.where(jnp.any(done), jnp.argmax(done) + 1, 0)
    return states, rewards, length


def _unwrapped_state(state: Any) -> Any:
    """The innermost environment state under the wrappers' ``env_state`` fields."""
    while hasattr(state, "env_state"):
        state = state.env_state
    return state


class RunCheckpoint(NamedTuple):
    """A run's policy as its latest good checkpoint holds it (:func:`load_run`).

    Attributes:
      config, hparams: the run's configuration (``config.json``).
      seed, seeds: the run's base seed and number of seeds.
      state: the :class:`~jaxadv.engine.train.TrainState` of every seed (leading axis ``[seeds]``).
      update: the updates done when it was saved; ``env_steps`` = update × batch size.
    """

    config: TrainConfig
    hparams: HParams
    seed: int
    seeds: int
    state: TrainState
    update: int

    @property
    def env_steps(self) -> int:
        return self.update * self.config.batch_size


def load_run(run_dir: pathlib.Path, warn: Any = print) -> RunCheckpoint:
    """Read ``run_dir`` (a ``jaxadv train`` or ``jaxadv sequence`` ``--out``) without writing
    to it: its ``config.json`` and the latest checkpoint that reads back intact (a damaged
    one is reported through ``warn`` and the one before it used, but left where it is).

    Raises ``ValueError`` (naming the directory) where there is no such run or no usable
    checkpoint, e.g. a sweep's directory (``jaxadv eval --point`` reads a sweep's point).
    """
    run_dir = pathlib.Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        sweep = (run_dir / "chunks").is_dir() or (run_dir / "sweep.csv").is_file()
        hint = (" — it is a sweep's: name one of its points with --point P (the point "
                "column of its sweep.csv)") if sweep else ""
        raise ValueError(f"`run_dir` {str(run_dir)!r} holds no config.json of a `jaxadv train` "
                         f"or `jaxadv sequence` run{hint}")
    try:
        record = json.loads(path.read_text())
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in record["train_config"].items()}
        config, hp = TrainConfig(**fields), HParams(**record["hparams"])
        seed, seeds = int(record["run"]["seed"]), int(record["run"]["seeds"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`run_dir`: {path} does not describe a run ({exc})") from None
    if not checkpoint_steps(run_dir / "checkpoints"):
        raise ValueError(f"`run_dir`: {run_dir / 'checkpoints'} holds no checkpoint (the run "
                         "stopped before its first save?)")
    setup = make_setup(config)
    keys = jax.random.split(jax.random.key(seed), seeds)
    abstract = jax.eval_shape(jax.vmap(lambda k: init(setup, k, hp)), keys)
    try:
        with CheckpointStore(run_dir / "checkpoints", read_only=True) as store:
            checkpoint = store.restore(abstract, warn=warn)
    except CheckpointError as exc:
        raise ValueError(f"`run_dir`: {exc}") from None
    return RunCheckpoint(config, hp, seed, seeds, checkpoint.state, checkpoint.step)
