"""``search.warm_start``: the finished trials of earlier searches, given to Optuna before it
samples, so its first samples already go where those searches found good configs.

An earlier trial is carried over only when this search's space could have sampled it (the same
parameter names and constants, every value inside a current range or choice); the others are
skipped and counted, never mixed in. Trials come from MLflow (each experiment's latest search),
not from Tune's files: they may have run anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial

from tuner.core.errors import UsageError
from tuner.search.searchers import finished_trial
from tuner.spec.document import Spec
from tuner.spec.space import Group
from tuner.tracking.records import latest_parent, parsed_params, trials_of
from tuner.tracking.tags import SearchTags, Status

# How a trial ended without a value of its own to learn from.
UNFINISHED = (Status.RUNNING, Status.INTERRUPTED, Status.ERRORED, Status.UNKNOWN)


@dataclass(frozen=True)
class WarmStart:
    trials: list[FrozenTrial]  # for the new study, in the experiments' order, best first
    skipped: int  # finished trials this space could not have sampled

    def describe(self, experiments: list[str]) -> str:
        """One line for the terminal: how many were carried over, and skipped."""
        line = f"tuner: warm start: {len(self.trials)} trials of {', '.join(experiments)}"
        if self.skipped:
            line += (
                f"; {self.skipped} skipped, their configs outside this space (other "
                "parameters, or values out of its ranges)"
            )
        return line


def earlier_trials(client: MlflowClient, spec: Spec, space: Group) -> WarmStart:
    """The finished trials of ``search.warm_start``'s experiments that ``space`` could have
    sampled; a UsageError for an experiment not there or one selecting on another metric."""
    trials: list[FrozenTrial] = []
    skipped = 0
    for name in spec.search.warm_start:
        try:
            parent = latest_parent(client, name)
        except UsageError as error:
            raise UsageError(f"search.warm_start: {error}") from None
        ran = SearchTags.of(parent)
        if (ran.metric, ran.mode) != (spec.metric, spec.mode):
            raise UsageError(
                f"search.warm_start: {name!r} selected on {ran.metric} ({ran.mode}), this "
                f"search on {spec.metric} ({spec.mode}): their values don't compare; "
                "leave it out"
            )
        for record in trials_of(client, parent):
            if record.status in UNFINISHED or not math.isfinite(record.value or math.nan):
                continue
            trial = finished_trial(space, parsed_params(record.params), record.value)
            if trial is None:
                skipped += 1
            else:
                trials.append(trial)
    return WarmStart(trials, skipped)
