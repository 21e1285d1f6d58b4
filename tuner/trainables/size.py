"""How big a trained model is, and whether the spec's ``constraints`` allow it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray import tune
from torch import nn

from models import count_parameters
from tuner.tracking.tags import Status
from tuner.trainables import Settings
from tuner.trainables.trial_report import TrialReport

MB = 2**20


@dataclass(frozen=True)
class ModelSize:
    """Learned numbers and their size in MB (2**20 bytes), as logged on the parent run."""

    params: int  # a network's trainable parameters (models.count_parameters)
    mb: float  # everything it stores: frozen weights and buffers too

    @property
    def metrics(self) -> dict[str, float]:
        return {"model_params": float(self.params), "model_mb": self.mb}


def size_of(model: Any) -> ModelSize:
    """A torch module: its trainable parameters, as ``tuner list models`` counts them, and
    the bytes of its weights and buffers. A fitted
    scikit-learn pipeline: the numbers in its steps' arrays (a vocabulary, SVM weights, the
    training features a kNN keeps in a private attribute) and their bytes."""
    if isinstance(model, nn.Module):
        return ModelSize(
            params=count_parameters(model),
            mb=sum(t.nbytes for t in model.state_dict().values()) / MB,
        )
    estimators = [step for _, step in getattr(model, "steps", [("", model)])]
    arrays = [
        value
        for estimator in estimators
        for value in vars(estimator).values()
        if hasattr(value, "nbytes") and hasattr(value, "shape")
    ]
    return ModelSize(
        params=sum(math.prod(a.shape) for a in arrays), mb=sum(a.nbytes for a in arrays) / MB
    )


def violation(size: ModelSize, settings: Settings) -> str | None:
    """Why ``size`` breaks the spec's constraints, or None if it doesn't."""
    if settings.max_params is not None and size.params > settings.max_params:
        return f"{size.params:,} parameters > constraints.max_params {settings.max_params:,}"
    if settings.max_model_mb is not None and size.mb > settings.max_model_mb:
        return f"{size.mb:.1f} MB > constraints.max_model_mb {settings.max_model_mb:g}"
    return None


def report_rejected(reason: str, settings: Settings, costs: Mapping[str, float]) -> None:
    """End a trial untrained: the worst metric (so the searcher steers away), the model's
    ``costs`` (size: a multi-objective searcher is told every objective), and why."""
    worst = {settings.metric: settings.worst, **costs}
    tune.report(TrialReport(worst, epochs=1, ending=Status.REJECTED, reason=reason).result())
