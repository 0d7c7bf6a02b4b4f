"""Training throughput of the fused trainer against a reference PPO and the raw env-stepping
ceiling, all measured in the same run.

Configuration (the one the most-copied fused JAX PPO is measured at): CartPole-v1,
128 steps × ``num_envs``, 4 epochs × 4 minibatches, 64×64 tanh MLP, 5×10⁵ steps
(or 4 updates, whichever is more). For each ``num_envs`` it prints training env
steps/s (compile excluded); the same for ``reference_ppo.py``, a PPO written the way
that implementation is (truncation as termination), and the ratio; the roofline — the
FLOPs per env step of the trainer (XLA's cost analysis of its loop-free pieces:
:func:`flops_per_env_step`), the GFLOP/s that makes at the measured speed and its fraction
of this machine's GEMM peak (a 2048³ fp32 matmul measured in the same run), and the CPU
cores the training call kept busy (process CPU time ÷ wall time); the raw ceiling —
jaxadv's CartPole stepped with a policy forward pass and action sampling at the same
``num_envs`` for the same steps, nothing stored or learned — and the ratio to it; compile
seconds and the compiled program's memory (arguments + outputs + temporaries, from XLA's
memory analysis); the micro-batch size the trainer chose (``TrainConfig.micro_batch_size``,
automatic on CPU) and, where it chose one, its speed over the same program computing
each minibatch's gradient at once. The last rows train 4 and 16 seeds vmapped at 4 envs each.

The ``cli`` column runs the same configuration as a user does — ``jaxadv train --quiet`` in
a subprocess, with its defaults: chunks of updates per compiled call, metrics.csv,
checkpoints, into a temporary directory — and reports the ``steps_per_second`` of its
``summary.json`` (compile excluded), interleaved with the other programs. Its compile seconds are given for the
first run (an empty persistent compilation cache) and for the runs after it (cached).

Run: ``.venv/bin/python benchmarks/throughput.py [--sizes 4 64 ...] [--single-thread]
[--no-reference] [--quick]``; the same command runs on a GPU or TPU (the device is named in
the header).
``--single-thread`` sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` before JAX
starts: at these sizes XLA's intra-op thread pool costs more than it brings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("--sizes", type=int, nargs="+", default=[4, 64, 512, 2048, 8192])
parser.add_argument("--total-timesteps", type=int, default=500_000)
parser.add_argument("--seeds", type=int, nargs="*", default=[4, 16],
                    help="seeds of the vmapped rows at 4 envs (none: skip)")
parser.add_argument("--single-thread", action="store_true")
parser.add_argument("--repeats", type=int, default=5, help="timed runs of each program")
parser.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the reference PPO (reference_ppo.py) column")
parser.add_argument("--no-cli", dest="cli", action="store_false",
                    help="skip the jaxadv train driver (cli) column")
parser.add_argument("--policies", action="store_true",
                    help="instead of the CartPole table: the other policies and environments "
                         "(the GRU, the CNN on MinAtar, Brax where installed) against the MLP "
                         "and raw env stepping (POLICY_ROWS)")
parser.add_argument("--quick", action="store_true",
                    help="a short run of the whole table (4 and 2048 envs, 16 seeds; 2 repeats, "
                         "2**17 steps): a check on a new machine or an accelerator")
ARGS = parser.parse_args()
if ARGS.quick:
    ARGS.sizes, ARGS.seeds, ARGS.repeats, ARGS.total_timesteps = [4, 2048], [16], 2, 2**17
if ARGS.single_thread:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from jaxadv.envs import make  # noqa: E402
from jaxadv.nets.networks import make_network  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_ppo import make_reference_train  # noqa: E402

from jaxadv.engine.train import (  # noqa: E402
    HParams,
    TrainConfig,
    collect,
    init,
    loss_fn,
    make_setup,
    make_train,
    micro_batch_size,
    optimizer,
)


def _memory_mb(compiled) -> float:
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return total / 2**20


def _compiled(fn, *args):
    """(compile seconds, compiled, args) for a jitted ``fn``, after one warm-up call."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up run: allocator, caches
    return compile_s, compiled, args


def _seconds(job) -> tuple[float, float]:
    """Wall seconds of one call of the compiled job, and the CPU cores it kept busy on
    average (process CPU time ÷ wall time)."""
    _, compiled, args = job
    start, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(*args))
    wall = time.perf_counter() - start
    return wall, (time.process_time() - cpu) / wall


def ceiling(num_envs: int, total_steps: int):
    """Raw stepping of jaxadv's CartPole-v1 (the trainer's own environment wrappers) with a
    policy forward pass and action sampling, for ``total_steps`` env steps in one scan:
    what the trainer's rollout costs with nothing stored or learned."""
    env, env_params = make("CartPole-v1")
    net = make_network(env.num_actions)
    params = net.init(jax.random.key(0), jnp.zeros(env.observation_space(env_params).shape))

    def run(key):
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(key, num_envs), env_params
        )

        def step(carry, key):
            obs, state = carry
            key_act, key_env = jax.random.split(key)
            logits, _ = net.apply(params, obs)
            action = jax.random.categorical(key_act, logits)
            obs, state, reward, *_ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(key_env, num_envs), state, action, env_params
            )
            return (obs, state), reward

        steps = max(total_steps // num_envs, 1)
        return jax.lax.scan(step, (obs, state), jax.random.split(key, steps))[1].sum()

    return _compiled(run, jax.random.key(1))


def env_ceiling(env_name: str, num_envs: int, total_steps: int):
    """Raw stepping of ``env_name`` (jaxadv's wrappers) with uniformly random actions, for
    ``total_steps`` env steps in one scan: the environment's own cost, no network."""
    env, env_params = make(env_name)
    space = env.action_space(env_params)

    def run(key):
        _, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(key, num_envs), env_params)

        def step(state, key):
            key_act, key_env = jax.random.split(key)
            action = jax.vmap(space.sample)(jax.random.split(key_act, num_envs))
            _, state, reward, *_ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(key_env, num_envs), state, action, env_params)
            return state, reward

        steps = max(total_steps // num_envs, 1)
        return jax.lax.scan(step, state, jax.random.split(key, steps))[1].sum()

    return _compiled(run, jax.random.key(1))


POLICY_ROWS = [
    ("CartPole-v1", "mlp", {"num_envs": 64, "num_steps": 128}),
    ("CartPole-v1", "gru", {"num_envs": 64, "num_steps": 128}),
    ("CartPole-v1", "gru", {"num_envs": 64, "num_steps": 128, "seq_len": 32, "burn_in": 16}),
    ("MemoryChain-bsuite", "mlp", {"num_envs": 16, "num_steps": 32}),
    ("MemoryChain-bsuite", "gru", {"num_envs": 16, "num_steps": 32}),
    ("Breakout-MinAtar", "mlp", {"num_envs": 64, "num_steps": 32, "hidden": (64,)}),
    ("Breakout-MinAtar", "cnn", {"num_envs": 64, "num_steps": 32, "hidden": (64,)}),
    ("brax:inverted_pendulum", "mlp", {"num_envs": 64, "num_steps": 64, "normalize_obs": True}),
    ("brax:ant", "mlp", {"num_envs": 64, "num_steps": 64, "normalize_obs": True}),
]
"""``--policies``: (env, network, config changes) of each row; each env's first row is the
MLP the others are compared with."""


def policy_table() -> None:
    """``--policies``: train steps/s of each :data:`POLICY_ROWS` row (PPO, 4 × 4 minibatches,
    ``--total-timesteps``), its ratio to the same env's MLP row and to raw env stepping with
    random actions, interleaved over ``--repeats`` runs."""
    print("| env | network | settings | train steps/s | ÷ MLP | env steps/s (random actions) "
          "| train ÷ env | compile s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    jobs, steps = {}, {}
    rows = [r for r in POLICY_ROWS if not r[0].startswith("brax:") or importlib.util.find_spec("brax")]
    for env_name, network, changes in rows:
        config = TrainConfig(env=env_name, network=network, total_timesteps=ARGS.total_timesteps,
                             **changes)
        steps[env_name, network, str(changes)] = config.num_updates * config.batch_size
        jobs[env_name, network, str(changes)] = _compiled(make_train(config), jax.random.key(0),
                                                          HParams())
        if ("env", env_name) not in jobs:
            jobs["env", env_name] = env_ceiling(env_name, config.num_envs, ARGS.total_timesteps)
            steps["env", env_name] = ARGS.total_timesteps
    times = {name: [] for name in jobs}
    for _ in range(ARGS.repeats):
        for name, job in jobs.items():
            times[name].append(_seconds(job)[0])
    speed = {name: steps[name] / float(np.median(t)) for name, t in times.items()}
    baseline = {}
    for env_name, network, changes in rows:
        name = (env_name, network, str(changes))
        baseline.setdefault(env_name, speed[name])
        settings = ", ".join(f"{k} {v}" for k, v in changes.items())
        print(f"| {env_name} | {network} | {settings} | {speed[name]:,.0f} "
              f"| {speed[name] / baseline[env_name]:.2f} | {speed['env', env_name]:,.0f} "
              f"| {speed[name] / speed['env', env_name]:.2f} | {jobs[name][0]:.1f} |", flush=True)


def _flops(fn, *args) -> float:
    """XLA's FLOP count of the compiled ``fn(*args)`` (loop-free programs only: XLA's cost
    analysis counts a loop body once, whatever its trip count)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def flops_per_env_step(config: TrainConfig) -> float:
    """FLOPs the trainer spends per environment step, from XLA's cost analysis of its
    loop-free pieces: one rollout step of ``num_envs`` environments (network forward, action
    sampling, env step) and one minibatch step (loss, gradient, clipping, Adam), weighted by
    how often an update runs each (``num_steps``; epochs × minibatches); the estimator's
    reverse scan (a few FLOPs per step) is left out."""
    setup = make_setup(config)
    hp = HParams()
    state = init(setup, jax.random.key(0), hp)
    flat, unravel = ravel_pytree(state.params)

    def rollout_step(params, obs, env_state, key):
        policy, _ = setup.network.apply(params, obs)
        action = setup.policy.sample(policy, setup.policy.noise(key, obs.shape[:1]))
        keys = jax.random.split(key, obs.shape[0])
        return jax.vmap(setup.env.step, (0, 0, 0, None))(keys, env_state, action, setup.env_params)

    mb = config.batch_size // config.num_minibatches
    trajectory = jax.eval_shape(lambda: collect(setup, state, hp, jax.random.key(0),
                                                (state.env_state, state.obs)).traj)
    batch = jax.tree.map(lambda x: jnp.zeros((mb, *x.shape[2:]), x.dtype),
                         trajectory._replace(extras=None))
    data = (batch, jnp.zeros(mb), jnp.zeros(mb), None, None)
    opt = optimizer(setup, hp)

    def minibatch_step(flat, opt_state, data):
        grads = jax.grad(lambda f: loss_fn(setup, unravel(f), data, hp)[0])(flat)
        updates, opt_state = opt.update(grads, opt_state, flat)
        return flat + updates, opt_state

    per_update = (config.num_steps * _flops(rollout_step, state.params, state.obs, state.env_state,
                                            jax.random.key(1))
                  + config.update_epochs * config.num_minibatches
                  * _flops(minibatch_step, flat, state.opt_state, data))
    return per_update / config.batch_size


def gemm_peak() -> float:
    """FLOP/s of a large fp32 matmul (2048³, on every core XLA uses), best of 5."""
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    jax.block_until_ready(matmul(a))
    best = min(_timed(matmul, a) for _ in range(5))
    return 2 * n**3 / best


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _seed_keys(seeds: int):
    return jax.random.split(jax.random.key(0), seeds) if seeds else jax.random.key(0)


def _config(num_envs: int) -> TrainConfig:
    return TrainConfig(num_envs=num_envs, total_timesteps=max(ARGS.total_timesteps, 4 * num_envs * 128))


def train_job(num_envs: int, seeds: int = 0, **changes):
    """jaxadv's ``train`` at ``num_envs`` (vmapped over ``seeds`` if > 0; ``changes`` to its
    config), compiled."""
    train = make_train(_config(num_envs).replace(**changes))
    return _compiled(jax.vmap(train, (0, None)) if seeds else train, _seed_keys(seeds), HParams())


def reference_job(num_envs: int, seeds: int = 0):
    """``reference_ppo.py`` (the most-copied PPO's structure) at ``num_envs``, compiled."""
    train = make_reference_train(num_envs, max(ARGS.total_timesteps, 4 * num_envs * 128))
    return _compiled(jax.vmap(train) if seeds else train, _seed_keys(seeds))


def cli_run(num_envs: int, seeds: int, out: pathlib.Path, cache: pathlib.Path) -> dict:
    """One ``jaxadv train --quiet`` run at ``num_envs`` (defaults otherwise): its summary."""
    config = _config(num_envs)
    argv = [sys.executable, "-m", "jaxadv.cli", "train", "--quiet", "--out", str(out),
            "--num-envs", str(num_envs), "--total-timesteps", str(config.total_timesteps),
            "--seeds", str(max(seeds, 1))]
    env = {**os.environ, "JAXADV_CACHE_DIR": str(cache)}
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="jaxadv-throughput-"))
    peak = gemm_peak()
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].device_kind} ({platform.machine()}, "
        f"{os.cpu_count()} cores); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"median of {ARGS.repeats} interleaved runs; GEMM peak {peak / 1e9:.0f} GFLOP/s "
        "(2048³ fp32 matmul)"
    )
    print()
    if ARGS.policies:
        return policy_table()
    print("| num_envs | seeds | train steps/s | cli steps/s | cli ÷ train | reference steps/s "
          "| train ÷ ref | cli ÷ ref | kFLOP/step | GFLOP/s | ÷ GEMM peak | cores busy "
          "| ceiling steps/s | train ÷ ceiling | compile s: train | cli (first, cached) "
          "| reference | memory MB | micro-batch | ÷ whole minibatches |")
    print("|" + "---:|" * 20)
    rows = [(n, 0) for n in ARGS.sizes] + [(4, s) for s in ARGS.seeds]
    for num_envs, seeds in rows:
        print(_row(num_envs, seeds, peak, scratch), flush=True)


def _row(num_envs: int, seeds: int, peak: float, scratch: pathlib.Path) -> str:
    """One table row: every program at ``num_envs`` × ``seeds``, timed interleaved."""
    nan = float("nan")
    config = _config(num_envs)
    steps = config.num_updates * config.batch_size * max(seeds, 1)
    jobs = {"train": train_job(num_envs, seeds),
            # the ceiling of the vmapped row: all seeds' envs stepped together
            "ceiling": ceiling(num_envs * max(seeds, 1), steps)}
    if ARGS.reference:
        jobs["reference"] = reference_job(num_envs, seeds)
    micro = micro_batch_size(config)
    if micro:  # the same program without micro-batches, to show what they bring
        jobs["whole"] = train_job(num_envs, seeds, micro_batch_size=0)
    times = {name: [] for name in jobs}
    busy, cli = [], []
    for i in range(ARGS.repeats):  # interleaved, so a slow spell of the machine hits all
        for name, job in jobs.items():
            seconds, cores = _seconds(job)
            times[name].append(seconds)
            busy += [cores] if name == "train" else []
        if ARGS.cli:
            cli.append(cli_run(num_envs, seeds, scratch / f"run-{num_envs}-{seeds}-{i}",
                               scratch / "xla"))  # empty at first: a real first compile
    med = {name: float(np.median(t)) for name, t in times.items()}
    speed = steps / med["train"]
    top = steps / med["ceiling"]
    ref = steps / med["reference"] if ARGS.reference else nan
    whole = steps / med["whole"] if micro else nan
    cli_speed = float(np.median([c["steps_per_second"] for c in cli])) if cli else nan
    first = cli[0]["compile_seconds"] if cli else nan
    cached = float(np.median([c["compile_seconds"] for c in cli[1:]])) if len(cli) > 1 else nan
    compile_s, compiled, _ = jobs["train"]
    ref_compile = jobs["reference"][0] if ARGS.reference else nan
    flops = flops_per_env_step(config)
    return (
        f"| {num_envs} | {max(seeds, 1)} | {speed:,.0f} | {cli_speed:,.0f} | {cli_speed / speed:.2f} "
        f"| {ref:,.0f} | {speed / ref:.2f} | {cli_speed / ref:.2f} | {flops / 1e3:.0f} "
        f"| {speed * flops / 1e9:.1f} | {speed * flops / peak:.2f} | {np.median(busy):.2f} "
        f"| {top:,.0f} | {speed / top:.2f} | {compile_s:.1f} | {first:.1f}, {cached:.1f} "
        f"| {ref_compile:.1f} | {_memory_mb(compiled):.0f} | {micro or '-'} "
        f"| {speed / whole:.2f} |"
    )


if __name__ == "__main__":
    main()
