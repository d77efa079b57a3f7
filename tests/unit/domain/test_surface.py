"""The domain's public surface and its purity: standard library only, no clock, no I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import service.domain

DOMAIN = Path(service.domain.__file__).parent
# The rollout and job modules (the health gates in the same folder have their own rules).
MODULES = [
    "__init__",
    "commands",
    "cron",
    "errors",
    "job_events",
    "job_reports",
    "jobs",
    "planner",
    "rollout",
    "rollout_events",
    "spec",
    "windows",
]
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "open", "sleep", "random"}


def test_public_names_resolve() -> None:
    # ruff (RUF022) keeps every __all__ sorted; here: each name exists and nothing is missing
    assert all(hasattr(service.domain, name) for name in service.domain.__all__)
    assert {"decide", "Rollout", "Job", "DeviceReport", "RolloutSpec"} <= set(
        service.domain.__all__
    )


@pytest.mark.parametrize("module", MODULES)
def test_module_is_pure(module: str) -> None:
    tree = ast.parse((DOMAIN / f"{module}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            roots = [(node.module or "").split(".")[0]]
            if roots == ["service"]:
                assert (node.module or "").startswith("service.domain"), node.module
                continue
            if (node.module or "") == "device_agent.protocol":
                continue  # the pure device-to-cloud wire contract (stdlib only), per DESIGN
        else:
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                assert name not in FORBIDDEN_CALLS, f"{module}: calls {name}()"
            continue
        for root in roots:
            assert root in sys.stdlib_module_names, f"{module} imports {root}"
    imported = __import__(f"service.domain.{module}", fromlist=["_"])
    assert all(hasattr(imported, name) for name in imported.__all__)
