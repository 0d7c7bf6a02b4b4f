"""The README's example runs as written and computes what the text says."""

import pathlib
import re

import numpy as np

import jaxadv

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    adv = np.asarray(namespace["advantages"])
    assert adv.shape == (128, 8)
    # V ≡ 0 and a cut after step 63: step 63's advantage is its own reward.
    np.testing.assert_allclose(adv[63], np.asarray(namespace["rewards"])[63], rtol=1e-6)
    assert "make demo" in text and "make test" in text
    assert callable(jaxadv.gae)
