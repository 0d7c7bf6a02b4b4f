"""jaxadv: advantage-function policy-gradient training as pure JAX functions.

Estimators (:mod:`jaxadv.advantages`), losses (:mod:`jaxadv.losses`) and
distributions (:mod:`jaxadv.distributions`) are re-exported here by name,
each module imported on first use of one of its names (so that ``import jaxadv.cli.tracking``,
which the W&B logger's process does, never imports jax); environments live in
:mod:`jaxadv.envs`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import Any

__version__ = "0.2.0"

_MODULES = {  # each re-exported name's module
    **dict.fromkeys((
        "discounted_returns", "gae", "group_relative", "lambda_returns", "leave_one_out",
        "n_step_advantages", "normalize", "td_errors",
    ), "jaxadv.advantages"),
    **dict.fromkeys((
        "categorical_entropy", "categorical_kl", "categorical_log_prob", "categorical_sample",
        "gaussian_entropy", "gaussian_kl", "gaussian_log_prob", "gaussian_sample",
    ), "jaxadv.distributions"),
    **dict.fromkeys((
        "entropy_bonus", "kl_penalty", "masked_mean", "policy_gradient_loss", "ppo_clip_loss",
        "value_loss",
    ), "jaxadv.losses"),
}

__all__ = sorted(_MODULES)

MOVED = {  # a module's old name under jaxadv -> its place in the layers
    "train_cli": "cli.train",
    "sweep_cli": "cli.sweep",
    "search_cli": "cli.search",
    "eval_cli": "cli.eval",
    "sequence_cli": "cli.sequence",
    "variance_cli": "cli.variance",
    "check_cli": "cli.check",
    "report": "cli.report",
    "outdir": "cli.outdir",
    "tracking": "cli.tracking",
    "networks": "nets.networks",
    "transformer": "nets.transformer",
    "mdp": "envs.mdp",
    "algorithms": "engine.algorithms",
    "estimators": "engine.estimators",
    "rollout": "engine.rollout",
    "train": "engine.train",
    "warm_start": "engine.warm_start",
    "evaluate": "engine.evaluate",
    "checkpoint": "engine.checkpoint",
    "devices": "engine.devices",
    "driver": "engine.driver",
    "sweep": "engine.sweep",
    "search": "tuning.halving",
    "pbt": "tuning.pbt",
    "selection": "tuning.selection",
    "exact": "science.exact",
    "variance": "science.variance",
    "sequence_exact": "science.sequence_exact",
    "objective_exact": "science.objective_exact",
}
"""The modules that moved into subpackages in 0.2.0, by old name: ``jaxadv.<old>`` still
imports, as the very module ``jaxadv.<new>``."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``jaxadv.<old>`` of :data:`MOVED` as the module ``jaxadv.<new>`` (one object
    under both names, so attributes set through one are seen through the other)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        prefix, _, old = fullname.partition(".")
        if prefix != __name__ or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(f"{__name__}.{MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module: Any) -> None:
        """The module ran under its new name already."""


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str) -> Any:
    """``jaxadv.<name>`` of a re-exported name, or of a moved module: imports its module (once)."""
    if name in MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _MODULES:
        raise AttributeError(f"module 'jaxadv' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_MODULES[name]), name)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})
