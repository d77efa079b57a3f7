"""The import rules of DESIGN.md, checked on the source tree.

Each top-level part may import only the parts DESIGN.md lists; the wire contracts
(`device_agent/protocol/`, `firmware/icc/`) import the standard library only; nothing imports
the CLI composition root `service.cli`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("service", "device_agent", "signing", "firmware", "infra", "tests")

# (package prefix, prefixes of ours it may import). The longest matching prefix wins.
ALLOWED: dict[str, tuple[str, ...]] = {
    "signing": ("signing",),
    "firmware": ("firmware",),
    "firmware.icc": ("firmware.icc",),
    "device_agent": ("device_agent", "signing", "firmware.icc"),
    "device_agent.protocol": ("device_agent.protocol",),
    "service": ("service", "signing", "device_agent.protocol"),
    "service.cli": OURS,
    "infra": OURS,
}
PURE = ("firmware.icc", "device_agent.protocol")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def _rule_for(module: str) -> str | None:
    matches = [p for p in ALLOWED if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _sources() -> list[Path]:
    return sorted(
        p
        for top in ("service", "device_agent", "signing", "firmware", "infra")
        for p in (ROOT / top).rglob("*.py")
    )


def _violations() -> list[str]:
    problems: list[str] = []
    for path in _sources():
        module = _module_name(path)
        rule = _rule_for(module)
        assert rule is not None, module
        for lineno, target in _imports(path):
            where = f"{path.relative_to(ROOT)}:{lineno}"
            top = target.split(".")[0]
            if top in OURS and not any(_is_under(target, a) for a in ALLOWED[rule]):
                problems.append(f"{where}: {module} may not import {target}")
            if _is_under(target, "service.cli") and not _is_under(module, "service.cli"):
                problems.append(f"{where}: nothing outside service.cli may import it ({target})")
            foreign = top not in sys.stdlib_module_names and top != "__future__"
            if rule in PURE and foreign and not _is_under(target, rule):
                problems.append(f"{where}: pure contract {module} imports non-stdlib {target}")
    return problems


def test_design_import_rules_hold() -> None:
    assert _violations() == []


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("signing.keys", "service.config", False),
        ("firmware.core", "device_agent.agent", False),
        ("device_agent.update", "signing.device", True),
        ("device_agent.update", "firmware.core", False),
        ("device_agent.update", "firmware.icc.frames", True),
        ("service.rollout", "device_agent.protocol.twin", True),
        ("service.rollout", "device_agent.session", False),
        ("service.cli.main", "infra.hub", True),
    ],
    ids=lambda v: str(v),
)
def test_rule_table_reads_as_design_says(module: str, target: str, allowed: bool) -> None:
    rule = _rule_for(module)
    assert rule is not None
    assert any(_is_under(target, a) for a in ALLOWED[rule]) is allowed
