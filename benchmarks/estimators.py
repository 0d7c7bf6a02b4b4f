"""Speed of the estimators: jaxadv.gae vs a Python loop of jitted steps vs rlax vmapped over N.

Also compares the two ways of computing n-step advantages (the windowed sum that
jaxadv ships, and a reverse scan that carries the n partial returns) and the
scan unroll factor. Run: ``.venv/bin/python benchmarks/estimators.py``.
Every figure is the median of repeated calls after a warm-up (compile excluded).
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import rlax

import jaxadv
from jaxadv import advantages as adv_mod


def _time(fn, *args, repeats: int = 20) -> float:
    """Median wall seconds of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(T: int, N: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (T, N)
    v = rng.normal(size=(T + 1, N))
    return (
        jnp.asarray(rng.normal(size=shape), jnp.float32),
        jnp.asarray(v[:-1], jnp.float32),
        jnp.asarray(v[1:], jnp.float32),  # consistent with rlax's single value stream
        jnp.asarray(rng.random(shape) < 0.02),
        jnp.asarray(rng.random(shape) < 0.01),
    )


@jax.jit
def _gae_step(adv_next, delta, decay):
    return delta + decay * adv_next


def gae_python_loop(r, v, nv, term, trunc, gamma=0.99, lambda_=0.95):
    """The naive way: a Python loop over T calling one jitted step per time step."""
    deltas = r + gamma * (1.0 - term) * nv - v
    decay = gamma * lambda_ * (1.0 - term) * (1.0 - trunc)
    out = [None] * r.shape[0]
    a = jnp.zeros_like(r[0])
    for t in reversed(range(r.shape[0])):
        a = _gae_step(a, deltas[t], decay[t])
        out[t] = a
    return jnp.stack(out)


@jax.jit
def gae_rlax(r, v, nv, term):
    """rlax's GAE (no truncation flag) vmapped over the batch axis."""
    values = jnp.concatenate([v, nv[-1:]], axis=0)
    discount = 0.99 * (1.0 - term)
    return jax.vmap(
        lambda r, d, v: rlax.truncated_generalized_advantage_estimation(r, d, 0.95, v),
        in_axes=1, out_axes=1,
    )(r, discount, values)


def n_step_windowed(rewards, values, next_values, terminated, truncated, *, gamma, n):
    """Alternative n-step: a windowed sum over the n offsets (a fori_loop of [T, N] ops)."""
    T = rewards.shape[0]
    n = min(n, T)
    term = terminated.astype(rewards.dtype)
    stop = jnp.maximum(term, truncated.astype(rewards.dtype)).at[-1].set(1.0)
    pad = [(0, n - 1)] + [(0, 0)] * (rewards.ndim - 1)
    streams = [jnp.pad(x, pad) for x in (rewards, next_values, term, stop)]

    def add_offset(k, carry):
        acc, weight = carry  # weight = γ^k while the trace from t is alive, else 0
        r, nv, te, st = (jax.lax.dynamic_slice_in_dim(x, k, T) for x in streams)
        ends = jnp.where(k == n - 1, 1.0, st)
        acc = acc + weight * r + weight * ends * gamma * (1.0 - te) * nv
        return acc, weight * gamma * (1.0 - ends)

    init = (jnp.zeros_like(rewards), jnp.ones_like(rewards))
    returns, _ = jax.lax.fori_loop(0, n, add_offset, init)
    return returns - values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--T", type=int, default=128)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2048, 65536])
    args = parser.parse_args()
    T = args.T
    gae = jax.jit(functools.partial(jaxadv.gae, gamma=0.99, lambda_=0.95))
    print(f"# jax {jax.__version__}, {jax.devices()[0].platform}, {platform.processor() or platform.machine()}, "
          f"{jax.local_device_count()} device(s); T = {T}; median of 20 calls, compile excluded")
    print()
    print("| N | jaxadv.gae (jit) | Python loop of jitted steps | rlax, vmapped over N | loop ÷ jaxadv | rlax ÷ jaxadv |")
    print("|---:|---:|---:|---:|---:|---:|")
    for N in args.sizes:
        x = _inputs(T, N)
        _time(gae, *x), _time(gae_rlax, *x[:4])  # warm caches and allocator first
        t_ours = _time(gae, *x)
        t_loop = _time(gae_python_loop, *x, repeats=5)
        t_rlax = _time(gae_rlax, *x[:4])
        np.testing.assert_allclose(gae_rlax(*x[:4]), jaxadv.gae(x[0], x[1], x[2], x[3], 0 * x[4],
                                                                gamma=0.99, lambda_=0.95),
                                   rtol=1e-4, atol=1e-4)
        print(f"| {N} | {t_ours * 1e3:.3f} ms | {t_loop * 1e3:.2f} ms | {t_rlax * 1e3:.3f} ms "
              f"| {t_loop / t_ours:.0f}× | {t_rlax / t_ours:.2f}× |")

    print()
    print("n-step advantages, N = 2048: reverse scan carrying n returns (shipped) vs windowed sum")
    print()
    print("| n | reverse scan | windowed sum |")
    print("|---:|---:|---:|")
    x = _inputs(T, 2048)
    for n in (1, 5, 20, 128):
        scan = jax.jit(functools.partial(jaxadv.n_step_advantages, gamma=0.99, n=n))
        win = jax.jit(functools.partial(n_step_windowed, gamma=0.99, n=n))
        np.testing.assert_allclose(win(*x), scan(*x), rtol=1e-4, atol=1e-4)
        print(f"| {n} | {_time(scan, *x) * 1e3:.3f} ms | {_time(win, *x) * 1e3:.3f} ms |")

    print()
    print(f"GAE scan unroll factor (jaxadv uses {adv_mod._UNROLL})")
    print()
    print("| unroll | " + " | ".join(f"N = {N}" for N in args.sizes) + " |")
    print("|---:|" + "---:|" * len(args.sizes))
    saved = adv_mod._UNROLL
    for unroll in (1, 2, 4, 8):
        adv_mod._UNROLL = unroll
        fn = jax.jit(functools.partial(jaxadv.gae, gamma=0.99, lambda_=0.95))
        cells = [f"{_time(fn, *_inputs(T, N)) * 1e3:.3f} ms" for N in args.sizes]
        print(f"| {unroll} | " + " | ".join(cells) + " |")
    adv_mod._UNROLL = saved

if __name__ == "__main__":
    main()
