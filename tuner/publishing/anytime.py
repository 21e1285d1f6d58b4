"""A search's anytime curve: the best metric found so far, against wall time and epochs trained.

The driver keeps it as the epochs arrive, in the parent run's ``best_so_far_<metric>`` (step:
the epochs all trials had trained; MLflow's UI charts it on the parent); each point is when the
best improved, and the last one is the search's last epoch. It says how fast a search finds good
configs: what a user waiting on it sees, and what ``bench/bench_search.py`` compares between
searchers and schedulers.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tuner.core.objective import Mode, Objective
from tuner.core.selection import best_so_far_key
from tuner.tracking.tags import SearchTags


@dataclass(frozen=True)
class Point:
    seconds: float  # since the search's parent run started
    epochs: int  # epochs trained by all trials so far, this one included
    best: float  # the best value of the metric so far


def search_curve(client: MlflowClient, parent: Run) -> list[Point]:
    """The anytime curve a search kept on its parent run (tuner.search.recorder), read back
    from MLflow in one request."""
    metric = SearchTags.of(parent).metric
    history = client.get_metric_history(parent.info.run_id, best_so_far_key(metric))
    start_ms = parent.info.start_time
    return [
        Point((m.timestamp - start_ms) / 1000, m.step, m.value)
        for m in sorted(history, key=lambda m: m.step)
    ]


def epochs_to_reach(curve: list[Point], target: float, mode: Mode) -> int | None:
    """The epochs trained when the running best first reached ``target`` (None: never)."""
    objective = Objective("", mode)

    def reached(v: float) -> bool:
        return objective.better(v, target) or v == target  # as good as the target, or better

    return next((point.epochs for point in curve if reached(point.best)), None)
