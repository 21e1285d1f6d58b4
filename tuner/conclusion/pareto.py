"""The Pareto front of a multi-objective search (``spec.objectives``): the trials no other
trial matches or beats on every objective while beating on one.

A trial's point is its best value of the first objective (the metric: ``TrialRecord.value``,
the epoch whose checkpoint is kept and tested) and the costs it reported before training
(``model_params``, ``model_mb``, ``latency_ms``). Read from MLflow like every other result, so
the runner's tags, `tuner best --pareto`, the plot and the report agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mlflow.entities import Run

from tuner.core.errors import UsageError
from tuner.core.objective import Objective
from tuner.tracking.records import TrialRecord
from tuner.tracking.tags import SearchTags, Status

# No model worth a place on the front.
UNTRAINED = (Status.REJECTED, Status.DIVERGED, Status.ERRORED)


def point(trial: TrialRecord, objectives: Sequence[tuple[str, str]]) -> tuple[float, ...] | None:
    """The trial's objective values, each signed so that larger is better; None when it has
    no trained model or misses a value."""
    if trial.status in UNTRAINED or trial.value is None:
        return None
    values = [trial.value, *(trial.metrics.get(name) for name, _ in objectives[1:])]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    signs = [Objective(name, mode) for name, mode in objectives]
    return tuple(o.signed(v) for v, o in zip(values, signs, strict=True))


def front(
    trials: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]
) -> list[TrialRecord]:
    """The trials on the front, best first objective first (ties: the cheaper first)."""
    points = {t.trial_id: p for t in trials if (p := point(t, objectives)) is not None}
    members = [
        t
        for t in trials
        if t.trial_id in points
        and not any(dominates(other, points[t.trial_id]) for other in points.values())
    ]
    return ordered(members, objectives)


def ordered(
    trials: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]
) -> list[TrialRecord]:
    """Best first objective first; ties: the cheaper first (the order every front is shown in)."""
    return sorted(trials, key=lambda t: tuple(-v for v in point(t, objectives) or ()))


def recorded(parent: Run, trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The trials a finished search tagged ``tuner.pareto``, ordered; a UsageError for a run
    that searched on one metric."""
    objectives = SearchTags.of(parent).objectives
    if not objectives:
        raise UsageError(
            f"run {parent.info.run_id} searched on one metric: no Pareto front; give the spec "
            "`objectives: [{val_acc: max}, {model_params: min}]` for one"
        )
    return ordered([trial for trial in trials if trial.pareto], objectives)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (larger is better)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )
