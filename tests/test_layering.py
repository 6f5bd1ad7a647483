"""The package's import order: stages import only from the stages below them, and no module imports in a circle.

The order (drawn in ``docs/design.md``)::

    errors, units  <-  ir  <-  language, hardware  <-  sharding  <-  execute, cost  <-  export  <-  planner
                   <-  testing, cli  <-  shardc (the public API)

A layer may import from every layer below it and from itself, never from above.  ``language`` and
``hardware`` are peers that do not know each other, and so are ``execute`` and ``cost``.  Every
``import`` counts, including those inside functions, so a cycle cannot hide behind a local import.
The imports are read from the source with :mod:`ast`; the module graph and its cycles are
:mod:`networkx`'s.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "shardc"

#: layer -> the layers it may import from (besides itself).
ALLOWED: dict[str, frozenset[str]] = {}
_BASE = frozenset({"errors", "units"})
ALLOWED["errors"] = frozenset()
ALLOWED["units"] = frozenset()
ALLOWED["grammars"] = frozenset()
ALLOWED["ir"] = _BASE
ALLOWED["language"] = ALLOWED["ir"] | {"ir", "grammars"}
ALLOWED["hardware"] = ALLOWED["ir"] | {"ir"}
ALLOWED["sharding"] = ALLOWED["language"] | ALLOWED["hardware"] | {"language", "hardware"}
ALLOWED["execute"] = ALLOWED["sharding"] | {"sharding"}
ALLOWED["cost"] = ALLOWED["sharding"] | {"sharding"}
ALLOWED["export"] = ALLOWED["execute"] | ALLOWED["cost"] | {"execute", "cost"}
ALLOWED["planner"] = ALLOWED["export"] | {"export"}
ALLOWED["testing"] = ALLOWED["planner"] | {"planner"}
ALLOWED["cli"] = ALLOWED["planner"] | {"planner"}
ALLOWED["shardc"] = ALLOWED["cli"] | {"cli", "testing"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """``shardc.sharding.rules`` -> ``sharding``; ``shardc.errors`` -> ``errors``; ``shardc`` -> ``shardc``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "shardc"


def imports_of(path: Path, module: str) -> set[str]:
    """Every shardc module that ``path`` imports, wherever the import statement stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "shardc")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "shardc":
                continue
            found.add(target)
            for alias in node.names:  # ``from shardc.execute import chips`` imports a module
                if (PACKAGE.parent / (target + "." + alias.name).replace(".", "/")).with_suffix(".py").exists():
                    found.add(f"{target}.{alias.name}")
    return found - {module}


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        graph.add_node(module)
        for target in imports_of(path, module):
            graph.add_edge(module, target)
    return graph


def violations(graph: nx.DiGraph) -> list[str]:
    """Imports against the order, and import cycles, as readable lines."""
    found = []
    for src, dst in graph.edges:
        lsrc, ldst = layer_of(src), layer_of(dst)
        if lsrc not in ALLOWED:
            found.append(f"{src}: layer '{lsrc}' is not in the documented order (tests/test_layering.py)")
        elif ldst != lsrc and ldst not in ALLOWED[lsrc] and not (lsrc == "shardc" and dst == "shardc"):
            found.append(f"{src} imports {dst}: '{lsrc}' may not import from '{ldst}'")
    for cycle in nx.simple_cycles(graph):
        found.append("import cycle: " + " -> ".join(cycle + cycle[:1]))
    return found


def test_every_module_is_in_a_documented_layer() -> None:
    layers = {layer_of(m) for m in import_graph().nodes}
    assert layers <= set(ALLOWED), sorted(layers - set(ALLOWED))


def test_imports_follow_the_pipeline_order() -> None:
    graph = import_graph()
    assert graph.number_of_edges() > 50  # the reader really found the package's imports
    problems = violations(graph)
    assert not problems, "\n".join(problems)


def test_subpackages_import_each_other_only_downwards() -> None:
    """The same order at the level of subpackages: the condensed graph has no cycle at all."""
    graph = import_graph()
    layers = nx.DiGraph((layer_of(a), layer_of(b)) for a, b in graph.edges if layer_of(a) != layer_of(b))
    assert nx.is_directed_acyclic_graph(layers), list(nx.simple_cycles(layers))


@pytest.mark.parametrize("edge, expected", [
    (("shardc.ir.graph", "shardc.sharding.rules"), "'ir' may not import from 'sharding'"),
    (("shardc.cost.model", "shardc.execute.emulate"), "'cost' may not import from 'execute'"),
    (("shardc.language.printer", "shardc.hardware.comm"), "'language' may not import from 'hardware'"),
    (("shardc.plot.pareto", "shardc.ir.graph"), "layer 'plot' is not in the documented order"),
])
def test_the_check_catches_a_bad_import(edge: tuple[str, str], expected: str) -> None:
    graph = import_graph()
    graph.add_edge(*edge)
    assert any(expected in p for p in violations(graph))


def test_the_check_catches_a_cycle() -> None:
    graph = import_graph()
    graph.add_edge("shardc.ir.mesh", "shardc.ir.graph")  # graph imports mesh: now a circle
    assert any(p.startswith("import cycle:") for p in violations(graph))


def test_local_imports_count(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from shardc.cost.model import estimate\n    return estimate\n")
    assert imports_of(source, "shardc.ir.m") == {"shardc.cost.model"}
