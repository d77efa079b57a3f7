"""A small dense network trained in numpy (float64, Adam), reproducible for a given seed.

Matrix products go through `np.einsum(..., optimize=False)`, which does not call BLAS, so the
result does not depend on the BLAS library's threading or kernel choice; the builder's output
is then byte-for-byte reproducible on one platform (see docs/models.md for the caveat across
CPU architectures).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Dense", "Mlp", "train"]

Floats = NDArray[np.float64]


def _matmul(a: Floats, b: Floats) -> Floats:
    return np.einsum("ij,jk->ik", a, b, optimize=False)


@dataclass
class Dense:
    weights: Floats  # [in, out]
    bias: Floats  # [out]
    relu: bool


@dataclass
class Mlp:
    layers: list[Dense]
    loss: str  # "softmax" (classification) or "mse" (reconstruction)

    def forward(self, x: Floats) -> list[Floats]:
        """Activations of every layer (pre-softmax logits last)."""
        outputs = [x]
        for layer in self.layers:
            z = _matmul(outputs[-1], layer.weights) + layer.bias
            outputs.append(np.maximum(z, 0.0) if layer.relu else z)
        return outputs

    def predict(self, x: Floats) -> Floats:
        return self.forward(x)[-1]


def _softmax(z: Floats) -> Floats:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def train(
    sizes: list[int],
    x: Floats,
    y: Floats,
    *,
    loss: str,
    epochs: int,
    seed: int,
    lr: float = 0.01,
    batch: int = 64,
    weight_decay: float = 1e-4,
) -> Mlp:
    """Train a ReLU MLP with layer sizes `sizes` (input first) on `x`, `y`.

    For `loss="softmax"`, `y` holds one-hot targets; for `"mse"`, the reconstruction target.
    """
    rng = np.random.default_rng(seed)
    layers = [
        Dense(
            weights=rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out)),
            bias=np.zeros(n_out),
            relu=i < len(sizes) - 2,
        )
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
    ]
    model = Mlp(layers, loss)
    params = [p for layer in layers for p in (layer.weights, layer.bias)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            acts = model.forward(x[idx])
            out = acts[-1]
            grad = (
                (_softmax(out) - y[idx])
                if loss == "softmax"
                else 2.0 * (out - y[idx]) / out.shape[1]
            )
            grad /= len(idx)
            grads: list[Floats] = []
            for k in range(len(layers) - 1, -1, -1):
                layer = layers[k]
                grads[:0] = [
                    _matmul(acts[k].T, grad) + weight_decay * layer.weights,
                    grad.sum(axis=0),
                ]
                if k:
                    grad = _matmul(grad, layer.weights.T) * (acts[k] > 0)
            step += 1
            for p, g, mi, vi in zip(params, grads, m, v, strict=True):
                mi *= 0.9
                mi += 0.1 * g
                vi *= 0.999
                vi += 0.001 * g * g
                p -= lr * (mi / (1 - 0.9**step)) / (np.sqrt(vi / (1 - 0.999**step)) + 1e-8)
    return model
