"""Run one ``run_sweep`` in a fresh process and save its results (used by test_sweep.py).

    python tests/_sweep_worker.py SPEC_JSON OUT_DIR [PROCESS_ID NUM_PROCESSES PORT]

The device count comes from ``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
which the parent sets before this process imports jax. With the last three arguments
the process joins a ``jax.distributed`` job on localhost over gloo CPU collectives.

``SPEC_JSON`` holds ``config`` (TrainConfig kwargs), ``grid`` (a distribution is
``{"LogUniform": [low, high]}`` or ``{"Uniform": [low, high]}``), ``seeds``, ``key``
(an int for ``jax.random.key``) and optionally ``num_samples`` and ``max_parallel``.
Writes ``OUT_DIR/result.npz`` and ``OUT_DIR/result.json``.
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
    from jaxadv.engine.sweep import run_sweep
    from jaxadv.engine.train import TrainConfig

    config = TrainConfig(**spec["config"])
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
