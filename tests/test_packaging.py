"""The distribution: ``python -m build`` makes an sdist and a wheel of the package alone, and
the wheel, installed (not editable) into a fresh virtual environment, runs."""

import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest
import tomllib

import jaxadv

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """sdist and wheel built by ``python -m build`` from a copy of the tracked files."""
    source = tmp_path_factory.mktemp("source")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    for name in files.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return out


def test_the_version_is_one_number_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == jaxadv.__version__ == "0.2.0"
    assert f"## [{jaxadv.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    for name in ("DAPO", "GSPO", "CISPO", "GRPO", "RLOO", "GAE", "PPO"):
        assert name in project["description"]


def test_the_wheel_holds_the_package_and_nothing_else(dist):
    (wheel,) = dist.glob("jaxadv-0.2.0-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not (n.startswith("jaxadv/") or n.startswith("jaxadv-0.2.0.dist-info/"))]
    assert outside == []
    assert "jaxadv/py.typed" in names and "jaxadv/cli/app.py" in names and "jaxadv/envs/__init__.py" in names
    assert not any(part in n for n in names for part in ("tests/", "benchmarks/", "runs/", "notebooks/"))
    (sdist,) = dist.glob("jaxadv-0.2.0.tar.gz")
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert "jaxadv-0.2.0/jaxadv/py.typed" in members
    assert not any("/runs/" in m or "/.venv/" in m for m in members)


def test_the_wheel_installed_in_a_fresh_environment_runs(dist, tmp_path):
    """A new virtual environment gets the wheel (``--no-deps``: not editable, no source tree);
    its dependencies come from this environment's site-packages on ``PYTHONPATH``, which
    holds no ``jaxadv`` of its own (the editable install is a ``.pth`` hook, and ``.pth``
    files on ``PYTHONPATH`` are not read)."""
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=300)
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": str(bin_dir),
           "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    where = subprocess.run([str(bin_dir / "python"), "-c",
                            "import jaxadv; jaxadv.gae; print(jaxadv.__file__, jaxadv.__version__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert where.returncode == 0, where.stderr
    path, version = where.stdout.split()
    assert pathlib.Path(path).is_relative_to(venv) and version == "0.2.0"
    helped = subprocess.run([str(bin_dir / "jaxadv"), "--help"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert helped.returncode == 0, helped.stderr
    for command in ("train", "sweep", "variance", "sequence", "eval"):
        assert command in helped.stdout


# Each optional extra, and a test that runs the feature it installs with the real package (no
# stand-in): the extra is in ``dev``, so the fresh machine's ``make setup`` installs it, and
# ``make test`` runs these tests there.
EXTRAS_EXERCISED_BY = {
    "render": "tests/test_eval.py::test_render_draws_each_step_and_records_the_episode",
    "tensorboard": "tests/test_tracking.py::"
                   "test_every_metric_of_metrics_csv_is_logged_to_tensorboard_per_seed_and_as_the_seed_mean",
    "wandb": "tests/test_tracking.py::test_every_metric_of_metrics_csv_is_in_the_offline_wandb_run",
    "brax": "tests/test_brax.py::test_ppo_learns_inverted_pendulum",
}


def _extras():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_every_extra_is_installed_by_setup_and_exercised_by_a_test():
    """Every extra but ``dev`` is named by ``dev`` (``make setup`` installs ``.[dev]``), each of
    its requirements is installed here at a version its specifier allows, and a named test that
    exists uses it."""
    import importlib.metadata
    import re

    from packaging.requirements import Requirement

    extras = _extras()
    optional = sorted(set(extras) - {"dev"})
    assert optional == sorted(EXTRAS_EXERCISED_BY)
    (own,) = [Requirement(r) for r in extras["dev"] if Requirement(r).name == "jaxadv"]
    assert own.extras == set(optional)
    for extra in optional:
        for requirement in map(Requirement, extras[extra]):
            version = importlib.metadata.version(requirement.name)
            assert requirement.specifier.contains(version, prereleases=True), (extra, version)
        path, name = EXTRAS_EXERCISED_BY[extra].split("::")
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), (extra, name)


def test_the_package_type_checks():
    """mypy (``[tool.mypy]`` in pyproject.toml) passes on ``jaxadv/``. Its cache lives in the
    temp directory, one per checkout and environment, never in the tree: a cold run costs
    about 20 s of CPU (most of it reading jax's, flax's and NumPy's types), a warm one 1 s."""
    import hashlib
    import tempfile

    key = hashlib.sha256(f"{ROOT}\0{sys.prefix}".encode()).hexdigest()[:16]
    cache = pathlib.Path(tempfile.gettempdir()) / f"jaxadv-mypy-{key}"
    ran = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), "jaxadv"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_core_imports_without_the_extras():
    """The package and its commands import without loading an extra's package: an extra is
    needed only by the feature that uses it."""
    code = ("import sys, jaxadv, jaxadv.envs, jaxadv.cli.app, jaxadv.cli.eval; "
            "print(*sorted(set(sys.modules) & {'pygame', 'tensorboard', 'wandb', 'brax'}))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "", ran.stdout
