"""``jaxadv eval DIR``: a trained run's policy on fresh episodes, and an animation of it.

``jaxadv eval runs/cartpole --episodes 100`` restores the latest good checkpoint of a
``jaxadv train`` (or ``jaxadv sequence``) run with its configuration
(:func:`jaxadv.engine.evaluate.load_run`, read-only), plays ``--episodes`` fresh episodes per seed
in one compiled program (:func:`jaxadv.engine.evaluate.evaluate`, ``vmap`` over the seeds), prints a
table and writes ``eval.json`` under ``--out`` (default ``DIR/eval``): per seed and over the
seeds, the mean, sample standard deviation, minimum, maximum and 95% confidence half-width
(``t₀.₉₇₅,ₙ₋₁ · sd / √n``) of the return, the length and the environment's own metrics,
with the checkpoint's update and env steps. ``--render policy.gif`` draws episodes of seed
0 with gymnax's visualiser (classic control, MinAtar, bsuite Catch, …; ``.mp4`` where
matplotlib finds ffmpeg); for ``Sequence-v0`` it writes the prompts, responses and rewards
as text. Nothing in ``DIR`` outside ``--out`` is written.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import sys
from typing import Annotated, Any, Literal, cast

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

from jaxadv.cli.outdir import OutputLock, check_fresh, find_run, remove_run, replace_atomically
from jaxadv.cli.report import write_json
from jaxadv.cli.sweep_args import sweep_resume_args
from jaxadv.engine.architectures import NETWORKS
from jaxadv.engine.checkpoint import SweepChunks
from jaxadv.engine.driver import RunStopped
from jaxadv.engine.evaluate import RunCheckpoint, episode_states, evaluate, load_run
from jaxadv.engine.metrics import platform_info
from jaxadv.engine.policies import load_policies, restore_policies
from jaxadv.engine.sweep import sweep_point
from jaxadv.engine.train import HParams, Setup, TrainConfig, make_setup
from jaxadv.envs import normalize_obs
from jaxadv.stats import t_quantile_975
from jaxadv.validate import check_positive, check_seed, positive_int

__all__ = ["EvalArgs", "check_render", "episode_stats", "eval_command", "load_sweep_point",
           "render_episodes"]


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    """Evaluate the latest good checkpoint of a `jaxadv train` or `jaxadv sequence` run (or
    the final policy of a sweep's --point) on fresh episodes; write eval.json under --out
    (default DIR/eval; nothing else in DIR is changed)."""

    run_dir: Annotated[pathlib.Path, tyro.conf.Positional]
    """the run's (or the sweep's) --out directory."""
    point: int | Literal["best"] | None = None
    """DIR is a jaxadv sweep's: evaluate this point's final policies, one per seed (the point column of sweep.csv); best: the sweep's best point, a halving search's pick (its seeds) or a PBT search's best member (its final hyperparameters)."""
    episodes: int = 100
    """fresh evaluation episodes per seed."""
    policy: Literal["greedy", "sample"] = "greedy"
    """act with the most likely action (the Gaussian's mean), or sample as in training."""
    seed: int = 0
    """PRNG seed of the evaluation episodes (resets and sampling)."""
    max_steps: int | None = None
    """steps an episode may take; default: the environment's time limit. An episode still running then is an error."""
    out: pathlib.Path | None = None
    """output directory for eval.json (created); default: DIR/eval (a sweep's point: DIR/eval/point<P>)."""
    render: pathlib.Path | None = None
    """draw --render-episodes episodes of seed 0 into this file: .gif (or .mp4 with ffmpeg) for the envs gymnax's visualiser draws; for Sequence-v0 a text file of prompts, responses and rewards; for Gridworld-v0 a picture (.png, .svg, .pdf) of the policy in every cell over its exact values."""
    render_episodes: int = 1
    """episodes drawn by --render, one after another."""
    frame_every: int | None = None
    """--render: draw every k-th step; default: as few as keep an episode within 200 frames."""
    overwrite: bool = False
    """replace an earlier evaluation (or another run) in --out instead of refusing."""
    quiet: bool = False
    """no table and no progress (warnings are still printed)."""

    def output_dir(self) -> pathlib.Path:
        """Where ``eval.json`` goes: ``--out``, else ``DIR/eval`` (a point's: ``DIR/eval/point<P>``)."""
        if self.out is not None:
            return self.out
        where = "" if self.point is None else "best" if self.point == "best" else f"point{self.point}"
        return self.run_dir / "eval" / where

    def check(self) -> EvalArgs:
        """Refuse a bad value with a ``ValueError`` naming the field; compiles nothing."""
        check_seed(self.seed)
        positive_int("episodes", self.episodes)
        positive_int("render_episodes", self.render_episodes)
        check_positive(self, "max_steps", "frame_every")
        if self.point not in (None, "best"):
            positive_int("point", self.point, minimum=0)
        if not self.run_dir.is_dir():
            raise ValueError(f"`run_dir` {str(self.run_dir)!r} is not a directory")
        check_fresh(self.output_dir(), "eval", overwrite=self.overwrite)
        return self


def episode_stats(values: np.ndarray) -> dict[str, float]:
    """``mean``, ``std`` (sample, n − 1), ``min``, ``max`` and ``ci95`` (the half-width
    ``t₀.₉₇₅,ₙ₋₁ · std / √n``; NaN for n < 2) of ``values [n]``, and ``n``.

    >>> s = episode_stats(np.array([1.0, 2.0, 3.0]))
    >>> s["mean"], s["std"], round(s["ci95"], 4), s["n"]
    (2.0, 1.0, 2.4841, 3)
    """
    x = np.asarray(values, np.float64)
    n = x.size
    std = float(np.std(x, ddof=1)) if n > 1 else math.nan
    ci = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": float(np.mean(x)), "std": std, "min": float(np.min(x)),
            "max": float(np.max(x)), "ci95": ci, "n": int(n)}


def _play(setup: Setup, run: RunCheckpoint, args: EvalArgs, max_steps: int) -> dict[str, np.ndarray]:
    """Every seed's episodes, ``{name: [seeds, episodes]}`` (``return``, ``length``, …)."""
    config = run.config
    play = functools.partial(evaluate, setup, episodes=args.episodes, max_steps=max_steps,
                             greedy=args.policy == "greedy")
    obs_stats = run.state.obs_stats if config.normalize_obs else None
    axes = (0, 0, None if obs_stats is None else 0)
    keys = jax.random.split(jax.random.key(args.seed), run.seeds)
    episodes = jax.device_get(jax.jit(jax.vmap(play, axes))(keys, run.state.params, obs_stats))
    unfinished = int(np.sum(~episodes.finished))
    if unfinished:
        raise ValueError(f"`max_steps` = {max_steps}: {unfinished} of {episodes.finished.size} "
                         "episodes did not end within it; raise --max-steps")
    return {"return": episodes.returns, "length": episodes.lengths, **episodes.metrics}


def eval_command(args: EvalArgs) -> dict[str, Any]:
    """Evaluate, write ``eval.json`` (and ``--render``), print the table; return the record.
    Raises :class:`~jaxadv.engine.driver.RunStopped` (exit status 2, ``error: ...``) for a directory
    without a usable run, a file that cannot be drawn or episodes that outlast ``max_steps``."""
    try:
        return _evaluate_run(args.check())
    except ValueError as exc:
        raise RunStopped(f"error: {exc}", 2) from None


def _evaluate_run(args: EvalArgs) -> dict[str, Any]:
    console = Console(stderr=True, quiet=args.quiet)
    if args.point is None:  # a damaged checkpoint's warning, even with --quiet
        run = load_run(args.run_dir, warn=lambda message: print(message, file=sys.stderr))
    elif args.point == "best":
        run = load_best(args.run_dir)
    else:
        run = load_sweep_point(args.run_dir, args.point)
    if args.render is not None:
        check_render(run.config.env, args.render)
        if run.config.env == "Gridworld-v0" and NETWORKS[cast(str, run.config.network)].recurrent:
            raise ValueError("`render`: a recurrent policy's action in a cell depends on the "
                             "path that led there, so it has no one picture; evaluate it without "
                             "--render")
    with OutputLock(args.output_dir()):  # before playing: an unwritable --out fails now
        args.check()
        if args.overwrite:
            remove_run(args.output_dir())
        return _evaluate(args, run, console)


def _evaluate(args: EvalArgs, run: RunCheckpoint, console: Console) -> dict[str, Any]:
    setup = make_setup(run.config)
    max_steps = args.max_steps or int(setup.env_params.max_steps_in_episode)
    with console.status(f"{args.episodes} episodes × {run.seeds} seed(s) of {run.config.env} …"):
        values = _play(setup, run, args, max_steps)
    record = {
        "run_dir": str(args.run_dir), "point": args.point, "env": run.config.env,
        "algo": run.config.algo, "hparams": dataclasses.asdict(run.hparams),
        "checkpoint": {"update": run.update, "env_steps": run.env_steps,
                       "num_updates": run.config.num_updates},
        "policy": args.policy, "episodes": args.episodes, "seed": args.seed,
        "max_steps": max_steps,
        "per_seed": [{"seed": s, **{k: episode_stats(v[s]) for k, v in values.items()}}
                     for s in range(run.seeds)],
        "over_seeds": {k: episode_stats(v.mean(axis=1)) for k, v in values.items()},
        "all_episodes": {k: episode_stats(v.reshape(-1)) for k, v in values.items()},
        **platform_info(),
    }
    if args.render is not None:
        record["render"] = render_episodes(setup, run, args, max_steps, console)
    out = args.output_dir()
    write_json(out / "eval.json", record)
    if not args.quiet:
        Console().print(_table(record))
    console.print(f"wrote eval.json to {out}/")
    return record


def load_sweep_point(run_dir: pathlib.Path, point: int) -> RunCheckpoint:
    """A ``jaxadv sweep`` point's final policies, one per seed, as a :class:`RunCheckpoint`
    (``update``: the run's last): its configuration and hyperparameters from the sweep's
    ``chunks/manifest.json`` (:func:`~jaxadv.engine.sweep.sweep_point`), its parameters and
    observation statistics from the saved chunks, read-only. Raises ``ValueError`` where
    ``run_dir`` is no sweep, ``point`` is not one of its points, or its chunks do not hold it."""
    try:
        stored = sweep_resume_args(run_dir)
    except ValueError as exc:
        found = find_run(run_dir)
        why = (f"it holds a {found.kind} run: evaluate that without --point"
               if found is not None and found.kind != "sweep"
               else str(exc).removeprefix("`resume`: ").split(";")[0])
        raise ValueError(f"`point`: {str(run_dir)!r} is not a jaxadv sweep's directory "
                         f"({why})") from None
    where = sweep_point(stored.config, stored.grid_spec(), stored.seeds, point,
                        hparams=stored.hparams, key=jax.random.key(stored.seed),
                        num_samples=stored.samples)
    rows = SweepChunks(run_dir / "chunks", write=False).rows(where.group, where.start, where.stop)
    if not rows.final:
        raise ValueError(f"`run_dir`: the chunks of {run_dir} hold no parameters (saved by a "
                         "jaxadv that did not keep them); run the sweep again to evaluate it")
    keys = jax.random.split(jax.random.key(stored.seed), stored.seeds)
    try:
        state = restore_policies(where.config, where.hparams, keys, rows.final)
    except ValueError:
        raise ValueError(f"`run_dir`: the saved parameters of point {point} do not fit its "
                         "network") from None
    return RunCheckpoint(where.config, where.hparams, stored.seed, stored.seeds, state,
                         where.config.num_updates)


def load_best(run_dir: pathlib.Path) -> RunCheckpoint:
    """A sweep's pick as a :class:`RunCheckpoint` (``update``: the run's last), from its
    ``summary.json``: a grid or random sweep's best point (:func:`load_sweep_point`); a
    halving search's pick on its seeds, or a PBT search's best member with its final
    hyperparameters, from the ``best.npz`` the search wrote
    (:func:`~jaxadv.engine.policies.save_policies`)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        search, best = summary.get("search", "grid"), summary["best"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`point`: {str(run_dir)!r} holds no finished sweep's summary.json "
                         f"({type(exc).__name__}: {exc})") from None
    if search == "grid":
        return load_sweep_point(run_dir, int(best["index"]))
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in summary["train_config"].items()}
    config, seed, seeds = TrainConfig(**fields), int(summary["seed"]), int(summary["seeds"])
    keys = jax.random.split(jax.random.key(seed), seeds)
    if search == "pbt":  # member m is draw m // seeds on seed m % seeds
        changes, keys = best["hparams"], keys[best["member"] % seeds][None]
    else:
        changes = best["point"]
    hp = dataclasses.replace(HParams(**summary["hparams"]), **changes)
    try:
        state = restore_policies(config, hp, keys, load_policies(run_dir / "best.npz"))
    except ValueError as exc:
        raise ValueError(f"`run_dir`: {exc}") from None
    return RunCheckpoint(config, hp, seed, len(keys), state, config.num_updates)


def _table(record: dict[str, Any]) -> Table:
    """Per seed and over the seeds: the return (mean ± 95% CI, min, max) and the length."""
    fmt = lambda s: f"{s['mean']:.2f} ± {s['ci95']:.2f}" if math.isfinite(s["ci95"]) else f"{s['mean']:.2f}"
    ckpt = record["checkpoint"]
    table = Table(title=f"{record['env']} · {record['algo']} · update {ckpt['update']}",
                  caption=f"{record['episodes']} {record['policy']} episodes per seed after "
                          f"{ckpt['env_steps']:,} env steps")
    for name in ("seed", "return (95% CI)", "min", "max", "length"):
        table.add_column(name, justify="right")
    for row in record["per_seed"]:
        r = row["return"]
        table.add_row(str(row["seed"]), fmt(r), f"{r['min']:.2f}", f"{r['max']:.2f}",
                      f"{row['length']['mean']:.1f}")
    over, pooled = record["over_seeds"], record["all_episodes"]
    table.add_row("over seeds", fmt(over["return"]), f"{pooled['return']['min']:.2f}",
                  f"{pooled['return']['max']:.2f}", f"{over['length']['mean']:.1f}", style="bold")
    return table


def render_episodes(setup: Setup, run: RunCheckpoint, args: EvalArgs, max_steps: int,
                    console: Console) -> dict[str, Any]:
    """Write ``args.render``: seed 0's policy over ``render_episodes`` episodes; return
    what was drawn (``path``, ``frames``, the episodes' ``lengths``)."""
    seed0 = jax.tree.map(lambda x: x[0], run.state)
    obs_stats = seed0.obs_stats if run.config.normalize_obs else None
    key = jax.random.fold_in(jax.random.key(args.seed), 1)
    greedy = args.policy == "greedy"
    if run.config.env == "Sequence-v0":
        count = _sequence_text(setup, seed0.params, key, args, greedy)
        return {"path": str(args.render), "frames": count, "lengths": []}
    if run.config.env == "Gridworld-v0":
        return _gridworld_picture(setup, run, cast(pathlib.Path, args.render), console)
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # gymnasium draws with pygame,
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # off screen and without sound
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    from gymnax.visualize import Visualizer

    play = jax.jit(functools.partial(episode_states, setup, max_steps=max_steps, greedy=greedy))
    frames, labels, lengths = [], [], []
    for i, key_episode in enumerate(jax.random.split(key, args.render_episodes)):
        states, rewards, length = jax.device_get(play(key_episode, seed0.params, obs_stats))
        if not length:
            raise ValueError(f"`max_steps` = {max_steps}: the episode to draw did not end within it")
        lengths.append(int(length))
        every = args.frame_every or max(1, math.ceil(int(length) / 200))
        steps = [*range(0, int(length), every)]
        frames += [jax.tree.map(lambda x, t=t: x[t], states) for t in steps]
        labels += [f"episode {i + 1} · step {t + 1} · return {np.sum(rewards[: t + 1]):.1f}"
                   for t in steps]
    vis = Visualizer(setup.env.unwrapped, setup.env_params, frames)
    _save_animation(vis, labels, cast(pathlib.Path, args.render), console)
    return {"path": str(args.render), "frames": len(frames), "lengths": lengths}


_DRAWN = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0",
          "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
          "Seaquest-MinAtar", "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc",
          "MetaMaze-misc", "FourRooms-misc")
"""The environments gymnax 1.0's ``Visualizer`` draws."""


def check_render(env: str, path: pathlib.Path) -> None:
    """Refuse a ``--render`` file that ``env`` cannot be drawn into, before anything compiles."""
    suffix = path.suffix.lower()
    if env == "Sequence-v0":
        if suffix != ".txt":
            raise ValueError(f"`render` {str(path)!r}: Sequence-v0 is written as text; name a .txt file")
        return
    if env == "Gridworld-v0":
        if suffix not in (".png", ".svg", ".pdf"):
            raise ValueError(f"`render` {str(path)!r}: Gridworld-v0 is drawn as a picture of "
                             "its policy; name a .png, .svg or .pdf file")
        return
    if env not in _DRAWN:
        raise ValueError(f"`render`: gymnax's visualiser does not draw {env}; it draws "
                         f"{', '.join(_DRAWN)} (and Sequence-v0 as text, Gridworld-v0 as a "
                         "picture)")
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"`render` {str(path)!r}: name a .gif or .mp4 file")
    from matplotlib import animation

    if suffix == ".mp4" and not animation.writers.is_available("ffmpeg"):
        raise ValueError(f"`render` {str(path)!r}: writing .mp4 needs ffmpeg, which matplotlib "
                         "does not find here; name a .gif file")


def _save_animation(vis: Any, labels: list[str], path: pathlib.Path, console: Console) -> None:
    """Save ``vis``'s frames (drawn by its ``init``/``update``), each titled with its label,
    with a progress bar; then close its figure."""
    import matplotlib.pyplot as plt
    from matplotlib import animation

    def update(frame: int) -> None:
        vis.update(frame)
        vis.ax.set_title(f"{vis.env.name} · {labels[frame]}", fontsize=12)

    count = len(vis.state_seq)
    anim = animation.FuncAnimation(vis.fig, update, frames=count, init_func=vis.init,
                                   blit=False, interval=vis.interval)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = 1000 // vis.interval
    writer = animation.PillowWriter(fps=fps) if path.suffix.lower() == ".gif" else animation.FFMpegWriter(fps=fps)
    try:
        with console.status(f"drawing {count} frames …") as status, \
                replace_atomically(path) as tmp:
            anim.save(tmp, writer=writer, dpi=60,
                      progress_callback=lambda i, n: status.update(f"drawing frame {i + 1} of {n} …"))
    finally:
        plt.close(vis.fig)
    console.print(f"wrote {count} frames to {path}")


def _gridworld_picture(setup: Setup, run: RunCheckpoint, path: pathlib.Path,
                       console: Console) -> dict[str, Any]:
    """Draw seed 0's policy on the gridworld into ``path``: each cell coloured by its exact
    value V^π (:func:`jaxadv.science.exact.values`, the run's γ) with one arrow per action, its
    length π(a | cell); the start and goal cells marked. Returns ``path``, the policy's
    exact objective ``J`` (from the start) and ``probs`` ``[S, A]``."""
    import matplotlib.pyplot as plt

    from jaxadv.envs.mdp import TabularMDP
    from jaxadv.science import exact

    env = setup.env.unwrapped
    params = setup.env_params
    while hasattr(params, "env_params"):  # the wrappers' parameters around the MDP's
        params = params.env_params
    (width, height), num = env.grid, env.num_states
    seed0 = jax.tree.map(lambda x: x[0], run.state)
    obs = jnp.eye(num, dtype=jnp.float32)
    if run.config.normalize_obs:
        obs = normalize_obs(seed0.obs_stats, obs)
    logits, _ = setup.network.apply(seed0.params, obs)
    mdp = TabularMDP(params.transitions, params.rewards, params.initial, run.hparams.gamma)
    v, _ = exact.values(mdp, logits)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    objective = float(exact.objective(mdp, logits))
    fig, ax = plt.subplots(figsize=(1.1 * width + 1.5, 1.1 * height + 0.8))
    cells = np.asarray(v, np.float64).copy()
    cells[num - 1] = np.nan  # the goal is never occupied: left blank, out of the colour scale
    image = ax.imshow(cells.reshape(height, width), cmap="viridis")
    fig.colorbar(image, ax=ax, label=f"V^π (exact, γ = {run.hparams.gamma:g})")
    for s in range(num):
        row, col = divmod(s, width)
        for (dy, dx), p in zip(((-1, 0), (1, 0), (0, -1), (0, 1)), probs[s], strict=True):
            if s != num - 1 and p > 0.02:
                ax.arrow(col, row, 0.45 * p * dx, 0.45 * p * dy, width=0.02, head_width=0.09,
                         head_length=0.07, length_includes_head=True, color="white")
    ax.text(0, -0.3, "start", ha="center", va="center", color="white", fontsize=9)
    ax.text(width - 1, height - 1, "goal", ha="center", va="center", color="black", fontsize=11)
    ax.set_xticks(range(width))
    ax.set_yticks(range(height))
    ax.set_title(f"{run.config.algo} · Gridworld-v0 · seed 0 · update {run.update}\n"
                 f"arrows: π(a | cell); J(π) = {objective:.3f} from the start")
    path.parent.mkdir(parents=True, exist_ok=True)
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    console.print(f"wrote the policy of seed 0 to {path}")
    return {"path": str(path), "frames": 1, "lengths": [], "objective": objective,
            "probs": probs.round(4).tolist()}


def _sequence_text(setup: Setup, params: Any, key: jax.Array, args: EvalArgs, greedy: bool) -> int:
    """``render_episodes`` prompts with the policy's responses and rewards, one per line;
    returns the number of lines."""
    from jaxadv.envs.token import decode_tokens

    play = functools.partial(evaluate, setup, episodes=args.render_episodes,
                             max_steps=setup.config.num_steps, greedy=greedy, final_observation=True)
    episodes = jax.device_get(jax.jit(play)(key, params))
    lines = [f"{decode_tokens(setup.env, row)}\treward {float(r):.3f}"
             for row, r in zip(episodes.final_observation, episodes.returns)]
    path = cast(pathlib.Path, args.render)  # --render is given
    path.parent.mkdir(parents=True, exist_ok=True)
    with replace_atomically(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return len(lines)
