"""The test-split evaluation every trainable returns: report 000's four numbers, per-class
accuracy, and the size of the model that made the predictions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tuner.trainables.size import ModelSize, size_of

# MLflow metric names allow letters, digits and _ - . space : / only.
NOT_IN_METRIC_NAMES = re.compile(r"[^\w\-. :/]")
PER_CLASS_PREFIX = "test_acc_per_class/"  # the UI groups metrics by what precedes the slash


@dataclass(frozen=True)
class Evaluation:
    """The best trial's predictions on the held-out test split, what they score, and the model
    that made them (a module on raw 0..255 images, or a fitted sklearn pipeline) for export."""

    y_true: np.ndarray  # int labels
    y_pred: np.ndarray
    classes: tuple[str, ...]
    model: Any

    @property
    def metrics(self) -> dict[str, float]:
        """Accuracy and macro precision / recall / F1."""
        precision, recall, f1, _ = precision_recall_fscore_support(
            self.y_true, self.y_pred, average="macro", zero_division=0
        )
        return {
            "test_acc": float(accuracy_score(self.y_true, self.y_pred)),
            "test_precision": float(precision),
            "test_recall": float(recall),
            "test_f1": float(f1),
        }

    @property
    def per_class_accuracy(self) -> dict[str, float]:
        """``test_acc_per_class/<class>``: the share of each class's test images classified
        right (a class without test images is left out)."""
        counts = confusion_matrix(self.y_true, self.y_pred, labels=range(len(self.classes)))
        return {
            PER_CLASS_PREFIX + NOT_IN_METRIC_NAMES.sub("_", name): float(row[index] / row.sum())
            for index, (name, row) in enumerate(zip(self.classes, counts, strict=True))
            if row.sum()
        }

    @cached_property
    def model_size(self) -> ModelSize:
        return size_of(self.model)

    @property
    def logged_metrics(self) -> dict[str, float]:
        """Everything the parent run records about the tested model."""
        return {**self.metrics, **self.per_class_accuracy, **self.model_size.metrics}
