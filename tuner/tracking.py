"""MLflow recording: one parent run per `tuner run`, one nested child run per trial.

Everything is written from the driver (a Ray Tune callback), so trial workers need no access to
the tracking store. Tags carry a ``tuner.`` prefix so people can filter on them in the UI.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from tuner.space import trial_params

PARENT_ROLE = "parent"
TRIAL_ROLE = "trial"
# Values Ray adds to every result that say nothing about the model.
REPORTED = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
MLFLOW_PARAM_LIMIT = 100  # params per log_batch call


def default_tracking_uri() -> str:
    """MLflow's own default, made explicit so `tuner best` / `tuner ui` find the same store."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def trial_status(last_result: Mapping[str, Any] | None, errored: bool = False) -> str:
    """completed / early_stopped (by ASHA, before its epoch budget) / diverged / errored."""
    if errored:
        return "errored"
    if not last_result:
        return "early_stopped"  # stopped before reporting anything
    if last_result.get("diverged"):
        return "diverged"
    budget = last_result.get("epochs")
    if budget is not None and last_result.get("training_iteration", 0) < budget:
        return "early_stopped"
    return "completed"


class Experiment:
    """The parent run of one `tuner run` and the helpers to write into it."""

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = (
            found.experiment_id if found else self.client.create_experiment(experiment_name)
        )
        self.name = experiment_name
        self.parent_id: str | None = None

    def start(self, spec_path: Path, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.name,
            tags={"tuner.role": PARENT_ROLE, **tags},
        )
        self.parent_id = run.info.run_id
        self.client.log_artifact(self.parent_id, str(spec_path), artifact_path="spec")
        return self.parent_id

    def finish(
        self,
        best_config: Mapping[str, Any],
        best_metrics: Mapping[str, float],
        test_metrics: Mapping[str, float],
    ) -> None:
        assert self.parent_id is not None
        params = [
            Param(f"best.{key}", _param_value(v)) for key, v in trial_params(best_config).items()
        ]
        for start in range(0, len(params), MLFLOW_PARAM_LIMIT):
            self.client.log_batch(self.parent_id, params=params[start : start + MLFLOW_PARAM_LIMIT])
        self.client.log_dict(self.parent_id, dict(best_config), "best_config.json")
        now = _now_ms()
        metrics = [Metric(k, float(v), now, 0) for k, v in {**best_metrics, **test_metrics}.items()]
        self.client.log_batch(self.parent_id, metrics=metrics)
        self.client.set_terminated(self.parent_id, RunStatus.to_string(RunStatus.FINISHED))

    def fail(self, reason: str) -> None:
        if self.parent_id is not None:
            self.client.set_tag(self.parent_id, "tuner.error", reason[:5000])
            self.client.set_terminated(self.parent_id, RunStatus.to_string(RunStatus.FAILED))


class TrialRecorder(tune.Callback):
    """A Ray Tune callback that mirrors every trial into a child run of the parent run."""

    def __init__(self, experiment: Experiment, metric: str, mode: str) -> None:
        self.experiment = experiment
        self.client = experiment.client
        self.metric = metric
        self.mode = mode
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.statuses: dict[str, str] = {}
        self.best_values: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.runs:  # a retried trial keeps its one child run
            return
        run = self.client.create_run(
            self.experiment.experiment_id,
            run_name=f"trial_{trial.trial_id}",
            tags={
                "mlflow.parentRunId": self.experiment.parent_id,
                "tuner.role": TRIAL_ROLE,
                "tuner.trial_id": trial.trial_id,
                "tuner.status": "running",
            },
        )
        self.runs[trial.trial_id] = run.info.run_id
        params = [Param(k, _param_value(v)) for k, v in trial_params(trial.config).items()]
        for start in range(0, len(params), MLFLOW_PARAM_LIMIT):
            self.client.log_batch(
                run.info.run_id, params=params[start : start + MLFLOW_PARAM_LIMIT]
            )

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
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            previous = self.best_values.get(trial.trial_id)
            better = max if self.mode == "max" else min
            self.best_values[trial.trial_id] = (
                value if previous is None else better(previous, value)
            )
            metrics.append(
                Metric(f"best_{self.metric}", self.best_values[trial.trial_id], now, step)
            )
        self.client.log_batch(run_id, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, trial_status(trial.last_result), RunStatus.FINISHED)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "errored", RunStatus.FAILED)

    def _end(self, trial: Any, status: str, run_status: int) -> None:
        run_id = self.runs.get(trial.trial_id)
        self.statuses[trial.trial_id] = status
        if run_id is None:
            return
        tags = [RunTag("tuner.status", status)]
        if status == "errored" and trial.error_file and Path(trial.error_file).exists():
            lines = Path(trial.error_file).read_text(errors="replace").strip().splitlines()
            tags.append(RunTag("tuner.error", lines[-1][:5000] if lines else "unknown error"))
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, RunStatus.to_string(run_status))

    def mark_best(self, trial_id: str) -> None:
        run_id = self.runs.get(trial_id)
        if run_id is not None:
            self.client.set_tag(run_id, "tuner.best", "true")


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


def _now_ms() -> int:
    return int(time.time() * 1000)
