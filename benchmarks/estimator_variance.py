"""Estimator bias and variance: the README's table, regenerated.

1. A fixed random MDP (8 states, 3 actions, γ = 0.9, termination 0.1, seed 0, the policy's
   logits N(0, 1)): every estimator's relative bias ‖E ĝ − g‖/‖g‖ (with its 95% interval),
   variance tr Cov ĝ, MSE and mean cosine to the exact gradient at N = 256 trajectories
   (M = 200 batches) with the exact critic; then, for critic noise 0, 0.1 and 0.3 (and a
   zero critic), the λ of GAE(λ) with the least MSE at N = 256 (td is λ = 0, mc λ = 1).
2. CartPole-v1: `jaxadv train` (PPO, 4 envs) for --cartpole-steps env steps, saving
   checkpoints; `jaxadv variance --env CartPole-v1 --checkpoint` on its last one, with
   the run's own critic, at N = 16, 64, 256 (M = 100), against a reference of
   100 × 256 trajectories whose own standard error is printed.

Run: ``.venv/bin/python benchmarks/estimator_variance.py [--out runs/bench-variance]``
(about 5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform

import jax

from jaxadv import cli
from jaxadv.cli.variance import _lambda
from jaxadv.science import exact, variance

ESTIMATORS = ["return", "mc", "td", "nstep:5", "gae:0.5", "gae:0.8", "gae:0.9", "gae:0.95", "gae:0.97",
              "gae:0.99", "return:unweighted", "gae:0.95:unweighted"]


def _table(rows: list[dict], n: int) -> None:
    print("| estimator | ‖b‖/‖g‖ (95% CI) | tr Cov | MSE | cos(ĝ, g) | P(ascent) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["batch_size"] == n:
            print(f"| {r['estimator']} | {r['rel_bias']:.3f} ({r['rel_bias_lo']:.3f}–{r['rel_bias_hi']:.3f}) "
                  f"| {r['variance']:.4g} | {r['mse']:.4g} | {r['cosine']:.3f} | {r['p_ascent']:.2f} |")


def _best_lambda(rows: list[dict], critic: str, n: int) -> tuple[float, float]:
    pts = [(r["mse"], _lambda(r["estimator"])) for r in rows
           if r["critic"] == critic and r["batch_size"] == n and _lambda(r["estimator"]) is not None]
    mse, lam = min(pts)
    return lam, mse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench-variance"))
    parser.add_argument("--cartpole-steps", type=int, default=61_440)
    parser.add_argument("--skip-cartpole", action="store_true")
    args = parser.parse_args()
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind} ({platform.machine()}, "
          f"{os.cpu_count()} cores)\n")

    key_mdp, key_policy = jax.random.split(jax.random.key(0))
    mdp = exact.random_mdp(key_mdp, 8, 3, gamma=0.9, termination=0.1)
    logits = jax.random.normal(key_policy, (8, 3))
    critics = ["exact", "noisy:0.1", "noisy:0.3", "zero"]
    rows, info = variance.mdp_report(jax.random.key(1), mdp, logits, estimators=ESTIMATORS,
                                     batch_sizes=[256], critics=critics, num_batches=200)
    steps = rows[0]["env_steps"]
    print(f"## Random MDP (S=8, A=3, γ=0.9, termination 0.1): N = 256 trajectories "
          f"(≈{steps:,.0f} env steps), M = 200, exact critic, ‖g‖ = {info['gradient_norm']:.3f}\n")
    _table([r for r in rows if r["critic"] == "exact"], 256)
    print("\n| critic | relative error ‖V̂ − V‖/‖V‖ | λ of least MSE | its MSE |")
    print("|---|---:|---:|---:|")
    for c in critics:
        lam, mse = _best_lambda(rows, c, 256)
        print(f"| {c} | {info['critic_relative_error'][c]:.2f} | {lam:g} | {mse:.4g} |")

    if args.skip_cartpole:
        return
    run = args.out / "cartpole-train"
    assert cli.main(["train", "--env", "CartPole-v1", "--total-timesteps", str(args.cartpole_steps),
                     "--seeds", "1", "--out", str(run), "--quiet"]) == 0
    trained = json.loads((run / "summary.json").read_text())
    out = args.out / "cartpole-variance"
    assert cli.main(["variance", "--env", "CartPole-v1", "--checkpoint", str(run), "--estimators",
                     *[e for e in ESTIMATORS if e != "gae:0.97"], "--batch-sizes", "16", "64", "256",
                     "--num-batches", "100", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    cart_rows = [{**r, **{k: float(v) for k, v in r.items()
                          if k not in ("critic", "estimator") and v != ""}}  # "": sequence-only
                 for r in _csv(out / "variance.csv")]
    for r in cart_rows:
        r["batch_size"] = int(r["batch_size"])
    n256 = next(r for r in cart_rows if r["batch_size"] == 256)
    print(f"\n## CartPole-v1, PPO checkpoint after {summary['policy']['env_steps']:,} env steps "
          f"(final return {trained['final_return_mean']:.0f}), the run's own critic: N = 256 "
          f"trajectories (≈{n256['env_steps']:,.0f} env steps), M = 100; reference from "
          f"{summary['reference_trajectories']:,} trajectories, ‖g‖ = {summary['gradient_norm']:.1f} "
          f"± {summary['reference_error']:.1f} (its standard error)\n")
    _table(cart_rows, 256)
    lam, mse = _best_lambda(cart_rows, "network", 256)
    print(f"\nλ of least MSE at N = 256 with the run's critic: {lam:g} (MSE {mse:.4g}); "
          f"{summary['seconds']:.0f} s")


def _csv(path: pathlib.Path) -> list[dict]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    main()
