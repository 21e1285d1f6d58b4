"""The anytime curve: the running best over every trial's epochs, in the order they arrived."""

from __future__ import annotations

import itertools
import math

import pytest
from mlflow.tracking import MlflowClient

from tuner.publishing.anytime import Point, anytime_curve, epochs_to_reach, search_curve
from tuner.tracking.records import latest_parent, trials_of


def test_the_curve_merges_trials_in_time_order_and_keeps_the_running_best():
    first = [(1_000, 0.5), (3_000, 0.7), (6_000, 0.72)]
    second = [(2_000, 0.6), (4_000, math.inf), (5_000, 0.9)]
    curve = anytime_curve([first, second], start_ms=0, mode="max")
    assert [p.best for p in curve] == [0.5, 0.6, 0.7, 0.7, 0.9, 0.9]
    assert [p.epochs for p in curve] == [1, 2, 3, 4, 5, 6]  # the inf epoch was trained too
    assert curve[0] == Point(seconds=1.0, epochs=1, best=0.5)
    assert epochs_to_reach(curve, 0.7, "max") == 3
    assert epochs_to_reach(curve, 0.95, "max") is None


def test_for_a_loss_lower_is_better():
    curve = anytime_curve([[(10, 2.0), (30, 3.0)], [(20, 1.5)]], start_ms=10, mode="min")
    assert [(p.seconds, p.best) for p in curve] == [(0.0, 2.0), (0.01, 1.5), (0.02, 1.5)]
    assert epochs_to_reach(curve, 1.8, "min") == 2


@pytest.mark.slow
def test_a_search_curve_ends_at_its_best_trial_after_all_its_epochs(digits_search):
    client = MlflowClient(digits_search.uri)
    parent = latest_parent(client, "digits_search")
    trials = trials_of(client, parent)
    curve = search_curve(client, parent)
    # The best epoch any trial reported (a trial's value, the mean of its last epochs, is lower).
    epochs = [m.value for t in trials for m in client.get_metric_history(t.run_id, "val_acc")]
    assert curve[-1].best == max(epochs)
    assert curve[-1].epochs == sum(t.epochs for t in trials)
    assert all(a.seconds <= b.seconds for a, b in itertools.pairwise(curve))
    assert 0 < curve[0].seconds < curve[-1].seconds
