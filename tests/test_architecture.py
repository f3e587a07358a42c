"""The package's import graph, read from its source: no circles, and the exporter's stages in a row.

Read with ``ast``, not by importing, so that an import inside a function counts as much as one at
the top of a module (that is how circles used to be held open), and an import under
``if TYPE_CHECKING:`` does not (it never runs).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = {"flow2onnx": ROOT / "core", "flow2onnx.plugins": ROOT / "plugins"}

#: The exporter's stages, in the order the data flows through them.
STAGES = ("capture", "plan", "lower", "passes", "write", "verify", "diagnose")
#: Exporter modules every stage may use, that belong to none of them.
SHARED = {"options", "weights", "serialize"}
#: Above the pipeline: no stage imports these.
ABOVE = {"api", "pipeline", "isolation", "compat"}


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(name: str, path: pathlib.Path):
    """(imported flow2onnx module, where, line) for each import in the module: where is False at
    the top level, "lazy" inside a module's own ``__getattr__`` (PEP 562: a name loaded on first
    use), "function" inside any other function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            inside = in_function
            if not inside and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                lazy = node is tree and isinstance(child, ast.FunctionDef) and child.name == "__getattr__"
                inside = "lazy" if lazy else "function"
            if isinstance(child, ast.ImportFrom):
                base = package.split(".")
                if child.level:
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    candidate = f"{target}.{alias.name}"
                    found.append((candidate if candidate in MODULES else target, inside, child.lineno))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, inside, child.lineno) for alias in child.names)
            visit(child, inside)

    tree = ast.parse(path.read_text())
    visit(tree, False)
    return [(target, inside, line) for target, inside, line in found if target in MODULES]


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _graph() -> dict[str, set[str]]:
    """Every import edge, the package ``__init__`` that importing a submodule runs included (except
    the importer's own packages, which Python has initialised before it)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, imports in IMPORTS.items():
        own = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        for target, _, _ in imports:
            parts = target.split(".")
            for k in range(1, len(parts) + 1):
                prefix = ".".join(parts[:k])
                if prefix in MODULES and prefix not in own and prefix != name:
                    edges[name].add(prefix)
    return edges


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, groups, counter = {}, {}, set(), [], [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter[0]
                    counter[0] += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


def test_the_import_graph_has_no_circles():
    assert _circles(_graph()) == []


def test_the_circle_finder_finds_a_circle():
    # The check above can fail: a made-up graph with one circle and one chain.
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_cli_imports_flow2onnx_modules_inside_functions():
    # The CLI loads a command's modules when that command runs, so that `flow2onnx --help` and
    # `flow2onnx run` start quickly, and a package's __getattr__ loads a name on first use (the
    # exporter behind `flow2onnx.export`, so that `flow2onnx.runtime` starts without it); nowhere
    # else does an import wait inside a function. Those lazy edges still count for circles.
    inside = [
        f"{name}:{line} imports {target}"
        for name, imports in IMPORTS.items() if not name.startswith("flow2onnx.cli")
        for target, where, line in imports if where == "function"
    ]
    assert inside == []


def _stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["flow2onnx", "exporter"] else None


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_imports_only_the_stages_before_it(stage):
    assert f"flow2onnx.exporter.{stage}" in MODULES, f"the {stage} stage is a subpackage of flow2onnx.exporter"
    allowed = set(STAGES[: STAGES.index(stage) + 1]) | SHARED
    wrong = sorted(
        f"{name} imports {target}"
        for name, imports in IMPORTS.items() if _stage_of(name) == stage
        for target, _, _ in imports if _stage_of(target) is not None and _stage_of(target) not in allowed
    )
    assert wrong == [], f"a stage may import only earlier stages and {sorted(SHARED)}; not {sorted(ABOVE)} or a later stage"


def test_the_exporter_has_no_loose_modules():
    loose = {name.split(".")[2] for name in MODULES if _stage_of(name) is not None and name.count(".") == 2}
    assert loose <= set(STAGES) | SHARED | ABOVE, sorted(loose - set(STAGES) - SHARED - ABOVE)


def test_the_runtime_imports_without_the_exporter_or_oneflow():
    # Serving an exported file needs ONNX Runtime, not OneFlow or the exporter (flow2onnx's
    # package __init__ loads those on first use only).
    code = (
        "import sys, flow2onnx.runtime, flow2onnx.plugin\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('flow2onnx.exporter', 'oneflow', 'flow2onnx.testing')))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_lazy_names_of_the_package_resolve():
    import flow2onnx
    import flow2onnx.plugin

    for name in flow2onnx.__all__:
        assert getattr(flow2onnx, name) is not None, name
    for name in flow2onnx.plugin.__all__:
        assert getattr(flow2onnx.plugin, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'exprot'"):
        flow2onnx.exprot


#: The longest a function may be, docstring included: past it, a function does several things
#: that each want a name.
LONGEST_FUNCTION = 60


def test_no_function_is_longer_than_sixty_lines():
    folders = [*SOURCES.values(), ROOT / "op_handlers"]
    long = []
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > LONGEST_FUNCTION:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
