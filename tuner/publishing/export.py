"""The best model of a search as an MLflow model: logged on the parent run, registered under the
experiment's name, and usable without tuner (``mlflow.pyfunc.load_model``, ``mlflow models
serve``) or through ``python -m tuner predict NAME IMAGE...``.

What is registered is a :class:`models.serving.ImageClassifier`: uint8 images (N, C, H, W) as
they come off the disk in, per image the class's name and probability out (its signature says
both). Inside it, the trained model saved by its own flavor: a deep model wrapped in
:class:`models.raw_image.RawImageClassifier` (the normalisation its trainer used, softmax out)
in PyTorch's ``pt2`` format (``torch.export``: the graph and weights, no pickled classes), or a
classical pipeline with ``mlflow.sklearn`` (skops), its feature caches turned off (serving
computes features, writes nothing). tuner's ``models`` package goes with it (MLflow's
``code_paths``), so it loads where tuner isn't installed. The class names are in the model's
metadata and in ``classes.json`` beside it, and the pinned requirements install every
package loading and predicting imports (``tests/tuner/test_export_env.py`` serves each kind in a
fresh Python to check).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tuner.core.errors import UsageError
from tuner.core.internals import fluent_store_uris
from tuner.core.secrets import mask_secrets
from tuner.tracking.tags import Tag

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
    example and fixes the signature's shape (the batch size stays free). What is registered is
    a ``models.serving.ImageClassifier`` around it: uint8 images in, class names out.
    """
    import mlflow
    from mlflow.models import infer_signature

    from models import serving

    metadata = {"classes": list(classes), Tag.PARENT_RUN_ID: parent_run_id}
    with _active_run(tracking_uri, parent_run_id), tempfile.TemporaryDirectory() as tmp:
        classes_file = Path(tmp) / CLASSES_FILE
        classes_file.write_text(json.dumps(list(classes)))
        trained = Path(tmp) / serving.MODEL
        requirements, outputs = _save_trained(model, example, trained)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=serving.__file__,  # a model from code: this file runs where it loads
            artifacts={serving.MODEL: str(trained), serving.CLASSES: str(classes_file)},
            # A pipeline's steps are tuner's classes (models.classical): they go with it. A pt2
            # graph needs no Python of ours.
            code_paths=None if isinstance(model, nn.Module) else [str(_package_dir("models"))],
            signature=infer_signature(example, serving.named(outputs, list(classes))),
            input_example=example,
            pip_requirements=requirements,
            metadata=metadata,
            registered_model_name=registered_name,
            await_registration_for=0,  # local stores register at once
        )
        mlflow.log_dict(list(classes), f"{MODEL_NAME}/{CLASSES_FILE}")
    return mlflow.MlflowClient(tracking_uri).get_model_version(
        registered_name, str(info.registered_model_version)
    )


def _save_trained(
    model: nn.Module | Any, example: np.ndarray, path: Path
) -> tuple[list[str], np.ndarray]:
    """Save the trained model at ``path`` with its own MLflow flavor (a network as a pt2 graph,
    no pickled classes; a pipeline with skops, no feature cache). Returns the requirements of
    loading and predicting, and the model's outputs on ``example``."""
    import mlflow
    from mlflow.models import infer_signature

    if isinstance(model, nn.Module):
        model = model.cpu().eval()  # served on CPU; the pt2 graph is traced on this device
        inputs = example.astype(np.float32)
        with torch.no_grad():
            outputs = model(torch.from_numpy(inputs)).numpy()
        flavor, packages = mlflow.pytorch, ("torch", "torchvision", "numpy", "pandas")
        options: dict[str, Any] = {"serialization_format": "pt2"}
    else:
        _without_cache(model)
        method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
        inputs, outputs = example, getattr(model, method)(example)
        flavor = mlflow.sklearn
        packages = (
            *("scikit-learn", "opencv-contrib-python-headless", "skops"),
            *("torch", "tqdm", "pandas"),
        )
        options = {
            "serialization_format": "skops",
            "pyfunc_predict_fn": method,
            "skops_trusted_types": _own_types(model),
        }
    requirements = _requirements(*packages)
    flavor.save_model(
        model,
        str(path),
        signature=infer_signature(inputs, outputs),
        input_example=inputs,
        pip_requirements=requirements,
        **options,
    )
    return requirements, outputs


@contextlib.contextmanager
def _using_store(tracking_uri: str) -> Iterator[None]:
    """Point mlflow's fluent API (log_model, load_model, the registry) at ``tracking_uri``.

    Afterwards everything is as it was, environment variables included: mlflow's setters also
    export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, which Ray workers would inherit.
    """
    import mlflow

    saved_tracking, saved_registry = fluent_store_uris()
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

    try:
        with _using_store(tracking_uri):
            return mlflow.pyfunc.load_model(f"models:/{experiment_name}/latest")
    except MlflowException as error:
        raise UsageError(
            f"no registered model {experiment_name!r} in {mask_secrets(tracking_uri)} "
            f"({error.message}); "
            "run the search first (check --tracking-uri)"
        ) from None


def save_weights(tracking_uri: str, experiment_name: str, path: Path) -> int:
    """The registered best network's weights saved as a safetensors file at ``path``: a model's
    ``pretrained_file`` (``models.pretrained``). The network's own tensors, named as in the
    model the trials built (the registered graph's normalisation and test-time views left
    out). Returns how many tensors were saved; UsageError for a classical model."""
    import mlflow
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        try:
            with _using_store(tracking_uri):
                local = mlflow.artifacts.download_artifacts(
                    f"models:/{experiment_name}/latest", dst_path=tmp
                )
        except mlflow.exceptions.MlflowException as error:
            raise UsageError(
                f"no registered model {experiment_name!r} in {mask_secrets(tracking_uri)} "
                f"({error.message}); run the search first (check --tracking-uri)"
            ) from None
        graphs = sorted(Path(local).rglob("*.pt2"))
        if not graphs:
            raise UsageError(f"{experiment_name}: its registered model is no network (no weights)")
        # The pt2 archive: a graph of torch ops and its tensors, read without unpickling code.
        state = torch.export.load(graphs[0]).state_dict
    weights = _network_tensors(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(path))
    return len(weights)


def _network_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the network inside a RawImageClassifier (and a WithTta around it), named
    as the network names them."""
    for prefix in ("network.", "network."):  # RawImageClassifier's, then WithTta's
        if any(name.startswith(prefix) for name in state) and all(
            name.startswith(prefix) or name in ("mean", "std") for name in state
        ):
            state = {n[len(prefix) :]: t for n, t in state.items() if n.startswith(prefix)}
    return state


def predict(
    tracking_uri: str, experiment_name: str, image_paths: Sequence[str | Path]
) -> list[tuple[str, str, float]]:
    """Classify image files with the experiment's registered model.

    Each image is decoded with OpenCV (any format it reads), converted to the model's channels
    and resized to its input size (area interpolation, as ``data.loaders.image_folder`` does).
    Returns ``(path, class name, probability)`` per image; the probability is NaN for a model
    that gives labels only (a linear SVM).
    """
    from models import serving

    model = load_registered(tracking_uri, experiment_name)
    schema = model.metadata.get_input_schema()
    _, channels, height, width = schema.inputs[0].shape
    images = np.stack([read_image(p, channels, height, width) for p in image_paths])
    answer = model.predict(images.astype(schema.numpy_types()[0]))
    if not isinstance(answer, pd.DataFrame):  # registered before models answered with names
        answer = serving.named(np.asarray(answer), model.metadata.metadata["classes"])
    return [
        (str(path), str(label), float(probability))
        for path, label, probability in zip(
            image_paths, answer["label"], answer["probability"], strict=True
        )
    ]


def read_image(path: str | Path, channels: int, height: int, width: int) -> np.ndarray:
    """One image file as uint8 (channels, height, width); UsageError if it can't be decoded."""
    import cv2

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
    "save_weights",
]
