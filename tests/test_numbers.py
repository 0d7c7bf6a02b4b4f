"""Every table of figures in the README and the docs says where its numbers come from.

A *table* is a run of two or more lines that start with ``|`` whose second line is a
Markdown separator row (``|---|---:|``), inside a fenced code block or not. It is a *table
of figures* when one of its body cells begins with a measurement: a number written with a
decimal point (``0.974``, ``5.57 (1.000)``) or a thousands separator (``14,165``), or a
number followed by ``×`` or ``x``, ``%`` or a unit (``s``, ``ms``, ``µs``, ``kB``, ``MB``,
``GB``, ``GFLOP/s``, ``steps/s``). Tables of names, flags or files are not tables of
figures, even where their text mentions a number.

Each table of figures must have, in its own lines or in its *context* (the lines just
before it, up to :data:`BEFORE`, and just after it, up to :data:`AFTER`, neither crossing a
heading or another table):

- a reference to the script or test that produced it, ``benchmarks/<name>.py`` or
  ``tests/<name>.py``, and every such reference there must be a file of the repository;
- the machine it ran on: a core count (``2 CPU cores``, ``2-core x86_64``, ``16 cores``), an
  architecture (``x86_64``) or an accelerator's name (``H100``, ``H200``, ``A100``, ``TPU v5``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BEFORE = 8  # context lines looked at above a table
AFTER = 4  # and below it

SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$")
FIGURE = re.compile(
    r"""^[*_`]*[~≈<>≤≥±+\-−]?\s*(?:
        \d{1,3}(?:,\d{3})+(?:\.\d+)?                               # 14,165  1,898,016
      | \d+\.\d+                                                   # 0.974  5.57
      | \d+(?:\.\d+)?\s*(?:×|x\b|%|µs|ms|s\b|kB\b|MB\b|GB\b|GFLOP/s|steps/s)  # 2.4×  63%  12 s
    )""",
    re.VERBOSE,
)
SCRIPT = re.compile(r"(?<![\w/.-])((?:benchmarks|tests)/[\w./-]*?\w\.py)\b")
MACHINE = re.compile(
    r"\b(?:\d+|one|two|four|eight|sixteen)[- ](?:x86_64 |CPU |vCPU )*cores?\b"
    r"|\bx86_64\b|\b(?:H100|H200|A100|V100|L4|T4)\b|\bTPU v\d+",
    re.IGNORECASE,
)


def markdown_files() -> list[Path]:
    """README.md and every Markdown page of docs/ (not the build's output, nor the notebook
    copies the build writes)."""
    pages = sorted(p for p in (ROOT / "docs").rglob("*.md")
                   if not {"_build", "notebooks"} & set(p.relative_to(ROOT / "docs").parts[:-1]))
    return [ROOT / "README.md", *pages]


def tables(lines: list[str]) -> list[tuple[int, int]]:
    """The ``[start, stop)`` line ranges of the Markdown tables of ``lines``."""
    found, i = [], 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and SEPARATOR.match(lines[i + 1]):
            stop = i + 2
            while stop < len(lines) and lines[stop].lstrip().startswith("|"):
                stop += 1
            found.append((i, stop))
            i = stop
        else:
            i += 1
    return found


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def has_figures(lines: list[str], start: int, stop: int) -> bool:
    """Whether a body cell of the table begins with a measurement (see the module docstring)."""
    return any(FIGURE.match(cell) for line in lines[start + 2:stop] for cell in cells(line))


def headings(lines: list[str]) -> set[int]:
    """The lines that are Markdown headings (a ``#`` line outside fenced code)."""
    found, fenced = set(), False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,6}\s", line):
            found.add(i)
    return found


def context(lines: list[str], start: int, stop: int, spans: list[tuple[int, int]]) -> list[str]:
    """The table's lines and those around it, stopping at a heading or another table."""
    walls = headings(lines) | {i for a, b in spans if (a, b) != (start, stop) for i in range(a, b)}
    first = start
    while first > max(0, start - BEFORE) and first - 1 not in walls:
        first -= 1
    last = stop
    while last < min(len(lines), stop + AFTER) and last not in walls:
        last += 1
    return lines[first:last]


def untraced_tables(text: str, name: str, root: Path = ROOT) -> list[str]:
    """One message per table of figures in ``text`` (a file called ``name``) that lacks an
    existing script or test, or a machine, in its context."""
    lines = text.splitlines()
    spans = tables(lines)
    problems = []
    for start, stop in spans:
        if not has_figures(lines, start, stop):
            continue
        near = "\n".join(context(lines, start, stop, spans))
        scripts = SCRIPT.findall(near)
        where = f"{name}:{start + 1}: the table `{lines[start].strip()[:60]}`"
        missing = [s for s in scripts if not (root / s).is_file()]
        if not scripts:
            problems.append(f"{where} names no benchmarks/<name>.py or tests/<name>.py "
                            f"within {BEFORE} lines before or {AFTER} after it")
        elif missing:
            problems.append(f"{where} names {', '.join(missing)}, which does not exist")
        if not MACHINE.search(near):
            problems.append(f"{where} names no machine (cores, x86_64, a GPU) near it")
    return problems


def test_every_table_of_figures_names_its_script_and_machine():
    problems = []
    for path in markdown_files():
        problems += untraced_tables(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not problems, "tables of figures without their source:\n" + "\n".join(problems)


def test_the_docs_have_tables_of_figures_to_check():
    """The rule finds the measurement tables it is meant for (so that a change to the
    parser cannot make the test above pass by finding nothing)."""
    counted = {}
    for path in markdown_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        counted[path.relative_to(ROOT).as_posix()] = sum(
            has_figures(lines, a, b) for a, b in tables(lines))
    assert counted["README.md"] >= 1
    assert counted["docs/benchmarks.md"] >= 8
    assert counted["docs/studies/estimator_variance.md"] >= 3
    assert counted["docs/studies/objectives.md"] >= 4


SOURCED = """\
Produced by `benchmarks/throughput.py` on 2 CPU cores:

| num_envs | steps/s |
|---:|---:|
| 4 | 54,054 |
"""


@pytest.mark.parametrize("text, expected", [
    pytest.param(SOURCED, [], id="script and machine before the table"),
    pytest.param("| a | b |\n|---|---|\n| x | 0.5 |\n\n`tests/test_train.py` on one H200.\n",
                 [], id="script and machine after the table"),
    pytest.param("| what | figure | produced by | machine |\n|---|---|---|---|\n"
                 "| speed | 2.4× | `benchmarks/sweep_scaling.py` | 2-core x86_64 |\n",
                 [], id="script and machine in the table's cells"),
    pytest.param("Some text.\n\n| a | b |\n|---|---|\n| x | 12 s |\n",
                 ["names no benchmarks", "names no machine"], id="no source at all"),
    pytest.param("On 2 cores, `benchmarks/nowhere.py`:\n\n| a | b |\n|---|---|\n| x | 63% |\n",
                 ["benchmarks/nowhere.py, which does not exist"], id="a script that is not there"),
    pytest.param("`benchmarks/throughput.py`:\n\n| a | b |\n|---|---|\n| x | 1.5× |\n",
                 ["names no machine"], id="no machine"),
    pytest.param("```\n| a | b |\n|---|---|\n| x | 0.25 |\n```\n",
                 ["names no benchmarks", "names no machine"], id="a table in a code block"),
    pytest.param("`benchmarks/throughput.py` on 2 cores.\n\n## Next section\n\n"
                 "| a | b |\n|---|---|\n| x | 0.25 |\n",
                 ["names no benchmarks", "names no machine"], id="the context stops at a heading"),
    pytest.param("| file | contents |\n|---|---|\n| `returns.png` | the last 2% of updates |\n"
                 "| `summary.json` | `final_return_mean` |\n", [], id="not a table of figures"),
])
def test_the_rule_on_small_examples(text, expected):
    problems = untraced_tables(text, "example.md")
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected):
        assert fragment in problem and problem.startswith("example.md:"), problem


def test_the_message_names_the_file_and_the_tables_line():
    text = "# Title\n\nintro\n\n| estimator | MSE |\n|---|---:|\n| td | 0.005971 |\n"
    (problem, _) = untraced_tables(text, "docs/page.md")
    assert problem.startswith("docs/page.md:5: the table `| estimator | MSE |`"), problem
