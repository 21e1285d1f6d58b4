"""The test-split evaluation every trainable returns (report 000 quoted exactly these four)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


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
