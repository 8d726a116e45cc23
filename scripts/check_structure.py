"""Structure rules that ruff and mypy do not check, run by the test script before pytest:
no function in src/ longer than 80 lines, and no module importing another module's private name."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 80
SOURCE = Path(__file__).resolve().parents[1] / "src" / "napari_pix2pix"


def problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    name = path.relative_to(SOURCE.parent)
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


def main() -> int:
    found = [line for path in sorted(SOURCE.rglob("*.py")) for line in problems(path)]
    print("\n".join(found) or f"structure: no function over {MAX_LINES} lines, no private imports")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
