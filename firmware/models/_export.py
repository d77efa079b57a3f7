"""Post-training int8 quantization of an `Mlp` and export to a real .tflite flatbuffer with
tflite-micro's model editor.

The scheme is TFLite's reference int8 scheme, which TFLM's kernels implement: activations are
asymmetric per-tensor int8 (scale, zero point) calibrated on training data; weights are
symmetric per-tensor int8 (zero point 0); biases are int32 with scale input_scale x
weight_scale; a softmax head outputs int8 with scale 1/256 and zero point -128.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from firmware.models._mlp import Mlp

__all__ = ["METADATA_KEY", "QuantParams", "export_int8", "quantize"]

METADATA_KEY = "tinyfleet"
Floats = NDArray[np.float64]


@dataclass(frozen=True)
class QuantParams:
    scale: float
    zero_point: int

    def quantize(self, x: Floats) -> NDArray[np.int8]:
        q = np.round(x / self.scale) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: NDArray[np.int8]) -> Floats:
        return (q.astype(np.float64) - self.zero_point) * self.scale


def _asymmetric(lo: float, hi: float) -> QuantParams:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-6) / 255.0
    zero_point = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return QuantParams(float(np.float32(scale)), zero_point)


def quantize(x: Floats, params: QuantParams) -> NDArray[np.int8]:
    return params.quantize(x)


def _range(x: Floats) -> tuple[float, float]:
    # Percentiles rather than extremes: one outlier should not waste the int8 range.
    return float(np.percentile(x, 0.1)), float(np.percentile(x, 99.9))


def export_int8(
    mlp: Mlp,
    calibration: Floats,
    *,
    input_shape: tuple[int, ...],
    softmax: bool,
    metadata: dict[str, object],
) -> tuple[bytes, QuantParams, QuantParams]:
    """Return (tflite bytes, input quantization, output quantization)."""
    acts = mlp.forward(calibration)
    model = me.Model(description="tinyfleet " + str(metadata.get("modelId", "")))
    graph = model.add_subgraph(name="main")
    in_q = _asymmetric(*_range(acts[0]))
    current = graph.add_tensor(
        shape=(1, *input_shape),
        dtype=schema.TensorType.INT8,
        name="input",
        quantization=me.Quantization(scales=in_q.scale, zero_points=in_q.zero_point),
    )
    graph.inputs = [current]
    current_q = in_q
    for index, layer in enumerate(mlp.layers):
        w_scale = float(np.float32(max(np.abs(layer.weights).max(), 1e-8) / 127.0))
        w_int = np.clip(np.round(layer.weights.T / w_scale), -127, 127).astype(np.int8)
        b_scale = current_q.scale * w_scale
        b_int = np.round(layer.bias / b_scale).astype(np.int32)
        out_q = _asymmetric(*_range(acts[index + 1]))
        weights = graph.add_tensor(
            shape=w_int.shape,
            dtype=schema.TensorType.INT8,
            data=w_int,
            name=f"fc{index}/weights",
            quantization=me.Quantization(scales=w_scale, zero_points=0),
        )
        bias = graph.add_tensor(
            shape=b_int.shape,
            dtype=schema.TensorType.INT32,
            data=b_int,
            name=f"fc{index}/bias",
            quantization=me.Quantization(scales=b_scale, zero_points=0),
        )
        output = graph.add_tensor(
            shape=(1, w_int.shape[0]),
            dtype=schema.TensorType.INT8,
            name=f"fc{index}/out",
            quantization=me.Quantization(scales=out_q.scale, zero_points=out_q.zero_point),
        )
        op = graph.add_operator(
            opcode=schema.BuiltinOperator.FULLY_CONNECTED,
            inputs=[current, weights, bias],
            outputs=[output],
        )
        options = schema.FullyConnectedOptionsT()
        options.fusedActivationFunction = (
            schema.ActivationFunctionType.RELU if layer.relu else schema.ActivationFunctionType.NONE
        )
        op._fb.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
        op._fb.builtinOptions = options
        current, current_q = output, out_q
    if softmax:
        probs_q = QuantParams(1.0 / 256.0, -128)
        probs = graph.add_tensor(
            shape=current.shape,
            dtype=schema.TensorType.INT8,
            name="probabilities",
            quantization=me.Quantization(scales=probs_q.scale, zero_points=probs_q.zero_point),
        )
        op = graph.add_operator(
            opcode=schema.BuiltinOperator.SOFTMAX, inputs=[current], outputs=[probs]
        )
        options_sm = schema.SoftmaxOptionsT()
        options_sm.beta = 1.0
        op._fb.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
        op._fb.builtinOptions = options_sm
        current, current_q = probs, probs_q
    graph.outputs = [current]
    model.metadata[METADATA_KEY] = json.dumps(metadata, sort_keys=True).encode()
    return bytes(model.build()), in_q, current_q
