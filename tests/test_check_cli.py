"""``jaxadv check MODULE:FUNCTION --kind K``: the conformance kit from the command line."""

import inspect

import pytest
from test_testing import purejaxrl_gae
from test_testing_losses import MASKED_CHECKS, forgets_the_mask

from jaxadv import cli

pytestmark = pytest.mark.fast_compile  # mechanics (conftest.py)

INLINE_GAE = "import jax\nimport jax.numpy as jnp\n\n\n" + inspect.getsource(purejaxrl_gae)
NO_MASK_LOSS = "from jaxadv import losses\n\n\n" + inspect.getsource(forgets_the_mask)


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
        (["check", "jaxadv:gae", "--kind", "gea"], "expected one of: batchmean, cispo, dapo, drgrpo, gae"),
        (["check", "jaxadv:gae", "--kind", "grpo", "--adapter", "rlax"], "does not fit kind"),
        (["check", "jaxadv.losses:ppo_clip_loss", "--kind", "ppo", "--adapter", "grouped"],
         "does not fit kind 'ppo'"),
        (["check", "jaxadv.losses:ppo_clip_loss", "--kind", "ppo", "--clip-high", "0.3"],
         "ppo clips symmetrically"),
        (["check", "jaxadv.losses:ppo_clip_loss", "--kind", "ppo", "--reduction", "mean"],
         "expected one of: constant, sequence, token"),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and "Traceback" not in err, err


def test_jaxadv_gspo_passes_and_a_loss_that_forgets_the_mask_fails(tmp_path, capsys):
    assert cli.main(["check", "jaxadv.losses:gspo_loss", "--kind", "gspo"]) == 0
    out = capsys.readouterr().out
    assert "check_policy_loss(gspo_loss, 'gspo', adapter=jaxadv): 10/10 checks passed" in out
    exact_rows = [line for line in out.splitlines() if line.startswith("exact_")]
    assert len(exact_rows) == 2 and all("pass" in r and "cosine 1.000000" in r for r in exact_rows)
    path = tmp_path / "no_mask.py"
    path.write_text(NO_MASK_LOSS)
    assert cli.main(["check", f"{path}:forgets_the_mask", "--kind", "pg", "--reduction",
                     "sequence"]) == 1
    captured = capsys.readouterr()
    failed = {line.split()[0] for line in captured.out.splitlines() if " FAIL " in line}
    assert failed == {*MASKED_CHECKS, "all_masked"}, captured.out
    assert "reduction='sequence'" in captured.out
    assert "jaxadv check: 7 check(s) failed" in captured.err
