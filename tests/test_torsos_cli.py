"""The GRU, the CNN and Brax through every command: `jaxadv train` with seeds and chunks, a
resume that recomputes a lost checkpoint's updates with bit-identical metrics (``repr``
floats; for the GRU they depend on the hidden state restored from the checkpoint before),
`jaxadv eval` of the run, and a `jaxadv sweep` over two learning rates (the GRU and the CNN:
a sweep vmaps the same training program over its points, nothing Brax-specific, and Brax's
physics is the slowest program of the three to compile)."""

import csv
import json
import shutil

import numpy as np
import pytest

from jaxadv import cli

pytestmark = pytest.mark.fast_compile  # checks mechanics (conftest.py)

TINY = ["--num-envs", "2", "--num-steps", "8", "--total-timesteps", "64", "--hidden", "8",
        "--seeds", "2"]
CASES = {
    "gru": ["--env", "MemoryChain-bsuite", "--network", "gru", "--seq-len", "4"],
    "cnn": ["--env", "Breakout-MinAtar", "--network", "cnn"],
    "brax": ["--env", "brax:inverted_pendulum"],
}


def _rows(path) -> list[dict]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("case", list(CASES))
def test_train_resume_eval_and_sweep(case, tmp_path):
    flags, run = [*TINY, *CASES[case]], tmp_path / "run"
    assert cli.main(["train", *flags, "--chunk-updates", "2", "--checkpoint-every", "2",
                     "--keep-checkpoints", "3", "--out", str(run), "--quiet"]) == 0
    first = _rows(run / "metrics.csv")
    assert len(first) == 4 * 2 and all(np.isfinite(float(r["policy_loss"])) for r in first)

    # lose the last checkpoint: the resumed run recomputes updates 3–4 from the one at 2
    again = tmp_path / "again"
    shutil.copytree(run, again)
    shutil.rmtree(again / "checkpoints" / "4")
    assert cli.main(["train", "--resume", str(again), "--quiet"]) == 0
    assert _rows(again / "metrics.csv") == first

    assert cli.main(["eval", str(run), "--episodes", "2", "--policy", "sample",
                     "--max-steps", "1000", "--quiet"]) == 0
    record = json.loads((run / "eval" / "eval.json").read_text())
    assert len(record["per_seed"]) == 2 and record["checkpoint"]["update"] == 4
    assert np.isfinite(record["over_seeds"]["return"]["mean"])

    if case == "brax":
        return
    sweep = tmp_path / "sweep"
    assert cli.main(["sweep", *flags, "--grid.lr", "1e-3", "3e-3", "--out", str(sweep),
                     "--quiet"]) == 0
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [(r["point"], r["seed"], float(r["lr"])) for r in rows] == [
        ("0", "0", 1e-3), ("0", "1", 1e-3), ("1", "0", 3e-3), ("1", "1", 3e-3)]
    assert all(int(r["env_steps"]) == 64 for r in rows)
