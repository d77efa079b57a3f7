"""Admission: the named checks an artifact must pass before it can join a release.

Models: `hardware` (known hardware id and core), `metadata` (the sidecar's signed fields parse as
signing will parse them), `format` (a TFLite flatbuffer, schema 3), `tensors` (the model's input
and output match the sidecar), `operators` (every operator is registered by the target runtime,
and the sidecar declares exactly them), `budget` (length + arena fit the core's RAM), `arena` (the
real TFLM runtime allocates the model in the declared arena), `self-test` (vectors present, well
formed, and reproduced by the runtime within tolerance). Firmware: `hardware` (and the device may
install core firmware), `metadata`, `format` (a core firmware image document), `budget`.

Invariants:
- Every check is reported, passed or not; a check that cannot run because an earlier one failed
  is reported failed with "not run: ..." so a refusal always names its cause.
- The model bytes reach the C++ runtime only after `format` passed, and only in a child process.
- Budgets come from `_budgets.BUDGETS` and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from service.releases._budgets import HardwareBudget, budget_for
from service.releases._errors import AdmissionCheck
from service.releases._probe import ProbeResult, probe
from service.releases._tflite import ModelFacts, ModelFormatError, inspect_model
from signing import ArtifactError
from signing.fields import DTYPE_SIZES, ArtifactFields

__all__ = ["MAX_INSPECT_BYTES", "Prober", "admit"]

MAX_INSPECT_BYTES = 4 * 1024 * 1024  # never read more than this into memory to inspect it
MAX_VECTORS = 8
Prober = Callable[[Path, int, list[dict[str, Any]]], ProbeResult]


def _check(name: str, ok: bool, detail: str) -> AdmissionCheck:
    return AdmissionCheck(name, ok, detail)


def _not_run(name: str, why: str) -> AdmissionCheck:
    return AdmissionCheck(name, False, f"not run: {why}")


def _hardware(
    hardware_ids: Sequence[str], core: str, kind: str
) -> tuple[AdmissionCheck, list[HardwareBudget]]:
    budgets, problems = [], []
    for hardware_id in hardware_ids:
        budget = budget_for(hardware_id)
        if budget is None:
            problems.append(f"unknown hardware id {hardware_id!r}")
        elif core not in budget.cores:
            problems.append(f"{hardware_id} has no core {core!r} (cores {', '.join(budget.cores)})")
        elif kind == "firmware" and not budget.firmware_updates:
            problems.append(f"{hardware_id} does not install core firmware over the air")
        else:
            budgets.append(budget)
    if not hardware_ids:
        problems.append("no hardware id")
    if problems:
        return _check("hardware", False, "; ".join(problems)), budgets
    return _check("hardware", True, f"{', '.join(hardware_ids)} core {core}"), budgets


def _metadata(target_path: str, custom: Mapping[str, Any], kind: str) -> AdmissionCheck:
    try:
        fields = ArtifactFields.parse(target_path, dict(custom))
    except ArtifactError as exc:
        return _check("metadata", False, str(exc))
    if fields.kind != kind:
        return _check("metadata", False, f"kind {fields.kind!r}, uploaded as {kind}")
    return _check("metadata", True, f"{kind} version {'.'.join(map(str, fields.version))}")


def _int(custom: Mapping[str, Any], key: str) -> int | None:
    value = custom.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tensor_bytes(custom: Mapping[str, Any], side: str) -> int | None:
    shape, dtype = custom.get(f"{side}Shape"), custom.get(f"{side}Dtype")
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        return None
    if dtype not in DTYPE_SIZES:
        return None
    return math.prod(shape) * DTYPE_SIZES[dtype]


def _vectors(custom: Mapping[str, Any]) -> tuple[AdmissionCheck | None, list[dict[str, Any]]]:
    """The self-test vectors if well formed; else the failed check."""
    vectors = custom.get("selfTest")
    if not isinstance(vectors, list) or not vectors:
        return _check("self-test", False, "the sidecar carries no selfTest vectors"), []
    if len(vectors) > MAX_VECTORS:
        return _check("self-test", False, f"{len(vectors)} vectors, at most {MAX_VECTORS}"), []
    sizes = {side: _tensor_bytes(custom, side) for side in ("input", "output")}
    for n, vector in enumerate(vectors):
        if not isinstance(vector, dict):
            return _check("self-test", False, f"vector {n} is not an object"), []
        for key, side in (("input", "input"), ("expected", "output")):
            try:
                raw = base64.b64decode(str(vector.get(key, "")), validate=True)
            except binascii.Error:
                return _check("self-test", False, f"vector {n} {key} is not base64"), []
            if sizes[side] is not None and len(raw) != sizes[side]:
                return _check(
                    "self-test",
                    False,
                    f"vector {n} {key} has {len(raw)} bytes, the {side} tensor needs {sizes[side]}",
                ), []
        tolerance = vector.get("tolerance")
        if not isinstance(tolerance, int) or not 0 <= tolerance <= 255:
            return _check("self-test", False, f"vector {n} tolerance {tolerance!r} not 0..255"), []
    return None, vectors


def _tensors(facts: ModelFacts, custom: Mapping[str, Any]) -> AdmissionCheck:
    problems = []
    for side, tensor in (("input", facts.input), ("output", facts.output)):
        declared = f"{custom.get(f'{side}Dtype')}{custom.get(f'{side}Shape')}"
        if declared != tensor.describe():
            problems.append(f"{side} is {tensor.describe()}, the sidecar says {declared}")
    if problems:
        return _check("tensors", False, "; ".join(problems))
    return _check("tensors", True, f"{facts.input.describe()} -> {facts.output.describe()}")


def _operators(
    facts: ModelFacts, custom: Mapping[str, Any], budgets: list[HardwareBudget]
) -> AdmissionCheck:
    used = sorted(set(facts.operators))
    problems = []
    for budget in budgets:
        if missing := [op for op in used if op not in budget.operators]:
            problems.append(f"{budget.runtime} on {budget.hardware_id} lacks {', '.join(missing)}")
    declared = custom.get("operators")
    if not isinstance(declared, list) or sorted(set(map(str, declared))) != used:
        problems.append(f"the sidecar declares {declared}, the model uses {used}")
    if problems:
        return _check("operators", False, "; ".join(problems))
    return _check("operators", True, ", ".join(used))


def _model_budget(length: int, arena: int | None, budgets: list[HardwareBudget]) -> AdmissionCheck:
    if arena is None or arena <= 0:
        return _check("budget", False, "arenaBytes is missing or not a positive integer")
    if not budgets:
        return _not_run("budget", "no known hardware to budget against")
    tightest = min(budgets, key=lambda b: b.model_ram_bytes)
    needed = length + arena
    detail = (
        f"model {length} B + arena {arena} B = {needed} B; {tightest.hardware_id} allows "
        f"{tightest.describe()}"
    )
    return _check("budget", needed <= tightest.model_ram_bytes, detail)


def _admit_model(
    source: Path,
    length: int,
    custom: Mapping[str, Any],
    budgets: list[HardwareBudget],
    prober: Prober,
) -> list[AdmissionCheck]:
    checks: list[AdmissionCheck] = []
    facts: ModelFacts | None = None
    if length > MAX_INSPECT_BYTES:
        checks.append(_check("format", False, f"{length} bytes, over {MAX_INSPECT_BYTES}"))
    else:
        try:
            facts = inspect_model(source.read_bytes())
        except ModelFormatError as exc:
            checks.append(_check("format", False, str(exc)))
        else:
            checks.append(
                _check("format", True, f"TFLite schema {facts.schema_version}, {length} bytes")
            )
    arena = _int(custom, "arenaBytes")
    budget = _model_budget(length, arena, budgets)
    bad_vectors, vectors = _vectors(custom)
    if facts is None:
        checks += [_not_run(n, "the model does not parse") for n in ("tensors", "operators")]
        checks += [budget, _not_run("arena", "the model does not parse")]
        checks.append(bad_vectors or _not_run("self-test", "the model does not parse"))
        return checks
    tensors = _tensors(facts, custom)
    operators = _operators(facts, custom, budgets)
    checks += [tensors, operators, budget]
    if not budget.ok or arena is None:
        checks.append(_not_run("arena", "the model is over budget"))
        checks.append(bad_vectors or _not_run("self-test", "the model is over budget"))
        return checks
    result = prober(source, arena, vectors if bad_vectors is None and tensors.ok else [])
    if not result.loaded:
        if "find op" in result.error or "registration from op" in result.error:
            refused = f"the TFLM runtime refused: {result.error}"
            if not operators.ok:
                refused = f"{operators.detail}; {refused}"
            checks[checks.index(operators)] = _check("operators", False, refused)
            checks.append(_not_run("arena", "the runtime cannot resolve the operators"))
        else:
            checks.append(_check("arena", False, f"arenaBytes {arena}: {result.error}"))
        checks.append(bad_vectors or _not_run("self-test", "the runtime did not load the model"))
        return checks
    checks.append(_check("arena", True, f"the TFLM runtime allocated the model in {arena} B"))
    if bad_vectors is not None:
        checks.append(bad_vectors)
    elif not tensors.ok:
        checks.append(_not_run("self-test", "the tensors do not match the sidecar"))
    else:
        failed = [n for n, v in enumerate(result.vectors) if not v.ok]
        worst = max((v.max_diff for v in result.vectors), default=0)
        detail = f"{len(result.vectors) - len(failed)}/{len(result.vectors)} vectors reproduced"
        detail += f", max difference {worst}"
        if failed:
            n = failed[0]
            detail += (
                f"; vector {n} differs by {result.vectors[n].max_diff}, "
                f"tolerance {result.vectors[n].tolerance}"
            )
        checks.append(_check("self-test", not failed and bool(result.vectors), detail))
    return checks


def _admit_firmware(
    source: Path, length: int, custom: Mapping[str, Any], budgets: list[HardwareBudget]
) -> list[AdmissionCheck]:
    doc: Any = None
    if length > MAX_INSPECT_BYTES:
        fmt = _check("format", False, f"{length} bytes, over {MAX_INSPECT_BYTES}")
    else:
        try:
            doc = json.loads(source.read_bytes())
            problems = []
            if not isinstance(doc, dict) or doc.get("kind") != "firmware":
                problems.append('not a core firmware image document (kind "firmware")')
                doc = None
            else:
                if doc.get("version") != custom.get("version"):
                    problems.append(
                        f"image version {doc.get('version')!r}, sidecar {custom.get('version')!r}"
                    )
                ops = doc.get("operators")
                if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
                    problems.append("operators must be a list of operator names")
                reserved = doc.get("reservedBytes")
                if not isinstance(reserved, int) or reserved < 0:
                    problems.append("reservedBytes must be a non-negative integer")
            fmt = _check("format", not problems, "; ".join(problems) or "core firmware image")
        except (ValueError, UnicodeDecodeError) as exc:
            fmt = _check("format", False, f"not a core firmware image document: {exc}")
    checks = [fmt]
    if not budgets:
        checks.append(_not_run("budget", "no hardware installs this firmware"))
        return checks
    tightest = min(budgets, key=lambda b: b.max_firmware_bytes)
    reserved = doc.get("reservedBytes") if isinstance(doc, dict) else None
    problems = []
    if length > tightest.max_firmware_bytes:
        problems.append(f"image {length} B over {tightest.max_firmware_bytes} B")
    if isinstance(reserved, int) and reserved > min(b.core_ram_bytes for b in budgets):
        problems.append(f"reserves {reserved} B of {min(b.core_ram_bytes for b in budgets)} B RAM")
    detail = "; ".join(problems) or (
        f"image {length} B of {tightest.max_firmware_bytes} B, reserves {reserved} B RAM"
    )
    checks.append(_check("budget", not problems, detail))
    return checks


def admit(
    kind: str,
    source: Path,
    length: int,
    target_path: str,
    custom: Mapping[str, Any],
    core: str,
    hardware_ids: Sequence[str],
    prober: Prober = probe,
) -> list[AdmissionCheck]:
    """Every admission check for one artifact (already on disk at `source`)."""
    hardware, budgets = _hardware(hardware_ids, core, kind)
    checks = [hardware, _metadata(target_path, custom, kind)]
    if kind == "model":
        return checks + _admit_model(source, length, custom, budgets, prober)
    return checks + _admit_firmware(source, length, custom, budgets)
