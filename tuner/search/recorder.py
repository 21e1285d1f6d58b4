"""The Ray Tune callback that mirrors every trial into a child run of the parent MLflow run.

It runs in the driver's event loop, so it only queues its writes (``tuner.tracking.writer.Writer``
sends them from a process of its own, and keeps them in the search's journal until they are
written); a trial's run is named by its Tune trial id (``tracking.TrialRun``), so it waits for
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from tuner.core.objective import Mode, Objective
from tuner.core.selection import LAST_EPOCHS, final_key, final_value, with_latest
from tuner.core.terminal import say
from tuner.search.trial_errors import error_line
from tuner.spec.space import Group, trial_params
from tuner.tracking.tags import Status, Tag, anytime_key, anytime_points, child_runs
from tuner.tracking.values import as_params, now_ms
from tuner.tracking.writer import TrialRun, Write, Writer, flush_writes, writer
from tuner.trainables import trial_report
from tuner.trainables.trial_report import TrialReport

MAX_TAG_CHARS = 5000  # within MLflow's limit on a tag's value


class TrialRecorder(tune.Callback):
    """A Ray Tune callback that mirrors every trial into a child run of the parent run.

    Tune pickles its callbacks into the experiment state, so this holds only plain values and
    rebuilds what it knows from MLflow in ``setup`` — which is how a resumed search finds each
    trial's existing child run instead of opening a duplicate. Its writer (a process and queues)
    is found by tracking URI and journal, never pickled.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_id: str,
        metric: str,
        mode: str,
        space: Group,
        *,
        journal: Path | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        # Where writes the store did not take are kept (tuner.tracking.journal).
        self.journal = journal
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.metric = metric
        self.mode = mode
        self.space = space  # names a trial's params (space.named)
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id, of runs found at setup
        # Tune trial id -> its metric's last LAST_EPOCHS values, of which its final value is
        # the mean (tuner.core.selection)
        self.recent: dict[str, list[float]] = {}
        self.nodes: dict[str, str] = {}  # Tune trial id -> Ray node id it last reported from
        self.warnings: dict[str, str] = {}  # Tune trial id -> its tuner.warnings tag so far
        self.last_step: dict[str, int] = {}  # Tune trial id -> the last epoch logged
        self.ended: set[str] = set()  # Tune trial ids whose runs hold how they ended
        self.anytime = AnytimeCurve(anytime_key(metric), Objective(metric, cast(Mode, mode)))
        self._client: MlflowClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "_client": None,
            "runs": {},
            "recent": {},
            "nodes": {},
            "warnings": {},
            "last_step": {},
            "ended": set(),
            "anytime": AnytimeCurve(self.anytime.key, self.anytime.objective),
        }

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def writer(self) -> Writer:
        return writer(self.tracking_uri, self.journal)

    def _run(self, trial: Any) -> TrialRun:
        return TrialRun(self.experiment_id, self.parent_id, trial.trial_id)

    def setup(self, **info: Any) -> None:
        for run in child_runs(self.client, self.experiment_id, self.parent_id):
            trial_id = run.data.tags.get(Tag.TRIAL_ID)
            if trial_id:
                self.runs[trial_id] = run.info.run_id
                if Tag.WARNINGS in run.data.tags:  # a resumed search appends to them
                    self.warnings[trial_id] = run.data.tags[Tag.WARNINGS]
                history = self.client.get_metric_history(run.info.run_id, self.metric)
                values = [m.value for m in sorted(history, key=lambda m: m.step)]
                self.recent[trial_id] = values[-LAST_EPOCHS:]  # a resumed trial's go on
                if Tag.REJECTED not in run.data.tags:  # a rejected trial trained nothing
                    self.anytime.resume_trial(history)
                if "epoch" in run.data.metrics:  # the latest value: the last epoch logged
                    self.last_step[trial_id] = int(run.data.metrics["epoch"])
                if run.data.tags.get(Tag.STATUS) not in (Status.RUNNING, Status.INTERRUPTED):
                    self.ended.add(trial_id)
        if self.runs:  # a resumed search (a search's points come with its trials' runs)
            parent = self.client.get_run(self.parent_id)
            self.anytime.resume_curve(anytime_points(self.client, parent))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A retried or resumed trial keeps its one child run (the writer finds it): its params
        # again (the same values: MLflow accepts that), as a driver killed after creating the
        # run may not have written them.
        self.ended.discard(trial.trial_id)
        write = Write(
            self._run(trial),
            params=as_params(trial_params(self.space, trial.config)),
            tags=[RunTag(Tag.STATUS, Status.RUNNING)],
            status="RUNNING",
            start_time=now_ms(),
        )
        self.writer.put(write)

    on_trial_restore = on_trial_start

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
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
            if trial_report.per_epoch(key)
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
            tags.append(RunTag(Tag.NODE_ID, node))
        rejected = report.ending == Status.REJECTED
        if rejected:  # with its result: a resume must not count its epoch
            tags.append(RunTag(Tag.REJECTED, report.reason))
        if report.warnings:  # one per line, after the trial's earlier ones
            lines = [self.warnings.get(trial.trial_id, ""), *report.warnings]
            self.warnings[trial.trial_id] = "\n".join(filter(None, lines))
            # MLflow caps a tag's value; the latest warnings matter most.
            tags.append(RunTag(Tag.WARNINGS, self.warnings[trial.trial_id][-MAX_TAG_CHARS:]))
        value = report.metrics.get(self.metric)
        if value is not None:
            recent = with_latest(self.recent.get(trial.trial_id, []), value)
            self.recent[trial.trial_id] = recent
            # What tuner.tracking.records ranks by, as the driver ranks (tuner.commands.run); nan,
            # not inf, when the last epochs diverged: every MLflow store keeps nan as it is.
            final = final_value(recent)
            final = final if math.isfinite(final) else math.nan
            metrics.append(Metric(final_key(self.metric), final, now, step))
        self.writer.put(Write(self._run(trial), metrics=metrics, tags=tags))
        if value is not None and not rejected:
            self._log_anytime_point(self.anytime.epoch(value, now))

    def _log_anytime_point(self, point: Metric | None) -> None:
        if point is not None:
            self.writer.put(Write(self.parent_id, metrics=[point]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, trial_report.status(trial.last_result), "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, Status.ERRORED, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # The search is over: trials it stopped unfinished (the time budget ran out) end as
        # stopped early, then what is queued is written and the writer stops. (Ctrl-C skips
        # this hook; Experiment.interrupt flushes instead.)
        self._remove_forgotten(trials)
        for trial in trials:
            if trial.trial_id not in self.ended:
                self._end(trial, trial_report.status(trial.last_result), "FINISHED")
        self._log_anytime_point(self.anytime.last())
        flush_writes(self.tracking_uri, self.journal, close=True)

    def _remove_forgotten(self, trials: list) -> None:
        """A trial started just before a crash or Ctrl-C, after Tune last saved its state, is
        unknown to the resumed search, which ran another in its place: its run (left open or
        interrupted) is removed, so the parent holds one run per trial of the search."""
        known = {trial.trial_id for trial in trials}
        for trial_id, run_id in self.runs.items():
            if trial_id not in known:
                say(f"trial {trial_id} was not in Tune's saved state: its run is removed")
                self.client.delete_run(run_id)

    def _end(self, trial: Any, status: str, run_status: str) -> None:
        self.ended.add(trial.trial_id)
        tags = [RunTag(Tag.STATUS, status)]
        if status == Status.ERRORED:
            tags.append(RunTag(Tag.ERROR, error_line(trial)[:5000]))
        self.writer.put(Write(self._run(trial), tags=tags, status=run_status, end_time=now_ms()))


class AnytimeCurve:
    """A search's anytime curve as the epochs arrive, kept on its parent run (``key``): the
    best value of the metric so far against the epochs all trials trained (each epoch once, in
    the order the driver got them; a rejected trial trains none, a non-finite value counts as
    an epoch but never as the best). A point goes to MLflow each time the best improves, and
    one at the latest epoch when the search ends: readers get the whole curve in one request,
    not one per trial."""

    def __init__(self, key: str, objective: Objective) -> None:
        self.key = key
        self.objective = objective
        self.epochs = 0  # trained by all trials so far
        self.best = math.nan
        self.latest_ms = 0  # when the latest epoch arrived
        self.logged = 0  # the step of the latest point logged (0: none, or resumed)

    def epoch(self, value: float, timestamp: int) -> Metric | None:
        """One more epoch: the point to log when it is the best so far."""
        self.epochs += 1
        self.latest_ms = max(self.latest_ms, timestamp)
        if not self._improves(value):
            return None
        self.logged = self.epochs
        return Metric(self.key, self.best, timestamp, self.epochs)

    def last(self) -> Metric | None:
        """The point that ends the curve at the latest epoch, unless it is the latest logged."""
        if math.isnan(self.best) or self.logged == self.epochs:
            return None
        self.logged = self.epochs
        return Metric(self.key, self.best, self.latest_ms, self.epochs)

    def resume_trial(self, history: Sequence[Metric]) -> None:
        """A resumed search: the epochs a trial's run holds (its metric's history)."""
        self.epochs += len(history)
        for epoch in history:
            self._seen(epoch)

    def resume_curve(self, points: Sequence[Metric]) -> None:
        """Then the points the parent holds: the count never goes back, nor the best (a trial
        the killed driver ran after Tune last saved its state trained epochs too, though its
        run is gone)."""
        for point in points:
            self.epochs = max(self.epochs, point.step)
            self._seen(point)

    def _seen(self, metric: Metric) -> None:
        self.latest_ms = max(self.latest_ms, metric.timestamp)
        self._improves(metric.value)

    def _improves(self, value: float) -> bool:
        """Whether ``value`` is the best so far (then kept as it)."""
        if not math.isfinite(value):
            return False
        if not math.isnan(self.best) and not self.objective.better(value, self.best):
            return False
        self.best = value
        return True
