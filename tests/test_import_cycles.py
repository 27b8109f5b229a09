"""No import cycles between trtdebug modules, including the ones hidden inside functions.

An import inside a function hides a cycle from Python (it runs after both modules are loaded)
but not from the reader: the two modules still depend on each other, and the next module-level
import turns it into an ImportError.  So this test reads every module with ``ast`` and counts
every ``import``, wherever it stands, as an edge:

* ``import a.b.c`` and ``from a.b.c import x`` depend on ``a.b.c``; ``from a.b import c``, where
  ``c`` is a submodule, depends on ``a.b.c`` (and not on the rest of ``a.b``'s ``__init__``).
* ``from a.b import name`` (not a submodule) depends on the package ``a.b``, i.e. its
  ``__init__``, whose own imports (re-exports) are edges from it.
* importing ``a.b.c`` first runs the ``__init__`` of every package on the way (``a.b``): that is
  an edge too, except to packages that contain the importing module, which Python has already
  started before it got there (so a package's ``__init__`` re-exporting its own modules is fine).
* imports under ``if TYPE_CHECKING:`` never run and are not edges.

A failure lists one cycle, e.g. ``trtdebug.results -> trtdebug.inputs -> ... -> trtdebug.results``.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import trtdebug

ROOT = Path(trtdebug.__file__).resolve().parent


def _modules() -> Dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _package_of(module: str, modules: Dict[str, Path]) -> str:
    return module if modules[module].name == "__init__.py" else module.rpartition(".")[0]


def _targets(module: str, node, modules: Dict[str, Path]) -> Set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative import
            pkg = _package_of(module, modules).split(".")
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        names = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            names.append(sub if sub in modules else base)
    own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    out = set()
    for name in names:
        if not name.startswith("trtdebug"):
            continue
        while name and name not in modules:  # ``import trtdebug.x.y`` of a name below a module
            name = name.rpartition(".")[0]
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix == name or prefix not in own_packages:
                out.add(prefix)
    out.discard(module)
    return out


def import_graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = set().union(*(_targets(module, n, modules) for n in _imports(tree)))
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle as a list of modules (first == last), or None; iterative DFS with colours."""
    state: Dict[str, int] = {}  # 1 on the stack, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        iters = [iter(sorted(graph[start]))]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_cycles_hidden_in_functions(tmp_path):
    graph = {"trtdebug.a": {"trtdebug.b"}, "trtdebug.b": {"trtdebug.c"}, "trtdebug.c": {"trtdebug.a"}, "trtdebug.d": set()}
    assert find_cycle(graph) == ["trtdebug.a", "trtdebug.b", "trtdebug.c", "trtdebug.a"]
    assert find_cycle({"trtdebug.a": {"trtdebug.b"}, "trtdebug.b": set()}) is None
    tree = ast.parse("def f():\n    from trtdebug.results import RunResult\nif TYPE_CHECKING:\n    import trtdebug.cli\n")
    modules = {"trtdebug": ROOT / "__init__.py", "trtdebug.results": ROOT / "results.py", "trtdebug.cli": ROOT / "cli" / "__init__.py",
               "trtdebug.inputs": ROOT / "inputs" / "__init__.py", "trtdebug.inputs.io": ROOT / "inputs" / "io.py"}
    found = set().union(*(_targets("trtdebug.inputs.io", n, modules) for n in _imports(tree)))
    assert found == {"trtdebug.results"}


def test_a_package_init_counts_for_modules_outside_it():
    modules = {"trtdebug": ROOT / "__init__.py", "trtdebug.inputs": ROOT / "inputs" / "__init__.py",
               "trtdebug.inputs.io": ROOT / "inputs" / "io.py", "trtdebug.inputs.spec": ROOT / "inputs" / "spec.py",
               "trtdebug.results": ROOT / "results.py"}
    node = ast.parse("from trtdebug.inputs.spec import format_shape").body[0]
    assert _targets("trtdebug.results", node, modules) == {"trtdebug.inputs", "trtdebug.inputs.spec"}
    assert _targets("trtdebug.inputs.io", node, modules) == {"trtdebug.inputs.spec"}
    node = ast.parse("from trtdebug.inputs import spec, load_inputs").body[0]
    assert _targets("trtdebug.results", node, modules) == {"trtdebug.inputs", "trtdebug.inputs.spec"}
