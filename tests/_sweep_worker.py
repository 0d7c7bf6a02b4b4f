"""Run one ``run_sweep`` in a fresh process and save its results (used by test_sweep.py).

    python tests/_sweep_worker.py SPEC_JSON OUT_DIR [PROCESS_ID NUM_PROCESSES PORT]

The device count comes from ``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
which the parent sets before this process imports jax. With the last three arguments
the process joins a ``jax.distributed`` job on localhost over gloo CPU collectives.

``SPEC_JSON`` holds ``config`` (TrainConfig kwargs), ``grid`` (a distribution is
``{"LogUniform": [low, high]}`` or ``{"Uniform": [low, high]}``), ``seeds``, ``key``
(an int for ``jax.random.key``) and optionally ``num_samples`` and ``max_parallel``.
Writes ``OUT_DIR/result.npz`` and ``OUT_DIR/result.json``. With a ``pbt`` entry instead
(under ``jax.distributed``), population-based training: ``OUT_DIR/pbt.npz`` (:func:`save_pbt`).
With a ``cli`` entry (a ``jaxadv sweep`` command line), that command as ``cli.main`` runs it
(:func:`run_cli`), before the ``pbt`` entry's search when there is one.
"""

from __future__ import annotations

import json
import pathlib
import sys


def _decode_grid(grid: dict) -> dict:
    from jaxadv.engine.sweep import LogUniform, Uniform

    dists = {"LogUniform": LogUniform, "Uniform": Uniform}
    out = {}
    for field, values in grid.items():
        if isinstance(values, dict):
            (name, bounds), = values.items()
            out[field] = dists[name](*bounds)
        else:
            out[field] = values
    return out


def save_result(result, out_dir: pathlib.Path) -> None:
    """Write a SweepResult's arrays to result.npz and the rest to result.json."""
    import numpy as np

    arrays = {"final_return": result.final_return, "auc": result.auc}
    for i, (r, e, s) in enumerate(zip(result.returns, result.episodes, result.env_steps)):
        arrays[f"returns_{i}"] = r
        arrays[f"episodes_{i}"] = e
        arrays[f"env_steps_{i}"] = s
    np.savez(out_dir / "result.npz", **arrays)
    meta = {
        "points": result.points,
        "seeds": result.seeds,
        "devices": result.devices,
        "processes": result.processes,
    }
    (out_dir / "result.json").write_text(json.dumps(meta))


def pbt_arrays(result) -> dict:
    """A PBT result's fitness, parents, learning rates, returns, episode counts and final
    state leaves (key data for PRNG keys), as numpy arrays by name."""
    import jax
    import numpy as np

    leaves = [jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
              else x for x in jax.tree.leaves(result.state)]
    return {"fitness": result.fitness, "parent": result.parent, "lr": result.hparams["lr"],
            "returns": result.returns, "episodes": result.episodes,
            **{f"state_{i}": np.asarray(x) for i, x in enumerate(leaves)}}


def save_pbt(config, spec: dict, out_dir: pathlib.Path) -> None:
    """``population_based_training`` of ``spec["pbt"]`` (population, seeds, interval,
    groups, per_call, ranges, quantile) under ``jax.distributed``: ``OUT_DIR/pbt.npz``."""
    import jax
    import numpy as np

    from jaxadv.tuning.pbt import PBTSettings, population_based_training

    p = spec["pbt"]
    settings = PBTSettings(ranges={k: tuple(v) for k, v in p["ranges"].items()},
                           quantile=p["quantile"])
    result = population_based_training(config, settings, p["population"], p["seeds"],
                                       p["interval"], key=jax.random.key(spec["key"]),
                                       per_call=p["per_call"], groups=p["groups"])
    np.savez(out_dir / "pbt.npz", processes=jax.process_count(), **pbt_arrays(result))


def run_cli(argv: list[str], out_dir: pathlib.Path) -> None:
    """``jaxadv`` with ``argv`` (a search into ``--out``, the last flag), then, after every
    process has finished it, its last saved call and its outputs moved aside by process 0
    into ``OUT_DIR/full`` and ``jaxadv sweep --resume`` on every process. The exit statuses
    in ``OUT_DIR/status``."""
    import shutil

    import jax
    from jax.experimental import multihost_utils

    from jaxadv import cli
    from jaxadv.engine.checkpoint import checkpoint_steps

    out = pathlib.Path(argv[-1])
    codes = [cli.main(argv)]
    multihost_utils.sync_global_devices("finished")
    if jax.process_index() == 0:
        (out_dir / "full").mkdir()
        for name in ("pbt.csv", "best.npz", "summary.json"):
            shutil.move(out / name, out_dir / "full" / name)
        shutil.rmtree(out / "search" / str(checkpoint_steps(out / "search")[-1]))
    multihost_utils.sync_global_devices("moved aside")
    codes.append(cli.main(["sweep", "--resume", str(out)]))
    (out_dir / "status").write_text(" ".join(map(str, codes)))


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    out_dir = pathlib.Path(argv[1])
    import jax

    if len(argv) > 2:
        process_id, num_processes, port = (int(a) for a in argv[2:5])
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    from jaxadv.engine.sweep import run_sweep
    from jaxadv.engine.train import TrainConfig

    config = TrainConfig(**spec["config"])
    if "cli" in spec or "pbt" in spec:
        if "cli" in spec:
            run_cli(spec["cli"], out_dir)
        if "pbt" in spec:
            save_pbt(config, spec, out_dir)
        jax.distributed.shutdown()
        return
    result = run_sweep(
        config,
        _decode_grid(spec["grid"]),
        spec["seeds"],
        key=jax.random.key(spec["key"]),
        num_samples=spec.get("num_samples"),
        max_parallel=spec.get("max_parallel"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_result(result, out_dir)
    if len(argv) > 2:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
