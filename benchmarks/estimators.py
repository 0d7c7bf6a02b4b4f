"""Speed of the estimators against rlax and against the memory-bandwidth roofline.

For each estimator (``gae``, ``lambda_returns``, ``td_errors``, ``n_step_advantages``) and
batch size N, at T = 128 steps of float32 rewards and values and bool flags, it times
jaxadv's function (with the truncation flag) and rlax's counterpart vmapped over N (rlax
has no truncation flag): ``rlax.truncated_generalized_advantage_estimation``,
``rlax.lambda_returns``, ``rlax.td_learning`` and ``rlax.n_step_bootstrapped_returns`` minus
``V``, each jitted with its discounts ``γ(1 − terminated)`` computed inside. Calls are
interleaved (each round calls every function once, in a fresh random order), so machine
load moves every column alike; a time is the median of its calls and ``rlax ÷ jaxadv`` is
the median of the paired per-round ratios (above 1: jaxadv is faster). Compile time is
excluded. At N = 1 a call is mostly dispatch: the header gives the floor, a jitted
elementwise function of 3, 4 and 5 ``[T, 1]`` arrays (each array adds about 0.4 µs).

Roofline: the bytes an estimator must move (each input read once, the output written once)
priced at the memory bandwidth measured in the same run by a jitted ``x + 1`` on 256 MB,
best of several: reads at the in-place bandwidth (the output donated to the input's
buffer), writes at the cost of writing fresh memory (the copy into a new output buffer,
less its reads). A fresh output is what every jitted estimator returns, and on this kind of
machine its page faults, not DRAM, set the price of a write. ``one pass`` is the measured
floor of the same kind: a jitted elementwise function reading the same five inputs once
and writing one ``[T, N]`` output.

Then what was tried on GAE, each against rlax in the same rounds: the two-pass
implementation of jaxadv 0.2.0 (TD errors and decays as ``[T, N]`` arrays, then a scan over
them), the scan unroll factor and an associative scan; the 0.2.0 ``lambda_returns``,
``n_step_advantages`` and ``discounted_returns`` against today's (the same bits, checked);
a Python loop of jitted steps; and the windowed n-step sum.
Run: ``.venv/bin/python benchmarks/estimators.py`` (about three minutes).
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

GAMMA, LAMBDA, N_STEPS = 0.99, 0.95, 5


def _time(fn, *args, repeats: int = 20) -> float:
    """Median wall seconds of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved(calls: dict, seconds: float = 4.0, min_rounds: int = 15, max_rounds: int = 300):
    """``{name: [wall seconds of each round]}`` for ``calls = {name: (fn, args)}``: each round
    calls every function once, in a fresh random order (what ran just before a call, and
    which memory it freed, is no one's systematic advantage), after two warm-up calls each;
    as many rounds as fit in about ``seconds`` (within ``[min_rounds, max_rounds]``)."""
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))
    warm = time.perf_counter() - start
    rounds = int(min(max_rounds, max(min_rounds, seconds / max(warm, 1e-9))))
    times = {name: [] for name in calls}
    order = np.random.default_rng(0)
    names = list(calls)
    for _ in range(rounds):
        for name in order.permutation(names):
            fn, args = calls[name]
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    return times


def _ratio(times, slow: str, fast: str) -> float:
    """Median over the rounds of ``time(slow) / time(fast)``, each pair from one round."""
    return statistics.median(a / b for a, b in zip(times[slow], times[fast]))


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


# ------------------------------------------------------------------ bandwidth


def bandwidth(megabytes: int = 256, repeats: int = 8) -> tuple[float, float]:
    """``(in_place, fresh)`` bytes per second of a jitted ``x + 1`` over ``megabytes`` of
    float32 (bytes read plus bytes written, best of ``repeats``): into the input's own
    donated buffer, and into a new output buffer."""
    x = jnp.ones((megabytes * 2**18,), jnp.float32)
    moved = 2 * x.nbytes
    fresh = jax.jit(lambda x: x + 1)
    in_place = jax.jit(lambda x: x + 1, donate_argnums=0)
    y = in_place(x + 0)
    jax.block_until_ready((fresh(x), y))
    best_fresh = best_in_place = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fresh(x))
        best_fresh = min(best_fresh, time.perf_counter() - start)
        start = time.perf_counter()
        y = in_place(y)
        jax.block_until_ready(y)
        best_in_place = min(best_in_place, time.perf_counter() - start)
    return moved / best_in_place, moved / best_fresh


def roofline_seconds(read: float, written: float, bw_in_place: float, bw_fresh: float) -> float:
    """Seconds to read ``read`` bytes at the in-place bandwidth and write ``written`` bytes
    to fresh memory, a fresh write costing what the fresh copy spends beyond its reads."""
    per_byte_read = 1.0 / bw_in_place  # the in-place copy: half reads, half writes to mapped pages
    per_byte_fresh_write = 2.0 / bw_fresh - per_byte_read
    return read * per_byte_read + written * per_byte_fresh_write


def _bytes(*arrays) -> int:
    return sum(a.nbytes for a in arrays)


# ------------------------------------------------------------- rlax, vmapped


def _rlax_discount(term):
    return GAMMA * (1.0 - term.astype(jnp.float32))


@jax.jit
def gae_rlax(r, v, nv, term):
    """rlax's GAE (no truncation flag) vmapped over the batch axis."""
    values = jnp.concatenate([v, nv[-1:]], axis=0)
    return jax.vmap(
        lambda r, d, v: rlax.truncated_generalized_advantage_estimation(r, d, LAMBDA, v),
        in_axes=1, out_axes=1,
    )(r, _rlax_discount(term), values)


@jax.jit
def lambda_returns_rlax(r, v, nv, term):
    """rlax's λ-returns (bootstrapping from ``next_values``) vmapped over the batch axis."""
    del v
    return jax.vmap(lambda r, d, nv: rlax.lambda_returns(r, d, nv, LAMBDA),
                    in_axes=1, out_axes=1)(r, _rlax_discount(term), nv)


@jax.jit
def td_errors_rlax(r, v, nv, term):
    """rlax's one-step TD error, vmapped over time and batch."""
    td = jax.vmap(jax.vmap(rlax.td_learning))
    return td(v, r, _rlax_discount(term), nv)


@jax.jit
def n_step_rlax(r, v, nv, term):
    """rlax's n-step bootstrapped returns (n = 5) vmapped over the batch axis, minus V."""
    returns = jax.vmap(lambda r, d, nv: rlax.n_step_bootstrapped_returns(r, d, nv, N_STEPS),
                       in_axes=1, out_axes=1)(r, _rlax_discount(term), nv)
    return returns - v


@jax.jit
def one_pass(r, v, nv, term, trunc):
    """The floor: one elementwise pass that reads the five inputs and writes one output."""
    return r + v + nv + term.astype(jnp.float32) + trunc.astype(jnp.float32)


ESTIMATORS = {
    # name: (jaxadv's function of (r, v, nv, terminated, truncated), rlax's of the first four)
    "gae": (functools.partial(jaxadv.gae, gamma=GAMMA, lambda_=LAMBDA), gae_rlax),
    "lambda_returns": (functools.partial(jaxadv.lambda_returns, gamma=GAMMA, lambda_=LAMBDA),
                       lambda_returns_rlax),
    "td_errors": (functools.partial(jaxadv.td_errors, gamma=GAMMA), td_errors_rlax),  # no flag
    "n_step_advantages": (functools.partial(jaxadv.n_step_advantages, gamma=GAMMA, n=N_STEPS),
                          n_step_rlax),
}


# ------------------------------------------------ what was tried (--levers)


def gae_v020(rewards, values, next_values, terminated, truncated, *, gamma, lambda_):
    """jaxadv 0.2.0's GAE: TD errors and decays as [T, N] arrays, then a scan over them."""
    deltas = jaxadv.td_errors(rewards, values, next_values, terminated, gamma=gamma)
    cont = (1.0 - terminated.astype(deltas.dtype)) * (1.0 - truncated.astype(deltas.dtype))
    decay = jnp.asarray(gamma * lambda_, deltas.dtype) * cont

    def step(adv_next, xs):
        delta, k = xs
        adv = delta + k * adv_next
        return adv, adv

    return jax.lax.scan(step, jnp.zeros_like(deltas[0]), (deltas, decay), reverse=True)[1]


def lambda_returns_v020(rewards, values, next_values, terminated, truncated, *, gamma, lambda_):
    """jaxadv 0.2.0's λ-returns: GAE, then a second pass adding V."""
    return gae_v020(rewards, values, next_values, terminated, truncated,
                    gamma=gamma, lambda_=lambda_) + values


def n_step_v020(rewards, values, next_values, terminated, truncated, *, gamma, n):
    """jaxadv 0.2.0's n-step advantages: a [T, N] stop array, the scan, then minus V."""
    n = min(n, rewards.shape[0])
    term = terminated.astype(rewards.dtype)
    stop = jnp.maximum(term, truncated.astype(rewards.dtype)).at[-1].set(1.0)

    def step(later, xs):
        r, nv, te, st = xs
        shorter = jnp.concatenate([nv[None], later[:-1]], axis=0)
        discount = gamma * (1.0 - te)
        returns = (r + discount * st * nv)[None] + (discount * (1.0 - st))[None] * shorter
        return returns, returns[-1]

    init = jnp.broadcast_to(next_values[-1], (n, *rewards.shape[1:]))
    returns = jax.lax.scan(step, init, (rewards, next_values, term, stop), reverse=True)[1]
    return returns - values


def discounted_returns_v020(rewards, next_values, terminated, truncated, *, gamma):
    """jaxadv 0.2.0's discounted returns: discount and cut as [T, N] arrays, then a scan."""
    discount = gamma * (1.0 - terminated.astype(rewards.dtype))
    cut = truncated.astype(rewards.dtype)

    def step(ret_next, xs):
        r, d, c, nv = xs
        ret = r + d * (c * nv + (1.0 - c) * ret_next)
        return ret, ret

    return jax.lax.scan(step, next_values[-1], (rewards, discount, cut, next_values), reverse=True)[1]


def gae_associative(rewards, values, next_values, terminated, truncated, *, gamma, lambda_):
    """GAE by jax.lax.associative_scan over the affine maps ``A ↦ δ_t + k_t A``."""
    deltas = jaxadv.td_errors(rewards, values, next_values, terminated, gamma=gamma)
    cont = (1.0 - terminated.astype(deltas.dtype)) * (1.0 - truncated.astype(deltas.dtype))
    decay = jnp.asarray(gamma * lambda_, deltas.dtype) * cont

    def compose(later, earlier):  # reverse=True: ``later`` holds the larger t
        k_later, a_later = later
        k_earlier, a_earlier = earlier
        return k_earlier * k_later, a_earlier + k_earlier * a_later

    return jax.lax.associative_scan(compose, (decay, deltas), reverse=True, axis=0)[1]


def levers(T: int, sizes) -> None:
    gae = functools.partial(jaxadv.gae, gamma=GAMMA, lambda_=LAMBDA)
    print(f"GAE, what was tried (T = {T}): ms, and rlax ÷ it from the same interleaved rounds")
    print()
    variants = {
        "jaxadv 0.2.0: δ and decay arrays, then a scan": jax.jit(functools.partial(
            gae_v020, gamma=GAMMA, lambda_=LAMBDA)),
        "one scan over the raw inputs (shipped), unroll 1": jax.jit(gae),
        **{f"one scan, unroll {u}": None for u in (2, 4, 8)},
        "associative scan": jax.jit(functools.partial(gae_associative, gamma=GAMMA, lambda_=LAMBDA)),
    }
    print("| variant | " + " | ".join(f"N = {N}" for N in sizes) + " |")
    print("|:---|" + "---:|" * len(sizes))
    rows = {name: [] for name in variants}
    for N in sizes:
        x = _inputs(T, N)
        calls = {"rlax": (gae_rlax, x[:4])}
        for name, fn in variants.items():
            if fn is None:
                # jit each unroll once per shape: the cache would otherwise serve unroll 1
                fn = _unrolled(gae, int(name.rsplit(" ", 1)[1]), x)
            calls[name] = (fn, x)
        times = _interleaved(calls, seconds=6.0, max_rounds=200)
        for name in variants:
            rows[name].append(f"{statistics.median(times[name]) * 1e3:.3f} ms "
                              f"({_ratio(times, 'rlax', name):.2f}×)")
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("Before and after, rlax ÷ jaxadv from the same interleaved rounds")
    print()
    before = {
        "gae": (jax.jit(functools.partial(gae_v020, gamma=GAMMA, lambda_=LAMBDA)), "gae"),
        "lambda_returns": (jax.jit(functools.partial(lambda_returns_v020, gamma=GAMMA,
                                                     lambda_=LAMBDA)), "lambda_returns"),
        "n_step_advantages": (jax.jit(functools.partial(n_step_v020, gamma=GAMMA, n=N_STEPS)),
                              "n_step_advantages"),
        "discounted_returns": (jax.jit(lambda r, v, nv, te, tr: discounted_returns_v020(
            r, nv, te, tr, gamma=GAMMA)), None),
    }
    print("| estimator | N | 0.2.0 | now | rlax | now ÷ 0.2.0 (time) | rlax ÷ 0.2.0 | rlax ÷ now |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (old, key) in before.items():
        if key is None:  # no rlax counterpart (rlax has no truncation-aware discounted return)
            ours = lambda r, v, nv, te, tr: jaxadv.discounted_returns(r, nv, te, tr, gamma=GAMMA)
            theirs = None
        else:
            ours, theirs = ESTIMATORS[key]
        for N in sizes:
            x = _inputs(T, N)
            calls = {"old": (old, x), "new": (jax.jit(ours), x)}
            if theirs is not None:
                calls["rlax"] = (theirs, x[:4])
            np.testing.assert_array_equal(calls["old"][0](*x), calls["new"][0](*x))  # same bits
            times = _interleaved(calls, seconds=4.0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            cells = ([f"{med['rlax']:.3f} ms", f"{_ratio(times, 'rlax', 'old'):.2f}×",
                      f"{_ratio(times, 'rlax', 'new'):.2f}×"] if theirs is not None else ["–"] * 3)
            print(f"| {name} | {N} | {med['old']:.3f} ms | {med['new']:.3f} ms | {cells[0]} "
                  f"| {_ratio(times, 'new', 'old'):.2f} | {cells[1]} | {cells[2]} |")
    print()


def limits(T: int, N: int, rounds: int, bw_in_place: float, bw_fresh: float) -> None:
    """What limits the two rows below target: ``n_step_advantages``' time against ``n`` at
    the largest N (its carry holds n returns, each updated every step), and
    ``lambda_returns`` at N = 1 over ``rounds`` interleaved rounds, also with its truncation
    flag fixed inside the jitted function (four ``[T, 1]`` arguments, as rlax's, not five)."""
    x = _inputs(T, N)
    roof = roofline_seconds(_bytes(*x), x[0].nbytes, bw_in_place, bw_fresh)
    ns = (1, 2, 3, 5, 8)
    calls = {n: (jax.jit(functools.partial(jaxadv.n_step_advantages, gamma=GAMMA, n=n)), x)
             for n in ns}
    times = {n: statistics.median(t) for n, t in _interleaved(calls, seconds=8.0).items()}
    slope, base = np.polyfit(ns, [times[n] for n in ns], 1)
    print(f"n_step_advantages at N = {N} against n: ms (roofline ÷ time); least squares "
          f"{base * 1e3:.2f} ms + {slope * 1e3:.2f} ms × n")
    print()
    print("| n | " + " | ".join(map(str, ns)) + " |")
    print("|:---|" + "---:|" * len(ns))
    print("| time | " + " | ".join(f"{times[n] * 1e3:.2f} ms ({roof / times[n]:.0%})"
                                    for n in ns) + " |")
    print()
    x = _inputs(T, 1)
    ours = functools.partial(jaxadv.lambda_returns, gamma=GAMMA, lambda_=LAMBDA)
    calls = {"jaxadv, 5 arguments": (jax.jit(ours), x),
             "jaxadv, truncation fixed inside: 4 arguments": (
                 jax.jit(lambda r, v, nv, te: ours(r, v, nv, te, jnp.zeros_like(te))), x[:4]),
             "rlax": (lambda_returns_rlax, x[:4])}
    times = _interleaved(calls, seconds=60.0, min_rounds=rounds, max_rounds=rounds)
    print(f"lambda_returns at N = 1, {rounds} interleaved rounds: median µs, and rlax ÷ it "
          "(median of the per-round ratios, with the 95% interval of that median)")
    print()
    print("| function | µs | rlax ÷ it |")
    print("|:---|---:|---:|")
    for name in calls:
        if name != "rlax":
            ratios = np.sort([a / b for a, b in zip(times["rlax"], times[name])])
            lo, hi = _median_interval(len(ratios))
            print(f"| {name} | {statistics.median(times[name]) * 1e6:.2f} | "
                  f"{np.median(ratios):.3f}× ({ratios[lo]:.3f}–{ratios[hi]:.3f}) |")
    print(f"| rlax | {statistics.median(times['rlax']) * 1e6:.2f} | |")
    print()


def _median_interval(n: int) -> tuple[int, int]:
    """Ranks (0-based) of the order statistics that bracket the median of ``n`` draws with
    about 95% confidence (the binomial distribution's normal approximation)."""
    half = 1.96 * np.sqrt(n) / 2
    return max(int(np.floor(n / 2 - half)), 0), min(int(np.ceil(n / 2 + half)), n - 1)


def _unrolled(fn, unroll: int, x):
    saved, adv_mod._UNROLL = adv_mod._UNROLL, unroll
    try:
        jitted = jax.jit(lambda *a: fn(*a))  # a fresh function: its own trace and cache
        jitted.lower(*x).compile()
        jax.block_until_ready(jitted(*x))  # traced (and cached) while _UNROLL = unroll
    finally:
        adv_mod._UNROLL = saved
    return jitted


# --------------------------------------------------------- the other tables


@jax.jit
def _gae_step(adv_next, delta, decay):
    return delta + decay * adv_next


def gae_python_loop(r, v, nv, term, trunc, gamma=GAMMA, lambda_=LAMBDA):
    """The naive way: a Python loop over T calling one jitted step per time step."""
    deltas = r + gamma * (1.0 - term) * nv - v
    decay = gamma * lambda_ * (1.0 - term) * (1.0 - trunc)
    out = [None] * r.shape[0]
    a = jnp.zeros_like(r[0])
    for t in reversed(range(r.shape[0])):
        a = _gae_step(a, deltas[t], decay[t])
        out[t] = a
    return jnp.stack(out)


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
    parser.add_argument("--limits-only", action="store_true",
                        help="only the measurements of what limits n_step_advantages at the "
                             "largest N and lambda_returns at N = 1")
    parser.add_argument("--rounds", type=int, default=2000,
                        help="interleaved rounds of the lambda_returns check at N = 1")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="about how long the interleaved rounds of one size run")
    args = parser.parse_args()
    T = args.T
    bw_in_place, bw_fresh = bandwidth()
    print(f"# jax {jax.__version__}, {jax.devices()[0].platform}, "
          f"{platform.processor() or platform.machine()}, {jax.local_device_count()} device(s); "
          f"T = {T}; interleaved calls, medians, compile excluded")
    print(f"# bandwidth of a jitted x + 1 on 256 MB, read + written, best of 8: "
          f"{bw_in_place / 1e9:.1f} GB/s in place (donated), {bw_fresh / 1e9:.2f} GB/s into a "
          f"fresh output")
    if args.limits_only:
        limits(T, max(args.sizes), args.rounds, bw_in_place, bw_fresh)
        return
    results = {}
    for N in args.sizes:
        x = _inputs(T, N)
        calls = {"one pass": (one_pass, x)}
        for name, (ours, theirs) in ESTIMATORS.items():
            ours_x = x[:4] if name == "td_errors" else x  # td_errors takes no truncation flag
            calls[name] = (jax.jit(ours), ours_x)
            calls[name + " rlax"] = (theirs, x[:4])
            no_trunc = (*x[:4], jnp.zeros_like(x[4]))[:len(ours_x)]
            np.testing.assert_allclose(calls[name][0](*no_trunc), theirs(*x[:4]),
                                       rtol=1e-4, atol=1e-4)
        times = _interleaved(calls, seconds=args.seconds)
        floor = statistics.median(times["one pass"])
        for name in ESTIMATORS:
            ours = statistics.median(times[name])
            theirs = statistics.median(times[name + " rlax"])
            written = x[0].nbytes
            read = _bytes(*(x[:4] if name == "td_errors" else x))
            roof = roofline_seconds(read, written, bw_in_place, bw_fresh)
            results[name, N] = (ours, theirs, _ratio(times, name + " rlax", name), floor, roof)
    x = _inputs(T, 1)
    floors = _interleaved({k: (jax.jit(lambda *a: sum(a[1:], a[0].astype(jnp.float32))), x[:k])
                           for k in (3, 4, 5)}, seconds=2.0, max_rounds=2000)
    print("# dispatch floor at N = 1: a jitted elementwise function of 3 / 4 / 5 [T, 1] arrays, "
          + " / ".join(f"{statistics.median(floors[k]) * 1e6:.1f}" for k in (3, 4, 5)) + " µs")
    print()
    print("| estimator | N | jaxadv | rlax, vmapped | rlax ÷ jaxadv | one pass | roofline "
          "| roofline ÷ jaxadv |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ESTIMATORS:
        for N in args.sizes:
            ours, theirs, ratio, floor, roof = results[name, N]
            print(f"| {name} | {N} | {ours * 1e3:.3f} ms | {theirs * 1e3:.3f} ms | {ratio:.2f}× "
                  f"| {floor * 1e3:.3f} ms | {roof * 1e3:.3f} ms | {roof / ours:.0%} |")
    print()

    limits(T, max(args.sizes), args.rounds, bw_in_place, bw_fresh)
    levers(T, args.sizes)

    gae = jax.jit(functools.partial(jaxadv.gae, gamma=GAMMA, lambda_=LAMBDA))
    print("GAE: a Python loop of jitted steps")
    print()
    print("| N | jaxadv.gae (jit) | Python loop of jitted steps | loop ÷ jaxadv |")
    print("|---:|---:|---:|---:|")
    for N in args.sizes:
        x = _inputs(T, N)
        t_ours = _time(gae, *x)
        t_loop = _time(gae_python_loop, *x, repeats=3)
        print(f"| {N} | {t_ours * 1e3:.3f} ms | {t_loop * 1e3:.2f} ms | {t_loop / t_ours:.0f}× |")

    print()
    print("n-step advantages, N = 2048: reverse scan carrying n returns (shipped) vs windowed sum")
    print()
    print("| n | reverse scan | windowed sum |")
    print("|---:|---:|---:|")
    x = _inputs(T, 2048)
    for n in (1, 5, 20, 128):
        scan = jax.jit(functools.partial(jaxadv.n_step_advantages, gamma=GAMMA, n=n))
        win = jax.jit(functools.partial(n_step_windowed, gamma=GAMMA, n=n))
        np.testing.assert_allclose(win(*x), scan(*x), rtol=1e-4, atol=1e-4)
        times = _interleaved({"scan": (scan, x), "win": (win, x)}, seconds=2.0)
        print(f"| {n} | {statistics.median(times['scan']) * 1e3:.3f} ms "
              f"| {statistics.median(times['win']) * 1e3:.3f} ms |")


if __name__ == "__main__":
    main()
