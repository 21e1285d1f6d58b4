"""Test-split metrics shared by every trainable (report 000 quoted exactly these four)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 on the test split."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {
        "test_acc": float(accuracy_score(y_true, y_pred)),
        "test_precision": float(precision),
        "test_recall": float(recall),
        "test_f1": float(f1),
    }
