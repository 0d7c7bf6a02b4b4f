"""The baseline of ``throughput.py``: PPO written the way the most-copied fused JAX PPO is.

Same structure as that single-file implementation, so its speed can be measured in the
same run as jaxadv's: a flax ``TrainState``; separate 64×64 tanh actor and critic MLPs
with orthogonal init (jaxadv's LAPACK-free initialiser of the same distribution: flax's
QR-based one can deadlock jaxlib 0.10 when vmapped over seeds, docs/design.md, "Batched
LAPACK under vmap"), evaluated together; ``distrax.Categorical`` for sampling, log-probs
and entropy; one env key per env per step with the auto-reset drawn inside ``env.step``;
GAE as a reverse ``lax.scan`` (``unroll=16``); per epoch a ``jax.random.permutation`` of
the flat batch, then a scan over minibatches with the clipped PPO loss, clipped value
loss, per-minibatch advantage normalisation and an entropy bonus; global-norm clipping
and Adam with a linearly annealed learning rate. As in that implementation, truncation
is treated as termination (``done = terminated | truncated``, no bootstrap).

``make_reference_train(num_envs, total_timesteps) -> train(key) -> metrics`` runs the
throughput configuration (CartPole-v1, 128 steps, 4 epochs × 4 minibatches).
"""

from __future__ import annotations

import distrax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from jaxadv.nets.networks import orthogonal

NUM_STEPS, EPOCHS, MINIBATCHES = 128, 4, 4
GAMMA, LAMBDA, CLIP, ENT, VF, MAX_NORM, LR = 0.99, 0.95, 0.2, 0.01, 0.5, 0.5, 2.5e-4


class ActorCritic(nn.Module):
    num_actions: int

    @nn.compact
    def __call__(self, x):
        dense = lambda n, s: nn.Dense(n, kernel_init=orthogonal(s),
                                      bias_init=nn.initializers.constant(0.0))
        a = nn.tanh(dense(64, np.sqrt(2))(x))
        a = nn.tanh(dense(64, np.sqrt(2))(a))
        logits = dense(self.num_actions, 0.01)(a)
        c = nn.tanh(dense(64, np.sqrt(2))(x))
        c = nn.tanh(dense(64, np.sqrt(2))(c))
        return distrax.Categorical(logits=logits), jnp.squeeze(dense(1, 1.0)(c), axis=-1)


def make_reference_train(num_envs: int, total_timesteps: int):
    env, env_params = gymnax.make("CartPole-v1")
    num_updates = total_timesteps // (num_envs * NUM_STEPS)
    minibatch = num_envs * NUM_STEPS // MINIBATCHES
    network = ActorCritic(env.action_space(env_params).n)
    schedule = lambda count: LR * (1.0 - (count // (MINIBATCHES * EPOCHS)) / num_updates)

    def train(rng):
        rng, key = jax.random.split(rng)
        params = network.init(key, jnp.zeros(env.observation_space(env_params).shape))
        tx = optax.chain(optax.clip_by_global_norm(MAX_NORM), optax.adam(schedule, eps=1e-5))
        state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
        rng, key = jax.random.split(rng)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), env_params)
        ep = (jnp.zeros(num_envs), jnp.zeros(num_envs, jnp.int32))  # running return, length

        def update(runner, _):
            def env_step(runner, _):
                state, env_state, obs, ep, rng = runner
                rng, key = jax.random.split(rng)
                pi, value = network.apply(state.params, obs)
                action = pi.sample(seed=key)
                log_prob = pi.log_prob(action)
                rng, key = jax.random.split(rng)
                obs, env_state, reward, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                    jax.random.split(key, num_envs), env_state, action, env_params)
                done = term | trunc
                ret, length = ep[0] + reward, ep[1] + 1
                info = (ret, length, done)  # what LogWrapper reports at episode ends
                ep = (ret * (1 - done), length * (1 - done))
                transition = (done, action, value, reward, log_prob, runner[2], info)
                return (state, env_state, obs, ep, rng), transition

            runner, traj = jax.lax.scan(env_step, runner, None, NUM_STEPS)
            state, env_state, obs, ep, rng = runner
            _, last_val = network.apply(state.params, obs)

            def gae_step(carry, t):
                gae, next_value = carry
                done, value, reward = t
                delta = reward + GAMMA * next_value * (1 - done) - value
                gae = delta + GAMMA * LAMBDA * (1 - done) * gae
                return (gae, value), gae

            done, action, value, reward, log_prob, obs_t, info = traj
            _, adv = jax.lax.scan(gae_step, (jnp.zeros_like(last_val), last_val),
                                  (done, value, reward), reverse=True, unroll=16)
            targets = adv + value
            batch = (obs_t, action, value, log_prob, adv, targets)

            def epoch(carry, _):
                state, rng = carry

                def minibatch_step(state, mb):
                    obs, action, old_value, old_log_prob, gae, targets = mb

                    def loss_fn(params):
                        pi, value = network.apply(params, obs)
                        lp = pi.log_prob(action)
                        clipped = old_value + jnp.clip(value - old_value, -CLIP, CLIP)
                        v_loss = 0.5 * jnp.maximum(jnp.square(value - targets),
                                                   jnp.square(clipped - targets)).mean()
                        ratio = jnp.exp(lp - old_log_prob)
                        g = (gae - gae.mean()) / (gae.std() + 1e-8)
                        a_loss = -jnp.minimum(ratio * g, jnp.clip(ratio, 1 - CLIP, 1 + CLIP) * g).mean()
                        return a_loss + VF * v_loss - ENT * pi.entropy().mean()

                    loss, grads = jax.value_and_grad(loss_fn)(state.params)
                    return state.apply_gradients(grads=grads), loss

                rng, key = jax.random.split(rng)
                size = num_envs * NUM_STEPS
                perm = jax.random.permutation(key, size)
                flat = jax.tree.map(lambda x: x.reshape((size, *x.shape[2:])), batch)
                shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=0), flat)
                mbs = jax.tree.map(lambda x: x.reshape((MINIBATCHES, minibatch, *x.shape[1:])), shuffled)
                state, loss = jax.lax.scan(minibatch_step, state, mbs)
                return (state, rng), loss

            (state, rng), loss = jax.lax.scan(epoch, (state, rng), None, EPOCHS)
            ret, _, done = info
            mean_return = (ret * done).sum() / jnp.maximum(done.sum(), 1)
            return (state, env_state, obs, ep, rng), (mean_return, loss.mean())

        runner = (state, env_state, obs, ep, rng)
        _, metrics = jax.lax.scan(update, runner, None, num_updates)
        return metrics

    return train
