"""The trial's report: what the trainables hand Tune, read back by the driver's side."""

import math

import pytest

from tuner.tracking.tags import Status
from tuner.trainables import trial_report
from tuner.trainables.trial_report import TrialReport


def tune_result(report: TrialReport, iteration: int) -> dict:
    """``report`` as Tune hands it back: its keys among Tune's own."""
    return {**report.result(), "training_iteration": iteration, "time_this_iter_s": 2.5, "pid": 7}


def test_an_epoch_report_reads_back_whole_without_tunes_keys():
    report = TrialReport(
        {"val_acc": 0.91, "train_loss": 0.3, "lr": 0.01, "model_params": 1234.0},
        epochs=10,
        node_id="node-a",
        seconds={"epoch_seconds": 1.5, "checkpoint_seconds": 0.1},
        warnings=("checkpoint unreadable",),
    )
    assert TrialReport.read(tune_result(report, 3)) == report


def test_a_report_without_warnings_or_node_adds_no_keys_for_them():
    result = TrialReport({"val_acc": 0.5}, epochs=1).result()
    assert result == {"val_acc": 0.5, "epochs": 1, "diverged": False}


@pytest.mark.parametrize(
    ("report", "iteration", "status"),
    [
        (TrialReport({"val_acc": 0.9}, epochs=5), 5, Status.COMPLETED),
        (TrialReport({"val_acc": 0.9}, epochs=5), 3, Status.EARLY_STOPPED),
        (TrialReport({"val_loss": math.inf}, epochs=5, ending=Status.DIVERGED), 2, Status.DIVERGED),
        (
            TrialReport({"val_acc": 0.0}, epochs=1, ending=Status.REJECTED, reason="too big"),
            1,
            Status.REJECTED,
        ),
    ],
)
def test_status_is_read_from_the_last_result(report, iteration, status):
    assert trial_report.status(tune_result(report, iteration)) == status


def test_a_trial_that_reported_nothing_was_stopped_and_an_error_wins():
    assert trial_report.status(None) == Status.EARLY_STOPPED
    done = tune_result(TrialReport({"val_acc": 0.9}, epochs=1), 1)
    assert trial_report.status(done, errored=True) == Status.ERRORED


def test_a_rejection_keeps_its_reason():
    report = TrialReport({"val_acc": 0.0}, epochs=1, ending=Status.REJECTED, reason="3 MB > 1 MB")
    assert TrialReport.read(tune_result(report, 1)).reason == "3 MB > 1 MB"
