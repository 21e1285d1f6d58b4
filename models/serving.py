"""What a registered tuner model runs where it is served: raw images in, class names out.

``ImageClassifier`` is an MLflow pyfunc around the trained model (a network saved by
``mlflow.pytorch``, or a pipeline saved by ``mlflow.sklearn``, as its ``model`` artifact). It
states its contract in its signature: uint8 images (N, C, H, W), pixel values 0..255 as the
training images were; and it answers per image with the class's name, not bare numbers. It is
logged as MLflow's "model from code": this file is the model's code, run where the model
loads, nothing pickled; so it imports no tuner code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd

MODEL = "model"  # the artifact holding the trained model, saved by its own MLflow flavor
CLASSES = "classes"  # the artifact holding the class names, in label order (JSON)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """uint8 images (N, C, H, W) in; per image out: ``label`` (the class's name),
    ``probability`` (of that class; NaN for a model that gives labels only, a linear SVM) and,
    where the model gives them, ``probabilities`` (every class's, in ``classes`` order)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.classes = json.loads(Path(context.artifacts[CLASSES]).read_text())
        self.model = mlflow.pyfunc.load_model(context.artifacts[MODEL])
        # The trained model's own input type: float32 pixels for a network, uint8 for a pipeline.
        self.dtype = self.model.metadata.get_input_schema().numpy_types()[0]

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        outputs = self.model.predict(np.asarray(model_input).astype(self.dtype))
        return named(np.asarray(outputs), self.classes)


def named(outputs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The trained model's ``outputs`` (per-class probabilities (N, classes), or labels (N,))
    as the served answer: ``label``, ``probability`` and, given probabilities, ``probabilities``."""
    if outputs.ndim == 1:  # labels only
        names = [classes[int(label)] for label in outputs]
        return pd.DataFrame({"label": names, "probability": np.full(len(names), np.nan)})
    return pd.DataFrame(
        {
            "label": [classes[int(label)] for label in outputs.argmax(1)],
            "probability": outputs.max(1).astype(np.float64),
            "probabilities": list(outputs.astype(np.float64)),
        }
    )


# What MLflow loads when it runs this file as the model's code; importing it elsewhere only
# records the instance in MLflow's module.
mlflow.models.set_model(ImageClassifier())
