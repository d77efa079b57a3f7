"""Read a TFLite flatbuffer's structure in Python, before any byte reaches the C++ runtime.

Uses the schema module that ships with the `tflite_micro` package (the runtime's own schema), and
unpacks the whole object tree so that a truncated or garbled buffer fails here, as a
`ModelFormatError`, instead of inside the interpreter.

Invariants:
- Only bytes with the `TFL3` file identifier and schema version 3 are accepted.
- Every failure of the flatbuffers reader (struct, index, type errors on garbage) becomes
  `ModelFormatError` naming what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tflite_micro.tensorflow.lite.micro.python import (  # type: ignore[import-untyped]
    schema_py_generated as schema,
)

__all__ = ["IDENTIFIER", "SCHEMA_VERSION", "ModelFacts", "ModelFormatError", "inspect_model"]

IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
_OPERATOR_NAMES: dict[int, str] = {
    code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}
_TENSOR_TYPES: dict[int, str] = {
    code: name.lower() for name, code in vars(schema.TensorType).items() if not name.startswith("_")
}


class ModelFormatError(ValueError):
    """The bytes are not a TFLite model the runtime could load."""


@dataclass(frozen=True)
class TensorFacts:
    dtype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


@dataclass(frozen=True)
class ModelFacts:
    schema_version: int
    operators: tuple[str, ...]  # builtin operator names, or CUSTOM:<name>
    subgraphs: int
    input: TensorFacts
    output: TensorFacts


def _operator_name(code: Any) -> str:
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = _OPERATOR_NAMES.get(builtin, f"OPCODE_{builtin}")
    if name == "CUSTOM":
        custom = code.customCode
        return f"CUSTOM:{custom.decode() if isinstance(custom, bytes) else custom}"
    return name


def _tensor(subgraph: Any, index: int) -> TensorFacts:
    tensor = subgraph.tensors[index]
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    return TensorFacts(_TENSOR_TYPES.get(int(tensor.type), f"type{tensor.type}"), shape)


def inspect_model(data: bytes) -> ModelFacts:
    """The model's schema version, operators and first subgraph's input and output tensors."""
    if len(data) < 8:
        raise ModelFormatError(f"{len(data)} bytes is too short for a flatbuffer")
    if data[4:8] != IDENTIFIER:
        raise ModelFormatError(
            f"file identifier is {bytes(data[4:8])!r}, a TFLite model has {IDENTIFIER!r}"
        )
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # the lazy reader fails with assorted errors on garbage
        raise ModelFormatError(f"the flatbuffer does not parse: {exc}") from exc
    if model.version != SCHEMA_VERSION:
        raise ModelFormatError(
            f"schema version {model.version}, the runtime reads {SCHEMA_VERSION}"
        )
    subgraphs = model.subgraphs or []
    if not subgraphs:
        raise ModelFormatError("the model has no subgraph")
    main = subgraphs[0]
    try:
        inputs, outputs = list(main.inputs), list(main.outputs)
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFormatError(
                f"{len(inputs)} inputs and {len(outputs)} outputs; the cores run 1 and 1"
            )
        facts_in, facts_out = _tensor(main, inputs[0]), _tensor(main, outputs[0])
        operators = tuple(_operator_name(code) for code in (model.operatorCodes or []))
        for op in main.operators or []:
            if not 0 <= int(op.opcodeIndex) < len(operators):
                raise ModelFormatError(f"an operator names opcode {op.opcodeIndex}, not in table")
    except ModelFormatError:
        raise
    except (TypeError, IndexError, AttributeError) as exc:
        raise ModelFormatError(f"the model's structure is broken: {exc}") from exc
    if not operators:
        raise ModelFormatError("the model uses no operator")
    return ModelFacts(int(model.version), operators, len(subgraphs), facts_in, facts_out)
