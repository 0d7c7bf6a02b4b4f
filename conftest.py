"""Suite-wide settings (no silent rank promotion, float32 by default, one compile cache) and
shared fixtures."""

import contextlib
import os
import pathlib
import shutil
import tempfile

# One persistent compile cache for the whole run, shared by both xdist workers and every
# subprocess a test starts (the workers and subprocesses inherit these variables): a program
# that several tests compile alike (the CLI's runs, the fault-injection subprocesses, the same
# small config in many files) is compiled once per run. The cache starts empty every run (a
# fresh directory, removed at the end), so no run reuses another's programs, and no test
# writes to the user's own ~/.cache. JAXADV_CACHE_DIR is the CLI's cache; JAX_* are JAX's own.
if "PYTEST_XDIST_WORKER" not in os.environ and "JAXADV_TEST_CACHE" not in os.environ:
    os.environ["JAXADV_TEST_CACHE"] = tempfile.mkdtemp(prefix="jaxadv-test-xla-")
    os.environ["JAXADV_CACHE_DIR"] = os.environ["JAXADV_TEST_CACHE"]
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["JAXADV_TEST_CACHE"]
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import jax  # noqa: E402  (after the cache variables, which JAX reads on import)
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# A fast compile (the ``fast_compile`` marker) also uses XLA:CPU's older fusion emitters: its
# compiles take about a third of the CPU time again (an A2C CartPole program: 3.5 s → 1.3 s
# of the 16.6 s optimised). XLA_FLAGS is read once per process, so the option goes into each
# compile that JAX makes with ``jax_disable_most_optimizations`` on (and into XLA_FLAGS for the
# marked tests' subprocesses). A test that compares two *different* programs bit for bit
# (where fusion decides which multiply-adds become FMAs) marks itself ``product_emitters``.
FAST_EMITTERS = ("xla_cpu_use_fusion_emitters", False)


def _with_fast_emitters(get_compile_options):
    import jax._src.compiler as compiler

    def options(*args, **kwargs):
        compile_options = get_compile_options(*args, **kwargs)
        if compiler._DISABLE_MOST_OPTIMIZATIONS.value and _EMITTERS["fast"]:
            compile_options.env_option_overrides = [
                *compile_options.env_option_overrides, FAST_EMITTERS]
        return compile_options

    return options


_EMITTERS = {"fast": True}  # off while a ``product_emitters`` test runs
import jax._src.compiler as _compiler  # noqa: E402

_compiler.get_compile_options = _with_fast_emitters(_compiler.get_compile_options)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fast_compile: compile with XLA's optimisations mostly off (about half the "
        "compile time, slower programs), here and in the subprocesses the test starts; for "
        "tests that compare programs with each other or check mechanics, never for learning "
        "bars tuned on optimised numerics")
    config.addinivalue_line(
        "markers", "product_emitters: a fast_compile test that compares two different "
        "programs bit for bit keeps XLA's default fusion emitters (conftest.py)")


def _emitter_flags(fast: bool) -> str:
    """XLA_FLAGS for a subprocess: the suite's own, with or without the fast emitters."""
    flag = f"--{FAST_EMITTERS[0]}={str(FAST_EMITTERS[1]).lower()}"
    flags = os.environ.get("XLA_FLAGS", "").replace(flag, "").split()
    return " ".join([*flags, flag] if fast else flags)


@contextlib.contextmanager
def _emitters(fast: bool, patch):
    """Fast compiles with (``fast``) or without XLA:CPU's older emitters, here and in the
    subprocesses started meanwhile. The persistent compile cache keys on the option; jit's
    in-memory caches do not (as for ``jax_disable_most_optimizations`` itself), which is
    harmless here: the programs a test compares are built by that test."""
    before = _EMITTERS["fast"]
    _EMITTERS["fast"] = fast
    patch.setenv("XLA_FLAGS", _emitter_flags(fast))
    try:
        yield
    finally:
        _EMITTERS["fast"] = before


@contextlib.contextmanager
def _fast_compile(request, monkeypatch_factory):
    """``jax_disable_most_optimizations`` on while the marked module or test runs (and
    ``JAX_DISABLE_MOST_OPTIMIZATIONS=1`` for its subprocesses), with the fast emitters
    unless it is marked ``product_emitters``."""
    if request.node.get_closest_marker("fast_compile") is None:
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    with monkeypatch_factory.context() as patch:
        patch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
        fast = request.node.get_closest_marker("product_emitters") is None
        try:
            with _emitters(fast, patch):
                yield
        finally:
            jax.config.update("jax_disable_most_optimizations", before)


def _module_marks(request) -> set[str]:
    marks = getattr(getattr(request.node, "module", None), "pytestmark", [])
    return {getattr(m, "name", None) for m in (marks if isinstance(marks, list) else [marks])}


@pytest.fixture(autouse=True, scope="module")
def _fast_compile_module(request):
    """A module marked ``fast_compile`` (``pytestmark``): its module fixtures compile fast too."""
    with _fast_compile(request, pytest.MonkeyPatch):
        yield


@pytest.fixture(autouse=True)
def _fast_compile_test(request):
    """A test marked ``fast_compile`` (in a module that is not), or ``product_emitters`` in a
    module that is ``fast_compile`` but not ``product_emitters``."""
    module = _module_marks(request)
    if "fast_compile" not in module:
        with _fast_compile(request, pytest.MonkeyPatch):
            yield
    elif "product_emitters" not in module and request.node.get_closest_marker("product_emitters"):
        with pytest.MonkeyPatch.context() as patch, _emitters(False, patch):
            yield
    else:
        yield


@pytest.fixture(scope="session")
def default_emitters():
    """For a module fixture whose programs a ``product_emitters`` test compares: ``with
    default_emitters(): ...`` compiles them with XLA's default emitters, only meanwhile."""

    @contextlib.contextmanager
    def context():
        with pytest.MonkeyPatch.context() as patch, _emitters(False, patch):
            yield

    return context


@pytest.fixture
def no_compile(monkeypatch):
    """Make any ``jax.jit`` (and building a sweep's train function) fail the test: for checks
    that bad input is refused before anything compiles."""

    def refuse(*args, **kwargs):
        raise AssertionError("compiled (or built a train function) before refusing bad input")

    import jaxadv.engine.sweep

    monkeypatch.setattr(jax, "jit", refuse)
    monkeypatch.setattr(jaxadv.engine.sweep, "make_train", refuse)


# Seconds per file in a full two-worker run (measured on a 2-core x86_64 Xeon with AVX512-BF16,
# December 2026; a slower CPU scales them alike): the files that take longest
# start first (with ``--no-loadscope-reorder``, which keeps this order instead of xdist's
# "most tests first", that puts files of a few long tests last), so that the last files to start
# are short ones and neither worker waits long for the other at the end. Files not listed
# follow in collection order.
LONGEST_FIRST = {
    "tests/test_train.py": 110,
    "tests/test_objectives.py": 65,
    "tests/test_eval.py": 65,
    "tests/test_devices.py": 55,
    "tests/test_sweep.py": 55,
    "tests/test_faults.py": 50,
    "tests/test_advantages.py": 50,
    "tests/test_notebooks.py": 35,
    "tests/test_pbt.py": 35,
    "tests/test_search.py": 30,
    "tests/test_sequence_train.py": 30,
    "tests/test_objective_exact.py": 30,
    "tests/test_torsos_cli.py": 30,
    "tests/test_checkpoint.py": 30,
    "tests/test_docs.py": 25,
    "tests/test_variance.py": 25,
    "tests/test_brax.py": 25,
    "tests/test_recurrent.py": 20,
    "tests/test_packaging.py": 15,
    "tests/test_cnn.py": 15,
    "tests/test_cli.py": 15,
    "tests/test_transformer.py": 15,
    "tests/test_sweep_resume.py": 15,
    "tests/test_telemetry.py": 15,
    "tests/test_driver.py": 15,
    "tests/test_tracking.py": 15,
}


def pytest_unconfigure(config):
    """The run's compile cache goes with the run (the controller removes it, not a worker)."""
    cache = os.environ.get("JAXADV_TEST_CACHE")
    if cache and not hasattr(config, "workerinput"):
        shutil.rmtree(pathlib.Path(cache), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """The docstring examples (``--doctest-modules``) print shapes and rounded values, no
    learning: they compile fast too. The files in :data:`LONGEST_FIRST` run first, longest
    first (a stable sort: each file's tests keep their order)."""
    for item in items:
        if type(item).__name__ == "DoctestItem":
            item.add_marker(pytest.mark.fast_compile)
    items.sort(key=lambda item: -LONGEST_FIRST.get(item.nodeid.split("::")[0], 0))
