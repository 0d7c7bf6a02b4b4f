"""The parts of the jaxadv site that are made at build time, from the package itself.

- One API page per public module (every module of ``jaxadv`` with an ``__all__``), written
  to ``docs/api/<module>.rst`` when the build starts, with a toctree of them by group in
  ``docs/api/modules.inc``; a module added to or removed from the package gains or loses
  its page at the next build, with nothing to edit here.
- The notebooks of ``notebooks/`` copied to ``docs/notebooks/`` (myst-nb renders them from
  their stored outputs; nothing is executed).
- ``{jaxadv-help} <command>``: the output of ``jaxadv <command> --help``, captured in the
  build's own process (one import of JAX for the whole site).
- ``{jaxadv-reexports} <module>``: a summary table of the names that ``<module>`` exports
  but that are defined (and documented) in another public module, each linked to its
  documentation under the name it is imported by (``jaxadv.gae``, ``jaxadv.envs.make``).

Every file is written only when its content changes, so that an unchanged page is not
read again by an incremental build.

The docstrings are written for ``help()`` as much as for this site, and a few things are
mended on the way in (the source is left alone): ``|S|`` and ``|y|`` (a size, not a reST
substitution) are escaped; a simple table whose text runs past a column's border is laid
out again; napoleon's ``type: description`` reading is kept off constants and fields, whose
docstrings are prose; a constant without a docstring of its own shows none rather than its
type's; autosummary's first sentence is not cut inside a parenthesis ("eq. 7)"); a
NamedTuple's field getters ("Alias for field number 0") are not listed; and a name defined
in two modules (``Rollout``) resolves as the module that wrote it sees it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import pkgutil
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.domains.python import PythonDomain as _PythonDomain
from sphinx.ext import autosummary
from sphinx.ext.autosummary import Autosummary
from sphinx.ext.napoleon import _process_docstring as _napoleon_process_docstring
from sphinx.util.docutils import SphinxDirective

PACKAGE = "jaxadv"
DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
API = DOCS / "api"
NOTEBOOKS = DOCS / "notebooks"
HELP_COLUMNS = 78  # the width `jaxadv <command> --help` is drawn at: the theme's text column
GENERATED_BANNER = ".. This page is written by docs/_ext/jaxadv_docs.py at each build: edit that file.\n\n"


# -- which modules are public, and where each exported name is documented ------------------


def public_modules() -> list[str]:
    """Every module of the package that has an ``__all__``, the package itself first."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE, *sorted(
        info.name for info in pkgutil.walk_packages(package.__path__, f"{PACKAGE}.")
        if not any(part.startswith("_") for part in info.name.split(".")))]
    return [name for name in names if hasattr(importlib.import_module(name), "__all__")]


def canonical(module: str, name: str) -> str:
    """Where ``module.name`` is documented: ``module.name`` itself, unless it is a function or
    a class defined in another public module that exports it too."""
    obj = getattr(importlib.import_module(module), name)
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return f"{module}.{name}"
    home = getattr(obj, "__module__", None)
    if home == module or not isinstance(home, str) or not home.startswith(f"{PACKAGE}."):
        return f"{module}.{name}"
    try:
        exported = getattr(importlib.import_module(home), "__all__", ())
    except ImportError:
        return f"{module}.{name}"
    qualname = getattr(obj, "__qualname__", name)
    if qualname in exported and "." not in qualname:
        return f"{home}.{qualname}"
    return f"{module}.{name}"


def own_and_reexported(module: str) -> tuple[list[str], list[str]]:
    """``module.__all__`` split into the names documented on its page and the canonical
    names of those documented elsewhere (the package's lazy re-exports are all elsewhere)."""
    names = list(importlib.import_module(module).__all__)
    if module == PACKAGE:  # jaxadv/__init__.py imports nothing until a name is used
        return [], [canonical(PACKAGE, name) for name in names]
    own, elsewhere = [], []
    for name in names:
        target = canonical(module, name)
        if target == f"{module}.{name}":
            own.append(name)
        else:
            elsewhere.append(target)
    return own, elsewhere


# -- the generated API pages ---------------------------------------------------------------


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "function"
    return "data"


def _shows_value(obj: Any) -> bool:
    """A constant's value is shown when its repr is short and names no object."""
    text = repr(obj)
    return len(text) <= 160 and "<" not in text and " at 0x" not in text


def module_page(module: str) -> str:
    """The reST source of one module's API page."""
    mod = importlib.import_module(module)
    own, elsewhere = own_and_reexported(module)
    title = module
    lines = [GENERATED_BANNER.rstrip("\n"), "", title, "=" * len(title), "",
             f".. automodule:: {module}", "   :no-members:", "",
             f".. currentmodule:: {module}", ""]
    by_kind: dict[str, list[str]] = {"function": [], "class": [], "data": []}
    for name in own:
        by_kind[_kind(getattr(mod, name))].append(name)
    if own:  # in the order of the sections below
        lines += [".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {name}" for kind in ("function", "class", "data") for name in by_kind[kind]]
        lines.append("")
    if elsewhere:
        lines += [".. rubric:: Re-exported here", "",
                  f"Documented in the module that defines them; ``{module}.<name>`` is the same object.", "",
                  f".. jaxadv-reexports:: {module}", ""]
    headings = {"function": "Functions", "class": "Classes", "data": "Constants"}
    for kind in ("function", "class", "data"):
        if not by_kind[kind]:
            continue
        heading = headings[kind]
        lines += [heading, "-" * len(heading), ""]
        for name in by_kind[kind]:
            if kind == "function":
                lines += [f".. autofunction:: {name}", ""]
            elif kind == "class":
                lines += [f".. autoclass:: {name}", "   :members:", ""]
            else:
                lines += [f".. autodata:: {name}"]
                if not _shows_value(getattr(mod, name)):
                    lines.append("   :no-value:")
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def modules_toc(modules: list[str], groups: dict[str, list[str]]) -> str:
    """The API index's toctrees, one per group of ``conf.api_groups``; a module in no group
    is listed under "Other modules", so that a new module never goes without a page."""
    placed: set[str] = set()
    out = []
    for group, members in [*groups.items(), ("Other modules", modules)]:
        chosen = [m for m in members if m in modules and m not in placed and m != PACKAGE]
        placed.update(chosen)
        if not chosen:
            continue
        out += [f"## {group}", "", "```{toctree}", ":maxdepth: 1", "", *chosen, "```", ""]
    return "\n".join(out)


def write_if_changed(path: Path, content: str | bytes) -> None:
    data = content.encode() if isinstance(content, str) else content
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # whole, even with a second build in the same tree


def generate(app: Sphinx) -> None:
    """Write the API pages and copy the notebooks (builder-inited: before sources are read)."""
    modules = public_modules()
    pages = {f"{module}.rst" for module in modules if module != PACKAGE}
    for module in modules:
        if module != PACKAGE:
            write_if_changed(API / f"{module}.rst", module_page(module))
    for stale in API.glob(f"{PACKAGE}.*.rst"):
        if stale.name not in pages:
            stale.unlink(missing_ok=True)
    write_if_changed(API / "modules.inc", modules_toc(modules, app.config.api_groups))

    sources = {path.name: path for path in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    for name, path in sources.items():
        write_if_changed(NOTEBOOKS / name, path.read_bytes())
    if NOTEBOOKS.exists():
        for stale in NOTEBOOKS.glob("*.ipynb"):
            if stale.name not in sources:
                stale.unlink(missing_ok=True)
        shutil.rmtree(NOTEBOOKS / ".ipynb_checkpoints", ignore_errors=True)


# -- directives ----------------------------------------------------------------------------


_HELP_CACHE: dict[str, str] = {}


def cli_help(command: str | None) -> str:
    """``jaxadv [command] --help``'s output, wrapped to HELP_COLUMNS."""
    key = command or ""
    if key not in _HELP_CACHE:
        from jaxadv.cli import main

        previous = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = str(HELP_COLUMNS)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main([*([command] if command else []), "--help"])
        finally:
            if previous is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = previous
        if status != 0 or not out.getvalue().strip():
            raise RuntimeError(f"jaxadv {key} --help exited {status}: {err.getvalue()[-2000:]}")
        lines = []
        for line in out.getvalue().rstrip().splitlines():
            line = line.rstrip()
            if len(line) > HELP_COLUMNS and not line[:1].isspace():  # the description paragraph
                lines += textwrap.wrap(line, HELP_COLUMNS, break_on_hyphens=False)
            else:
                lines.append(line)
        _HELP_CACHE[key] = "\n".join(lines)
    return _HELP_CACHE[key]


class HelpDirective(SphinxDirective):
    """``{jaxadv-help} train``: the output of ``jaxadv train --help`` as a literal block
    (no argument: ``jaxadv --help``)."""

    optional_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        command = self.arguments[0] if self.arguments else None
        text = cli_help(command)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        self.set_source_info(block)
        return [block]


class ReexportsDirective(Autosummary):
    """``{jaxadv-reexports} jaxadv.envs``: an autosummary table of the names that the module
    exports but that are documented elsewhere, each shown as ``<module>.<name>`` and linked
    to where it is documented."""

    required_arguments = 1
    optional_arguments = 0
    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {}

    def run(self) -> list[nodes.Node]:
        self.module = self.arguments[0]
        _own, elsewhere = own_and_reexported(self.module)
        self.options = {"nosignatures": True}
        self.content = StringList(elsewhere, source="jaxadv-reexports")
        return super().run() if elsewhere else []

    def import_by_name(self, name: str, prefixes: list[str | None]) -> tuple[str, Any, Any, str]:
        # the names are full ones: the page's current module is no prefix of theirs
        return super().import_by_name(name, prefixes=[None])

    def get_items(self, names: list[str]) -> list[tuple[str, str, str, str]]:
        items = super().get_items(names)
        return [(f"{self.module}.{real.rsplit('.', 1)[1]}", sig, summary, real)
                for _display, sig, summary, real in items]


# -- docstrings as written for help() and read as reST -------------------------------------
#
# The docstrings are written to be read in a terminal too: ``|S|`` and ``|y|`` are the size
# of a set or a response, not reST substitutions, and a table's cell may run past its
# column's border. Both are mended here, in the reST that autodoc reads, not in the source.

_LITERAL = re.compile(r"(``.+?``|`[^`]+`)")
_BORDER = re.compile(r"^( *)(=+)((?: +=+)+) *$")


def _escape_pipes(line: str) -> str:
    """``|`` outside inline literals and interpreted text, escaped (so ``|S|`` is text)."""
    parts = _LITERAL.split(line)
    return "".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def escape_pipes(lines: list[str]) -> None:
    """Escape the ``|`` of running text; literal blocks (after ``::``), directives' bodies,
    doctests and grid tables are left as they are."""
    skip_indent: int | None = None  # inside an indented block deeper than this
    doctest = False
    previous = ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not stripped or indent > skip_indent:
                previous = line
                continue
            skip_indent = None
        if doctest:
            if stripped:
                previous = line
                continue
            doctest = False
        if stripped.startswith((">>>", "...")) or stripped.startswith(("+-", "+=")):
            doctest = True
        elif stripped.startswith(".. ") or (stripped.endswith("::") and not stripped.startswith(":")):
            lines[i] = line if stripped.startswith(".. ") else _escape_pipes(line)
            skip_indent = indent
        elif stripped == "" and previous.rstrip().endswith("::"):
            pass
        else:
            lines[i] = _escape_pipes(line)
        previous = line


def _table_is_malformed(block: list[str]) -> bool:
    from docutils.core import publish_doctree
    from docutils.utils import Reporter

    text = textwrap.dedent("\n".join(block))
    doctree = publish_doctree(text, settings_overrides={
        "report_level": Reporter.SEVERE_LEVEL + 1, "halt_level": Reporter.SEVERE_LEVEL + 1,
        "warning_stream": io.StringIO()})
    return any("Malformed table" in message.astext()
               for message in doctree.findall(nodes.system_message))


def _relay_table(block: list[str]) -> list[str]:
    """A simple table laid out again with each column as wide as its widest cell: every run
    of text (words one space apart) belongs to the column its first character is in."""
    first = _BORDER.match(block[0])
    assert first is not None
    margin = len(first.group(1))
    starts = [m.start() for m in re.finditer(r"=+", block[0])]
    widths = [len(m.group()) for m in re.finditer(r"=+", block[0])]
    rows: list[list[str] | None] = []
    for line in block:
        if _BORDER.match(line):
            rows.append(None)
            continue
        cells = [""] * len(starts)
        runs = list(re.finditer(r"\S+(?: \S+)*", line))
        spans: dict[int, tuple[int, int]] = {}
        for run in runs:
            column = max([j for j, start in enumerate(starts) if start <= run.start()] or [0])
            begin, _end = spans.get(column, (run.start(), run.end()))
            spans[column] = (begin, run.end())
        for column, (begin, end) in spans.items():
            cells[column] = line[begin:end]
            widths[column] = max(widths[column], end - begin)
        rows.append(cells)
    border = " " * margin + "  ".join("=" * w for w in widths)
    out = []
    for cells in rows:
        if cells is None:
            out.append(border)
        else:
            out.append((" " * margin + "  ".join(c.ljust(w) for c, w in zip(cells, widths))).rstrip())
    return out


def relay_tables(lines: list[str]) -> None:
    """Lay out again every simple table that docutils finds malformed."""
    i = 0
    while i < len(lines):
        if not _BORDER.match(lines[i]):
            i += 1
            continue
        # a simple table: its top border, the header's underline, the bottom border (or two)
        borders = [i]
        j = i + 1
        while j < len(lines) and len(borders) < 3:
            if _BORDER.match(lines[j]):
                borders.append(j)
                if j + 1 >= len(lines) or not lines[j + 1].strip():
                    break
            j += 1
        end = borders[-1]
        block = lines[i:end + 1]
        if len(borders) >= 2 and _table_is_malformed(block):
            lines[i:end + 1] = _relay_table(block)
        i = end + 1


def napoleon_except_attributes(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                               lines: list[str]) -> None:
    """napoleon's conversion of Google-style sections, except on a constant's or a field's
    docstring, which napoleon reads as ``type: description`` and which here is prose
    ("default: all" in a flag's help would become its type)."""
    if what not in ("attribute", "data", "property"):
        _napoleon_process_docstring(app, what, name, obj, options, lines)


def mend_docstring(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                   lines: list[str]) -> None:
    if what in ("attribute", "data") and not (inspect.isclass(obj) or callable(obj)):
        # a constant with no docstring of its own would show its type's ("Built-in
        # immutable sequence.")
        own = re.sub(r"\s+", " ", " ".join(lines)).strip()
        if own and own == re.sub(r"\s+", " ", type(obj).__doc__ or "").strip():
            lines[:] = []
    relay_tables(lines)
    escape_pipes(lines)


_extract_summary = autosummary.extract_summary


def extract_summary(doc: list[str], settings: Any) -> str:
    """autosummary's first sentence of a docstring, carried on to the end of a parenthesis
    it opened: "(Yu et al. 2025, arXiv:2503.14476, eq. 7)" is not cut after "eq."."""
    summary = _extract_summary(doc, settings)
    stanza: list[str] = []
    for line in doc:
        if line.strip():
            stanza.append(line.strip())
        elif stanza:
            break
    text = re.sub(r"\s+", " ", " ".join(stanza))
    if not summary.endswith(".") or not text.startswith(summary[:-1]):
        return summary
    while summary.count("(") > summary.count(")") and len(summary) < len(text):
        end = text.find(". ", len(summary))
        summary = text if end < 0 else text[:end + 1]
    return summary


def skip_field_aliases(app: Sphinx, what: str, name: str, obj: Any, skip: bool,
                       options: Any) -> bool | None:
    """A NamedTuple's fields are in its signature and its "Attributes:" section: their
    getters ("Alias for field number 0") are not listed a second time."""
    if (obj.__doc__ or "").startswith("Alias for field number"):
        return True
    return None


class PythonDomain(_PythonDomain):
    """Python's domain, with a name that two modules define (``Rollout`` in
    :mod:`jaxadv.rollout` and :mod:`jaxadv.testing`) resolved the way the module that wrote
    it sees it: ``Rollout`` in an annotation of :mod:`jaxadv.train` is the class that
    ``jaxadv.train.Rollout`` is."""

    def find_obj(self, env: Any, modname: str | None, classname: str | None, name: str,
                 type: str | None, searchmode: int = 0) -> list[tuple[str, Any]]:
        matches = super().find_obj(env, modname, classname, name, type, searchmode)
        if len(matches) > 1 and modname:
            seen = _as_seen_from(modname, classname, name)
            chosen = [match for match in matches if match[0] in seen]
            if len(chosen) == 1:
                return chosen
        return matches


def _as_seen_from(modname: str, classname: str | None, name: str) -> set[str]:
    """The full names that ``name`` can mean in the source of ``modname`` (and in the body
    of its class ``classname``)."""
    seen = {f"{modname}.{classname}.{name}"} if classname else set()
    try:
        obj: Any = importlib.import_module(modname)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return seen
    home, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(home, str) and isinstance(qualname, str):
        seen.add(f"{home}.{qualname}")
    return seen


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("api_groups", {}, "env")
    app.connect("builder-inited", generate)
    app.setup_extension("sphinx.ext.napoleon")
    for listener in list(app.events.listeners.get("autodoc-process-docstring", [])):
        if listener.handler is _napoleon_process_docstring:
            app.disconnect(listener.id)
    app.connect("autodoc-process-docstring", napoleon_except_attributes)
    app.connect("autodoc-process-docstring", mend_docstring)
    app.connect("autodoc-skip-member", skip_field_aliases)
    app.add_domain(PythonDomain, override=True)
    autosummary.extract_summary = extract_summary  # read by Autosummary.get_items
    app.add_directive("jaxadv-help", HelpDirective)
    app.add_directive("jaxadv-reexports", ReexportsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
