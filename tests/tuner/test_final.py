"""After the search: constraints reject big models untrained, `final.retrain` retrains the best
config on train+val, and the parent run records per-class accuracy and the model's size."""

from __future__ import annotations

import contextlib
import io

import mlflow
import numpy as np
import pytest
import torch

import data
import models
from tests.helpers import best_checkpoint_evaluation, new_store, tuner_run
from tuner.search.inputs import load_data
from tuner.spec.document import load_spec
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, TRUE, Status, Tag
from tuner.trainables import Settings
from tuner.trainables.metrics import Evaluation
from tuner.trainables.size import MB, size_of, violation

SPEC = """\
name: final_e2e
data: {dataset: digits, seed: 0}
search: {algorithm: random, num_samples: 4, seed: 0}
scheduler: {type: fifo, max_epochs: 2}
resources: {cpu: 1}
constraints: {max_params: 20000}
final: {retrain: true}
space:
  model: {name: simple_cnn, width: {choice: [8, 64]}, depth: 2}
  optimizer: {name: adam, lr: 3e-3}
  batch_size: 32
"""
SETTINGS = Settings(max_epochs=1, seed=0, metric="val_acc", mode="max")


def test_val_images_join_training_and_nothing_else_moves():
    splits = data.load("digits", seed=0)
    merged = splits.with_val_in_train()
    assert len(merged.train_y) == len(splits.train_y) + len(splits.val_y)
    assert torch.equal(merged.train_x[len(splits.train_y) :], splits.val_x)
    assert torch.equal(merged.test_x, splits.test_x) and merged.classes == splits.classes


def test_size_of_a_network_counts_its_parameters_and_float32_bytes():
    network = models.build("mnist_cnn", num_classes=10, in_channels=1, image_size=28)
    size = size_of(network)
    assert size.params == 21_840  # the count tests/models pins for this model
    buffers = sum(b.numel() for b in network.buffers())
    assert size.mb == pytest.approx((size.params + buffers) * 4 / MB)


def test_a_network_with_frozen_weights_counts_what_it_learns_and_stores_everything():
    # airbench freezes its whitening conv and its BatchNorm scales: the count is the one
    # `tuner list models` prints (trainable); the MB hold the frozen weights too.
    network = models.build("airbench", num_classes=10, in_channels=3, image_size=32)
    size = size_of(network)
    assert size.params == models.count_parameters(network) == 1_971_352
    stored = sum(t.numel() for t in network.state_dict().values() if t.is_floating_point())
    assert stored > size.params
    assert size.mb >= stored * 4 / MB


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_params": 1000}, "21,840 parameters > constraints.max_params 1,000"),
        ({"max_model_mb": 0.05}, "MB > constraints.max_model_mb 0.05"),
        ({"max_params": 21_840, "max_model_mb": 1}, None),
    ],
)
def test_constraints_name_the_limit_broken(limits, message):
    network = models.build("mnist_cnn", num_classes=10, in_channels=1, image_size=28)
    settings = Settings(max_epochs=1, seed=0, metric="val_acc", mode="max", **limits)
    reason = violation(size_of(network), settings)
    assert reason == message if message is None else message in reason


def test_per_class_accuracy_uses_metric_safe_names_and_skips_absent_classes():
    evaluation = Evaluation(
        np.array([0, 0, 1, 1, 1, 1]),
        np.array([0, 1, 1, 1, 1, 0]),
        ("T-shirt/top", "bag (leather)", "never seen"),
        torch.nn.Linear(2, 3),
    )
    assert evaluation.per_class_accuracy == {
        "test_acc_per_class/T-shirt/top": 0.5,
        "test_acc_per_class/bag _leather_": 0.75,
    }
    assert evaluation.logged_metrics["model_params"] == 9


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    store = new_store(tmp_path_factory, "final")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        tuner_run(store, SPEC)
    experiment = store.client.get_experiment_by_name("final_e2e")
    runs = store.client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get(Tag.ROLE) == PARENT_ROLE)
    trials = [r for r in runs if r.data.tags.get(Tag.ROLE) == TRIAL_ROLE]
    return store.client, parent, trials, printed.getvalue(), store


def test_configs_over_the_limit_are_rejected_untrained(finished):
    client, _, trials, _, _ = finished
    widths = {r.data.params["model.width"] for r in trials}
    assert widths == {"8", "64"}  # seed 0 samples both, so both paths run
    for run in trials:
        history = client.get_metric_history(run.info.run_id, "val_acc")
        if run.data.params["model.width"] == "64":  # 75,978 parameters
            assert run.data.tags[Tag.STATUS] == Status.REJECTED
            assert "parameters > constraints.max_params 20,000" in run.data.tags[Tag.REJECTED]
            assert "train_loss" not in run.data.metrics  # not one step of training
            assert [m.value for m in history] == [0.0]
        else:
            assert run.data.tags[Tag.STATUS] == Status.COMPLETED
            assert len(history) == 2 and run.data.metrics["model_params"] < 20_000


def test_the_best_is_never_a_rejected_config(finished):
    _, parent, trials, _, _ = finished
    best = [r for r in trials if r.data.tags.get(Tag.BEST) == TRUE]
    assert len(best) == 1 and best[0].data.tags[Tag.STATUS] == Status.COMPLETED
    assert parent.data.params["best.model.width"] == "8"


def test_parent_records_the_retrained_model_its_size_and_per_class_accuracy(finished):
    _, parent, trials, _, _ = finished
    metrics = parent.data.metrics
    assert parent.data.tags[Tag.FINAL] == "retrained on train+val"
    best = next(r for r in trials if r.data.tags.get(Tag.BEST) == TRUE)
    assert metrics["model_params"] == best.data.metrics["model_params"]  # the same architecture
    # the exported model adds its input normalisation: a mean and a std per channel
    assert metrics["model_mb"] == pytest.approx(best.data.metrics["model_mb"] + 8 / MB)
    per_class = {k: v for k, v in metrics.items() if k.startswith("test_acc_per_class/")}
    assert sorted(per_class) == [f"test_acc_per_class/{digit}" for digit in range(10)]
    # digits' test split is stratified: per-class accuracies average to about test_acc
    assert np.mean(list(per_class.values())) == pytest.approx(metrics["test_acc"], abs=0.02)
    assert 0.5 < metrics["test_acc"] <= 1


def test_each_finished_trial_gets_one_line(finished):
    _, _, trials, printed, _ = finished
    lines = [line for line in printed.splitlines() if line.startswith("trial ")]
    assert len(lines) == len(trials) == 4
    for run in trials:
        (line,) = [line for line in lines if run.data.tags[Tag.TRIAL_ID] in line]
        status = run.data.tags[Tag.STATUS]
        assert f" {status}: " in line and f"model.width={run.data.params['model.width']}" in line
        if status == Status.COMPLETED:
            assert f"val_acc {run.data.metrics['final_val_acc']:.4f} after 2 epochs" in line
    assert "Retraining the best config on train+val" in printed


def test_the_model_tested_and_registered_is_the_retrained_one(finished, monkeypatch):
    _, parent, _, _, store = finished
    spec_path = store.tmp / "final_e2e.yaml"
    spec = load_spec(spec_path)
    splits = load_data(spec)
    images = splits.test_x.numpy()  # uint8 0..255, as the exported model takes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    registered = mlflow.pyfunc.load_model(f"models:/{spec.experiment}/latest")
    probabilities = np.stack(registered.predict(images)["probabilities"])
    # The registered model scores exactly the test_acc the parent recorded: fails if the runner
    # tested one model and exported another.
    accuracy = np.mean(probabilities.argmax(1) == splits.test_y.numpy())
    assert accuracy == pytest.approx(parent.data.metrics["test_acc"], abs=1e-12)
    # ...and it is not the best trial's best checkpoint (rebuilt from Ray's storage the way the
    # runner tests it without final.retrain): fails if the runner skipped the retraining and
    # tested and exported the checkpoint. Two differently trained networks never give the same
    # probabilities, even where their accuracies happen to tie.
    checkpoint = best_checkpoint_evaluation(store, spec_path)
    with torch.no_grad():
        from_checkpoint = checkpoint.model(torch.from_numpy(images).float()).numpy()
    assert not np.allclose(probabilities, from_checkpoint, atol=1e-3)
