"""Which devices a run uses: one XLA host device per CPU core, and seeds in equal groups.

Independent runs (the seeds of ``jaxadv train --seeds``) need no communication, so on a CPU
they can use every core by giving XLA one host device per core and placing a share of the
seeds on each. XLA's results depend on the size of a vmapped batch, so the seeds are
computed in :func:`seed_groups` groups of equal size whatever the device count: one device
runs its groups one after another (``lax.map``), several run them side by side, and every
seed gets the same bits either way. :func:`map_over_devices` does the same for independent
batches of one computation (the variance reports' gradient estimates).

>>> seed_groups(16, devices=2), seed_groups(6, devices=4), seed_groups(7, devices=2)
(2, 3, 1)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

__all__ = ["available_memory", "check_memory", "map_over_devices", "seed_groups", "use_host_devices"]


def use_host_devices(count: int | None = None) -> int | None:
    """Expose ``count`` CPU devices to JAX (default: one per core), before its backends start.

    Does nothing, returning ``None``, where the user chose the device count
    (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, or ``JAX_NUM_CPU_DEVICES``)
    or JAX has already started its backends (then the count cannot change); else returns
    the count set. Other platforms (GPU, TPU) keep their own devices.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or (
            "JAX_NUM_CPU_DEVICES" in os.environ):
        return None
    count = count or os.cpu_count() or 1
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backends are up: this process keeps the devices it has
        return None
    return count


def seed_groups(seeds: int, devices: int) -> int:
    """How many equal groups ``seeds`` runs are computed in: the largest divisor of ``seeds``
    that is at most ``devices`` (1 for a single seed). The same rule spreads ``groups``
    groups over devices: ``seed_groups(groups, devices)`` devices hold as many each."""
    return max(g for g in range(1, min(seeds, max(devices, 1)) + 1) if seeds % g == 0)



def available_memory(device: jax.Device) -> int | None:
    """Bytes a program on ``device`` may use: an accelerator's own limit, or the host's
    ``MemAvailable`` for a CPU device; ``None`` where neither is known."""
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else int(limit) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(programs: list[Any], devices: int, what: str) -> None:
    """Refuse (``MemoryError``) to run compiled ``programs`` whose XLA memory estimate
    (arguments, outputs and temporaries of the largest, per device) exceeds what the
    ``devices`` local devices have (CPU devices share the host's memory: the estimate
    counts once per device). ``what`` names the setting to lower. Does nothing where
    XLA gives no estimate or the limit is unknown."""
    sizes = []
    for program in programs:
        try:
            m = program.memory_analysis()
        except Exception:
            return
        if m is None:
            return
        sizes.append(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
                     - m.alias_size_in_bytes)
    device = jax.local_devices()[0]
    limit = available_memory(device)
    if not sizes or limit is None:
        return
    need = max(sizes) * (devices if device.platform == "cpu" else 1)
    if need > limit:
        where = "this host has" if device.platform == "cpu" else f"{device.device_kind} has"
        raise MemoryError(f"the compiled program needs about {need / 2**30:,.1f} GiB (XLA's "
                          f"estimate) but {where} {limit / 2**30:,.1f} GiB available; "
                          f"lower {what}")


def map_over_devices(fn: Callable, xs: Any, devices: int | None = None) -> Any:
    """``jax.lax.map(fn, xs)`` with the leading axis ``[M, ...]`` of ``xs`` (a pytree) split
    over ``seed_groups(M, devices)`` local devices (default: all of them), each mapping its
    share in turn (``shard_map`` over a 1-D mesh). Every element goes through the same loop
    body whatever the device count, so the results are the same bits on one device or
    several. Call it inside ``jax.jit``; ``fn`` may close over arrays (replicated)."""
    size = jax.tree.leaves(xs)[0].shape[0]
    used = seed_groups(size, devices or jax.local_device_count())
    mapped = lambda part: jax.lax.map(fn, part)
    mesh = Mesh(np.array(jax.local_devices()[:used]), ("batches",))
    return jax.shard_map(mapped, mesh=mesh, in_specs=P("batches"), out_specs=P("batches"),
                         check_vma=False)(xs)
