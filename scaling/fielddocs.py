"""The docstring under each field of a dataclass, read from its source without importing it (ast), so that a
field's one description also serves as the help text of the command-line option that sets it."""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path


@cache
def field_docs(module: str, cls: str) -> dict[str, str]:
    """{field name: its docstring, on one line} of class `cls` in `module` (found, not imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"no module {module}")
    tree = ast.parse(Path(spec.origin).read_text())
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    if node is None:
        raise ImportError(f"no class {cls} in {module}")
    docs: dict[str, str] = {}
    for field, doc in zip(node.body, node.body[1:], strict=False):
        if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            docs[field.target.id] = " ".join(doc.value.value.split())
    return docs
