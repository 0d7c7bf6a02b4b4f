"""``jaxadv variance``: estimator bias and variance on a tabular MDP or a real environment.

``jaxadv variance --mdp random --states 8 --actions 3 --estimators mc td gae:0.9 gae:0.95
nstep:5 --batch-sizes 16 64 256 --critic noisy:0.2 --out runs/var`` measures every
estimator × critic × batch size with :func:`jaxadv.science.variance.mdp_report` against the exact
gradient; ``--env CartPole-v1`` measures a mid-training policy — from a ``jaxadv train``
run's checkpoint (``--checkpoint runs/x``) or trained here for ``--train-timesteps`` — with
:func:`jaxadv.science.variance.train_state_report` against a reference batch ``--reference-factor``
times larger than the largest ``N``. Writes ``variance.csv`` (one row per critic,
estimator and ``N``), ``summary.json`` and ``variance.png`` (bias², variance and MSE vs λ;
cosine to the true gradient vs ``N``) under ``--out``, and prints a table at the largest ``N``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from rich import box
from rich.console import Console
from rich.table import Table

from jaxadv.cli.outdir import replace_atomically
from jaxadv.cli.report import write_json
from jaxadv.engine.devices import seed_groups
from jaxadv.engine.estimators import ESTIMATORS
from jaxadv.engine.evaluate import load_run
from jaxadv.engine.metrics import platform_info
from jaxadv.engine.train import HParams, TrainConfig, make_trainer
from jaxadv.envs import registered_names
from jaxadv.envs.sequence import SequenceTask
from jaxadv.losses import REDUCTIONS
from jaxadv.nets.transformer import make_transformer
from jaxadv.science import exact, sequence_exact, variance
from jaxadv.science.objective_exact import Behaviour, ascend, objective_report, objective_rows
from jaxadv.validate import check_positive, positive_int

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["VarianceArgs", "plot_variance", "variance_command"]



def _sequence_help() -> str:
    """``--sequence``'s help, with the estimators of the live table."""
    others = [name for name in sequence_exact.sequence_estimators()
              if name not in sequence_exact.REPORT_ESTIMATORS]
    return (f"measure the sequence estimators ({', '.join(sequence_exact.REPORT_ESTIMATORS)} by "
            f"default; also {', '.join(others)} with --estimators; reinforce is read as return) "
            "x loss reductions on a tiny token task of this kind, against the exact gradient "
            "from enumerating every response (--num-digits, --prompt-length, --response-length, "
            "...; a random 1-layer transformer policy).")


def _estimators_help() -> str:
    """``--estimators``' help: the spec forms of the live table's rows, with their summaries."""
    forms = [f"{form} ({ESTIMATORS[form.partition(':')[0]].summary})"
             for form in variance.spec_forms()]
    return ("; ".join(forms) + "; mcb is read as mc; add :unweighted to drop the γ^t state "
            "weighting.")


def _objectives_help() -> str:
    """``--objectives``' help, with the rows of the live table (:func:`objective_rows`)."""
    rows = objective_rows()
    own = ", ".join(name for name, row in rows.items() if row.correction is None)
    corrected = ", ".join(name for name, row in rows.items() if row.correction is not None)
    return ("--sequence: compare these policy objectives and off-policy corrections instead "
            f"(objectives: {own}, their ratio against the sampler; corrections, as the trainer "
            "applies them with a behaviour policy, PPO's ratio against the trained network at "
            f"the sampler's parameters: {corrected}): each one's exact expected gradient "
            "on-policy, after --stale-steps updates (stale samples), with samples drawn at "
            "--behaviour-temperature, from the policy's logits rounded to bfloat16 (a "
            "lower-precision inference engine) and at --sampler-temperature, against the exact "
            "gradient at the trained policy, and its sampled estimates' bias and variance at N = "
            "the largest --batch-sizes (writes objectives.csv and objectives.png).")


_DEFAULT_ESTIMATORS = ("return", "mc", "td", "nstep:5", "gae:0.5", "gae:0.8", "gae:0.9", "gae:0.95",
                       "gae:0.99", "gae:0.95:unweighted")


@dataclasses.dataclass(frozen=True)
class VarianceArgs:
    """Bias, variance, MSE and cosine of policy-gradient estimators against the true gradient;
    write variance.csv, summary.json and variance.png under --out."""

    mdp: Literal["random", "chain", "gridworld"] = "random"
    """tabular MDP (ignored with --env): random (Dirichlet transitions, N(offset, 1) rewards), a chain of --states states, or a square gridworld of --states cells (slip 0.1, goal reward 1)."""
    states: int = 8
    """number of states S of the MDP."""
    actions: int = 3
    """number of actions A of the random MDP (the chain has 2, the gridworld 4)."""
    gamma: float = 0.9
    """discount of the MDP's objective (with --env: the trained run's gamma)."""
    termination: float = 0.1
    """random MDP: probability of ending the episode at each step."""
    reward_offset: float = 0.0
    """random MDP: mean of the rewards (a large offset is what a baseline removes)."""
    policy_scale: float = 1.0
    """random MDP: the policy's logits are N(0, policy_scale²) per state and action."""
    sequence: Annotated[Literal["reverse", "sort", "add"] | None,
                        tyro.conf.arg(help=_sequence_help())] = None
    """measure the sequence estimators x loss reductions on a tiny token task of this kind, against the exact gradient from enumerating every response (--num-digits, --prompt-length, --response-length, ...; a random 1-layer transformer policy)."""
    num_digits: int = 2
    """--sequence: digit vocabulary (responses: digits + EOS)."""
    prompt_length: int = 3
    """--sequence: prompt digits (most)."""
    min_prompt_length: int | None = 1
    """--sequence: least prompt digits: prompts of varying difficulty."""
    response_length: int | None = None
    """--sequence: most response digits (default: target + 1)."""
    reward: Literal["exact", "partial"] = "partial"
    """--sequence: exact-match or partial-credit reward."""
    length_penalty: float = 0.3
    """--sequence: reward minus length_penalty x response length / response_length (reward correlates with length)."""
    prompts: int = 4
    """--sequence: the fixed prompts the objective averages over."""
    group_size: int = 4
    """--sequence: samples per prompt K; each batch size N is N / K prompts x K samples."""
    reductions: tuple[Literal[REDUCTIONS], ...] = REDUCTIONS  # type: ignore[valid-type]
    """--sequence: loss aggregations to compare."""
    objectives: Annotated[tuple[Literal[tuple(objective_rows())], ...],  # type: ignore[valid-type]
                          tyro.conf.arg(help=_objectives_help())] = ()
    stale_steps: int = 2
    """--objectives: the trained policy is the behaviour policy after this many normalised exact gradient-ascent steps (an idealised update epoch each)."""
    stale_step_size: float = 0.15
    """--objectives: the length of each of those steps in parameter space."""
    behaviour_temperature: float = 2.0
    """--objectives: the off-policy setting whose samples come from the same policy at this temperature."""
    sampler_temperature: float = 1.1
    """--objectives: a sampler-mismatch setting whose samples come from the same policy at this temperature, near 1 as an inference engine's sampler may be."""
    env: str | None = None
    """measure on this registered environment instead of an MDP (e.g. CartPole-v1), for a policy taken mid-training."""
    checkpoint: pathlib.Path | None = None
    """with --env: a `jaxadv train` run directory; its latest checkpoint's first seed is the policy."""
    train_timesteps: int = 50_000
    """with --env and no --checkpoint: train default PPO for this many env steps first."""
    estimators: Annotated[tuple[str, ...], tyro.conf.arg(help=_estimators_help())] = _DEFAULT_ESTIMATORS
    """the estimators (their spec forms are listed from the estimator table)."""
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    """trajectories per gradient estimate, N."""
    critic: tuple[str, ...] | None = None
    """MDP: exact (default), zero, noisy:SIGMA (exact + noise of relative size SIGMA), fitted:K (regression on K separate trajectories). --env: network (default, the run's own critic) or zero."""
    num_batches: int = 200
    """independent estimates per N (M) from which bias and variance are measured."""
    reference_factor: int = 100
    """with --env: the reference gradient uses reference_factor × max(batch_sizes) trajectories."""
    horizon: int | None = None
    """steps per trajectory; default: where the discounted tail drops below 1e-4 (MDP) or the env's time limit."""
    confidence: float = 0.95
    """of the bias interval."""
    seed: int = 0
    """PRNG seed for the MDP, the policy and the samples."""
    devices: int | None = None
    """spread the independent estimates over at most this many devices; default: all (on CPU, one XLA host device per core). The results do not depend on it."""
    out: pathlib.Path = pathlib.Path("runs/variance")
    """output directory (created; files in it are overwritten)."""
    quiet: bool = False
    """no table."""

    @property
    def sequence_estimators(self) -> tuple[str, ...]:
        """``estimators``, or every sequence estimator when left at the MDP default."""
        if self.estimators == _DEFAULT_ESTIMATORS:
            return sequence_exact.REPORT_ESTIMATORS
        return self.estimators

    def sequence_env(self) -> SequenceTask:
        return SequenceTask(cast(str, self.sequence),  # sequence_env() is for --sequence
                            num_digits=self.num_digits, prompt_length=self.prompt_length,
                            min_prompt_length=self.min_prompt_length, response_length=self.response_length,
                            reward=self.reward, length_penalty=self.length_penalty)

    def _check_sequence(self) -> VarianceArgs:
        if self.env is not None:
            raise ValueError("`sequence` and `env` exclude each other")
        allowed = sequence_exact.sequence_estimators()
        for text in self.sequence_estimators:
            if sequence_exact.LEGACY_ESTIMATORS.get(text, text) not in allowed:
                raise ValueError(f"estimator {text!r}: with --sequence choose from {', '.join(allowed)}")
        if not self.reductions:
            raise ValueError("`reductions` must name at least one reduction")
        if self.objectives:
            positive_int("stale_steps", self.stale_steps, minimum=0)
            if not (self.stale_step_size > 0 and self.behaviour_temperature > 0):
                raise ValueError("`stale_step_size` and `behaviour_temperature` must be > 0, got "
                                 f"{self.stale_step_size} and {self.behaviour_temperature}")
            if not 0 < self.sampler_temperature < math.inf:
                raise ValueError(f"`sampler_temperature` must be > 0, got {self.sampler_temperature}")
        for name in ("prompts", "group_size"):
            positive_int(name, getattr(self, name))
        for n in self.batch_sizes:
            if n % self.group_size:
                raise ValueError(f"`batch_sizes` {n} must be a multiple of `group_size` = {self.group_size}")
        env = self.sequence_env()
        count = sum(env.num_digits**k for k in range(env.response_length)) + env.num_digits**env.response_length
        if count > 20_000:
            raise ValueError(f"`num_digits`/`response_length` give {count:,} responses to enumerate; "
                             "keep it under 20,000 (e.g. --num-digits 2 --prompt-length 3)")
        return self

    @property
    def critics(self) -> tuple[str, ...]:
        """``critic``, or the default of the mode: ``exact`` (MDP) or ``network`` (--env)."""
        if self.critic is not None:
            return self.critic
        return ("exact",) if self.env is None else ("network",)

    def check(self) -> VarianceArgs:
        """Refuse a bad value with a ``ValueError`` naming the field; compiles nothing."""
        for name in ("states", "actions", "num_batches", "reference_factor", "train_timesteps"):
            positive_int(name, getattr(self, name))
        check_positive(self, "devices")
        if self.num_batches < 3:
            raise ValueError(f"`num_batches` must be >= 3 to estimate a variance, got {self.num_batches}")
        check_positive(self, "horizon")
        if not self.batch_sizes or any(n < 1 for n in self.batch_sizes):
            raise ValueError(f"`batch_sizes` must be integers >= 1, got {list(self.batch_sizes)}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"`gamma` must lie in [0, 1), got {self.gamma}")
        if not 0.0 <= self.termination < 1.0:
            raise ValueError(f"`termination` must lie in [0, 1), got {self.termination}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"`confidence` must lie in (0, 1), got {self.confidence}")
        if not math.isfinite(self.reward_offset) or not math.isfinite(self.policy_scale):
            raise ValueError("`reward_offset` and `policy_scale` must be finite")
        if not self.estimators:
            raise ValueError("`estimators` must name at least one estimator")
        if self.objectives and self.sequence is None:
            raise ValueError("`objectives` compares sequence objectives: it needs --sequence")
        if self.sequence is not None:
            return self._check_sequence()
        for text in self.estimators:
            variance.parse_estimator(text)
        side = math.isqrt(self.states)
        if self.mdp == "gridworld" and (side * side != self.states or side < 2):
            raise ValueError(f"`states` must be a square number >= 4 for the gridworld, got {self.states}")
        if self.critic is not None and not self.critic:
            raise ValueError("`critic` must name at least one critic")
        if self.env is None:
            for text in self.critics:
                variance.parse_critic(text)
            if self.checkpoint is not None:
                raise ValueError("`checkpoint` needs --env (the MDP's policy is random)")
            return self
        if self.env not in registered_names():
            TrainConfig(env=self.env)  # raises the registry's message naming valid envs
        for text in self.critics:
            if text not in ("network", "zero"):
                raise ValueError(f"`critic` {text!r}: with --env the critic is 'network' or 'zero'")
        if self.checkpoint is not None and not (self.checkpoint / "config.json").is_file():
            raise ValueError(f"`checkpoint` {self.checkpoint} holds no config.json of a `jaxadv train` run")
        return self


def _mdp(args: VarianceArgs) -> tuple[exact.TabularMDP, jax.Array]:
    key_mdp, key_policy = jax.random.split(jax.random.key(args.seed))
    if args.mdp == "chain":
        mdp, actions = exact.chain_mdp(args.states, gamma=args.gamma), 2
    elif args.mdp == "gridworld":
        side = math.isqrt(args.states)
        mdp, actions = exact.gridworld_mdp(side, side, gamma=args.gamma), 4
    else:
        mdp = exact.random_mdp(key_mdp, args.states, args.actions, gamma=args.gamma,
                               termination=args.termination, reward_offset=args.reward_offset)
        actions = args.actions
    return mdp, args.policy_scale * jax.random.normal(key_policy, (args.states, actions))


def _trained(args: VarianceArgs, console: Console) -> tuple[Any, Any, Any, float, dict]:
    """``(trainer, params, obs_stats, gamma, about)`` of the policy to measure."""
    if args.checkpoint is None:
        env = cast(str, args.env)  # only the --env report trains a policy
        config, hp = TrainConfig(env=env, total_timesteps=args.train_timesteps), HParams()
        trainer = make_trainer(config)
        console.print(f"training ppo on {args.env} for {config.num_updates * config.batch_size:,} steps …")
        state, metrics = jax.jit(trainer.train)(jax.random.key(args.seed), hp)
        returns = np.asarray(metrics["episode_return"])
        about = {"source": "trained here", "env_steps": config.num_updates * config.batch_size,
                 "return_last_updates": float(np.nanmean(returns[-max(1, len(returns) // 10):]))}
        return trainer, state.params, state.obs_stats, hp.gamma, about
    run = load_run(args.checkpoint, warn=console.print)  # read-only
    if run.config.env != args.env:
        raise ValueError(f"`env` {args.env!r} differs from the checkpoint's env {run.config.env!r}")
    first = jax.tree.map(lambda x: x[0], run.state)
    about = {"source": str(args.checkpoint), "update": run.update, "env_steps": run.env_steps}
    return make_trainer(run.config), first.params, first.obs_stats, run.hparams.gamma, about


def variance_command(args: VarianceArgs) -> dict[str, Any]:
    """Measure, write the outputs and return the summary."""
    args = args.check()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True, quiet=args.quiet)
    if args.objectives:
        return _objectives_command(args, console)
    key = jax.random.key(args.seed + 1)
    start = time.perf_counter()
    with console.status("sampling gradient estimates (one compile per critic) …"):
        if args.sequence is not None:
            rows, info = _sequence_rows(args)
            about = {"sequence": args.sequence, "objective": info["objective"]}
        elif args.env is None:
            mdp, logits = _mdp(args)
            rows, info = variance.mdp_report(
                key, mdp, logits, estimators=args.estimators, batch_sizes=args.batch_sizes,
                critics=args.critics, num_batches=args.num_batches, horizon=args.horizon,
                confidence=args.confidence, devices=args.devices)
            about = {"mdp": args.mdp, "states": args.states, "gamma": args.gamma,
                     "objective": float(exact.objective(mdp, logits))}
        else:
            trainer, params, obs_stats, gamma, about = _trained(args, console)
            rows, info = [], {}
            for critic in args.critics:
                r, info = variance.train_state_report(
                    key, trainer, params, gamma=gamma, obs_stats=obs_stats, critic=critic,
                    estimators=args.estimators, batch_sizes=args.batch_sizes,
                    num_batches=args.num_batches, reference_factor=args.reference_factor,
                    horizon=args.horizon, confidence=args.confidence, devices=args.devices)
                rows += r
            info.pop("reference", None)
    seconds = time.perf_counter() - start
    write_csv(out / "variance.csv", rows)
    summary = {"args": dataclasses.asdict(args), "policy": about, **info, "seconds": seconds,
               "devices": seed_groups(args.num_batches, args.devices or jax.local_device_count()),
               **platform_info()}
    if args.sequence is None:
        summary.update(**best_lambda(rows), **weighting_bias(rows))
        plot_variance(out / "variance.png", rows, title=args.env or f"{args.mdp} MDP, S={args.states}")
    else:
        summary["biased"] = [f"{r['estimator']}/{r['reduction']}" for r in rows
                             if r["batch_size"] == max(args.batch_sizes) and r["rel_bias_lo"] > 0]
        plot_sequence_variance(out / "variance.png", rows, title=f"{args.sequence}: exact gradient")
    write_json(out / "summary.json", summary)
    if not args.quiet:
        table = variance_table(rows) if args.sequence is None else sequence_table(rows)
        Console(width=max(Console().width, 110)).print(table)
    console.print(f"wrote variance.csv, summary.json, variance.png to {out}/ ({seconds:.1f} s)")
    return summary


# ----------------------------------------------------------------- outputs

_COLUMNS = ("critic", "estimator", "reduction", "prompts", "group_size", "batch_size", "env_steps", "bias", "bias_lo", "bias_hi", "rel_bias",
            "rel_bias_lo", "rel_bias_hi",
            "bias_sq", "bias_sq_se", "variance", "mse", "cosine", "pairwise_cosine", "p_ascent",
            "snr", "num_estimates", "confidence", "unbiased_in_theory", "rel_perp_bias",
            "rel_perp_bias_lo", "rel_perp_bias_hi", "mean_scale")


def write_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    """One row per critic, estimator and batch size (the columns of :func:`gradient_statistics`)."""
    with replace_atomically(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _lambda(label: str) -> float | None:
    """λ of an estimator on the GAE axis (its row's ``gae_lambda``: td = 0, mc = 1; a spec's
    λ for a row whose ``param`` is λ, e.g. gae), or ``None``."""
    est = variance.parse_estimator(label)
    if not est.weighted:
        return None
    row = ESTIMATORS[est.name]
    return est.param if row.param == "gae_lambda" else row.gae_lambda


def best_lambda(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per critic, the λ (GAE, with td = 0 and mc = 1) of least MSE at the largest N."""
    n_max = max(r["batch_size"] for r in rows)
    best: dict[str, Any] = {}
    for r in rows:
        lam = _lambda(r["estimator"])
        if r["batch_size"] != n_max or lam is None:
            continue
        if r["critic"] not in best or r["mse"] < best[r["critic"]]["mse"]:
            best[r["critic"]] = {"lambda": lam, "mse": r["mse"], "batch_size": n_max}
    return {"best_lambda": best}


def weighting_bias(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every unweighted estimator's relative bias next to its γ^t-weighted twin (largest N)."""
    n_max = max(r["batch_size"] for r in rows)
    at = {(r["critic"], r["estimator"]): r for r in rows if r["batch_size"] == n_max}
    out = []
    for (critic, label), r in at.items():
        est = variance.parse_estimator(label)
        if not est.weighted:
            twin = at.get((critic, est._replace(weighted=True).label))
            out.append({"critic": critic, "estimator": label, "rel_bias": r["rel_bias"],
                        "rel_bias_interval": [r["rel_bias_lo"], r["rel_bias_hi"]],
                        "cosine": r["cosine"],
                        "weighted_rel_bias": twin["rel_bias"] if twin else None})
    return {"gamma_weighting": out}


def variance_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of every estimator at the largest N."""
    n_max = max(r["batch_size"] for r in rows)
    table = Table(title=f"policy-gradient estimators, N = {n_max} trajectories", box=box.SIMPLE_HEAD)
    for name in ("critic", "estimator", "‖b‖/‖g‖", f"{_pct(rows)} CI", "tr Cov", "MSE", "cos", "P(ascent)", "SNR"):
        table.add_column(name, justify="left" if name in ("critic", "estimator") else "right", no_wrap=True)
    for r in rows:
        if r["batch_size"] != n_max:
            continue
        table.add_row(r["critic"], r["estimator"], f"{r['rel_bias']:.3f}",
                      f"{r['rel_bias_lo']:.3f}–{r['rel_bias_hi']:.3f}",
                      f"{r['variance']:.4g}", f"{r['mse']:.4g}", f"{r['cosine']:.3f}",
                      f"{r['p_ascent']:.2f}", f"{r['snr']:.3g}")
    return table


def _pct(rows: list[dict[str, Any]]) -> str:
    return f"{100 * rows[0].get('confidence', 0.95):g}%"


def plot_variance(path: pathlib.Path | None, rows: list[dict[str, Any]], title: str) -> Figure:
    """2×2 panels: bias² (with its interval), variance and MSE vs λ — one line per critic,
    at the largest N, where td is λ = 0 and mc λ = 1 — and the mean cosine to the true
    gradient vs N, one line per estimator (first critic). Saved to ``path`` unless ``None``;
    returns the (pyplot-free) figure."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(11.0, 8.0), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    n_max = max(r["batch_size"] for r in rows)
    critics = list(dict.fromkeys(r["critic"] for r in rows))
    titles = {"bias_sq": "bias² ‖E ĝ − g‖²", "variance": "variance tr Cov ĝ", "mse": "MSE E‖ĝ − g‖²"}
    for name, ax in zip(titles, axes[:3]):
        for critic in critics:
            pts = sorted((_lambda(r["estimator"]), r) for r in rows
                         if r["critic"] == critic and r["batch_size"] == n_max
                         and _lambda(r["estimator"]) is not None)
            if not pts:
                continue
            lam = [p[0] for p in pts]
            if name == "bias_sq":  # the interval's ends, squared; the point clipped at 0
                y = np.array([max(p[1]["bias_sq"], 0.0) for p in pts])
                lo = y - np.array([p[1]["bias_lo"] ** 2 for p in pts])
                hi = np.array([p[1]["bias_hi"] ** 2 for p in pts]) - y
                ax.errorbar(lam, y, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], marker="o",
                            capsize=3, label=critic)
            else:
                ax.plot(lam, [p[1][name] for p in pts], marker="o", label=critic)
        ax.set_xlabel("λ  (td = 0, mc = 1)")
        ax.set_title(f"{titles[name]}  (N = {n_max})")
        if name != "bias_sq":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    ax = axes[3]
    for label in dict.fromkeys(r["estimator"] for r in rows):
        pts = sorted((r["batch_size"], r["cosine"]) for r in rows
                     if r["critic"] == critics[0] and r["estimator"] == label)
        ax.plot(*zip(*pts), marker="o", label=label)
    # Ticks at the batch sizes measured, as plain numbers, slanted: left to itself, a log axis
    # under two decades wide labels its minor ticks (2×10¹, 3×10¹, ...) on top of each other.
    sizes = sorted({r["batch_size"] for r in rows})
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sizes, [str(n) for n in sizes], rotation=30, ha="right")
    ax.set_xlabel("batch size N (trajectories)")
    ax.set_title(f"mean cos(ĝ, g)  (critic {critics[0]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.suptitle(title)
    if path is not None:
        with replace_atomically(path) as tmp:
            fig.savefig(tmp, dpi=100)
    return fig


# ----------------------------------------------------------------- sequences


def _sequence_policy(args: VarianceArgs) -> tuple[SequenceTask, Any, Any, jax.Array, jax.Array]:
    """``(env, net, params, prompts, key)``: a random 1-layer transformer whose policy head is
    scaled by ``30 · policy_scale`` (its init is nearly uniform) and the fixed prompts."""
    env = args.sequence_env()
    net = make_transformer(env.vocab_size, env.obs_length, env.num_actions, pad=env.tokens.pad,
                           layers=1, width=8, heads=2, value_head=False)
    key_net, key_prompts, key = jax.random.split(jax.random.key(args.seed), 3)
    params = jax.jit(net.init)(key_net, jnp.zeros(env.obs_length))
    head = lambda path: "policy_head" in jax.tree_util.keystr(path)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 30.0 * args.policy_scale if head(path) else x, params)
    return env, net, params, sequence_exact.make_prompts(key_prompts, env, args.prompts), key


def _sequence_rows(args: VarianceArgs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`jaxadv.science.sequence_exact.sequence_report` for :func:`_sequence_policy`."""
    env, net, params, prompts, key = _sequence_policy(args)
    shapes = [(n // args.group_size, args.group_size) for n in args.batch_sizes]
    rows, info = sequence_exact.sequence_report(
        key, params, net.apply_all, env, prompts, estimators=args.sequence_estimators,
        reductions=args.reductions, shapes=shapes, num_batches=args.num_batches,
        confidence=args.confidence, devices=args.devices)
    for r in rows:
        r["critic"] = "none" if ESTIMATORS[r["estimator"]].critic == "none" else "exact"
    return rows, info


def sequence_table(rows: list[dict[str, Any]]) -> Table:
    """Every estimator × reduction at the largest N."""
    n_max = max(r["batch_size"] for r in rows)
    k = rows[0]["group_size"]
    table = Table(title=f"sequence estimators vs the exact gradient, N = {n_max} ({n_max // k} prompts × {k})",
                  box=box.SIMPLE_HEAD)
    for name in ("estimator", "reduction", "‖b‖/‖g‖", f"{_pct(rows)} CI", "⊥ bias", "tr Cov", "MSE", "cos"):
        table.add_column(name, justify="left" if name in ("estimator", "reduction") else "right", no_wrap=True)
    for r in rows:
        if r["batch_size"] == n_max:
            table.add_row(r["estimator"], r["reduction"], f"{r['rel_bias']:.3f}",
                          f"{r['rel_bias_lo']:.3f}–{r['rel_bias_hi']:.3f}", f"{r['rel_perp_bias']:.3f}",
                          f"{r['variance']:.4g}", f"{r['mse']:.4g}", f"{r['cosine']:.3f}")
    return table


def plot_sequence_variance(path: pathlib.Path, rows: list[dict[str, Any]], title: str) -> None:
    """Relative bias (with its interval) and MSE of each estimator, one marker per reduction,
    at the largest N."""
    from matplotlib.figure import Figure

    n_max = max(r["batch_size"] for r in rows)
    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    axes = fig.subplots(1, 2)
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    reductions = list(dict.fromkeys(r["reduction"] for r in rows))
    for j, red in enumerate(reductions):
        pts = [next(r for r in rows if (r["estimator"], r["reduction"], r["batch_size"]) == (e, red, n_max))
               for e in names]
        x = np.arange(len(names)) + (j - (len(reductions) - 1) / 2) * 0.2
        y = np.array([r["rel_bias"] for r in pts])
        err = [y - [r["rel_bias_lo"] for r in pts], np.array([r["rel_bias_hi"] for r in pts]) - y]
        axes[0].errorbar(x, y, yerr=np.maximum(err, 0), fmt="o", capsize=3, label=red)
        axes[1].plot(x, [r["mse"] for r in pts], "o", label=red)
    for ax, label in zip(axes, ("relative bias ‖E ĝ − g‖/‖g‖", "MSE E‖ĝ − g‖²")):
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_title(f"{label}  (N = {n_max})")
        ax.grid(alpha=0.3)
        ax.legend(title="reduction", fontsize="small")
    axes[1].set_yscale("log")
    fig.suptitle(title)
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, dpi=100)


# ----------------------------------------------------------------- objectives, on and off policy


def _objectives_command(args: VarianceArgs, console: Console) -> dict[str, Any]:
    """``--sequence --objectives``: :func:`jaxadv.science.objective_exact.objective_report` on-policy,
    with stale samples, with tempered samples and with two sampler mismatches (logits in
    bfloat16, a temperature near 1); write ``objectives.csv``, ``summary.json`` and
    ``objectives.png``; print the table."""
    env, net, behaviour, prompts, key = _sequence_policy(args)
    start = time.perf_counter()
    n = max(args.batch_sizes)
    settings = [("on-policy", behaviour, 1.0, "float32"),
                (f"stale: {args.stale_steps} steps", None, 1.0, "float32"),
                (f"behaviour at temperature {args.behaviour_temperature:g}", behaviour,
                 args.behaviour_temperature, "float32"),
                ("sampler logits in bfloat16", behaviour, 1.0, "bfloat16"),
                (f"sampler at temperature {args.sampler_temperature:g}", behaviour,
                 args.sampler_temperature, "float32")]
    rows = []
    with console.status("exact and sampled gradients of each objective …"):
        stale = jax.jit(lambda p: ascend(p, net.apply_all, env, prompts, steps=args.stale_steps,
                                         step_size=args.stale_step_size))(behaviour)
        for name, theta, temperature, precision in settings:
            trained = stale if theta is None else theta
            rows += objective_report(
                key, trained, net.apply_all, env, prompts,
                [Behaviour(name, behaviour, net.apply_all, temperature, precision)],
                objectives=args.objectives, group_size=args.group_size,
                num_prompts=n // args.group_size, num_batches=args.num_batches,
                confidence=args.confidence, devices=args.devices)
    seconds = time.perf_counter() - start
    out = args.out
    columns = ("setting", "objective", "token_kl", "clip_fraction", "masked_fraction", "cosine_exact",
               "rel_perp_exact", "scale_exact", "batch_size", "rel_bias", "rel_bias_lo",
               "rel_bias_hi", "variance", "mse", "cosine", "snr")
    with replace_atomically(out / "objectives.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = {"args": dataclasses.asdict(args), "seconds": seconds, "rows": rows,
               **platform_info()}
    write_json(out / "summary.json", summary)
    plot_objectives(out / "objectives.png", rows, title=f"{args.sequence}: objectives vs the exact gradient")
    if not args.quiet:
        Console(width=max(Console().width, 132)).print(objective_table(rows))
    console.print(f"wrote objectives.csv, summary.json, objectives.png to {out}/ ({seconds:.1f} s)")
    return summary


def objective_table(rows: list[dict[str, Any]]) -> Table:
    """Each setting × objective: how far the behaviour is, the exact direction's agreement
    with ∇J and the sampled estimates' bias and variance."""
    n = rows[0]["batch_size"]
    table = Table(title=f"objectives vs the exact gradient at the trained policy (sampled: N = {n})",
                  box=box.SIMPLE_HEAD)
    for name in ("setting", "objective", "KL/token", "clipped", "masked", "cos(g, ∇J)",
                 "‖g⊥‖/g∥", "‖b‖/‖∇J‖", "tr Cov", "cos ĝ"):
        table.add_column(name, justify="left" if name in ("setting", "objective") else "right",
                         no_wrap=True)
    for r in rows:
        table.add_row(r["setting"], r["objective"], f"{r['token_kl']:.3g}", f"{r['clip_fraction']:.2f}",
                      f"{r.get('masked_fraction', 0.0):.2f}", f"{r['cosine_exact']:.3f}", f"{r['rel_perp_exact']:.3f}",
                      f"{r.get('rel_bias', float('nan')):.3f}", f"{r.get('variance', float('nan')):.3g}",
                      f"{r.get('cosine', float('nan')):.3f}")
    return table


def plot_objectives(path: pathlib.Path, rows: list[dict[str, Any]], title: str) -> None:
    """The exact cosine of each objective's expected gradient with ∇J, and its sampled
    estimates' relative variance ``tr Cov / ‖∇J‖²`` after scaling, one group per setting."""
    from matplotlib.figure import Figure

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    names = list(dict.fromkeys(r["objective"] for r in rows))
    fig = Figure(figsize=(max(11.0, 2.6 * len(settings)), 4.0), layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        pts = [next(r for r in rows if (r["setting"], r["objective"]) == (s, name)) for s in settings]
        x = np.arange(len(settings)) + (j - (len(names) - 1) / 2) * width
        axes[0].bar(x, [r["cosine_exact"] for r in pts], width, label=name)
        axes[1].bar(x, [r.get("mse", np.nan) for r in pts], width, label=name)
    axes[0].set_ylabel("cos(E ĝ, ∇J), exact")
    axes[1].set_ylabel("MSE of ĝ/scale against ∇J")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xticks(range(len(settings)), settings, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, dpi=100)
