"""Synthetic sensor worlds: the data the models are trained on and the cores run on.

Each world is fixed by its own seed (`WORLD_SEED`), independent of any training seed, so the
builder and a simulated core sensor see the same phenomena. A sample comes with its ground
truth, which the cores report next to each inference so that the fleet can measure quality.

 * `kws`: keyword-style features, 49 frames x 10 coefficients (the MLPerf Tiny KWS input
   shape), four classes. Each class is a smooth template; a sample is its template shifted in
   time by up to +-`max_shift` frames, scaled, and buried in noise.
 * `vibration`: 32 log-spectral band energies of a vibration window. A healthy machine has a
   fundamental with decaying harmonics; a faulty one adds bearing tones in the upper bands
   and side bands around the harmonics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "KWS_LABELS",
    "KWS_SHAPE",
    "VIBRATION_BANDS",
    "WORLD_SEED",
    "Sample",
    "SensorSimulator",
    "kws_samples",
    "vibration_samples",
]

WORLD_SEED = 20261125
KWS_SHAPE = (49, 10)
KWS_LABELS = ("silence", "unknown", "yes", "no")
VIBRATION_BANDS = 32
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


def _kws_templates() -> Floats:
    rng = np.random.default_rng(WORLD_SEED)
    frames, coeffs = KWS_SHAPE
    templates = np.zeros((len(KWS_LABELS), frames, coeffs))
    t = np.arange(frames)[:, None]
    for label in range(1, len(KWS_LABELS)):
        centre = rng.uniform(18, 30)
        width = rng.uniform(5, 9)
        envelope = np.exp(-0.5 * ((t - centre) / width) ** 2)
        spectrum = rng.normal(0.0, 1.0, size=(1, coeffs))
        drift = rng.normal(0.0, 0.6, size=(1, coeffs)) * (t - centre) / frames
        templates[label] = envelope * (spectrum + drift)
    return templates


_TEMPLATES = _kws_templates()


def kws_samples(
    rng: np.random.Generator, count: int, *, noise: float = 0.9, max_shift: int = 6
) -> tuple[Floats, Ints]:
    """`count` keyword samples of shape (49, 10) and their labels."""
    labels = rng.integers(0, len(KWS_LABELS), size=count)
    shifts = (
        rng.integers(-max_shift, max_shift + 1, size=count) if max_shift else np.zeros(count, int)
    )
    gains = rng.uniform(0.6, 1.4, size=count)
    x = np.empty((count, *KWS_SHAPE))
    for i in range(count):
        x[i] = np.roll(_TEMPLATES[labels[i]], int(shifts[i]), axis=0) * gains[i]
    x += rng.normal(0.0, noise, size=x.shape) * 0.5
    return x, labels.astype(np.int64)


def vibration_samples(
    rng: np.random.Generator, count: int, *, anomaly_fraction: float = 0.5
) -> tuple[Floats, Ints]:
    """`count` band-energy vectors (32 bands, roughly in [-1, 1]) and 1 for anomalous."""
    bands = np.arange(VIBRATION_BANDS)[None, :]
    fundamental = rng.uniform(3.0, 6.0, size=(count, 1))
    load = rng.uniform(0.5, 1.0, size=(count, 1))
    spectrum = np.zeros((count, VIBRATION_BANDS))
    for harmonic in range(1, 5):
        centre = fundamental * harmonic
        spectrum += load / harmonic * np.exp(-0.5 * ((bands - centre) / 0.8) ** 2)
    anomalous = (rng.random(count) < anomaly_fraction).astype(np.int64)
    fault_band = rng.uniform(20.0, 28.0, size=(count, 1))
    fault = rng.uniform(0.12, 0.4, size=(count, 1)) * np.exp(
        -0.5 * ((bands - fault_band) / 1.2) ** 2
    )
    sidebands = 0.1 * np.exp(-0.5 * ((bands - fundamental * 2 - 1.5) / 0.6) ** 2)
    spectrum += anomalous[:, None] * (fault + sidebands)
    spectrum += rng.normal(0.0, 0.04, size=spectrum.shape)
    return np.clip(spectrum * 1.6 - 0.6, -1.0, 1.0), anomalous


@dataclass(frozen=True)
class Sample:
    features: Floats
    truth: int


class SensorSimulator:
    """An endless stream of samples for one model line, for a core's inference loop."""

    def __init__(self, model_id: str, seed: int) -> None:
        self.model_id = model_id
        self._rng = np.random.default_rng(seed)

    def next(self) -> Sample | None:
        """The next sample, or None when the model line has no simulated sensor."""
        if self.model_id.startswith("kws"):
            x, y = kws_samples(self._rng, 1)
            return Sample(x[0], int(y[0]))
        if self.model_id.startswith("vibration"):
            x, y = vibration_samples(self._rng, 1, anomaly_fraction=0.2)
            return Sample(x[0], int(y[0]))
        return None
