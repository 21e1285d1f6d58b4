"""A search's anytime curve: the best metric found so far, against wall time and epochs trained.

Every epoch a trial reports is one point of its metric history (MLflow timestamps it when the
driver receives it). Merging all trials' histories in time order and keeping the running best
says how fast a search finds good configs: what a user waiting on it sees, and what
``bench/bench_search.py`` compares between searchers and schedulers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tuner.core.objective import Mode, Objective
from tuner.tracking.records import TrialRecord, trials_of
from tuner.tracking.tags import SearchTags, Status


@dataclass(frozen=True)
class Point:
    seconds: float  # since the search's parent run started
    epochs: int  # epochs trained by all trials so far, this one included
    best: float  # the best value of the metric so far


def anytime_curve(
    histories: Iterable[Iterable[tuple[int, float]]], *, start_ms: int, mode: Mode
) -> list[Point]:
    """The running best over every (timestamp in ms, value) point of every trial's history.

    Non-finite values (a diverged trial's inf) count as epochs trained but never as the best.
    """
    points = sorted(point for history in histories for point in history)
    objective = Objective("", mode)  # only its mode: the values are already the metric's
    curve: list[Point] = []
    best = math.nan
    for epochs, (timestamp, value) in enumerate(points, start=1):
        if math.isfinite(value):
            best = value if math.isnan(best) else objective.best((best, value))
        curve.append(Point((timestamp - start_ms) / 1000, epochs, best))
    return [point for point in curve if not math.isnan(point.best)]


def search_curve(
    client: MlflowClient, parent: Run, trials: Sequence[TrialRecord] | None = None
) -> list[Point]:
    """The anytime curve of a parent run's trials (``trials``: as read already), read back
    from MLflow."""
    search = SearchTags.of(parent)
    metric = search.metric
    histories = [
        [(m.timestamp, m.value) for m in client.get_metric_history(trial.run_id, metric)]
        for trial in (trials_of(client, parent) if trials is None else trials)
        if trial.status != Status.REJECTED  # reported the worst, trained nothing
    ]
    return anytime_curve(histories, start_ms=parent.info.start_time, mode=search.objective.mode)


def epochs_to_reach(curve: list[Point], target: float, mode: Mode) -> int | None:
    """The epochs trained when the running best first reached ``target`` (None: never)."""
    objective = Objective("", mode)

    def reached(v: float) -> bool:
        return objective.better(v, target) or v == target  # as good as the target, or better

    return next((point.epochs for point in curve if reached(point.best)), None)
