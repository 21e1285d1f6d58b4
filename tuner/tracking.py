"""MLflow recording: one parent run per `tuner run`, one nested child run per trial.

Everything is written from the driver (a Ray Tune callback), so trial workers need no access to
the tracking store. Tags carry a ``tuner.`` prefix so people can filter on them in the UI.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from tuner.errors import UsageError
from tuner.space import trial_params

PARENT_ROLE = "parent"
TRIAL_ROLE = "trial"
# What trials report that MLflow records per epoch (Ray adds more that says nothing of models).
REPORTED = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_precision",
    "val_recall",
    "val_f1",
    "lr",
    "model_params",
    "model_mb",
)
MLFLOW_PARAM_LIMIT = 100  # params per log_batch call


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else MLflow's own default made explicit (so `tuner best` and
    `tuner ui` find the same store as `tuner run`): sqlite:///mlflow.db in the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def child_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The trial runs nested under a parent run (the one query every reader uses)."""
    return client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.mlflow.parentRunId = '{parent_id}' and tags.`tuner.role` = '{TRIAL_ROLE}'"
        ),
        max_results=50000,
    )


def trial_status(last_result: Mapping[str, Any] | None, errored: bool = False) -> str:
    """completed / early_stopped (by ASHA, before its epoch budget) / diverged / errored /
    rejected (by the spec's constraints, untrained)."""
    if errored:
        return "errored"
    if not last_result:
        return "early_stopped"  # stopped before reporting anything
    if last_result.get("rejected"):
        return "rejected"
    if last_result.get("diverged"):
        return "diverged"
    budget = last_result.get("epochs")
    if budget is not None and last_result.get("training_iteration", 0) < budget:
        return "early_stopped"
    return "completed"


def error_line(trial: Any) -> str:
    """The last line of a failed Tune trial's traceback: the exception and its message."""
    if trial.error_file and Path(trial.error_file).exists():
        lines = Path(trial.error_file).read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1]
    return "unknown error"


class Experiment:
    """The parent run of one `tuner run` (or of the run it resumes) and what is written to it."""

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = (
            found.experiment_id if found else self.client.create_experiment(experiment_name)
        )
        self.name = experiment_name
        self.parent_id = ""

    def start(self, spec_path: Path, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.name,
            tags={"tuner.role": PARENT_ROLE, **tags},
        )
        self.parent_id = run.info.run_id
        self.client.log_artifact(self.parent_id, str(spec_path), artifact_path="spec")
        return self.parent_id

    def resume(self) -> str:
        """Continue the latest parent run, which must not have finished."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`tuner.role` = '{PARENT_ROLE}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs or runs[0].info.status == "FINISHED":
            raise UsageError(
                f"experiment {self.name!r} has no unfinished run to resume in "
                f"{self.tracking_uri}; start a new one without --resume"
            )
        self.parent_id = runs[0].info.run_id
        self.client.update_run(self.parent_id, "RUNNING")
        self.client.set_tag(self.parent_id, "tuner.status", "running")
        return self.parent_id

    def children(self) -> list[Run]:
        return child_runs(self.client, self.experiment_id, self.parent_id)

    def mark_best(self, trial_id: str) -> None:
        for run in self.children():
            if run.data.tags.get("tuner.trial_id") == trial_id:
                self.client.set_tag(run.info.run_id, "tuner.best", "true")

    def finish(
        self,
        best_config: Mapping[str, Any],
        best_metrics: Mapping[str, float],
        test_metrics: Mapping[str, float],
        *,
        final: str,
    ) -> None:
        """Record the search's outcome; ``final`` says which model the test metrics are of."""
        best_params = {f"best.{key}": value for key, value in trial_params(best_config).items()}
        _log_params(self.client, self.parent_id, best_params)
        self.client.log_dict(self.parent_id, dict(best_config), "best_config.json")
        now = _now_ms()
        metrics = [Metric(k, float(v), now, 0) for k, v in {**best_metrics, **test_metrics}.items()]
        self.client.log_batch(self.parent_id, metrics=metrics)
        self.client.set_tag(self.parent_id, "tuner.final", final)
        self.client.set_tag(self.parent_id, "tuner.status", "completed")
        self.client.set_terminated(self.parent_id, "FINISHED")

    def interrupt(self) -> None:
        """Mark the parent and its running trials as killed; `--resume` picks them up again."""
        for run in self.children():
            if run.info.status == "RUNNING":
                self.client.set_tag(run.info.run_id, "tuner.status", "interrupted")
                self.client.set_terminated(run.info.run_id, "KILLED")
        self.client.set_tag(self.parent_id, "tuner.status", "interrupted")
        self.client.set_terminated(self.parent_id, "KILLED")

    def fail(self, reason: str) -> None:
        if self.parent_id:
            self.client.set_tag(self.parent_id, "tuner.error", reason[:5000])
            self.client.set_tag(self.parent_id, "tuner.status", "errored")
            self.client.set_terminated(self.parent_id, "FAILED")


class TrialRecorder(tune.Callback):
    """A Ray Tune callback that mirrors every trial into a child run of the parent run.

    Tune pickles its callbacks into the experiment state, so this holds only plain values and
    rebuilds what it knows from MLflow in ``setup`` — which is how a resumed search finds each
    trial's existing child run instead of opening a duplicate.
    """

    def __init__(
        self, tracking_uri: str, experiment_id: str, parent_id: str, metric: str, mode: str
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.metric = metric
        self.mode = mode
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.best_values: dict[str, float] = {}
        self.nodes: dict[str, str] = {}  # Tune trial id -> Ray node id it last reported from
        self._client: MlflowClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "runs": {}, "best_values": {}, "nodes": {}}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def setup(self, **info: Any) -> None:
        for run in child_runs(self.client, self.experiment_id, self.parent_id):
            trial_id = run.data.tags.get("tuner.trial_id")
            if trial_id:
                self.runs[trial_id] = run.info.run_id
                best = run.data.metrics.get(f"best_{self.metric}")
                if best is not None:
                    self.best_values[trial_id] = best

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is not None:  # a retried or resumed trial keeps its one child run
            self.client.update_run(run_id, "RUNNING")
            self.client.set_tag(run_id, "tuner.status", "running")
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial_{trial.trial_id}",
            tags={
                "mlflow.parentRunId": self.parent_id,
                "tuner.role": TRIAL_ROLE,
                "tuner.trial_id": trial.trial_id,
                "tuner.status": "running",
            },
        )
        self.runs[trial.trial_id] = run.info.run_id
        _log_params(self.client, run.info.run_id, trial_params(trial.config))

    on_trial_restore = on_trial_start

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        step = int(result.get("training_iteration", 0))
        now = _now_ms()
        metrics = [
            Metric(key, float(result[key]), now, step)
            for key in REPORTED
            if isinstance(result.get(key), int | float)
        ]
        metrics.append(Metric("epoch", step, now, step))
        node = result.get("node_id")
        if node and self.nodes.get(trial.trial_id) != node:  # where it runs (it may move)
            self.nodes[trial.trial_id] = node
            self.client.set_tag(run_id, "tuner.node_id", str(node))
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            previous = self.best_values.get(trial.trial_id)
            better = max if self.mode == "max" else min
            best = value if previous is None else better(previous, value)
            self.best_values[trial.trial_id] = best
            metrics.append(Metric(f"best_{self.metric}", best, now, step))
        self.client.log_batch(run_id, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, trial_status(trial.last_result), "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "errored", "FAILED")

    def _end(self, trial: Any, status: str, run_status: str) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        tags = [RunTag("tuner.status", status)]
        if status == "errored":
            tags.append(RunTag("tuner.error", error_line(trial)[:5000]))
        if status == "rejected":
            tags.append(RunTag("tuner.rejected", str(trial.last_result["rejected"])))
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, run_status)


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    batch = [Param(key, _param_value(value)) for key, value in params.items()]
    for start in range(0, len(batch), MLFLOW_PARAM_LIMIT):
        client.log_batch(run_id, params=batch[start : start + MLFLOW_PARAM_LIMIT])


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


def _now_ms() -> int:
    return int(time.time() * 1000)
