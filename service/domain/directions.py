"""Which way is better for a model's score: read from the model's own metadata.

A classifier's score is the winning class's probability: higher is better. An anomaly detector
(an autoencoder) reports its reconstruction error as the score: lower is better, so a new model
whose scores fall is an improvement, and one whose scores rise is the regression. The gate cannot
tell the two apart from telemetry; the model's metadata says which it is.

`score_direction` reads any of the forms the metadata takes: the model sidecar that the builder
writes and the release signs into the target's custom fields (`firmware/models/prebuilt/*.json`),
or the metadata embedded in the model file (`{"task": "anomaly", "threshold": ...}`), in this
order of precedence:
1. an explicit `scoreDirection` ("higher-is-better" or "lower-is-better");
2. `task`: "anomaly" is lower-is-better, "classification" higher-is-better;
3. the quality block the builder writes: an anomaly detector is judged by AUC against a score
   threshold (`quality.metric == "auc"` or a `quality.threshold`), a classifier by accuracy;
4. otherwise higher-is-better, the gates' behaviour before directions existed.

Invariants:
- Pure: no I/O; the same metadata always gives the same direction.
- Metadata that is not a model's (`kind` present and not "model") or names an unknown direction
  or task raises `ValueError`, never guesses.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = ["Direction", "score_direction"]


class Direction(StrEnum):
    """Which values of a metric are better for the new model."""

    HIGHER_IS_BETTER = "higher-is-better"
    LOWER_IS_BETTER = "lower-is-better"


_TASKS = {"anomaly": Direction.LOWER_IS_BETTER, "classification": Direction.HIGHER_IS_BETTER}


def score_direction(metadata: Mapping[str, Any]) -> Direction:
    """The direction of the score of the model that `metadata` describes (see the module)."""
    kind = metadata.get("kind", "model")
    if kind != "model":
        raise ValueError(f"metadata of kind {kind!r} does not describe a model")
    explicit = metadata.get("scoreDirection")
    if explicit is not None:
        try:
            return Direction(explicit)
        except ValueError as exc:
            raise ValueError(
                f"scoreDirection {explicit!r} is not one of {list(Direction)}"
            ) from exc
    task = metadata.get("task")
    if task is not None:
        if task not in _TASKS:
            raise ValueError(f"task {task!r} is not one of {sorted(_TASKS)}")
        return _TASKS[task]
    quality = metadata.get("quality")
    if isinstance(quality, Mapping) and (quality.get("metric") == "auc" or "threshold" in quality):
        return Direction.LOWER_IS_BETTER
    return Direction.HIGHER_IS_BETTER
