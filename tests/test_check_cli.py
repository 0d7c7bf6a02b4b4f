"""``jaxadv check MODULE:FUNCTION --kind K``: the conformance kit from the command line."""

import inspect

import pytest
from test_testing import purejaxrl_gae

from jaxadv import cli

pytestmark = pytest.mark.fast_compile  # mechanics (conftest.py)

INLINE_GAE = "import jax\nimport jax.numpy as jnp\n\n\n" + inspect.getsource(purejaxrl_gae)


def test_jaxadv_own_gae_passes_and_an_inline_gae_fails_the_truncation_checks(tmp_path, capsys):
    assert cli.main(["check", "jaxadv:gae", "--kind", "gae"]) == 0
    assert "15/15 checks passed" in capsys.readouterr().out
    path = tmp_path / "inline.py"
    path.write_text(INLINE_GAE)
    assert cli.main(["check", f"{path}:purejaxrl_gae", "--kind", "gae", "--adapter",
                     "purejaxrl"]) == 1
    captured = capsys.readouterr()
    failed = sorted(line.split()[0] for line in captured.out.splitlines() if " FAIL " in line)
    assert failed == ["reference_truncation", "truncated_every_step", "truncated_last_step"]
    assert "jaxadv check: 3 check(s) failed" in captured.err


def test_bad_targets_and_kinds_are_one_error_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    for argv, words in [
        (["check", "nosuch.module:gae", "--kind", "gae"], "'nosuch.module' does not import"),
        (["check", f"{broken}:gae", "--kind", "gae"], "RuntimeError: boom"),
        (["check", "jaxadv:nothere", "--kind", "gae"], "has no function 'nothere'"),
        (["check", "jaxadv.gae", "--kind", "gae"], "must be MODULE:FUNCTION"),
        (["check", "jaxadv:gae", "--kind", "gea"], "expected one of: batchmean, drgrpo, gae"),
        (["check", "jaxadv:gae", "--kind", "grpo", "--adapter", "rlax"], "does not fit kind"),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and "Traceback" not in err, err
