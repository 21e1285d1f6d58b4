"""What a trial reports to Tune: the one place its keys are spelt.

The trainables build a ``TrialReport`` and hand Tune its flat ``result()`` (Tune's schedulers
and searchers read the metric by key); the driver's callbacks (the MLflow recorder, the
progress line) and the closing phase read a result back with ``TrialReport.read`` and
``status``. Plain Python: the reading side imports neither torch nor Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tuner.tracking.tags import Status

# The metrics MLflow charts per epoch, in this order, when a trial reports them.
PER_EPOCH = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_precision",
    "val_recall",
    "val_f1",
    "lr",
)
# Beyond those, what a training function of the user's reports (tuner.trainables.function) is
# charted per epoch too when it is named like them: any train_* or val_* number.
OWN_PER_EPOCH = ("train_", "val_")
# The model's size, and (deep) its inference time per image on the trial's device in ms: the
# same every epoch, so MLflow records them once (per epoch, the UI charted a flat line). Known
# before training: the costs a multi-objective search (spec.objectives) weighs accuracy against.
SIZE = ("model_params", "model_mb")
ONCE = (*SIZE, "latency_ms")
# The trial's own seconds per epoch, of training + validation and of saving its checkpoint:
# what its compute was, without Ray's overheads (bench/bench_search_overhead.py sums them).
SECONDS = ("epoch_seconds", "checkpoint_seconds")

# Status.DIVERGED or Status.REJECTED (Final, so of these literal types): a Literal spells them.
Ending = Literal["diverged", "rejected"]


@dataclass(frozen=True)
class TrialReport:
    """One epoch's report of one trial (a classical trial reports once, as epoch 1 of 1)."""

    metrics: Mapping[str, float]  # PER_EPOCH and ONCE keys, and the search's metric
    epochs: int  # the trial's epoch budget: fewer epochs trained means stopped early
    ending: Ending | None = None  # the trial ends itself: a NaN/inf loss, or constraints
    reason: str = ""  # why it was rejected (which constraint, by how much)
    node_id: str = ""  # the Ray node it ran on
    seconds: Mapping[str, float] = field(default_factory=dict)  # SECONDS keys
    warnings: tuple[str, ...] = ()  # what it warned of since its last report

    def result(self) -> dict[str, Any]:
        """The flat dict Tune receives (and keeps in its result files and trial table)."""
        result: dict[str, Any] = {**self.metrics, **self.seconds, "epochs": self.epochs}
        result["diverged"] = self.ending == Status.DIVERGED
        if self.ending == Status.REJECTED:
            result["rejected"] = self.reason
        if self.node_id:
            result["node_id"] = self.node_id
        if self.warnings:
            result["warnings"] = list(self.warnings)
        return result

    @classmethod
    def read(cls, result: Mapping[str, Any]) -> TrialReport:
        """The report inside one of Tune's results (which adds its own keys around it)."""
        numbers = {k: float(v) for k, v in result.items() if _is_number(v)}
        ending: Ending | None = None
        if result.get("rejected"):
            ending = Status.REJECTED
        elif result.get("diverged"):
            ending = Status.DIVERGED
        return cls(
            metrics={
                k: numbers[k]
                for k in (*PER_EPOCH, *ONCE, *numbers)
                if k in numbers and is_metric(k)
            },
            epochs=int(result.get("epochs") or 0),
            ending=ending,
            reason=str(result.get("rejected") or ""),
            node_id=str(result.get("node_id") or ""),
            seconds={k: numbers[k] for k in SECONDS if k in numbers},
            warnings=tuple(result.get("warnings") or ()),
        )


def per_epoch(key: str) -> bool:
    """Whether a reported metric is charted per epoch (else it is one of ONCE, or no metric)."""
    return key in PER_EPOCH or key.startswith(OWN_PER_EPOCH)


def is_metric(key: str) -> bool:
    """Whether a key of a Tune result is a metric a trial reported (Tune adds its own)."""
    return per_epoch(key) or key in ONCE


def status(last_result: Mapping[str, Any] | None, errored: bool = False) -> str:
    """How a trial ended (a Status): completed / early_stopped (by ASHA or the search's time budget,
    before its epoch budget) /
    diverged / errored / rejected (by the spec's constraints, untrained)."""
    if errored:
        return Status.ERRORED
    if not last_result:
        return Status.EARLY_STOPPED  # stopped before reporting anything
    report = TrialReport.read(last_result)
    if report.ending:
        return report.ending
    if report.epochs and last_result.get("training_iteration", 0) < report.epochs:
        return Status.EARLY_STOPPED
    return Status.COMPLETED


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
