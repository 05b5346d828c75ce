"""No import circles between the modules of pixelwise, read from the source with ``ast``.

An import at module level (class bodies included) runs when the module is imported; one under
``if TYPE_CHECKING:`` never runs and is left out. Imports inside functions run only when the
function is called: they are gathered as a second graph, checked and reported on their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pixelwise

SOURCE = Path(pixelwise.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The pixelwise modules an import statement loads (a submodule when it names one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    found = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in MODULES:
            found.append(submodule)
        elif base in MODULES:
            found.append(base)
    return found


def _walk(nodes: list[ast.stmt], module: str, in_function: bool, out: dict[bool, set]) -> None:
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            out[in_function].update(t for t in _targets(node, module) if t != module)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            _walk(node.orelse, module, in_function, out)  # the body is for annotations only
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            _walk(node.body, module, True, out)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None) or []
                statements = [c for c in children if isinstance(c, ast.stmt)]
                nested = [s for c in children if not isinstance(c, ast.stmt) for s in c.body]
                _walk(statements + nested, module, in_function, out)


def import_graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(module_level, function_level)``: for each module, the pixelwise modules it imports."""
    top, inner = {}, {}
    for module, path in MODULES.items():
        found: dict[bool, set] = {False: set(), True: set()}
        _walk(ast.parse(path.read_text(encoding="utf-8")).body, module, False, found)
        top[module], inner[module] = found[False], found[True]
    return top, inner


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_graph_sees_imports_and_skips_annotation_only_ones():
    top, inner = import_graphs()
    assert "pixelwise.models.registry" in top["pixelwise.models.unet"]
    assert "pixelwise.models.unet" in top["pixelwise.models"]
    assert "pixelwise.data._io" in top["pixelwise.data.encoding"]
    assert "pixelwise.data.encoding" not in top["pixelwise.data._io"]  # under TYPE_CHECKING
    assert "pixelwise.losses.weight_map" in inner["pixelwise.data.datasets"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_at_module_level():
    top, _ = import_graphs()
    assert cycles(top) == []


def test_no_import_circle_through_function_level_imports():
    top, inner = import_graphs()
    both = {module: top[module] | inner[module] for module in top}
    assert cycles(both) == []
