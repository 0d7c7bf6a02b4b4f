"""``jaxadv sequence``: language-model-style RL on a token-by-token task, through the one trainer.

``jaxadv sequence --task reverse --estimator grpo --group-size 8 --prompts-per-update 64
--out runs/seq`` builds a :class:`~jaxadv.engine.train.TrainConfig` for the ``Sequence-v0``
environment (:mod:`jaxadv.envs.sequence`) with a causal transformer policy
(:mod:`jaxadv.nets.transformer`), ``episodic=True`` and groups of ``--group-size`` samples per
prompt, and runs it with ``jaxadv train``'s driver — the same fused update, progress bar,
checkpoints, ``config.json``, ``metrics.csv`` (with ``exact_match``, ``response_length``
and, with a KL penalty, ``kl_ref``) and ``summary.json`` — then adds ``reward.png``
(mean reward and exact-match rate vs samples) and prints sample generations of the
initial (after the optional supervised warm start) and the final policy.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from rich.console import Console

from jaxadv.cli.options import table_help
from jaxadv.cli.outdir import OutputLock, check_fresh, replace_atomically
from jaxadv.cli.report import jsonable, write_json
from jaxadv.cli.runs import (
    TrainArgs,
    _stored_args,
    drive_logged,
    prepare_out,
    write_run_outputs,
)
from jaxadv.cli.tracking import WandbSettings, check_loggers
from jaxadv.engine.algorithms import ALGORITHMS
from jaxadv.engine.driver import RunResult
from jaxadv.engine.estimators import ESTIMATORS
from jaxadv.engine.rollout import rollout
from jaxadv.engine.train import HPARAM_SPECS, KL_MODES, HParams, TrainConfig, make_trainer
from jaxadv.envs.sequence import SequenceTask
from jaxadv.envs.token import decode_tokens
from jaxadv.losses import REDUCTIONS
from jaxadv.validate import check_seed, field_changes, positive_int, refuse_changes

__all__ = ["FLAG_ALIASES", "OBJECTIVE_PRESETS", "RESUME_MAY_CHANGE", "SEQUENCE_HPARAMS", "SequenceArgs",
           "generate", "plot_sequence", "sequence_command", "sequence_resume_args",
           "stored_sequence_args"]

OBJECTIVE_PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {"algo": "ppo", "estimator": "grpo"},
    "dapo": {"algo": "dapo", "estimator": "grpo", "clip_eps": 0.2, "clip_eps_high": 0.28,
             "dynamic_sampling": True},
    "gspo": {"algo": "gspo", "estimator": "grpo", "clip_eps": 3e-4, "clip_eps_high": 4e-4},
    "cispo": {"algo": "cispo", "estimator": "grpo", "clip_eps": 1.0, "clip_eps_high": 0.28},
    "vapo": {"algo": "dapo", "estimator": "vapo", "clip_eps": 0.2, "clip_eps_high": 0.28,
             "critic_lambda": 1.0, "length_alpha": 2.0},
    "sapo": {"algo": "sapo", "estimator": "grpo"},
    "gmpo": {"algo": "gmpo", "estimator": "grpo", "clip_eps": 0.4, "clip_eps_high": 0.4},
    "icepop": {"algo": "icepop", "estimator": "grpo", "clip_eps": 0.2, "clip_eps_high": 0.28},
}
"""``--objective`` presets: the settings each one gives where its flag is not set."""

def __getattr__(name: str) -> Any:
    """``OBJECTIVES``, the presets' name of 0.3.0 (:data:`OBJECTIVE_PRESETS`; the exact
    objectives are :data:`jaxadv.science.objective_exact.OBJECTIVES`), with a
    ``DeprecationWarning``."""
    if name == "OBJECTIVES":
        import warnings

        warnings.warn("jaxadv.cli.sequence.OBJECTIVES is deprecated: use OBJECTIVE_PRESETS",
                      DeprecationWarning, stacklevel=2)
        return OBJECTIVE_PRESETS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _estimators() -> dict[str, Any]:
    """The estimators a transformer policy takes: every row but a Q critic's."""
    return {name: row for name, row in ESTIMATORS.items() if row.critic != "q"}


def _several_passes() -> str:
    """The algorithms of several passes over a batch, which take --update-epochs."""
    return ", ".join(name for name, row in ALGORITHMS.items() if row.update_epochs > 1)


_DEFAULTS: dict[str, Any] = {"algo": "ppo", "estimator": "grpo", "clip_eps": 0.2, "clip_eps_high": 0.28,
                             "dynamic_sampling": False, "critic_lambda": 1.0, "length_alpha": 0.0}
"""The settings without ``--objective`` (and without their flag)."""

FLAG_ALIASES: dict[str, str] = {"gae_lambda": "lambda_policy", "critic_lambda": "lambda_critic",
                                "clip_eps": "clip_low", "clip_eps_high": "clip_high"}
"""The one place of this command's second names: ``HParams`` field -> the friendlier name
that ``jaxadv sequence`` also takes as a flag (``--lambda-policy`` = ``--gae-lambda``,
``--lambda-critic`` = ``--critic-lambda``, ``--clip-low`` = ``--clip-eps``, ``--clip-high``
= ``--clip-eps-high``; the fields themselves and ``sequence.json`` use the HParams names;
a ``sequence.json`` written with the friendlier names still resumes)."""


SEQUENCE_HPARAMS: dict[str, Any] = {"lr": 1e-3, "gamma": 1.0, "gae_lambda": 1.0, "ent_coef": 0.0,
                                    "critic_lambda": None, "length_alpha": None, "clip_eps": None,
                                    "clip_eps_high": None}
"""This command's own defaults of :class:`~jaxadv.engine.train.HParams` fields (every other
field keeps HParams' default); ``None``: the ``--objective`` preset's value, else
:data:`_DEFAULTS`'s. Each field's flag, range and doc are HParams' own
(:data:`~jaxadv.engine.train.HPARAM_SPECS`)."""


def _hparam_flag(name: str) -> tuple[str, Any, Any]:
    """The ``(name, type, field)`` of HParams field ``name`` as a flag of this command: its
    doc and range from HPARAM_SPECS, this command's default, its :data:`FLAG_ALIASES` name."""
    spec = HPARAM_SPECS[name]
    default = SEQUENCE_HPARAMS.get(name, getattr(HParams(), name))
    help_text = f"{spec.doc.rstrip('.')} ({spec.allowed})"
    if default is None:
        help_text += f"; default: the --objective preset's, else {_DEFAULTS[name]}"
    help_text += "."
    aliases = ("--" + FLAG_ALIASES[name].replace("_", "-"),) if name in FLAG_ALIASES else None
    kind = float if default is not None else float | None
    return name, Annotated[kind, tyro.conf.arg(help=help_text, aliases=aliases)], dataclasses.field(
        default=default)


_SequenceHParams = dataclasses.make_dataclass(
    "_SequenceHParams", [_hparam_flag(name) for name in HPARAM_SPECS], frozen=True,
    namespace={"__module__": __name__, "__doc__": "One flag per HParams field, generated from "
                                                  "its HPARAM_SPECS entry."})


@dataclasses.dataclass(frozen=True)
class SequenceArgs(_SequenceHParams):  # type: ignore[misc,valid-type]
    """Train a transformer policy on a token-by-token task with sequence-level rewards;
    write config.json, metrics.csv, summary.json and reward.png under --out."""

    task: Literal["reverse", "sort", "add"] = "reverse"
    """what the response must be: the prompt reversed, sorted, or the sum of its two numbers."""
    num_digits: int = 10
    """digit vocabulary D (and the base of add); the policy writes a digit or EOS."""
    prompt_length: int = 5
    """digits per prompt (add: two numbers of prompt_length / 2 digits)."""
    min_prompt_length: int | None = None
    """draw each prompt's length from [min_prompt_length, prompt_length] (reverse, sort)."""
    response_length: int | None = None
    """most digits a response may have; default: the target's length + 1."""
    reward: Literal["exact", "partial"] = "partial"
    """exact: 1 for the exact answer, else 0; partial: the fraction of correct positions."""
    length_penalty: float = 0.0
    """subtract length_penalty x (response length / response_length)."""
    objective: Literal[tuple(OBJECTIVE_PRESETS)] | None = None  # type: ignore[valid-type]
    """a preset of --algo, --estimator and their settings (a flag given explicitly still wins): grpo (ppo's clipped ratio, grpo); dapo (clip-higher 0.2/0.28, dynamic sampling, token-mean loss, grpo); gspo (sequence-level ratio clipped to 3e-4/4e-4, grpo); cispo (clipped stop-gradient weight, no lower bound, upper 0.28, grpo); vapo (clip-higher, decoupled GAE: critic λ 1, length-adaptive policy λ = 1 − 1/(α·|y|) with α = 2, a trace twice as long as the response — VAPO's α = 0.05 is for responses of hundreds of tokens and gives λ = 0 on these — token-level value head); sapo (a sigmoid gate of the ratio, τ 1/1.05, grpo); gmpo (geometric mean of the token ratios, log-ratio clipped to [−0.4, 0.4], grpo); icepop (clip-higher 0.2/0.28, tokens whose sampler mismatch leaves [1/α, α] dropped, grpo)."""
    # Strings under ``from __future__ import annotations``, evaluated when tyro reads the class:
    # the choices and help of the tables as they are then (rows added at run time count).
    estimator: Annotated[Literal[tuple(_estimators())] | None, tyro.conf.arg(  # type: ignore[valid-type]
        help=table_help(_estimators(), "advantage estimator (default: the objective's, else "
                        "grpo; the token-level ones learn a value head)"))] = None
    """the advantage estimator (the choices are listed from the estimator table)."""
    algo: Annotated[Literal[tuple(ALGORITHMS)] | None, tyro.conf.arg(  # type: ignore[valid-type]
        help=table_help(ALGORITHMS, "the policy loss (default: the objective's, else ppo)"))] = None
    """the policy loss (the choices are listed from the algorithm table)."""
    group_size: int = 8
    """samples per prompt (K)."""
    prompts_per_update: int = 64
    """prompts per update (G); an update generates G x K responses."""
    total_samples: int = 40_960
    """responses generated in the whole run."""
    update_epochs: Annotated[int, tyro.conf.arg(help=(
        f"{_several_passes()}: passes over each batch of responses (the others take one)."))] = 2
    """passes over each batch of responses (the algorithms of several passes)."""
    num_minibatches: Annotated[int, tyro.conf.arg(help=(
        f"{_several_passes()}: minibatches per pass (of whole responses; the others take "
        "one)."))] = 4
    """minibatches per pass (of whole responses; the algorithms of several passes)."""
    loss_reduction: Literal[REDUCTIONS] = "token"  # type: ignore[valid-type]
    """average the per-token losses over all tokens, per response then over responses, or by a constant."""
    layers: int = 2
    """transformer blocks."""
    width: int = 64
    """transformer width."""
    heads: int = 4
    """attention heads."""
    temperature: float = 1.0
    """sampling temperature: the policy is softmax(logits / temperature), in rollouts and in the loss."""
    dynamic_sampling: bool | None = None
    """mask out the groups whose rewards are all equal (DAPO's dynamic sampling, in a fixed-shape batch; metrics.csv: informative_groups); default: the objective's, else off."""
    behaviour_temperature: float | None = None
    """sample at this temperature instead of --temperature (a sampler that differs from the trained policy) and correct with --correction (default: truncated importance sampling, advantages times min(π/π_b, --tis-cap))."""
    behaviour_precision: Literal["float32", "bfloat16"] = "float32"
    """bfloat16: sample from the policy's logits rounded to bfloat16 (a lower-precision inference engine; then divided by the temperature), and correct with --correction."""
    correction: tuple[Literal["none", "tis", "token_mis", "seq_tis", "seq_mis"], ...] | None = None
    """with a behaviour policy: the importance weights of π/π_b on the advantages, at most one token-level and one sequence-level: tis (min(r, --tis-cap) per token), token_mis (r per token inside --mis-range, else 0), seq_tis (the response's ρ truncated at --seq-cap), seq_mis (ρ inside --seq-range, else the response is dropped), none; default: tis, none for icepop."""
    tis_cap: float = 2.0
    """correction tis: the truncation of the token importance weights."""
    mis_range: tuple[float, float] = (0.5, 2.0)
    """correction token_mis: the band [lo, hi] of the token ratios kept."""
    seq_cap: float = 2.0
    """correction seq_tis: the truncation of the response's ratio."""
    seq_range: tuple[float, float] = (0.5, 2.0)
    """correction seq_mis: the band [lo, hi] of the responses' ratios kept."""
    seq_aggregate: Literal["product", "geometric"] = "product"
    """seq_tis, seq_mis: the response's ratio is the product of its token ratios, or their geometric mean."""
    value_warmup: int = 0
    """gae, vapo: VAPO's value pre-training — the first value_warmup updates train the value head alone."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment: a response within this many digits of --response-length loses up to 1 (linearly); 0: none."""
    telemetry: bool = True
    """gradient-quality metrics in metrics.csv and telemetry.png (as jaxadv train --telemetry): the minibatch gradients' SNR and cosine (with several minibatches), the advantages' mean and std, the share of all-zero-advantage groups."""
    kl: Literal[KL_MODES] = "none"  # type: ignore[valid-type]
    """KL penalty against the initial policy: none, in the loss, or in the reward."""
    warm_start_steps: int = 0
    """supervised warm start first: Adam steps of teacher-forced cross-entropy on correct responses (0: none); the warm-started policy is the KL reference."""
    warm_start_prompts: int = 256
    """the warm start's pool of prompts (a fraction of all of them)."""
    seed: int = 0
    """base seed."""
    seeds: int = 1
    """independent runs, vmapped."""
    samples_shown: int = 4
    """sample generations printed before and after training."""
    out: pathlib.Path = pathlib.Path("runs/sequence")
    """output directory (created); one that holds a run is refused unless --overwrite."""
    overwrite: bool = False
    """start afresh in an --out that holds a run (finished or not, of any kind): its files are deleted first."""
    resume: pathlib.Path | None = None
    """continue the sequence run in this directory (an earlier --out) from its latest good checkpoint, with the settings in its sequence.json; only --quiet, --samples-shown, --chunk-updates, --checkpoint-every, --log and --wandb.* may change."""
    chunk_updates: int | None = None
    """updates per compiled call; default: 16 to 64 calls per run (as jaxadv train)."""
    checkpoint_every: int | None = None
    """updates between checkpoints, rounded up to whole calls; one is also written at the end and on Ctrl-C/SIGTERM; default: one per minute of training."""
    quiet: bool = False
    """no progress bar, table or samples."""
    log: tuple[Literal["tensorboard", "wandb"], ...] = ()
    """also log the metrics, config, summary and returns plot to TensorBoard (--out/tb) and/or Weights & Biases (as jaxadv train --log)."""
    wandb: WandbSettings = WandbSettings()

    def env_kwargs(self) -> dict[str, Any]:
        return {"task": self.task, "num_digits": self.num_digits, "prompt_length": self.prompt_length,
                "min_prompt_length": self.min_prompt_length, "response_length": self.response_length,
                "reward": self.reward, "length_penalty": self.length_penalty,
                "overlong_buffer": self.overlong_buffer}

    def setting(self, name: str) -> Any:
        """A setting: the flag if given, else the ``--objective`` preset's, else the default."""
        value = getattr(self, name)
        if value is not None:
            return value
        return OBJECTIVE_PRESETS.get(self.objective or "", {}).get(name, _DEFAULTS[name])

    def check(self) -> SequenceArgs:
        """Refuse a bad value with a ``ValueError`` naming the field; compiles nothing. With
        ``resume``: only the settings in :data:`RESUME_MAY_CHANGE` may differ from the run's
        ``sequence.json``."""
        if self.resume is not None:
            refuse_changes(field_changes(stored_sequence_args(self.resume), self, names=[
                f.name for f in dataclasses.fields(self) if f.name not in RESUME_MAY_CHANGE]),
                "run", self.resume / "sequence.json")
            OutputLock(self.resume).check()
        else:
            check_fresh(self.out, "sequence", overwrite=self.overwrite)
        check_seed(self.seed)
        check_loggers(self.log)
        for name in ("group_size", "prompts_per_update", "total_samples", "samples_shown"):
            positive_int(name, getattr(self, name), minimum=0 if name == "samples_shown" else 1)
        self.env()  # the task's own checks, naming their argument
        _ = (self.config, self.hparams)  # TrainConfig's and HParams' checks
        return self

    def env(self) -> SequenceTask:
        return SequenceTask(**self.env_kwargs())

    @property
    def config(self) -> TrainConfig:
        env = self.env()
        num_envs = self.prompts_per_update * self.group_size
        if self.total_samples < num_envs:
            raise ValueError(f"`total_samples` = {self.total_samples} is less than one update's "
                             f"prompts_per_update x group_size = {num_envs}")
        updates = self.total_samples // num_envs
        algo, estimator = self.setting("algo"), self.setting("estimator")
        epochs = ALGORITHMS[algo].update_epochs > 1  # a one-pass row takes none of the flags
        return TrainConfig(
            env="Sequence-v0", env_kwargs=tuple(self.env_kwargs().items()), algo=algo, estimator=estimator,
            num_envs=num_envs, num_steps=env.response_length,
            total_timesteps=updates * num_envs * env.response_length,
            update_epochs=self.update_epochs if epochs else 1,
            num_minibatches=self.num_minibatches if epochs else 1,
            network="transformer", layers=self.layers, width=self.width, heads=self.heads,
            episodic=True, group_size=self.group_size, loss_reduction=self.loss_reduction,
            kl=self.kl, anneal_lr=False, warm_start_steps=self.warm_start_steps,
            temperature=self.temperature,
            warm_start_prompts=self.warm_start_prompts,
            normalize_advantages=not ESTIMATORS[estimator].sequence_level, clip_value_loss=False,
            dynamic_sampling=self.setting("dynamic_sampling"), value_warmup=self.value_warmup,
            behaviour_temperature=self.behaviour_temperature, tis_cap=self.tis_cap,
            behaviour_precision=self.behaviour_precision, correction=self.correction,
            mis_range=self.mis_range, seq_cap=self.seq_cap, seq_range=self.seq_range,
            seq_aggregate=self.seq_aggregate, telemetry=self.telemetry,
        )

    @property
    def hparams(self) -> HParams:
        """Every field named as an :class:`~jaxadv.engine.train.HParams` field, by
        :meth:`setting` (the others keep HParams' defaults), validated."""
        flags = {f.name for f in dataclasses.fields(self)}
        return HParams(**{name: self.setting(name) for name in HPARAM_SPECS if name in flags}).validate()


RESUME_MAY_CHANGE = ("quiet", "samples_shown", "chunk_updates", "checkpoint_every", "log", "wandb",
                     "resume", "out")
"""What ``jaxadv sequence --resume`` may change; ``out`` is the resumed directory."""


def stored_sequence_args(run_dir: pathlib.Path) -> SequenceArgs:
    """The :class:`SequenceArgs` that ``run_dir/sequence.json`` records (``out``, ``resume``: run_dir)."""
    path = pathlib.Path(run_dir) / "sequence.json"
    try:
        data = json.loads(path.read_text())
        names = {alias: field for field, alias in FLAG_ALIASES.items()}  # an older record's
        data = {names.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        # a run recorded before the telemetry field ran without it: its checkpoints' metrics
        # have no telemetry to continue
        data.setdefault("telemetry", False)
        data.update(out=pathlib.Path(run_dir), resume=pathlib.Path(run_dir), overwrite=False,
                    log=tuple(data["log"]), wandb=WandbSettings(**data["wandb"]))
        return SequenceArgs(**data)
    except FileNotFoundError:
        raise ValueError(f"`resume`: {path} not found; --resume takes the --out directory of "
                         "an earlier `jaxadv sequence`") from None
    except OSError as exc:
        raise ValueError(f"`resume`: {path} cannot be read ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`resume`: {path} does not describe a sequence run ({exc})") from None


def sequence_resume_args(run_dir: pathlib.Path, argv: Sequence[str] = ()) -> SequenceArgs:
    """The :class:`SequenceArgs` to resume the run in ``run_dir``: its ``sequence.json`` with
    the ``jaxadv sequence`` flags in ``argv`` parsed on top (checked by :meth:`SequenceArgs.check`)."""
    return tyro.cli(SequenceArgs, args=list(argv), default=stored_sequence_args(run_dir),
                    prog="jaxadv sequence")


def generate(trainer: Any, params: Any, key: jax.Array, num: int, *, greedy: bool = False) -> list[str]:
    """Decode ``num`` responses of the policy ``params`` to fresh prompts, e.g. ``'31415 → 51413<eos>'``."""
    env, env_params = trainer.env, trainer.env_params
    config = trainer.config

    @jax.jit
    def sample(params, key):  # params an argument: one program before and after training
        key_reset, key_roll = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, num), env_params)
        traj = rollout(key_roll, params, state, obs, None, None, apply_fn=trainer.network.apply,
                              policy=trainer.policy, env=env, env_params=env_params,
                              num_steps=config.num_steps, greedy=greedy, info_keys=("final_observation",)).traj
        first = jnp.argmax(traj.episode_done, axis=0)  # each env's first episode end
        return traj.extras["final_observation"][first, jnp.arange(num)]

    return [decode_tokens(env, row) for row in np.asarray(sample(params, key))]


def plot_sequence(path: pathlib.Path, samples: np.ndarray, reward: np.ndarray, exact: np.ndarray,
                  title: str) -> None:
    """Mean reward and exact-match rate vs responses generated; mean ± std over seeds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    for ax, values, label in zip(fig.subplots(1, 2), (reward, exact), ("mean reward", "exact-match rate")):
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        ax.plot(samples, mean)
        ax.fill_between(samples, mean - std, mean + std, alpha=0.25)
        ax.set_xlabel("responses generated")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, dpi=100)


def sequence_command(args: SequenceArgs) -> dict[str, Any]:
    """Show samples, train with :func:`~jaxadv.engine.driver.drive`, write ``reward.png`` and the
    outputs of ``jaxadv train`` (and ``sequence.json``, what ``--resume`` reads), show samples."""
    with OutputLock(args.out):
        return _sequence(args)


def _sequence(args: SequenceArgs) -> dict[str, Any]:
    args = args.check()
    config, hp = args.config, args.hparams
    console = Console(quiet=args.quiet or args.samples_shown == 0)
    trainer = make_trainer(config)
    key_show = jax.random.key(args.seed + 1)
    if args.samples_shown:
        params = jax.jit(trainer.init)(jax.random.split(jax.random.key(args.seed), args.seeds)[0], hp).params
        console.print("[bold]before RL[/bold] (seed 0, sampled):")
        for text in generate(trainer, params, key_show, args.samples_shown):
            console.print(f"  {text}")
    resume = args.resume
    # TrainArgs.config is a TrainOptions, the class tyro parses; any TrainConfig serves
    train_args = TrainArgs(config=config,  # type: ignore[arg-type]
                           hparams=hp, seed=args.seed, seeds=args.seeds, out=args.out,
                           chunk_updates=args.chunk_updates, quiet=args.quiet, log=args.log,
                           checkpoint_every=args.checkpoint_every,
                           wandb=args.wandb, overwrite=args.overwrite, resume=resume,
                           resume_command="jaxadv sequence --resume")
    if resume is not None:  # the run's own seed groups, as jaxadv train --resume keeps them
        train_args = dataclasses.replace(train_args, seed_groups=_stored_args(resume).seed_groups)
    train_args.check(kind="sequence")
    prepare_out(train_args)
    record = {k: v for k, v in jsonable(args).items() if k not in ("resume", "overwrite")}
    write_json(args.out / "sequence.json", record)

    def write(result: RunResult) -> None:
        history = result.history
        samples = np.arange(1, config.num_updates + 1) * config.num_envs
        exact = np.asarray(history["exact_match"], np.float64)
        plot_sequence(args.out / "reward.png", samples,
                      np.asarray(history["episode_return"], np.float64), exact,
                      f"{args.objective or args.setting('algo')} · {args.setting('estimator')} · "
                      f"{args.task} · {args.seeds} seed(s)")
        result.summary["final_exact_match"] = float(np.nanmean(exact[:, -max(1, samples.size // 10):]))
        result.summary["samples"] = int(samples[-1])
        write_run_outputs(result, args.out, quiet=args.quiet)

    result = drive_logged(train_args, write)
    summary = result.summary
    if args.samples_shown:
        final = jax.tree.map(lambda x: x[0], result.state.params)
        console.print("[bold]after RL[/bold] (seed 0, sampled):")
        for text in generate(trainer, final, key_show, args.samples_shown):
            console.print(f"  {text}")
    console.print(f"final exact-match rate {summary['final_exact_match']:.3f} after {summary['samples']:,} "
                  f"responses; wrote reward.png to {args.out}/")
    return summary
