"""Suite-wide settings (no silent rank promotion, float32 by default) and shared fixtures."""

import contextlib

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fast_compile: compile with XLA's optimisations mostly off (about half the "
        "compile time, slower programs), here and in the subprocesses the test starts; for "
        "tests that compare programs with each other or check mechanics, never for learning "
        "bars tuned on optimised numerics")


@contextlib.contextmanager
def _fast_compile(request, monkeypatch_factory):
    """``jax_disable_most_optimizations`` on while the marked module or test runs (and
    ``JAX_DISABLE_MOST_OPTIMIZATIONS=1`` for its subprocesses)."""
    if request.node.get_closest_marker("fast_compile") is None:
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    with monkeypatch_factory.context() as patch:
        patch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
        try:
            yield
        finally:
            jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(autouse=True, scope="module")
def _fast_compile_module(request):
    """A module marked ``fast_compile`` (``pytestmark``): its module fixtures compile fast too."""
    with _fast_compile(request, pytest.MonkeyPatch):
        yield


@pytest.fixture(autouse=True)
def _fast_compile_test(request):
    """A test marked ``fast_compile`` (in a module that is not)."""
    marks = getattr(getattr(request.node, "module", None), "pytestmark", [])
    module_marked = any(getattr(m, "name", None) == "fast_compile"
                        for m in (marks if isinstance(marks, list) else [marks]))
    if module_marked:
        yield
        return
    with _fast_compile(request, pytest.MonkeyPatch):
        yield


@pytest.fixture
def no_compile(monkeypatch):
    """Make any ``jax.jit`` (and building a sweep's train function) fail the test: for checks
    that bad input is refused before anything compiles."""

    def refuse(*args, **kwargs):
        raise AssertionError("compiled (or built a train function) before refusing bad input")

    import jaxadv.engine.sweep

    monkeypatch.setattr(jax, "jit", refuse)
    monkeypatch.setattr(jaxadv.engine.sweep, "make_train", refuse)


# Seconds per file in a full two-worker run (2-core machine): the files that take longest
# start first (with ``--no-loadscope-reorder``, which keeps this order instead of xdist's
# "most tests first", that puts the one-test notebooks last), so that the last files to start
# are short ones and neither worker waits long for the other at the end. Files not listed
# follow in collection order.
LONGEST_FIRST = {
    "tests/test_train.py": 330,
    "tests/test_eval.py": 165,
    "tests/test_objectives.py": 145,
    "tests/test_faults.py": 125,
    "tests/test_torsos_cli.py": 95,
    "tests/test_objective_exact.py": 85,
    "notebooks/sequence_rl.ipynb": 75,
    "tests/test_devices.py": 65,
    "tests/test_sequence_train.py": 60,
    "notebooks/quickstart.ipynb": 60,
    "tests/test_checkpoint.py": 50,
    "tests/test_brax.py": 45,
    "notebooks/estimator_variance.ipynb": 45,
    "tests/test_variance.py": 45,
    "tests/test_recurrent.py": 45,
    "tests/test_sweep.py": 40,
    "tests/test_advantages.py": 40,
    "tests/test_cnn.py": 35,
    "tests/test_search.py": 35,
    "tests/test_variance_cli.py": 30,
    "tests/test_docs.py": 30,
    "notebooks/sweeps.ipynb": 25,
}


def pytest_collection_modifyitems(config, items):
    """The docstring examples (``--doctest-modules``) print shapes and rounded values, no
    learning: they compile fast too. The files in :data:`LONGEST_FIRST` run first, longest
    first (a stable sort: each file's tests keep their order)."""
    for item in items:
        if type(item).__name__ == "DoctestItem":
            item.add_marker(pytest.mark.fast_compile)
    items.sort(key=lambda item: -LONGEST_FIRST.get(item.nodeid.split("::")[0], 0))
