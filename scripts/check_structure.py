"""Structure rules that ruff and mypy do not check, run by the test script before pytest:

- no function in src/ longer than 80 lines, and no module importing another module's private name;
- the layers: a module imports only from its own layer or lower ones (``LAYERS``, lowest first), so
  the engine never imports the command line or the napari widgets;
- no import cycle between modules, counting every import (inside functions and under
  ``TYPE_CHECKING`` too).

``python scripts/check_structure.py [SOURCE_DIR]`` (default: src/napari_pix2pix).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 80
PACKAGE = "napari_pix2pix"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: Lowest first. A module's layer is that of its first name under the package (a module or a
#: folder); a name missing here is an error, so a new folder is placed on purpose.
LAYERS: list[set[str]] = [
    {"_version", "errors"},
    {"checks", "devices", "samples"},
    {"labels"},
    {"models"},
    {"io"},
    {"prediction"},
    {"scale"},
    {"training"},
    {"bioimageio"},
    {"cli", "_widgets", "_launch", "_napari_samples", "__main__", "__init__"},  # the faces and the API
]


def module_name(path: Path, source: Path) -> str:
    parts = list(path.relative_to(source.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every import of a module of the package, anywhere in ``tree``."""
    found = []
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + 1]
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:  # "from package import submodule" imports the submodule
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in known else target))
    return found


def function_problems(tree: ast.AST, name: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES:
                found.append(f"{name}:{node.lineno}: {node.name} is {length} lines long (at most {MAX_LINES})")
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level > 0:
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private:
                found.append(f"{name}:{node.lineno}: imports private name(s) {', '.join(private)}")
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def problems(source: Path) -> list[str]:
    paths = sorted(source.rglob("*.py"))
    known = {module_name(p, source) for p in paths}
    found, graph = [], {}
    for path in paths:
        module, name = module_name(path, source), path.relative_to(source.parent)
        tree = ast.parse(path.read_text(), filename=str(path))
        found += function_problems(tree, str(name))
        layer = layer_of(module)
        if layer is None:
            found.append(f"{name}: '{module}' is in no layer; add it to LAYERS in scripts/check_structure.py")
            continue
        edges = imported_modules(tree, module, path.name == "__init__.py", known)
        graph[module] = {target for _, target in edges if target != module}
        for line, target in edges:
            target_layer = layer_of(target)
            if target_layer is not None and target_layer > layer:
                found.append(f"{name}:{line}: imports {target}, a higher layer than {module}'s")
    cycle = find_cycle(graph)
    if cycle:
        found.append("import cycle: " + " -> ".join(cycle))
    return found


def main(argv: list[str]) -> int:
    source = Path(argv[0]).resolve() if argv else SOURCE
    found = problems(source)
    print(
        "\n".join(found)
        or f"structure: no function over {MAX_LINES} lines, no private imports, layers respected, no import cycle"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
