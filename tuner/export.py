"""The best model of a search as an MLflow model: logged on the parent run, registered under the
experiment's name, and usable without tuner (``mlflow.pyfunc.load_model``, ``mlflow models
serve``) or through ``python -m tuner predict NAME IMAGE...``.

A deep model is wrapped in :class:`models.raw_image.RawImageClassifier`, which takes the images
as they come off the disk (float (N, C, H, W) in 0..255), normalises them with the training
split's channel statistics the trainer used, and returns class probabilities. It is saved in
PyTorch's ``pt2`` format (``torch.export``): the graph and weights, no pickled tuner or
``models`` classes. A classical pipeline (an sklearn estimator on uint8 (N, C, H, W)) is logged with
``mlflow.sklearn``, its feature caches turned off (serving computes features, writes nothing)
and tuner's ``models`` package beside it (MLflow's ``code_paths``), so it loads where tuner isn't
installed. Either way the class names are in the model's metadata and in ``classes.json``
beside it, the input shape is in its signature, and the pinned requirements install every
package loading and predicting imports (``tests/tuner/test_export_env.py`` serves each kind in a
fresh Python to check).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

MODEL_NAME = "model"  # the logged model's name within the parent run
CLASSES_FILE = "classes.json"
EXAMPLE_IMAGES = 4  # test images kept as the model's input example
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def log_best_model(
    tracking_uri: str,
    parent_run_id: str,
    model: nn.Module | Any,
    example: np.ndarray,
    *,
    classes: Sequence[str],
    registered_name: str,
) -> ModelVersion:
    """Log ``model`` on the parent run and register it as a new version of ``registered_name``.

    ``model``: a :class:`RawImageClassifier` (or any module taking float 0..255 images and
    returning per-class scores), or a fitted sklearn estimator on uint8 images. ``example``:
    a few uint8 images (N, C, H, W), e.g. ``splits.test_x[:4].numpy()``; it becomes the input
    example and fixes the signature's shape (the batch size stays free).
    """
    import mlflow
    from mlflow.models import infer_signature

    metadata = {"classes": list(classes), "tuner.parent_run_id": parent_run_id}
    with _active_run(tracking_uri, parent_run_id), tempfile.TemporaryDirectory() as tmp:
        classes_file = Path(tmp) / CLASSES_FILE
        classes_file.write_text(json.dumps(list(classes)))
        common = {
            "name": MODEL_NAME,
            "registered_model_name": registered_name,
            "metadata": metadata,
            "await_registration_for": 0,  # local stores register at once
        }
        if isinstance(model, nn.Module):
            model = model.cpu().eval()  # served on CPU; the pt2 graph is traced on this device
            inputs = example.astype(np.float32)
            with torch.no_grad():
                outputs = model(torch.from_numpy(inputs)).numpy()
            info = mlflow.pytorch.log_model(
                model,
                signature=infer_signature(inputs, outputs),
                input_example=inputs,
                extra_files=[str(classes_file)],
                pip_requirements=_requirements("torch", "torchvision", "numpy"),
                **common,
            )
        else:
            _without_cache(model)
            method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
            info = mlflow.sklearn.log_model(
                model,
                signature=infer_signature(example, getattr(model, method)(example)),
                input_example=example,
                pyfunc_predict_fn=method,
                skops_trusted_types=_own_types(model),
                code_paths=[str(_package_dir("models"))],  # the pipeline's own classes
                pip_requirements=_requirements(
                    "scikit-learn", "opencv-contrib-python-headless", "torch", "tqdm"
                ),
                **common,
            )
        mlflow.log_dict(list(classes), f"{MODEL_NAME}/{CLASSES_FILE}")
    return mlflow.MlflowClient(tracking_uri).get_model_version(
        registered_name, str(info.registered_model_version)
    )


@contextlib.contextmanager
def _using_store(tracking_uri: str) -> Iterator[None]:
    """Point mlflow's fluent API (log_model, load_model, the registry) at ``tracking_uri``.

    Afterwards everything is as it was, environment variables included: mlflow's setters also
    export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, which Ray workers would inherit.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_tracking = getattr(tracking_utils, "_tracking_uri", None)
    saved_registry = getattr(registry_utils, "_registry_uri", None)
    saved_env = {name: os.environ.get(name) for name in URI_VARIABLES}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # the model registry lives in the same store
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        mlflow.set_registry_uri(saved_registry)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _active_run(tracking_uri: str, run_id: str) -> Iterator[None]:
    """Make ``run_id`` mlflow's active run against ``tracking_uri`` for the block.

    ``mlflow.<flavor>.log_model`` logs to the active run only; resuming the run would mark it
    FINISHED when the block ends, so its status and end time are put back as they were.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    before = client.get_run(run_id).info
    try:
        with _using_store(tracking_uri), mlflow.start_run(run_id=run_id):
            yield
    finally:
        if before.status == "RUNNING":
            client.update_run(run_id, "RUNNING")
        else:  # the run's own end, not the time the model was logged
            client.set_terminated(run_id, before.status, end_time=before.end_time)


def _without_cache(estimator: Any) -> None:
    """Turn off every step's feature cache (``cache_dir``, nested steps too): a pipeline
    loaded for serving computes its features and writes nothing, here or where it serves."""
    names = [name for name in estimator.get_params() if name.split("__")[-1] == "cache_dir"]
    estimator.set_params(**dict.fromkeys(names))


def _requirements(*packages: str) -> list[str]:
    """Pinned to what is installed here (local version labels like ``+cu130`` dropped).

    Given explicitly so MLflow doesn't infer them by loading the model in a subprocess (~10 s).
    """
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", *packages):
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def _own_types(estimator: Any) -> list[str]:
    """The types skops won't load unless told to: our own pipeline's (``models.classical``)."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(estimator))


def _package_dir(name: str) -> Path:
    import importlib

    return Path(importlib.import_module(name).__file__).parent


# ---------------------------------------------------------------------------------------------
# Classifying image files with the registered model
# ---------------------------------------------------------------------------------------------


def load_registered(tracking_uri: str, experiment_name: str) -> Any:
    """The latest registered version of the experiment's best model, as an MLflow pyfunc."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tuner.errors import UsageError
    from tuner.secrets import mask_secrets

    try:
        with _using_store(tracking_uri):
            return mlflow.pyfunc.load_model(f"models:/{experiment_name}/latest")
    except MlflowException as error:
        raise UsageError(
            f"no registered model {experiment_name!r} in {mask_secrets(tracking_uri)} "
            f"({error.message}); "
            "run the search first (check --tracking-uri)"
        ) from None


def predict(
    tracking_uri: str, experiment_name: str, image_paths: Sequence[str | Path]
) -> list[tuple[str, str, float]]:
    """Classify image files with the experiment's registered model.

    Each image is decoded with OpenCV (any format it reads), converted to the model's channels
    and resized to its input size (area interpolation, as ``data.loaders.image_folder`` does).
    Returns ``(path, class name, probability)`` per image; the probability is NaN for a model
    that gives labels only (a linear SVM).
    """
    model = load_registered(tracking_uri, experiment_name)
    meta = model.metadata
    classes = (meta.metadata or {}).get("classes")
    _, channels, height, width = meta.get_input_schema().inputs[0].shape
    images = np.stack([read_image(p, channels, height, width) for p in image_paths])
    dtype = meta.get_input_schema().numpy_types()[0]
    outputs = np.asarray(model.predict(images.astype(dtype)))
    rows = []
    for path, output in zip(image_paths, outputs, strict=True):
        if output.ndim == 1:  # probabilities
            label, probability = int(output.argmax()), float(output.max())
        else:
            label, probability = int(output), math.nan
        name = classes[label] if classes else str(label)
        rows.append((str(path), name, probability))
    return rows


def read_image(path: str | Path, channels: int, height: int, width: int) -> np.ndarray:
    """One image file as uint8 (channels, height, width); UsageError if it can't be decoded."""
    import cv2

    from tuner.errors import UsageError

    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    try:
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flag)
    except (OSError, cv2.error) as error:
        raise UsageError(f"{path}: can't read ({error})") from None
    if image is None:
        raise UsageError(f"{path}: not an image OpenCV can decode")
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if channels == 1:
        return image[None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)


__all__ = [
    "load_registered",
    "log_best_model",
    "predict",
    "read_image",
]
