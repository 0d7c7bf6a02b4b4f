"""`jaxadv variance`: outputs on a tabular MDP and on CartPole, and bad input refused before compiling."""

import csv
import json
import struct

import jax
import pytest

from jaxadv import cli
from jaxadv.science import exact, variance

pytestmark = pytest.mark.fast_compile  # the command's outputs and statistics (conftest.py)


def _read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def mdp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("var")
    argv = ["variance", "--mdp", "random", "--states", "5", "--actions", "3", "--estimators", "return", "td",
            "gae:0.9", "gae:0.95", "nstep:5", "gae:0.9:unweighted", "--batch-sizes", "4", "16",
            "--critic", "exact", "noisy:0.5", "--num-batches", "60", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    return out


def test_mdp_outputs(mdp_run):
    rows = _read_csv(mdp_run / "variance.csv")
    assert len(rows) == 2 * 6 * 2  # critics × estimators × batch sizes
    assert {r["estimator"] for r in rows} == {"return", "td", "gae:0.9", "gae:0.95", "nstep:5", "gae:0.9:unweighted"}
    for r in rows:
        mse, var, bias_sq = float(r["mse"]), float(r["variance"]), float(r["bias_sq"])
        # E‖ĝ − g‖² = ‖b‖² + tr Cov holds for the estimates up to the (M−1)/M of the variance
        assert mse == pytest.approx(bias_sq + var, rel=0.05, abs=1e-6)
        assert float(r["bias_lo"]) <= float(r["bias"]) <= float(r["bias_hi"])
    summary = json.loads((mdp_run / "summary.json").read_text())
    assert summary["critic_relative_error"]["noisy:0.5"] == pytest.approx(0.5, rel=1e-4)
    assert set(summary["best_lambda"]) == {"exact", "noisy:0.5"}
    for critic, best in summary["best_lambda"].items():  # the λ of least MSE among td (0) and gae
        candidates = {0.0 if r["estimator"] == "td" else float(r["estimator"].split(":")[1]): float(r["mse"])
                      for r in rows if r["critic"] == critic and r["batch_size"] == "16"
                      and r["estimator"] in ("td", "gae:0.9", "gae:0.95")}
        assert best["lambda"] == min(candidates, key=candidates.get)
    (weighting,) = [w for w in summary["gamma_weighting"] if w["critic"] == "exact"]
    assert weighting["estimator"] == "gae:0.9:unweighted" and weighting["weighted_rel_bias"] is not None
    assert summary["horizon"] >= 1 and summary["device"]
    assert _png_size(mdp_run / "variance.png")[0] > 500


def test_mdp_numbers_reproduce_the_library_call(mdp_run):
    """The CLI's MDP, policy and key are the documented ones: the library call gives the same rows."""
    key_mdp, key_policy = jax.random.split(jax.random.key(0))
    mdp = exact.random_mdp(key_mdp, 5, 3, gamma=0.9, termination=0.1)
    logits = jax.random.normal(key_policy, (5, 3))
    rows, _ = variance.mdp_report(jax.random.key(1), mdp, logits, estimators=["td"], batch_sizes=[4, 16],
                                  critics=["exact"], num_batches=60)
    cli_rows = [r for r in _read_csv(mdp_run / "variance.csv") if (r["critic"], r["estimator"]) == ("exact", "td")]
    for mine, theirs in zip(rows, cli_rows):
        assert float(theirs["variance"]) == pytest.approx(mine["variance"], rel=1e-5)


def test_env_mode_measures_a_trained_policy(tmp_path):
    argv = ["variance", "--env", "CartPole-v1", "--train-timesteps", "2048", "--estimators", "mcb", "td",
            "--batch-sizes", "2", "4", "--critic", "network", "zero", "--num-batches", "6",
            "--reference-factor", "5", "--horizon", "60", "--out", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0
    rows = _read_csv(tmp_path / "variance.csv")
    assert len(rows) == 2 * 2 * 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reference_trajectories"] >= 5 * 4
    assert summary["reference_error"] > 0
    assert summary["policy"]["env_steps"] == 2048
    zero_td = next(r for r in rows if (r["critic"], r["estimator"], r["batch_size"]) == ("zero", "td", "4"))
    # with a zero critic TD's advantage is the reward (1 per CartPole step): biased
    assert float(zero_td["rel_bias_lo"]) > 0


def test_sequence_mode_reports_estimators_against_the_exact_gradient(tmp_path):
    argv = ["variance", "--sequence", "reverse", "--estimators", "rloo", "grpo", "--reductions", "constant",
            "sequence", "--batch-sizes", "8", "--group-size", "4", "--num-batches", "200",
            "--out", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0
    rows = {(r["estimator"], r["reduction"]): r for r in _read_csv(tmp_path / "variance.csv")}
    assert set(rows) == {(e, red) for e in ("rloo", "grpo") for red in ("constant", "sequence")}
    assert rows["rloo", "constant"]["unbiased_in_theory"] == "True"
    assert float(rows["rloo", "constant"]["rel_bias_lo"]) == 0.0  # unbiased: the interval holds 0
    assert float(rows["grpo", "constant"]["rel_bias_lo"]) > 0.0  # std normalisation: biased
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "grpo/constant" in summary["biased"] and "rloo/constant" not in summary["biased"]
    assert _png_size(tmp_path / "variance.png")[0] > 500
