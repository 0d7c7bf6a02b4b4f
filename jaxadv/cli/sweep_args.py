"""``jaxadv sweep``'s arguments, shared by the sweep command (:mod:`jaxadv.cli.sweep`), its
searches (:mod:`jaxadv.cli.search`) and ``jaxadv eval`` (which reads a sweep's settings).

:class:`SweepArgs` is the schema: a base :class:`~jaxadv.engine.train.TrainConfig` and
:class:`~jaxadv.engine.train.HParams`, the :class:`Grid` (one ``--grid.FIELD`` per
:data:`~jaxadv.engine.train.HPARAM_SPECS` field and per swept static field), seeds, the
search settings (:class:`Halving`, :class:`PBT`) and the re-evaluation (:class:`Reeval`); its
``check()`` refuses bad input before anything compiles. :func:`sweep_resume_args` rebuilds the
arguments a sweep directory records.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import jax
import tyro
from rich.console import Console

from jaxadv.cli.options import TrainOptions
from jaxadv.cli.outdir import OutputLock, check_fresh, remove_run
from jaxadv.cli.tracking import WandbSettings, check_loggers
from jaxadv.engine.checkpoint import SweepChunks
from jaxadv.engine.estimators import ESTIMATORS
from jaxadv.engine.sweep import (
    LogUniform,
    Uniform,
    expand_grid,
)
from jaxadv.engine.train import HPARAM_SPECS, HParams, TrainConfig
from jaxadv.tuning.halving import rung_budgets
from jaxadv.tuning.pbt import PBTSettings
from jaxadv.validate import (
    HParamSpec,
    check_positive,
    check_seed,
    field_changes,
    positive_int,
    refuse_changes,
)

__all__ = [
    "PBT", "Grid", "Halving", "Reeval", "SweepArgs", "grid_json", "prepare_sweep_out",
    "sweep_resume_args",
]


_HPARAM_FIELDS = tuple(HPARAM_SPECS)
_STATIC_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_Floats = Annotated[tuple[float, ...] | None, tyro.conf.arg(metavar="FLOAT [FLOAT ...]")]
_Ints = Annotated[tuple[int, ...] | None, tyro.conf.arg(metavar="INT [INT ...]")]


def _step_estimators() -> tuple[str, ...]:
    """The estimators of one advantage per step (the live table: rows added at run time count,
    as ``--grid.estimator``'s annotation is read when tyro reads the class)."""
    return tuple(name for name, row in ESTIMATORS.items() if not row.sequence_level)


_HParamName = Literal[_HPARAM_FIELDS]  # type: ignore[valid-type]


def _grid_field(name: str, spec: HParamSpec) -> tuple[str, Any, Any]:
    """``--grid.NAME``: values of the HParams field ``name``, its range and doc as the help."""
    help_text = f"HParams.{name} values ({spec.allowed}): {spec.doc}"
    return name, Annotated[_Floats, tyro.conf.arg(help=help_text)], dataclasses.field(default=None)


_HParamGrid = dataclasses.make_dataclass(
    "_HParamGrid", [_grid_field(name, spec) for name, spec in HPARAM_SPECS.items()],
    frozen=True, namespace={"__module__": __name__, "__doc__": "One --grid.FIELD per HParams field, "
                            "generated from its HPARAM_SPECS entry."})


@dataclasses.dataclass(frozen=True)
class Grid(_HParamGrid):  # type: ignore[misc,valid-type]
    """Values to sweep: the product of every --grid.FIELD given, crossed in the order listed
    here (with --samples, a float field takes LOW HIGH to draw from). A field left out is not
    swept: its base flag applies. Every HParams field has one (generated from its
    HPARAM_SPECS entry, jaxadv.engine.train), then the static fields below."""

    num_envs: _Ints = None
    """static: environments per run (each value compiles once)."""
    num_steps: _Ints = None
    """static: rollout windows T (each value compiles once)."""
    estimator: Annotated[
        tuple[Literal[_step_estimators()], ...] | None,  # type: ignore[valid-type]
        tyro.conf.arg(metavar="{" + ",".join(_step_estimators()) + "} [...]"),
    ] = None
    """static: advantage estimators (each value compiles once)."""

    def given(self) -> dict[str, tuple]:
        """The fields given on the command line (``()`` for a flag given without values)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


@dataclasses.dataclass(frozen=True)
class Reeval:
    """Honest selection: after the sweep, train its best points again on seeds that no
    selection step saw, and report both returns and the optimism gap between them."""

    top: int = 0
    """re-evaluate the top K points (by the interquartile mean of their final returns over --seeds; --search pbt: the top K members of the last interval, each lineage's hyperparameter schedule replayed from scratch); 0: off."""
    seeds: int | None = None
    """fresh seeds per re-evaluated point; default: --seeds."""


@dataclasses.dataclass(frozen=True)
class Halving:
    """--search halving: every point trains for the first rung; only the best 1/eta go on,
    from their own state, for eta times as many updates in all; and so on."""

    eta: int = 3
    """the fraction kept after each rung is 1/eta, and each rung trains eta times longer."""
    min_steps: int | None = None
    """env steps per run in the first rung (rounded down to whole updates); default: the run's / eta²."""


@dataclasses.dataclass(frozen=True)
class PBT:
    """--search pbt: every --pbt.interval updates, inside the compiled program, the bottom
    --pbt.quantile of the population copies a top member's parameters and explores its
    hyperparameters (jaxadv.tuning.pbt)."""

    interval: int | None = None
    """updates between exploit/explore steps; must divide the run's updates; default: about a tenth of the run."""
    quantile: float = 0.25
    """the fraction replaced each time (and the fraction copied from), in (0, 0.5]."""
    resample: float = 0.25
    """the probability that an explored field is drawn afresh from its LOW HIGH range instead of multiplied by 0.8 or 1.25."""
    save_every: int | None = None
    """intervals per compiled call, the population saved under --out/search after each (for --resume); default: a tenth of the run's intervals, at least 1."""


@dataclasses.dataclass(frozen=True)
class SweepArgs:
    """Train every point of --grid.* (or --samples random draws) on --seeds seeds, one
    compile per static group; write sweep.csv, summary.json and sweep.png under --out,
    saving each finished chunk under --out/chunks (--resume DIR continues a sweep)."""

    config: Annotated[TrainOptions, tyro.conf.arg(name="")]
    hparams: Annotated[HParams, tyro.conf.arg(name="")]
    grid: Grid = Grid()
    samples: int | None = None
    """random search: draw this many points; every float --grid.FIELD then takes two values LOW HIGH, drawn log-uniformly for the fields in --log-uniform and uniformly otherwise; --grid.num-envs/num-steps/estimator stay lists, crossed with the draws."""
    search: Literal["grid", "halving", "pbt"] = "grid"
    """grid: train every point (of the grid, or of --samples draws) to the end; halving: successive halving over the same points (traced fields only; --halving.*); pbt: population-based training of --population draws from each --grid.FIELD LOW HIGH range (traced fields only; --pbt.*)."""
    halving: Halving = Halving()
    population: int = 8
    """--search pbt: hyperparameter draws in the population (each on --seeds seeds)."""
    pbt: PBT = PBT()
    reeval: Reeval = Reeval()
    log_uniform: tuple[_HParamName, ...] = ("lr",)
    """with --samples: the fields drawn log-uniformly."""
    seed: int = 0
    """base seed: seed s of every point uses jax.random.split(jax.random.key(seed), seeds)[s]."""
    seeds: int = 4
    """seeds per point."""
    max_parallel: int | None = None
    """most runs (point × seed) in one compiled call; default: a static group at once."""
    out: pathlib.Path = pathlib.Path("runs/sweep")
    """output directory (created; each finished chunk is saved under OUT/chunks); one that holds a run is refused unless --overwrite."""
    overwrite: bool = False
    """start afresh in an --out that holds a run (finished or not, of any kind): its files are deleted first."""
    resume: pathlib.Path | None = None
    """continue the sweep in this directory (an earlier --out), with the settings in its chunks/manifest.json: the chunks saved there are not computed again; a flag that would change the grid, a TrainConfig or HParams field, --samples, --log-uniform, --seed or --seeds is refused (--max-parallel and --quiet may change)."""
    quiet: bool = False
    """no progress bar and no summary table."""
    log: tuple[Literal["wandb"], ...] = ()
    """wandb: when the sweep ends, log each point and seed as a Weights & Biases run (episode_return and episodes against env steps, final_return and auc), grouped by point, local files under --out/wandb (pip install 'jaxadv[wandb]'; WANDB_MODE=offline works without a network)."""
    wandb: WandbSettings = WandbSettings()
    compile_cache: bool = True
    """keep compiled programs in JAX's persistent cache ($JAXADV_CACHE_DIR, default ~/.cache/jaxadv/xla); --no-compile-cache turns it off."""

    def check(self) -> SweepArgs:
        """Refuse a bad value or grid with a ``ValueError`` naming the field; compiles nothing.

        Checks the options, the base ``hparams``, every grid value (unknown field, empty
        list, a value outside its field's domain: :func:`~jaxadv.engine.sweep.expand_grid`) and
        every static configuration the grid makes (``TrainConfig.__post_init__``). With
        ``resume``: the directory must hold a sweep's ``chunks/manifest.json`` and nothing
        but ``max_parallel`` and ``quiet`` may differ from it. Without: ``out`` must not
        hold an unfinished sweep.
        """
        check_seed(self.seed)
        check_positive(self, "seeds", "max_parallel", "samples")
        check_loggers(self.log)
        self.hparams.validate()
        grid = self.grid_spec()
        if not grid:
            raise ValueError("`grid` is empty: give at least one --grid.FIELD with values to "
                             "sweep, e.g. --grid.lr 1e-4 3e-4 1e-3")
        if self.samples is not None and not any(
            isinstance(v, Uniform | LogUniform) for v in grid.values()
        ):
            raise ValueError("`samples` needs a float --grid.FIELD given as LOW HIGH to draw from")
        self.static_configs()  # every value checked, every static configuration built
        _check_reeval(self.reeval, self.population * self.seeds if self.search == "pbt"
                      else self.num_points())
        if self.search == "halving" and jax.process_count() > 1:
            raise ValueError("`search` = 'halving' runs in one process")
        members = self.population * self.seeds
        if self.search == "pbt" and jax.process_count() > 1 and members % jax.device_count():
            raise ValueError(f"`population` × `seeds` = {members} members: under jax.distributed "
                             f"give a multiple of the {jax.device_count()} devices of the "
                             f"{jax.process_count()} processes (one equal block on each)")
        if self.search == "halving":
            self._check_halving()
        if self.search == "pbt":
            self.pbt_settings()
            self.pbt_interval()
        writer = jax.process_index() == 0  # under jax.distributed: the others write nothing
        if self.resume is None:
            if writer:  # (and process 0 may already hold --out when another checks)
                check_fresh(self.out, "sweep", overwrite=self.overwrite)
            return self
        if self.overwrite:
            raise ValueError("`overwrite`: --resume continues the sweep in its directory; "
                             "--overwrite would delete it")
        if writer:
            OutputLock(self.resume).check()
        stored = _stored_sweep_args(self.resume)
        search = self.resume / "search" / "settings.json"
        refuse_changes(_sweep_changes(stored, self), "sweep", search if search.is_file()
                       else self.resume / "chunks" / "manifest.json")
        if self.out.resolve() != self.resume.resolve():
            raise ValueError(f"`out` = {str(self.out)!r}: --resume continues the sweep in its "
                             f"own directory {str(self.resume)!r}; leave --out out")
        return self

    def halving_min_updates(self) -> int:
        """The first rung's budget in updates (``--halving.min-steps`` in env steps)."""
        if self.halving.min_steps is None:
            return max(1, self.config.num_updates // self.halving.eta**2)
        return self.halving.min_steps // self.config.batch_size

    def pbt_settings(self) -> PBTSettings:
        """The :class:`~jaxadv.tuning.pbt.PBTSettings` of ``--search pbt``; ``ValueError`` for a
        static field, a field without LOW HIGH, or a bad quantile or resample."""
        positive_int("population", self.population, minimum=2)
        if self.pbt.save_every is not None:
            positive_int("pbt.save_every", self.pbt.save_every)
        ranges = {}
        for field, values in self.grid.given().items():
            if field not in _HPARAM_FIELDS:
                raise ValueError(f"`grid`: {field} cannot change during a PBT run (the members "
                                 "share one compiled program); only HParams fields can be searched")
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"`grid` field {field!r}: --search pbt takes a range LOW HIGH "
                                 f"with LOW < HIGH, got {list(values)}")
            ranges[field] = tuple(values)
        return PBTSettings(ranges=ranges, quantile=self.pbt.quantile,
                           resample=self.pbt.resample, log_uniform=self.log_uniform)

    def pbt_interval(self) -> int:
        """``--pbt.interval``, checked to divide the run's updates (default: the divisor of
        the run's updates nearest a tenth of them)."""
        updates = self.config.num_updates
        if self.pbt.interval is None:
            return min((k for k in range(1, updates + 1) if updates % k == 0),
                       key=lambda k: abs(k - updates / 10))
        if not 0 < self.pbt.interval < updates or updates % self.pbt.interval:
            raise ValueError(f"`pbt.interval` = {self.pbt.interval}: give a number of updates "
                             f"that divides the run's {updates} and is shorter than it")
        return self.pbt.interval

    def _check_halving(self) -> None:
        static = sorted(f for f in self.grid.given() if f not in _HPARAM_FIELDS)
        if static:
            raise ValueError(f"`grid`: {', '.join(static)} cannot be searched with --search "
                             "halving: each run goes on from its own state in one compiled "
                             "program, so only HParams fields (traced) may differ between points")
        if isinstance(self.halving.eta, bool) or self.halving.eta < 2:
            raise ValueError(f"`halving.eta` must be an integer >= 2, got {self.halving.eta!r}")
        if self.halving.min_steps is not None and not (
                self.config.batch_size <= self.halving.min_steps <= self.config.total_timesteps):
            raise ValueError(
                f"`halving.min_steps` = {self.halving.min_steps}: the first rung needs at least "
                f"one update ({self.config.batch_size} env steps) and at most the run's "
                f"{self.config.total_timesteps}")
        rung_budgets(self.config.num_updates, self.halving.eta, self.halving_min_updates())

    def settings(self) -> dict[str, Any]:
        """What ``chunks/manifest.json`` records: every setting but ``out``, ``resume`` and
        ``quiet`` (JSON values)."""
        return json.loads(json.dumps({
            "train_config": dataclasses.asdict(self.config),
            "hparams": dataclasses.asdict(self.hparams),
            "grid": self.grid.given(), "samples": self.samples,
            "log_uniform": self.log_uniform, "seed": self.seed, "seeds": self.seeds,
            "max_parallel": self.max_parallel,
        }))

    def search_settings(self) -> dict[str, Any]:
        """What a halving or PBT search records in ``search/settings.json``: :meth:`settings`
        and the searches' own (``search``, ``halving``, ``pbt``, ``population``, ``reeval``)."""
        return {**self.settings(), **json.loads(json.dumps({
            "search": self.search, "halving": dataclasses.asdict(self.halving),
            "pbt": dataclasses.asdict(self.pbt), "population": self.population,
            "reeval": dataclasses.asdict(self.reeval)}))}

    def pbt_save_every(self) -> int:
        """``--pbt.save-every``: intervals per compiled call (default: a tenth of them)."""
        return self.pbt.save_every or max(1, self.config.num_updates // self.pbt_interval() // 10)

    def grid_spec(self) -> dict[str, list | Uniform | LogUniform]:
        """The ``grid`` of :func:`~jaxadv.engine.sweep.run_sweep`: lists, or with ``samples`` a
        :class:`~jaxadv.engine.sweep.Uniform`/:class:`~jaxadv.engine.sweep.LogUniform` per float field."""
        spec: dict[str, list | Uniform | LogUniform] = {}
        for field, values in self.grid.given().items():
            if self.samples is None or field not in _HPARAM_FIELDS:
                spec[field] = list(values)
                continue
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"`grid` field {field!r}: with `samples` give two values "
                                 f"LOW HIGH with LOW < HIGH, got {list(values)}")
            spec[field] = (LogUniform if field in self.log_uniform else Uniform)(*values)
        return spec

    def num_points(self) -> int:
        """Points in the sweep: the product of the list lengths, times ``samples``."""
        lists = [v for v in self.grid_spec().values() if isinstance(v, list)]
        return math.prod(len(v) for v in lists) * (self.samples or 1)

    def static_configs(self) -> list[TrainConfig]:
        """The distinct static configurations, one compile each. Expanding the grid and
        building each config checks every value; nothing is compiled."""
        grid = self.grid_spec()
        configs: list[TrainConfig] = []
        for point in expand_grid(grid, num_samples=1 if self.samples else None):
            static = {f: v for f, v in point.items() if f in _STATIC_FIELDS}
            config = dataclasses.replace(self.config, **static)
            if config not in configs:
                configs.append(config)
        return configs


def _check_reeval(reeval: Reeval, points: int) -> None:
    """Refuse a re-evaluation that cannot run: a negative ``top``, more than the points, or
    no fresh seeds."""
    if isinstance(reeval.top, bool) or not isinstance(reeval.top, int) or reeval.top < 0:
        raise ValueError(f"`reeval.top` must be an integer >= 0, got {reeval.top!r}")
    if reeval.top > points:
        raise ValueError(f"`reeval.top` = {reeval.top}: the sweep has only {points} point(s)")
    if reeval.seeds is not None and (isinstance(reeval.seeds, bool) or reeval.seeds < 1):
        raise ValueError(f"`reeval.seeds` = {reeval.seeds!r}: re-evaluation needs at least one "
                         "fresh seed (or --reeval.top 0 for none)")


def grid_json(grid: dict[str, list | Uniform | LogUniform]) -> dict[str, Any]:
    """Lists as lists; a distribution as ``{"distribution", "low", "high"}``."""
    return {
        field: {"distribution": type(v).__name__, "low": v.low, "high": v.high}
        if isinstance(v, Uniform | LogUniform) else v
        for field, v in grid.items()
    }


def _stored_sweep_args(run_dir: pathlib.Path) -> SweepArgs:
    """The :class:`SweepArgs` that ``run_dir/chunks/manifest.json`` records, or a halving
    search's ``run_dir/search/settings.json`` (``out``, ``resume``: run_dir)."""
    store = SweepChunks(run_dir / "chunks", write=False)
    path, search = store.path, run_dir / "search" / "settings.json"
    try:
        if search.is_file():
            path, s = search, json.loads(search.read_text())
        else:
            manifest = store.read()
            if manifest is None:
                raise ValueError(f"{store.path} not found; --resume takes the --out directory "
                                 "of an earlier `jaxadv sweep`")
            s = manifest["settings"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`resume`: {exc}") from None
    try:
        extra = {} if "search" not in s else {
            "search": s["search"], "halving": Halving(**s["halving"]), "pbt": PBT(**s["pbt"]),
            "population": s["population"], "reeval": Reeval(**s["reeval"])}
        return SweepArgs(
            config=TrainOptions(**s["train_config"]), hparams=HParams(**s["hparams"]),
            grid=Grid(**{field: tuple(values) for field, values in s["grid"].items()}),
            samples=s["samples"], log_uniform=tuple(s["log_uniform"]), seed=s["seed"],
            seeds=s["seeds"], max_parallel=s["max_parallel"], out=run_dir, resume=run_dir,
            **extra)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`resume`: {path} does not describe a sweep ({exc})") from None


def _sweep_changes(stored: SweepArgs, args: SweepArgs) -> Iterator[tuple[str, Any, Any]]:
    """``(field, stored value, new value)`` for each setting a resumed sweep may not change."""
    yield from field_changes(stored.config, args.config)
    yield from field_changes(stored.hparams, args.hparams)
    yield from field_changes(stored.grid, args.grid, prefix="grid.")
    yield from field_changes(stored, args, names=("samples", "log_uniform", "seed", "seeds",
                                                  "search", "halving", "pbt", "population"))


def sweep_resume_args(run_dir: pathlib.Path, argv: Sequence[str] = ()) -> SweepArgs:
    """The :class:`SweepArgs` to resume the sweep in ``run_dir``: its manifest's settings,
    with the ``jaxadv sweep`` flags in ``argv`` parsed on top (checked by
    :meth:`SweepArgs.check`)."""
    return tyro.cli(SweepArgs, args=list(argv), default=_stored_sweep_args(pathlib.Path(run_dir)),
                    prog="jaxadv sweep")


def prepare_sweep_out(args: SweepArgs, writer: bool) -> None:
    """Warn of repeated grid values; with ``--overwrite``, delete the run in ``--out``."""
    for field, values in args.grid.given().items():
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated and (args.samples is None or field not in _HPARAM_FIELDS):
            print(f"warning: --grid.{field.replace('_', '-')} lists "
                  f"{', '.join(map(str, repeated))} more than once; each copy is its own point, "
                  "trained again", file=sys.stderr)
    err = Console(stderr=True, quiet=args.quiet)
    if writer and args.resume is None and args.overwrite:
        removed = remove_run(args.out)
        if removed:
            err.print(f"--overwrite: deleted {', '.join(removed)} from {args.out}")
