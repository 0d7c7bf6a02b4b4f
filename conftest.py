"""Suite-wide settings (no silent rank promotion, float32 by default) and shared fixtures."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def no_compile(monkeypatch):
    """Make any ``jax.jit`` (and building a sweep's train function) fail the test: for checks
    that bad input is refused before anything compiles."""

    def refuse(*args, **kwargs):
        raise AssertionError("compiled (or built a train function) before refusing bad input")

    import jaxadv.sweep

    monkeypatch.setattr(jax, "jit", refuse)
    monkeypatch.setattr(jaxadv.sweep, "make_train", refuse)
