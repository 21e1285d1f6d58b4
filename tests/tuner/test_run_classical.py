"""End to end: the shipped fashion_knn.yaml, on a Fashion-MNIST subset, recorded in MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tuner.commands.cli import main
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, Status, Tag

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist"
)


@pytest.fixture(scope="module")
def classical_run(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fashion_knn")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    code = main(
        [
            "run",
            str(ROOT / "search_spaces" / "fashion_knn.yaml"),
            "--num-samples",
            "5",
            "--set",
            "data.max_train=1500",
            "--set",
            "data.max_test=400",
            "--set",
            f"cache_dir={tmp / 'cache'}",
            # Small vocabularies keep the SIFT branch fast at this size.
            "--set",
            "space.features.choice.bag_of_sift.vocab_size=32",
            "--tracking-uri",
            uri,
            "--storage",
            str(tmp / "ray"),
        ]
    )
    assert code == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fashion_knn")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs, tmp


def test_every_trial_reports_validation_scores_once(classical_run):
    client, runs, _ = classical_run
    trials = [r for r in runs if r.data.tags.get(Tag.ROLE) == TRIAL_ROLE]
    assert len(trials) == 5
    for trial in trials:
        assert trial.data.tags[Tag.STATUS] == Status.COMPLETED
        assert 0.1 < trial.data.metrics["val_acc"] <= 1.0
        assert 0.0 < trial.data.metrics["val_f1"] <= 1.0
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "val_acc")] == [1]
        features = trial.data.params["features.name"]
        assert features in {"tiny_image", "bag_of_sift"}
        # Conditional branches: a branch's settings under its name, only on its trials.
        assert ("features.bag_of_sift.vocab_size" in trial.data.params) == (
            features == "bag_of_sift"
        )
        assert ("classifier.knn.k" in trial.data.params) == (
            trial.data.params["classifier.name"] == "knn"
        )


def test_parent_holds_the_test_metrics_of_the_best_config(classical_run):
    _, runs, _ = classical_run
    (parent,) = [r for r in runs if r.data.tags.get(Tag.ROLE) == PARENT_ROLE]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_acc"] > 0.6
    for name in ("test_precision", "test_recall", "test_f1"):
        assert 0.5 < parent.data.metrics[name] <= 1.0
    assert parent.data.params["best.features.name"] in {"tiny_image", "bag_of_sift"}
