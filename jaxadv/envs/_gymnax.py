"""gymnax, imported once with ``seaborn`` deferred (see :func:`import_gymnax`)."""

import importlib
import sys
import types


class _Deferred(types.ModuleType):
    """Stands in for a module while another package imports it, importing it for real on the
    first use of one of its names."""

    def __getattr__(self, name: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def import_gymnax() -> None:
    """Import gymnax with ``seaborn`` deferred: gymnax imports it (with scipy.stats and pandas,
    about 1.7 s) for its Pong and MinAtar renderers only. The stand-in leaves ``sys.modules``
    once gymnax is imported, so any later ``import seaborn`` gets the real module."""
    if "gymnax" in sys.modules or "seaborn" in sys.modules:
        return
    stand_in = sys.modules["seaborn"] = _Deferred("seaborn")
    try:
        importlib.import_module("gymnax")
    finally:
        if sys.modules.get("seaborn") is stand_in:
            del sys.modules["seaborn"]


import_gymnax()
