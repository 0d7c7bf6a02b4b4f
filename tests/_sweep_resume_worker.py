"""``jaxadv sweep`` with a stub ``train`` (used by test_sweep_resume.py, in process and as
``python tests/_sweep_resume_worker.py DELAY sweep FLAGS...``).

The stub compiles in milliseconds and gives every run and update its own numbers (from
the run's key and hyperparameters), so a chunk filled in from the wrong place shows. With
``DELAY`` > 0 each compiled call sleeps that long inside XLA (a ``pure_callback``), so a
signal sent from outside lands while a chunk is in flight and the main thread waits.
"""

import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class _StubState(NamedTuple):
    """The part of a run's final state that a sweep keeps."""

    params: jax.Array
    obs_stats: None = None


def stub_make_train(delay: float = 0.0):
    """A ``make_train`` whose ``train(key, hp)`` returns per-update metrics and a stand-in final state."""

    def sleep(x: np.ndarray) -> np.ndarray:
        time.sleep(delay)
        return np.asarray(x)

    def make_train(config):
        def train(key, hp):
            u = config.num_updates
            returns = jax.random.uniform(key, (u,)) * 100 + hp.lr * 1e4 + hp.gae_lambda
            episodes = jax.random.randint(jax.random.fold_in(key, 1), (u,), 0, 3)
            returns = jnp.where(episodes > 0, returns, jnp.nan)  # no episode ended: NaN
            if delay:
                returns = jax.pure_callback(sleep, jax.ShapeDtypeStruct((u,), returns.dtype),
                                            returns, vmap_method="expand_dims")
            steps = jnp.arange(1, u + 1, dtype=jnp.int32) * config.batch_size
            metrics = {"episode_return": returns, "episodes": episodes.astype(jnp.float32),
                       "env_steps": steps}
            return _StubState(jnp.zeros(2)), metrics

        return train

    return make_train


if __name__ == "__main__":
    from jaxadv import cli
    from jaxadv.engine import sweep as sweep_module

    sweep_module.make_train = stub_make_train(float(sys.argv[1]))
    sys.exit(cli.main(sys.argv[2:]))
