"""`jaxadv train --log tensorboard`: TensorBoard's own reader gets back every metric of
metrics.csv (per seed and the mean over seeds), the config and the returns plot."""

import csv
import json
import math

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxadv import cli, tracking


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "run"
    argv = ["train", "--seeds", "2", "--num-envs", "4", "--num-steps", "32",
            "--total-timesteps", "4096", "--hidden", "8", "--log", "tensorboard",
            "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return out, acc


def test_every_metric_of_metrics_csv_is_logged_per_seed_and_as_the_seed_mean(logged_run):
    out, acc = logged_run
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    names = [n for n in rows[0] if n not in ("seed", "update", "env_steps", "wall_seconds")]
    assert {"episode_return", "policy_loss", "grad_norm", "explained_variance"} <= set(names)
    tags = set(acc.Tags()["scalars"])
    for name in names:
        values = {}  # (seed, env steps) -> value
        for row in rows:
            values[int(row["seed"]), int(row["env_steps"])] = float(row[name])
        steps = sorted({step for _, step in values})
        for seed in (0, 1):
            want = {step: values[seed, step] for step in steps if math.isfinite(values[seed, step])}
            got = {e.step: e.value for e in acc.Scalars(f"{name}/seed{seed}")} if want else {}
            assert got.keys() == want.keys(), name
            np.testing.assert_allclose([got[s] for s in want], list(want.values()), rtol=1e-6,
                                       err_msg=name)
        means = {}
        for step in steps:
            finite = [v for v in (values[0, step], values[1, step]) if math.isfinite(v)]
            if finite:
                means[step] = sum(finite) / len(finite)
        if means:
            got = {e.step: e.value for e in acc.Scalars(f"{name}/mean")}
            assert got.keys() == means.keys(), name
            np.testing.assert_allclose([got[s] for s in means], list(means.values()), rtol=1e-5,
                                       err_msg=name)
        else:
            assert f"{name}/mean" not in tags


def test_the_config_summary_and_returns_plot_are_logged(logged_run):
    out, acc = logged_run
    config = json.loads((out / "config.json").read_text())
    texts = {tag: acc.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in ("config", "summary")}
    assert json.loads(texts["config"]) == config
    summary = json.loads(texts["summary"])
    assert summary["final_return_mean"] == json.loads((out / "summary.json").read_text())["final_return_mean"]
    (image,) = acc.Images("returns")
    assert image.encoded_image_string == (out / "returns.png").read_bytes()
    assert image.step == summary["env_steps"]  # the last update's


def test_a_logger_without_its_package_is_refused_before_compiling(monkeypatch, no_compile, tmp_path, capsys):
    monkeypatch.setitem(tracking.LOGGERS, "tensorboard", ("no_such_package_here",))
    assert cli.main(["train", "--log", "tensorboard", "--out", str(tmp_path)]) == 2
    assert "pip install 'jaxadv[tensorboard]'" in capsys.readouterr().err


def test_a_failing_logger_call_is_raised_by_wait_and_never_hangs_close():
    class Broken:
        seconds, calls = 0.0, []

        def append(self, metrics, first_update, wall_seconds):
            self.calls.append(first_update)
            raise OSError("disk full")

        def close(self):
            pass

    logger = tracking.Background(Broken())
    logger.append({}, 1, 0.0)
    logger.append({}, 2, 0.0)  # dropped after the failure
    with pytest.raises(RuntimeError, match="disk full"):
        logger.wait()
    with pytest.raises(RuntimeError, match="disk full"):
        logger.close()
    assert Broken.calls == [1]
