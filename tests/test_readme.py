"""The README's example and the library page's extension example (docs/library.md) run as
written and compute what the text says."""

import pathlib
import re

import numpy as np
import pytest

import jaxadv

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LIBRARY = ROOT / "docs" / "library.md"

pytestmark = pytest.mark.fast_compile  # mechanics and a numpy loop (conftest.py)


def test_readme_example_runs():
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    adv = np.asarray(namespace["advantages"])
    assert adv.shape == (128, 8)
    # V ≡ 0 and a cut after step 63: step 63's advantage is its own reward.
    np.testing.assert_allclose(adv[63], np.asarray(namespace["rewards"])[63], rtol=1e-6)
    # the user's own training step took jaxadv's PPO loss: a finite step away from zero
    w = np.asarray(namespace["w"])
    assert w.shape == (4, 2) and np.all(np.isfinite(w)) and np.any(w != 0)
    assert "make demo" in text and "make test" in text
    assert callable(jaxadv.gae)


def test_readme_extension_example_adds_an_estimator_and_an_algorithm():
    """The "Extend jaxadv" block of docs/library.md: the new rows work in the trainer, and the
    new estimator computes what its docstring says (checked against a plain numpy loop)."""
    from jaxadv.engine.algorithms import ALGORITHMS
    from jaxadv.engine.estimators import ESTIMATORS, EstimatorArgs, EstimatorInput

    text = LIBRARY.read_text()
    block = text.split("## Extend jaxadv", 1)[1]
    block = re.search(r"```python\n(.*?)```", block, re.DOTALL).group(1)
    namespace: dict = {}
    try:
        exec(compile(block, str(LIBRARY), "exec"), namespace)  # noqa: S102 - our own docs
        metrics = namespace["metrics"]
        assert np.asarray(metrics["env_steps"]).tolist() == [256, 512, 768, 1024]
        for name in ("policy_loss", "entropy", "grad_norm", "approx_kl"):
            assert np.all(np.isfinite(np.asarray(metrics[name]))), name
        assert np.all(np.asarray(metrics["value_loss"]) == 0.0)  # no critic is learned
        assert np.all(np.asarray(metrics["nonfinite"]) == 0)
        rng = np.random.default_rng(0)
        reward = rng.normal(size=(6, 2)).astype(np.float32)
        term = np.zeros((6, 2), bool)
        term[2, 0] = True
        zeros = np.zeros((6, 2), np.float32)
        x = EstimatorInput(reward, zeros, zeros, term, np.zeros((6, 2), bool))
        a, targets = ESTIMATORS["mcmean"].fn(x, EstimatorArgs(gamma=0.9))
        g = np.zeros((6, 2))
        for n in range(2):
            running = 0.0
            for t in reversed(range(6)):
                running = reward[t, n] + 0.9 * running * (1 - term[t, n])
                g[t, n] = running
        np.testing.assert_allclose(np.asarray(a), g - g.mean(), rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(targets) == 0)
    finally:
        ESTIMATORS.pop("mcmean", None)
        ALGORITHMS.pop("dualclip", None)
