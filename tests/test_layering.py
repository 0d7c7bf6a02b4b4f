"""The package's import graph has no cycles, and the leaves stay leaves.

Every ``import`` and ``from ... import`` in ``jaxadv/`` (at any depth, inside functions and
``TYPE_CHECKING`` blocks too) is an edge; a cycle anywhere fails with the modules on it.
"""

import ast
import pathlib

import jaxadv

ROOT = pathlib.Path(jaxadv.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> the jaxadv modules it imports`` (a package import counts as its ``__init__``)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"jaxadv.engine.driver", "jaxadv.engine.train"} <= graph["jaxadv.cli.runs"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_leaves_import_nothing_of_jaxadv():
    """``validate`` imports nothing of jaxadv; the other leaves at most ``validate``."""
    graph = import_graph()
    assert graph["jaxadv.validate"] == set(), graph["jaxadv.validate"]
    for leaf in ("jaxadv.stats", "jaxadv.envs.mdp", "jaxadv.advantages", "jaxadv.losses",
                 "jaxadv.distributions"):
        assert graph[leaf] <= {"jaxadv.validate"}, (leaf, graph[leaf])


def test_environments_do_not_import_the_analysis_or_the_trainer():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("jaxadv.envs"):
            assert not deps & {"jaxadv.science.exact", "jaxadv.science.variance", "jaxadv.engine.train"}, (name, deps)


LAYERS = ("pure", "envs nets", "engine", "tuning science", "cli")
"""The package's layers, bottom up: the pure functions at the top level of the package, then
environments and networks, the engine, search and the exact tools, and the commands."""


def _layer(module: str) -> tuple[int, str]:
    """``(floor, group)`` of a module: its subpackage's place in :data:`LAYERS` (a top-level
    module is a pure function's: floor 0, its own group; ``jaxadv.__main__``, ``python -m
    jaxadv``, is the command's)."""
    sub = module.split(".")[1] if module.count(".") >= 1 else ""
    sub = "cli" if sub == "__main__" else sub
    for floor, names in enumerate(LAYERS):
        if sub in names.split():
            return floor, sub
    return 0, module


def test_each_layer_imports_only_from_the_layers_below_it():
    """An import goes down, or stays inside its own subpackage; never up, and never sideways
    between the two subpackages of one floor (search and the exact tools know nothing of each
    other)."""
    graph = import_graph()
    wrong = []
    for name, deps in graph.items():
        floor, group = _layer(name)
        for dep in deps:
            dep_floor, dep_group = _layer(dep)
            if dep_floor > floor or (dep_floor == floor > 0 and dep_group != group):
                wrong.append(f"{name} -> {dep}")
    assert not wrong, wrong
    assert _layer("jaxadv.cli.train") == (4, "cli") and _layer("jaxadv.losses")[0] == 0
    assert _layer("jaxadv.__main__") == (4, "cli")


def test_moved_modules_keep_their_old_paths():
    """``jaxadv.<old>`` of every moved module imports as the very module at its new place."""
    import importlib

    assert "train" in jaxadv.MOVED and "sweep" in jaxadv.MOVED
    for old, new in jaxadv.MOVED.items():
        assert importlib.import_module(f"jaxadv.{old}") is importlib.import_module(f"jaxadv.{new}")
    from jaxadv.train import HParams, TrainConfig, make_train  # the paths users already use

    from jaxadv.engine import train

    assert (make_train, TrainConfig, HParams) == (train.make_train, train.TrainConfig, train.HParams)
    assert jaxadv.gae is jaxadv.advantages.gae


COMMANDS = ("train", "sweep", "eval", "sequence", "variance", "check")
"""The ``jaxadv`` subcommands, one module of :mod:`jaxadv.cli` each."""


def test_commands_import_shared_pieces_never_each_other():
    """A command module imports no other command's module, and the pieces the commands share
    (``jaxadv.cli.runs``, ``sweep_args``, ``search``, ``report``, ...) import no command: so a
    command can change, or go, without touching another. ``jaxadv.cli.app`` dispatches."""
    from jaxadv.cli.app import _commands

    assert set(_commands()) == set(COMMANDS)  # every subcommand is one of these modules
    graph = import_graph()
    commands = {f"jaxadv.cli.{name}" for name in COMMANDS}
    assert commands <= set(graph)
    wrong = [f"{name} -> {dep}" for name, deps in graph.items()
             if name.startswith("jaxadv.cli.") and name != "jaxadv.cli.app"
             for dep in deps & commands if dep != name]
    assert not wrong, wrong
