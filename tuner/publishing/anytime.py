"""A search's anytime curve: the best metric found so far, against wall time and epochs trained.

The driver keeps it as the epochs arrive (tuner.search.recorder), in the parent run's
``anytime_<metric>`` (step: the epochs all trials had trained; MLflow's UI charts it): a point
each time the best improves, and one at the latest epoch when the search ends. It says how fast
a search finds good configs: what a user waiting on it sees, and what ``bench/bench_search.py``
compares between searchers and schedulers.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tuner.core.objective import Mode, Objective
from tuner.tracking.tags import anytime_points


@dataclass(frozen=True)
class Point:
    seconds: float  # since the search's parent run started
    epochs: int  # epochs trained by all trials so far, this one included
    best: float  # the best value of the metric so far


def search_curve(client: MlflowClient, parent: Run) -> list[Point]:
    """The anytime curve a search kept on its parent run, read back in one request."""
    start_ms = parent.info.start_time
    return [
        Point((m.timestamp - start_ms) / 1000, m.step, m.value)
        for m in anytime_points(client, parent)
    ]


def epochs_to_reach(curve: list[Point], target: float, mode: Mode) -> int | None:
    """The epochs trained when the running best first reached ``target`` (None: never)."""
    objective = Objective("", mode)

    def reached(v: float) -> bool:
        return objective.better(v, target) or v == target  # as good as the target, or better

    return next((point.epochs for point in curve if reached(point.best)), None)
