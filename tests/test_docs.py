"""The documentation site (docs/, `make docs`): it builds with warnings as errors, every name
that a public module exports is on that module's API page, each CLI page carries its
command's --help, and the notebooks are rendered with their stored outputs.

The site is built once, into a temporary folder, by Sphinx in a subprocess on one core with
notebook execution off (about 30 s of CPU: importing JAX and the package, reading the pages,
writing them with the theme)."""

import html.parser
import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import jaxadv

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
COMMANDS = ("train", "sweep", "variance", "sequence", "eval", "check")


def public_modules() -> list[str]:
    """Every module of the package with an ``__all__`` (the package itself included)."""
    names = ["jaxadv", *sorted(
        info.name for info in pkgutil.walk_packages(jaxadv.__path__, "jaxadv.")
        if not any(part.startswith("_") for part in info.name.split(".")))]
    return [name for name in names if hasattr(importlib.import_module(name), "__all__")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site's html folder; the build's output is kept for the failure message."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    built = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-j", "1", "-q", "-b", "html",
         "-d", str(out / "doctrees"), "-D", "nb_execution_mode=off", str(DOCS), str(out / "html")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return built, out / "html"


class _Page(html.parser.HTMLParser):
    """The ids of a page's elements and its links as (href, text)."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []
        self._open: list[list] = []  # the <a> elements being read: [href, text]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a":
            self._open.append([attrs.get("href") or "", ""])

    def handle_data(self, data):
        for link in self._open:
            link[1] += data

    def handle_endtag(self, tag):
        if tag == "a" and self._open:
            href, text = self._open.pop()
            self.links.append((href, text.strip()))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_site_builds_without_warnings(site):
    built, html = site
    assert built.returncode == 0, f"sphinx-build failed:\n{built.stdout[-4000:]}\n{built.stderr[-8000:]}"
    assert "WARNING" not in built.stderr and "ERROR" not in built.stderr, built.stderr[-8000:]
    for page in ("index", "api/index", "cli/index", "design", "changelog", "readme", "notebooks",
                 "studies/estimator_variance", "studies/objectives", "benchmarks"):
        assert (html / f"{page}.html").is_file(), page


def test_every_exported_name_is_on_its_api_page(site):
    """Each name of each public module's ``__all__`` is documented on the module's page (an
    element with the id ``module.name``) or, for a name the module re-exports (the lazy
    names of ``jaxadv``, ``jaxadv.envs``'s), listed there as ``module.name`` with a link to
    the place where it is documented."""
    built, html = site
    assert built.returncode == 0, built.stderr[-8000:]
    pages: dict[Path, _Page] = {}

    def page(path: Path) -> _Page:
        if path not in pages:
            pages[path] = _parse(path)
        return pages[path]

    missing = []
    modules = public_modules()
    assert {"jaxadv", "jaxadv.advantages", "jaxadv.envs", "jaxadv.testing"} <= set(modules)
    for module in modules:
        path = html / "api" / ("index.html" if module == "jaxadv" else f"{module}.html")
        assert path.is_file(), f"no API page for {module}"
        here = page(path)
        links = {text: href for href, text in here.links}
        for name in importlib.import_module(module).__all__:
            full = f"{module}.{name}"
            if full in here.ids:
                continue
            href = links.get(full)
            if href:
                target, fragment = urlsplit(href).path, urlsplit(href).fragment
                target_path = (path.parent / target).resolve() if target else path
                if target_path.is_file() and fragment in page(target_path).ids:
                    continue
            missing.append(full)
    assert not missing, f"exported but not on its module's API page: {missing}"


def test_cli_pages_show_each_commands_help(site):
    built, html = site
    assert built.returncode == 0, built.stderr[-8000:]
    index = (html / "cli" / "index.html").read_text(encoding="utf-8")
    assert "usage: jaxadv [-h]" in index
    for command in COMMANDS:
        text = (html / "cli" / f"{command}.html").read_text(encoding="utf-8")
        assert f"usage: jaxadv {command} [-h]" in text, command
        assert "--help" in text


def test_notebooks_are_rendered_with_their_stored_outputs(site):
    built, html = site
    assert built.returncode == 0, built.stderr[-8000:]
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for notebook in notebooks:
        page = html / "notebooks" / f"{notebook.stem}.html"
        assert page.is_file(), notebook.name
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        images = sum("image/png" in output.get("data", {})
                     for cell in cells for output in cell.get("outputs", []))
        assert page.read_text(encoding="utf-8").count("<img") >= images, notebook.name
