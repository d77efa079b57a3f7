"""The gate modules are pure: standard library, numpy and the domain only; no clock, no I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import service.domain

DOMAIN = Path(service.domain.__file__).parent
MODULES = ["device_gates", "directions", "gate_model", "gates", "rollups", "sequential", "stats"]
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "open", "sleep", "random"}
ALLOWED_ROOTS = set(sys.stdlib_module_names) | {"numpy"}


@pytest.mark.parametrize("module", MODULES)
def test_gate_module_is_pure(module: str) -> None:
    tree = ast.parse((DOMAIN / f"{module}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            assert name not in FORBIDDEN_CALLS, f"{module}: calls {name}()"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            ("service", "device_agent")
        ):
            allowed = ("service.domain", "device_agent.protocol")
            assert (node.module or "").startswith(allowed), f"{module} imports {node.module}"
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] in ALLOWED_ROOTS, f"{module} imports {name}"
    imported = __import__(f"service.domain.{module}", fromlist=["_"])
    assert all(hasattr(imported, name) for name in imported.__all__)
