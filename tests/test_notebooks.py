"""The notebooks run top to bottom, at a smaller workload than the one their stored outputs show.

Each notebook is executed in a fresh kernel (nbclient, the engine nbmake uses) after the
budget constants in :data:`SMALLER` are replaced: fewer timesteps, batches, seeds and compared
settings (each a compile), so that
every cell (imports, training, the variance reports, the plots, the printed tables) still runs
against the current package. They are compile-bound at that size, so the kernel compiles with
XLA's optimisations mostly off (``fast_compile``, conftest.py).
A replacement that no longer matches the notebook fails the test, so a notebook cannot drift
away from the test that runs it. The outputs stored in the notebooks (which the docs render)
come from the full workloads; see notebooks/README.md for how to re-execute them.
"""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"

SMALLER = {
    "quickstart.ipynb": {
        "total_timesteps=200_000)\ntrain": "total_timesteps=8_192)\ntrain",
        'estimator=estimator, total_timesteps=200_000': 'estimator=estimator, total_timesteps=8_192',
        "jax.random.key(0), 4)": "jax.random.key(0), 2)",
        'for estimator in ("td", "mc"):': 'for estimator in ("td",):',
    },
    "sequence_rl.ipynb": {
        "total_samples=128 * 30": "total_samples=128 * 2",
        'for estimator in ["gae", "grpo", "rloo"]:': 'for estimator in ["grpo"]:',
    },
    "estimator_variance.ipynb": {
        "lambdas = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0]": "lambdas = [0.0, 0.95, 1.0]",
        "estimators=estimators, batch_sizes=[16, 64]": "estimators=estimators, batch_sizes=[64]",
        "batch_sizes=[4, 16], num_batches=30": "batch_sizes=[16], num_batches=30",
        'critics=["exact", "noisy:0.3", "zero"], num_batches=150': 'critics=["exact", "noisy:0.3", "zero"], num_batches=8',
        'critics=["exact"], num_batches=150': 'critics=["exact"], num_batches=8',
        "total_timesteps=30_720": "total_timesteps=2_048",
        "num_batches=30, reference_factor=25, horizon=500": "num_batches=4, reference_factor=2, horizon=50",
    },
    "sweeps.ipynb": {
        "total_timesteps=100_000": "total_timesteps=4_096",
    },
}


def test_every_notebook_has_a_smaller_workload():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SMALLER)


@pytest.mark.fast_compile  # the kernel too (conftest.py): mechanics, no learning bar
@pytest.mark.parametrize("name", sorted(SMALLER))
def test_notebook_runs_top_to_bottom(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    unused = dict(SMALLER[name])
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for old, new in SMALLER[name].items():
            if old in cell.source:
                cell.source = cell.source.replace(old, new)
                unused.pop(old, None)
        cell.outputs = []
    assert not unused, f"{name} no longer contains {list(unused)}: update SMALLER"
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for cell in code for o in cell.outputs
                      if o.output_type == "stream")
    assert printed.strip(), f"{name} printed nothing"
    figures = [o for cell in code for o in cell.outputs
               if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert figures, f"{name} drew no figure"
