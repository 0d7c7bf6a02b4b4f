"""`jaxadv train --log tensorboard wandb`: TensorBoard's own reader and the records of an
offline Weights & Biases run get back every metric of metrics.csv (per seed and the mean over
seeds), the config, the summary and the returns plot; a sweep logs one W&B run per point and
seed."""

import csv
import functools
import json
import math
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
from _wandb_files import offline_runs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxadv import cli
from jaxadv.cli import tracking

pytestmark = pytest.mark.fast_compile  # compares programs and checks mechanics (conftest.py)


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "run"
    argv = ["train", "--seeds", "2", "--num-envs", "4", "--num-steps", "32",
            "--total-timesteps", "4096", "--hidden", "8", "--log", "tensorboard", "wandb",
            "--wandb.project", "tests", "--wandb.group", "g", "--out", str(out), "--quiet"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        assert cli.main(argv) == 0
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return out, acc


def _expected(out):
    """Per metric of metrics.csv: ``{(seed or "mean", env steps): value}``, NaNs left out
    and the mean taken over the seeds with a value (a plain loop over the CSV)."""
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    names = [n for n in rows[0] if n not in ("seed", "update", "env_steps", "wall_seconds")]
    assert {"episode_return", "policy_loss", "grad_norm", "explained_variance"} <= set(names)
    expected = {}
    for name in names:
        values, by_step = {}, {}
        for row in rows:
            value, step = float(row[name]), int(row["env_steps"])
            if math.isfinite(value):
                values[int(row["seed"]), step] = value
                by_step.setdefault(step, []).append(value)
        values.update({("mean", step): sum(v) / len(v) for step, v in by_step.items()})
        expected[name] = values
    return expected


def _tag(name, seed):
    return f"{name}/mean" if seed == "mean" else f"{name}/seed{seed}"


def test_every_metric_of_metrics_csv_is_logged_to_tensorboard_per_seed_and_as_the_seed_mean(logged_run):
    out, acc = logged_run
    tags = set(acc.Tags()["scalars"])
    for name, values in _expected(out).items():
        for seed in (0, 1, "mean"):
            want = {step: v for (s, step), v in values.items() if s == seed}
            if not want:
                assert _tag(name, seed) not in tags
                continue
            got = {e.step: e.value for e in acc.Scalars(_tag(name, seed))}
            assert got.keys() == want.keys(), name
            np.testing.assert_allclose([got[s] for s in want], list(want.values()), rtol=1e-5,
                                       err_msg=name)


def test_every_metric_of_metrics_csv_is_in_the_offline_wandb_run(logged_run):
    out, _ = logged_run
    (run,) = offline_runs(out)
    assert (run.project, run.group, run.name) == ("tests", "g", "run")
    got = {}  # (tag, step) -> value
    for row in run.history:
        got.update({(tag, row["_step"]): v for tag, v in row.items() if not tag.startswith("_")})
    for name, values in _expected(out).items():
        for (seed, step), want in values.items():
            np.testing.assert_allclose(got.pop((_tag(name, seed), step)), want, rtol=1e-5,
                                       err_msg=f"{name} {seed} {step}")
    assert {tag.split("/")[0] for tag, _ in got} == {"wall_seconds", "returns"}  # nothing else
    assert run.config == json.loads((out / "config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    for key in ("final_return_mean", "final_return_per_seed", "env_steps", "train_seconds"):
        assert run.summary[key] == summary[key], key
    assert run.summary["returns/_type"] == "image-file"
    (png,) = out.glob("wandb/offline-run-*/files/" + run.summary["returns/path"])
    assert png.read_bytes() == (out / "returns.png").read_bytes()


def test_a_sweep_logs_one_wandb_run_per_point_and_seed_grouped_by_point(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "sw"
    argv = ["sweep", "--grid.lr", "1e-3", "3e-3", "--seeds", "2", "--num-envs", "4",
            "--num-steps", "32", "--total-timesteps", "2048", "--hidden", "8", "--log", "wandb",
            "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    runs = {run.name: run for run in offline_runs(out)}
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert sorted(runs) == sorted(f"p{r['point']}-s{r['seed']}" for r in rows)
    for row in rows:
        run = runs[f"p{row['point']}-s{row['seed']}"]
        assert run.group == f"sw-p{row['point']}"
        assert run.config["seed"] == int(row["seed"]) and run.config["point"] == {"lr": float(row["lr"])}
        for key in ("final_return", "auc"):
            np.testing.assert_allclose(run.summary[key], float(row[key]), rtol=1e-6)
        steps = [h["_step"] for h in run.history]
        assert steps == [32 * 4 * (u + 1) for u in range(16)]
        returns = [h["episode_return"] for h in run.history if "episode_return" in h]
        np.testing.assert_allclose(np.mean(returns), float(row["auc"]), rtol=1e-6)


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


@pytest.mark.parametrize(("command", "kind"), [("train", "tensorboard"), ("train", "wandb"),
                                               ("sequence", "wandb"), ("sweep", "wandb")])
def test_a_logger_without_its_package_is_refused_before_compiling(
        command, kind, monkeypatch, no_compile, tmp_path, capsys):
    monkeypatch.setitem(tracking.LOGGERS, kind, ("no_such_package_here",))
    extra = ["--grid.lr", "1e-3"] if command == "sweep" else []
    assert cli.main([command, *extra, "--log", kind, "--out", str(tmp_path)]) == 2
    assert f"pip install 'jaxadv[{kind}]'" in capsys.readouterr().err


class _Broken:
    """A logger whose ``append`` writes its update number to ``path``, then fails."""

    seconds = 0.0

    def __init__(self, path):
        self.path = path

    def append(self, metrics, first_update, wall_seconds):
        with open(self.path, "a") as f:
            f.write(f"{first_update}\n")
        raise OSError("disk full")

    def close(self):
        pass


def test_a_failing_logger_call_is_raised_by_wait_and_never_hangs_close(tmp_path):
    calls = tmp_path / "calls"
    logger = tracking.OtherProcess(functools.partial(_Broken, calls))
    logger.wait()  # started
    os.kill(logger._process.pid, signal.SIGINT)  # Ctrl-C reaches it too: it carries on
    logger.append({}, 1, 0.0)
    logger.append({}, 2, 0.0)  # dropped after the failure
    with pytest.raises(RuntimeError, match="disk full"):
        logger.wait()
    with pytest.raises(RuntimeError, match="disk full"):
        logger.close()
    assert calls.read_text().split() == ["1"]
    assert logger._process.exitcode == 0


def test_the_logger_process_does_not_run_the_main_module_again(tmp_path):
    """A script that imports jax and has no ``__main__`` guard: spawn's child would run it
    again (importing jax, 2 s of CPU, and starting a second logger); ours runs it once."""
    script = tmp_path / "script.py"
    script.write_text(
        "import functools, sys\n"
        f"sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
        "import jax\n"
        "from _processes import ModulesLogger\n"
        "from jaxadv.cli.tracking import OtherProcess\n"
        f"with open({str(tmp_path / 'runs')!r}, 'a') as f:\n"
        "    f.write('run\\n')\n"
        f"logger = OtherProcess(functools.partial(ModulesLogger, {str(tmp_path / 'child')!r}))\n"
        "logger.close()\n")
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert (tmp_path / "runs").read_text() == "run\n"
    assert (tmp_path / "child").read_text() == "False"  # the child has not imported jax


def test_a_logger_process_that_dies_is_an_error_not_a_hang(tmp_path):
    logger = tracking.OtherProcess(functools.partial(_Broken, tmp_path / "calls"))
    logger.wait()
    os.kill(logger._process.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="the logger's process exited"):
        logger.wait()
    with pytest.raises(RuntimeError, match="the logger's process exited"):
        logger.close()


def test_wandb_every_k_logs_update_one_and_each_multiple_of_k_with_all_their_values(
        monkeypatch, tmp_path):
    class FakeRun:
        def __init__(self):
            self.logged = []

        def log(self, data, step):
            self.logged.append((step, data))

    monkeypatch.setattr(tracking, "_wandb_run", lambda *args: FakeRun())
    settings = tracking.WandbSettings()
    logger = tracking.WandbLogger(tmp_path, 10, 3000, {}, settings)
    assert logger._every == 3  # 3,000 updates: at most 1,000 logged by default
    assert tracking.WandbLogger(tmp_path, 10, 1000, {}, settings)._every == 1
    assert tracking.WandbLogger(tmp_path, 10, 3000, {}, tracking.WandbSettings(every=7))._every == 7
    returns = np.arange(14, dtype=float).reshape(2, 7)  # 2 seeds, updates 1..7
    logger.append({"episode_return": returns[:, :4]}, 1, 0.5)
    logger.append({"episode_return": returns[:, 4:]}, 5, 0.9)
    steps = [step for step, _ in logger._run.logged]
    assert steps == [10, 30, 60]  # updates 1, 3 and 6
    _, data = logger._run.logged[2]
    assert data["episode_return/seed0"] == 5.0 and data["episode_return/seed1"] == 12.0
    assert data["episode_return/mean"] == 8.5 and data["wall_seconds"] == 0.9
    with pytest.raises(ValueError, match="wandb.every"):
        tracking.WandbSettings(every=0)
