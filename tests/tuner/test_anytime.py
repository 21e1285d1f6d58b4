"""The anytime curve: the running best over every trial's epochs, in the order they arrived,
kept on the parent run as the search goes."""

from __future__ import annotations

import itertools
import math

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from tuner.core.objective import Objective
from tuner.publishing.anytime import Point, epochs_to_reach, search_curve
from tuner.search.recorder import AnytimeCurve
from tuner.tracking.records import latest_parent, trials_of

# Two trials' epochs as the driver gets them: (timestamp ms, value).
ARRIVING = [
    (1_000, 0.5),
    (2_000, 0.6),
    (3_000, 0.7),
    (4_000, math.inf),
    (5_000, 0.9),
    (6_000, 0.72),
]


def points(logged: list[Metric | None]) -> list[tuple[float, int, int] | None]:
    return [m and (m.value, m.timestamp, m.step) for m in logged]


def new_curve(mode: str = "max") -> AnytimeCurve:
    return AnytimeCurve("anytime_val_acc", Objective("val_acc", mode))


def test_a_point_is_logged_when_the_best_improves_and_at_the_last_epoch():
    curve = new_curve()
    logged = points([curve.epoch(value, timestamp) for timestamp, value in ARRIVING])
    assert logged == [
        (0.5, 1_000, 1),
        (0.6, 2_000, 2),
        (0.7, 3_000, 3),
        None,
        (0.9, 5_000, 5),
        None,
    ]
    assert points([curve.last()]) == [(0.9, 6_000, 6)]  # the inf epoch and the last count
    assert curve.last() is None  # logged once


def test_the_last_point_is_not_logged_twice_when_the_last_epoch_was_the_best():
    curve = new_curve("min")
    logged = [curve.epoch(v, t) for t, v in [(10, 2.0), (20, 3.0), (30, 1.5)]]
    assert points(logged) == [(2.0, 10, 1), None, (1.5, 30, 3)]
    assert curve.last() is None


def test_a_resumed_curve_goes_on_from_the_trials_epochs_and_the_parents_points():
    curve = new_curve()
    curve.resume_trial([Metric("val_acc", v, t, s) for t, v, s in [(1, 0.5, 1), (4, 0.95, 2)]])
    curve.resume_trial([Metric("val_acc", 0.6, 2, 1)])  # another trial's epoch
    # A trial the killed driver ran after Tune's last save: its run is gone, its epochs count.
    curve.resume_curve(
        [Metric("anytime_val_acc", v, t, s) for v, t, s in [(0.5, 1, 1), (0.6, 2, 2), (0.7, 3, 4)]]
    )
    # The best is the trials' 0.95, whose point the killed driver never logged.
    assert (curve.epochs, curve.best) == (4, 0.95)
    assert curve.epoch(0.9, 10) is None
    assert points([curve.epoch(0.97, 11)]) == [(0.97, 11, 6)]


def test_a_search_nothing_finite_came_from_has_no_curve():
    curve = new_curve()
    assert curve.epoch(math.nan, 1) is None
    assert curve.last() is None


def test_epochs_to_reach_reads_the_first_point_as_good_as_the_target():
    curve = [Point(1.0, 1, 0.5), Point(3.0, 3, 0.7), Point(5.0, 5, 0.9), Point(6.0, 6, 0.9)]
    assert epochs_to_reach(curve, 0.7, "max") == 3
    assert epochs_to_reach(curve, 0.95, "max") is None
    assert epochs_to_reach([Point(0.0, 1, 2.0), Point(0.02, 3, 1.5)], 1.8, "min") == 3


@pytest.mark.slow
def test_a_search_curve_is_the_running_best_of_every_trials_epochs(digits_search):
    client = MlflowClient(digits_search.uri)
    parent = latest_parent(client, "digits_search")
    trials = trials_of(client, parent)
    curve = search_curve(client, parent)
    # What the trials' own histories say, merged in the order the driver got them.
    epochs = sorted(
        (m.timestamp, m.value)
        for t in trials
        for m in client.get_metric_history(t.run_id, "val_acc")
    )
    running = [max(value for _, value in epochs[: i + 1]) for i in range(len(epochs))]
    expected = [(i + 1, best) for i, best in enumerate(running) if i == 0 or best > running[i - 1]]
    if expected[-1][0] != len(epochs):  # and the last epoch
        expected.append((len(epochs), running[-1]))
    assert [(p.epochs, p.best) for p in curve] == expected
    start = parent.info.start_time  # each point at its epoch's arrival
    assert [p.seconds for p in curve] == [(epochs[p.epochs - 1][0] - start) / 1000 for p in curve]
    # It ends at the best epoch any trial reported (a trial's value, the mean of its last
    # epochs, is lower), after all their epochs.
    assert curve[-1].best == max(running)
    assert curve[-1].epochs == sum(t.epochs for t in trials) == len(epochs)
    assert all(a.seconds <= b.seconds for a, b in itertools.pairwise(curve))
    assert 0 < curve[0].seconds < curve[-1].seconds
