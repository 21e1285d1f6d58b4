"""The closing step a search keeps for `tuner sync` while its tracking server is down: the
best trial's test evaluation, with a trained model of either kind, comes back from its file
predicting as it did."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import data
from models import build
from models.classical import build_pipeline
from models.raw_image import RawImageClassifier
from tuner.publishing.closing import Closing, keep, kept, publish
from tuner.tracking.experiment import Experiment
from tuner.tracking.tags import SearchTags
from tuner.trainables.metrics import Evaluation


@pytest.fixture(scope="module")
def splits() -> data.Splits:
    return data.load("digits", seed=0, max_train=300, max_test=50)


def _model(kind: str, splits: data.Splits, features: Path) -> Any:
    """An untrained network behind its normalisation, or a fitted bag of SIFT + kNN pipeline
    caching its features (the cache's objects go into the file too)."""
    if kind == "deep":
        network = build("simple_cnn", num_classes=10, in_channels=1, image_size=8)
        return RawImageClassifier(network, torch.tensor([0.3]), torch.tensor([0.4])).eval()
    pipeline = build_pipeline(
        {"name": "bag_of_sift", "resize": 16, "vocab_size": 8, "sample_size": 1000},
        {"name": "knn", "k": 3},
        cache_dir=features,
    )
    return pipeline.fit(splits.train_x.numpy(), splits.train_y.numpy())


def _predictions(model: Any, images: np.ndarray) -> np.ndarray:
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(torch.from_numpy(images).float()).numpy()
    return model.predict_proba(images)


@pytest.mark.parametrize("kind", ["deep", "classical"])
def test_a_kept_closing_step_predicts_as_the_search_did(kind, splits, tmp_path):
    model = _model(kind, splits, tmp_path / "features")
    images = splits.test_x.numpy()
    evaluation = Evaluation(splits.test_y.numpy(), np.zeros(len(images)), splits.classes, model)
    closing = Closing("parent-run-id", evaluation, images[:4], "digits")
    path = tmp_path / "search" / "unpublished.pt"
    keep(closing, path)
    back = kept(path)
    assert (back.parent_run_id, back.registered_name) == ("parent-run-id", "digits")
    assert np.array_equal(back.example, closing.example)
    assert back.evaluation.classes == evaluation.classes
    assert back.evaluation.metrics == evaluation.metrics
    assert np.array_equal(_predictions(back.evaluation.model, images), _predictions(model, images))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left


def test_the_closing_step_taken_twice_registers_one_model_version(splits, tmp_path):
    """A sync whose server went away after it registered the model keeps the file; the next
    sync takes the step again and must not register a second version."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = Experiment(uri, "twice")
    spec = tmp_path / "twice.yaml"
    spec.write_text("name: twice\n")
    experiment.start(spec, SearchTags(metric="val_acc", mode="max"))
    model = _model("deep", splits, tmp_path / "features")
    images = splits.test_x.numpy()
    evaluation = Evaluation(splits.test_y.numpy(), np.zeros(len(images)), splits.classes, model)
    closing = Closing(experiment.parent_id, evaluation, images[:4], "twice")
    with warnings.catch_warnings():  # a parent run without trials: no curves, no study
        warnings.simplefilter("ignore")
        first = publish(uri, closing, verbose=False)
        again = publish(uri, closing, verbose=False)
    assert first == again == "models:/twice/1"
    versions = MlflowClient(uri).search_model_versions("name = 'twice'")
    assert [int(v.version) for v in versions] == [1]
