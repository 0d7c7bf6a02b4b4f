"""Fingerprints of trained parameters, to show a refactor of the engine changes no result bit.

``python benchmarks/bitwise.py --record scratch/bitwise.json`` trains a fixed set of small
configurations (PPO, A2C, REINFORCE, the other estimators, continuous actions, normalised
observations and rewards, and sequence runs with a transformer, groups, a KL penalty and a
warm start) from fixed keys and writes a SHA-256 of each run's final parameters, optimiser
state and metrics. ``--check scratch/bitwise.json`` runs them again and fails on any
difference. Fingerprints are exact, so compare on one machine with one jaxlib.

The metrics of ``TrainConfig.telemetry`` (``TELEMETRY_METRICS``: gradient SNR, cosine,
advantage statistics) are left out of the fingerprint: they observe an update without
steering it, so a fingerprint recorded before they existed, or with them off, still holds,
and what it guards is that adding or changing them moves no bit of the parameters, the
optimiser state or the other metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys

import jax
import numpy as np

from jaxadv.cli.sequence import SequenceArgs
from jaxadv.engine.train import TELEMETRY_METRICS, HParams, TrainConfig, make_train

SMALL = {"num_envs": 4, "num_steps": 32, "total_timesteps": 4 * 32 * 6, "hidden": (16, 16)}


def _sequence(**changes) -> tuple[TrainConfig, HParams]:
    args = SequenceArgs(prompt_length=3, group_size=4, prompts_per_update=4, total_samples=16 * 4,
                        layers=1, width=16, heads=2, **changes).check()
    return args.config, args.hparams


CASES = {
    "ppo": (TrainConfig(**SMALL), HParams()),
    "a2c": (TrainConfig(algo="a2c", **SMALL), HParams()),
    "reinforce": (TrainConfig(algo="reinforce", **SMALL), HParams()),
    "reinforce_nobaseline": (TrainConfig(algo="reinforce", baseline=False, **SMALL), HParams()),
    "ppo_td_shared": (TrainConfig(estimator="td", shared_torso=True, **SMALL), HParams()),
    "a2c_nstep_relu": (TrainConfig(algo="a2c", estimator="nstep", activation="relu", **SMALL), HParams()),
    "ppo_qv_scaled": (TrainConfig(estimator="qv", scale_rewards=True, **SMALL), HParams()),
    "ppo_pendulum_normobs": (TrainConfig(env="Pendulum-v1", normalize_obs=True, **SMALL), HParams()),
    "ppo_mc_noanneal": (TrainConfig(estimator="mc", anneal_lr=False, clip_value_loss=False, **SMALL),
                        HParams(lr=1e-3)),
    "seq_grpo_kl_loss": _sequence(estimator="grpo", kl="loss", kl_coef=0.1, temperature=0.7),
    "seq_rloo_reinforce_seqred": _sequence(estimator="rloo", algo="reinforce", loss_reduction="sequence"),
    "seq_gae_kl_reward_warm": _sequence(estimator="gae", kl="reward", kl_coef=0.05, warm_start_steps=3),
    "seq_remax_constant": _sequence(estimator="remax", loss_reduction="constant"),
    "seq_drgrpo": _sequence(estimator="drgrpo"),
    "seq_batchmean": _sequence(estimator="batchmean"),
    "seq_rfpp": _sequence(estimator="rfpp"),
}


def fingerprint(config: TrainConfig, hp: HParams, seed: int = 0) -> str:
    """SHA-256 over every leaf of the final state's params and optimiser state and the metrics
    other than ``TELEMETRY_METRICS``."""
    state, metrics = jax.jit(make_train(config))(jax.random.key(seed), hp)
    metrics = {name: value for name, value in metrics.items() if name not in TELEMETRY_METRICS}
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves((state.params, state.opt_state, metrics)):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=pathlib.Path)
    mode.add_argument("--check", type=pathlib.Path)
    parser.add_argument("--only", nargs="*", default=None, help="case names (default: all)")
    args = parser.parse_args()
    names = args.only or list(CASES)
    found = {name: fingerprint(*CASES[name]) for name in names}
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(found, indent=1) + "\n")
        print(f"recorded {len(found)} fingerprints in {args.record}")
        return 0
    expected = json.loads(args.check.read_text())
    bad = [name for name in names if expected.get(name) != found[name]]
    for name in names:
        print(f"{'same' if name not in bad else 'DIFFERENT':9s} {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
