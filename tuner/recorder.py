"""The Ray Tune callback that mirrors every trial into a child run of the parent MLflow run.

It runs in the driver's event loop, so it only queues its writes (``tuner.tracking.Writer``
sends them from a thread); the one call it waits for is ``create_run``, whose id it needs.
"""

from __future__ import annotations

import math
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from tuner.space import Group, trial_params
from tuner.tracking import (
    TRIAL_ROLE,
    Write,
    Writer,
    as_params,
    child_runs,
    error_line,
    flush_writes,
    new_child_run,
    now_ms,
    writer,
)
from tuner.trainables import trial_report
from tuner.trainables.trial_report import TrialReport

WARNINGS_TAG = "tuner.warnings"  # what a trial warned of (deep.TrainingRun.warn), one per line
MAX_TAG_CHARS = 5000  # within MLflow's limit on a tag's value


class TrialRecorder(tune.Callback):
    """A Ray Tune callback that mirrors every trial into a child run of the parent run.

    Tune pickles its callbacks into the experiment state, so this holds only plain values and
    rebuilds what it knows from MLflow in ``setup`` — which is how a resumed search finds each
    trial's existing child run instead of opening a duplicate. Its writer (a thread and a queue)
    is found by tracking URI, never pickled.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_id: str,
        metric: str,
        mode: str,
        space: Group,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.metric = metric
        self.mode = mode
        self.space = space  # names a trial's params (space.named)
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.best_values: dict[str, float] = {}
        self.nodes: dict[str, str] = {}  # Tune trial id -> Ray node id it last reported from
        self.warnings: dict[str, str] = {}  # Tune trial id -> its tuner.warnings tag so far
        self.last_step: dict[str, int] = {}  # Tune trial id -> the last epoch logged
        self.ended: set[str] = set()  # Tune trial ids whose runs hold how they ended
        self._client: MlflowClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "_client": None,
            "runs": {},
            "best_values": {},
            "nodes": {},
            "warnings": {},
            "last_step": {},
            "ended": set(),
        }

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def writer(self) -> Writer:
        return writer(self.tracking_uri)

    def setup(self, **info: Any) -> None:
        for run in child_runs(self.client, self.experiment_id, self.parent_id):
            trial_id = run.data.tags.get("tuner.trial_id")
            if trial_id:
                self.runs[trial_id] = run.info.run_id
                if WARNINGS_TAG in run.data.tags:  # a resumed search appends to them
                    self.warnings[trial_id] = run.data.tags[WARNINGS_TAG]
                best = run.data.metrics.get(f"best_{self.metric}")
                if best is not None:
                    self.best_values[trial_id] = best
                if "epoch" in run.data.metrics:  # the latest value: the last epoch logged
                    self.last_step[trial_id] = int(run.data.metrics["epoch"])
                if run.data.tags.get("tuner.status") not in ("running", "interrupted"):
                    self.ended.add(trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.runs.get(trial.trial_id)
        params = as_params(trial_params(self.space, trial.config))
        if run_id is not None:  # a retried or resumed trial keeps its one child run
            self.ended.discard(trial.trial_id)
            running = [RunTag("tuner.status", "running")]
            # Its params again (the same values: MLflow accepts that): a driver killed after
            # creating the run may not have written them.
            self.writer.put(Write(run_id, params=params, tags=running, status="RUNNING"))
            return
        tags = {"tuner.role": TRIAL_ROLE, "tuner.trial_id": trial.trial_id}
        run_id = new_child_run(
            self.client,
            self.experiment_id,
            self.parent_id,
            f"trial_{trial.trial_id}",
            {**tags, "tuner.status": "running"},
        )
        self.runs[trial.trial_id] = run_id
        self.writer.put(Write(run_id, params=params))

    on_trial_restore = on_trial_start

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        step = int(result.get("training_iteration", 0))
        first = trial.trial_id not in self.last_step  # the run holds no epoch yet
        if step <= self.last_step.get(trial.trial_id, 0):
            # An epoch MLflow already holds, trained again from an older checkpoint after a
            # crash or a retry: each epoch is recorded once, as it was first reported.
            return
        self.last_step[trial.trial_id] = step
        now = now_ms()
        report = TrialReport.read(result)
        metrics = [
            Metric(key, value, now, step)
            for key, value in report.metrics.items()
            if key in trial_report.PER_EPOCH
        ]
        if first:  # with the first epoch, and no step: one value per run
            metrics += [
                Metric(key, value, now, 0)
                for key, value in report.metrics.items()
                if key in trial_report.ONCE
            ]
        metrics.append(Metric("epoch", step, now, step))
        tags = []
        node = report.node_id
        if node and self.nodes.get(trial.trial_id) != node:  # where it runs (it may move)
            self.nodes[trial.trial_id] = node
            tags.append(RunTag("tuner.node_id", node))
        if report.warnings:  # one per line, after the trial's earlier ones
            lines = [self.warnings.get(trial.trial_id, ""), *report.warnings]
            self.warnings[trial.trial_id] = "\n".join(filter(None, lines))
            # MLflow caps a tag's value; the latest warnings matter most.
            tags.append(RunTag(WARNINGS_TAG, self.warnings[trial.trial_id][-MAX_TAG_CHARS:]))
        value = report.metrics.get(self.metric)
        if value is not None and math.isfinite(value):
            previous = self.best_values.get(trial.trial_id)
            better = max if self.mode == "max" else min
            best = value if previous is None else better(previous, value)
            self.best_values[trial.trial_id] = best
            metrics.append(Metric(f"best_{self.metric}", best, now, step))
        self.writer.put(Write(run_id, metrics=metrics, tags=tags))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, trial_report.status(trial.last_result), "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "errored", "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # The search is over: trials it stopped unfinished (the time budget ran out) end as
        # stopped early, then what is queued is written and the thread stops. (Ctrl-C skips
        # this hook; Experiment.interrupt flushes instead.)
        self._remove_forgotten(trials)
        for trial in trials:
            if trial.trial_id not in self.ended:
                self._end(trial, trial_report.status(trial.last_result), "FINISHED")
        flush_writes(self.tracking_uri, close=True)

    def _remove_forgotten(self, trials: list) -> None:
        """A trial started just before a crash or Ctrl-C, after Tune last saved its state, is
        unknown to the resumed search, which ran another in its place: its run (left open or
        interrupted) is removed, so the parent holds one run per trial of the search."""
        known = {trial.trial_id for trial in trials}
        for trial_id, run_id in self.runs.items():
            if trial_id not in known:
                print(f"trial {trial_id} was not in Tune's saved state: its run is removed")
                self.client.delete_run(run_id)

    def _end(self, trial: Any, status: str, run_status: str) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        self.ended.add(trial.trial_id)
        tags = [RunTag("tuner.status", status)]
        if status == "errored":
            tags.append(RunTag("tuner.error", error_line(trial)[:5000]))
        if status == "rejected":
            tags.append(RunTag("tuner.rejected", TrialReport.read(trial.last_result).reason))
        self.writer.put(Write(run_id, tags=tags, status=run_status))
