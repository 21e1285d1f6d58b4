"""Python values as MLflow metrics and params, and back."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
)


def metrics_now(metrics: Mapping[str, float], step: int = 0) -> list[Metric]:
    """``metrics`` as MLflow metrics logged now, at ``step`` (0: values measured once)."""
    now = now_ms()
    return [Metric(key, float(value), now, step) for key, value in metrics.items()]


def as_params(params: Mapping[str, Any]) -> list[Param]:
    """Config values as MLflow params: lists and dicts as JSON, cut at MLflow's 6000 chars."""
    return [Param(key, _param_value(value)) for key, value in params.items()]


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


PYTHON_CONSTANTS = {"True": True, "False": False, "None": None}  # str() of them, as logged


def param_value(text: str) -> Any:
    """A param's value as it was before _param_value wrote it: numbers, booleans, None, lists
    and mappings as themselves; anything else (a name such as sgd) the text."""
    if text in PYTHON_CONSTANTS:
        return PYTHON_CONSTANTS[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Sequence[Metric] = (),
    params: Sequence[Param] = (),
    tags: Sequence[RunTag] = (),
) -> None:
    """``client.log_batch``, split into as many calls as MLflow's per-call limits need."""
    size = MAX_PARAMS_TAGS_PER_BATCH  # params, and tags, per call
    room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - 2 * size)  # metrics per call
    calls = max(
        math.ceil(len(entities) / limit)
        for entities, limit in ((params, size), (tags, size), (metrics, room))
    )
    for i in range(calls):
        client.log_batch(
            run_id,
            metrics=list(metrics[i * room : (i + 1) * room]),
            params=list(params[i * size : (i + 1) * size]),
            tags=list(tags[i * size : (i + 1) * size]),
        )


def now_ms() -> int:
    return int(time.time() * 1000)
