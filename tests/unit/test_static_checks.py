"""The house style's machine-checked part: ruff lint and format, and mypy --strict on the pure
contracts and cores (the file list lives in pyproject.toml)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_lint_and_format_are_clean() -> None:
    lint = _run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_mypy_strict_on_the_contracts_and_pure_cores() -> None:
    result = _run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout[-4000:]


_SEEDED = {"Random", "seed", "default_rng", "RandomState"}


def _seeds_from_hash(tree: ast.AST) -> list[int]:
    """Lines where a random generator is seeded with hash(...): str hashes change with
    PYTHONHASHSEED, so such data differs from one process to the next."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        if name not in _SEEDED:
            continue
        for arg in (*node.args, *(k.value for k in node.keywords)):
            if any(
                isinstance(inner, ast.Call) and getattr(inner.func, "id", "") == "hash"
                for inner in ast.walk(arg)
            ):
                found.append(node.lineno)
    return found


def test_no_random_generator_is_seeded_from_hash() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for top in ("service", "device_agent", "signing", "firmware", "infra", "tests")
        for path in sorted((ROOT / top).rglob("*.py"))
        for line in _seeds_from_hash(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders, f"seeded from hash(), which PYTHONHASHSEED changes: {offenders}"


def test_the_hash_seed_check_finds_a_seed_from_hash() -> None:
    tree = ast.parse(
        "import random\nrng = random.Random(hash(('a', 1)))\nok = random.Random('a/1')"
    )
    assert _seeds_from_hash(tree) == [2]
