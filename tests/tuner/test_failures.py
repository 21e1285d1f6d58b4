"""Failing trials, injected for real: retried, errored, diverged, unreadable checkpoints."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

import data
from tuner.commands.cli import main
from tuner.tracking.tags import TRIAL_ROLE, TRUE, Status, Tag, tag_filter
from tuner.trainables import Settings
from tuner.trainables.deep import CHECKPOINT_FILE, TrainingRun, restore

SPEC = """\
name: faults
data: {dataset: digits, seed: 0}
search: {algorithm: grid, seed: 0}
scheduler: {type: fifo, max_epochs: 3}
max_failures: 1
resources: {cpu: 1}
space:
  model: {name: simple_cnn, width: 16, depth: 2}
  batch_size: 64
  optimizer:
    choice:
      adam: {lr: 1e-2}
      sgd: {lr: 1e38, momentum: 0.9}  # poisoned: the loss overflows to inf at once
  fault:
    choice:
      none: {}
      once: {epoch: 2}                # raises in epoch 2, retried from epoch 1's checkpoint
      always: {epoch: 2, repeat: true}  # raises in every attempt: errored after max_failures
"""
GRID = [(optimizer, fault) for optimizer in ("adam", "sgd") for fault in ("none", "once", "always")]


@pytest.fixture(scope="module")
def fault_runs(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    spec = tmp / "faults.yaml"
    spec.write_text(SPEC)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert main(["run", str(spec), "--tracking-uri", uri, "--storage", str(tmp / "ray")]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("faults")
    runs = client.search_runs([experiment.experiment_id], tag_filter(Tag.ROLE, TRIAL_ROLE))
    by_case = {_case(r): r for r in runs}
    return client, by_case, runs


def _case(run) -> tuple[str, str]:
    return run.data.params["optimizer.name"], run.data.params["fault.name"]


def test_every_trial_is_recorded_once(fault_runs):
    _, _, runs = fault_runs
    # Counted, not keyed: a retried trial recorded as a second child run shows up as a 2 here
    # (a dict keyed by case would silently keep only one of them).
    assert Counter(_case(r) for r in runs) == Counter(GRID)  # each case exactly once
    assert len(runs) == len(GRID)  # one child run per trial, nothing else


def test_a_fault_once_is_retried_from_its_checkpoint(fault_runs):
    client, by_case, _ = fault_runs
    run = by_case[("adam", "once")]
    assert run.data.tags[Tag.STATUS] == Status.COMPLETED
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert steps == [1, 2, 3]  # epoch 1 was not trained again


def test_a_repeating_fault_ends_errored_with_its_message(fault_runs):
    _, by_case, _ = fault_runs
    run = by_case[("adam", "always")]
    assert run.data.tags[Tag.STATUS] == Status.ERRORED
    assert run.info.status == "FAILED"
    assert "injected fault at epoch 2" in run.data.tags[Tag.ERROR]


def test_a_poisoned_learning_rate_diverges_without_crashing(fault_runs):
    _, by_case, _ = fault_runs
    run = by_case[("sgd", "none")]
    assert run.data.tags[Tag.STATUS] == Status.DIVERGED
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val_acc"] == 0.0


def test_the_healthy_trial_completes_and_is_best(fault_runs):
    _, by_case, _ = fault_runs
    run = by_case[("adam", "none")]
    assert run.data.tags[Tag.STATUS] == Status.COMPLETED
    assert run.data.metrics["val_acc"] > 0.8
    assert (
        run.data.tags.get(Tag.BEST) == TRUE
        or by_case[("adam", "once")].data.tags.get(Tag.BEST) == TRUE
    )  # the same config, retried, may edge it out


def test_a_truncated_checkpoint_restarts_training_from_scratch(tmp_path):
    splits = data.load("digits", max_train=200)
    settings = Settings(max_epochs=2, seed=0, metric="val_acc", mode="max")
    trial = TrainingRun({"model": {"name": "simple_cnn", "width": 8, "depth": 1}}, splits, settings)
    trial.train_epoch()
    torch.save(trial.state(), tmp_path / CHECKPOINT_FILE)
    whole = (tmp_path / CHECKPOINT_FILE).read_bytes()
    (tmp_path / CHECKPOINT_FILE).write_bytes(whole[: len(whole) // 2])

    fresh = TrainingRun({"model": {"name": "simple_cnn", "width": 8, "depth": 1}}, splits, settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = restore(fresh, tune.Checkpoint.from_directory(tmp_path))
    assert resumed is False
    assert fresh.epoch == 0
    assert any("can't be read" in str(w.message) for w in caught)

    (tmp_path / CHECKPOINT_FILE).write_bytes(whole)
    assert restore(fresh, tune.Checkpoint.from_directory(tmp_path)) is True
    assert fresh.epoch == 1


def test_an_out_of_memory_trial_is_recorded_as_such(ray_session, tmp_path, capsys):
    # A real allocation failure: the second conv of this net would need ~79 TB.
    spec = tmp_path / "oom.yaml"
    spec.write_text(
        "name: oom\n"
        "scheduler: {type: fifo, max_epochs: 1}\n"
        "space:\n"
        "  model: {name: simple_cnn, width: 1048576, depth: 2}\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(
        [
            "run",
            str(spec),
            "--num-samples",
            "1",
            "--tracking-uri",
            uri,
            "--storage",
            str(tmp_path / "ray"),
        ]
    )
    assert code == 2  # no trial could report: a clear one-line error, no traceback
    assert "no trial reported `val_acc`" in capsys.readouterr().err
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("oom")
    (trial,) = client.search_runs([experiment.experiment_id], tag_filter(Tag.ROLE, TRIAL_ROLE))
    assert trial.data.tags[Tag.STATUS] == Status.ERRORED
    assert "MemoryError: out of memory with model" in trial.data.tags[Tag.ERROR]
    assert "use a smaller model or batch" in trial.data.tags[Tag.ERROR]
