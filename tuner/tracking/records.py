"""Reading results back from MLflow (never from Ray's files): the best trials of a run."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tuner.core.errors import UsageError
from tuner.core.objective import Objective
from tuner.core.secrets import MASK
from tuner.core.selection import final_key
from tuner.tracking.tags import TRUE, SearchTags, Status, Tag, child_runs, latest_parent_run
from tuner.tracking.values import param_value


@dataclass(frozen=True)
class TrialRecord:
    """A trial as MLflow holds it."""

    trial_id: str
    run_id: str
    status: str
    value: float | None  # the trial's final value of the search metric (tuner.core.selection)
    epochs: int
    params: dict[str, str]
    best: bool
    metrics: dict[str, float]  # each metric's latest value: sizes, a front member's test_acc
    pareto: bool = False  # on the Pareto front of a multi-objective search (tuner.pareto)
    start_time: int = 0  # ms: when its run started


def latest_parent(client: MlflowClient, experiment_name: str) -> Run:
    """The newest parent run of ``experiment_name``; UsageError when there is none."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UsageError(
            f"no experiment named {experiment_name!r} in this tracking store; "
            f"known: {', '.join(names) or 'none'} (check --tracking-uri)"
        )
    parent = latest_parent_run(client, experiment.experiment_id)
    if parent is None:
        raise UsageError(f"experiment {experiment_name!r} has no tuner run yet")
    return parent


def trials_of(client: MlflowClient, parent: Run) -> list[TrialRecord]:
    """Every trial of a parent run, best first by the run's search metric."""
    objective = SearchTags.of(parent).objective
    return _ranked(child_runs(client, parent.info.experiment_id, parent.info.run_id), objective)


def best_trials(client: MlflowClient, parent: Run, top: int) -> list[TrialRecord]:
    """``trials_of(client, parent)[:top]``, reading only the runs that can be among them (reading
    every trial's run grows with the search): MLflow finds the ``top`` best by the final
    metric, then every run at least as good as the last of them (ties rank as trials_of
    ranks them). A search with fewer trials, or with unranked ones among the first, is read
    whole."""
    objective = SearchTags.of(parent).objective
    metric = f"metrics.`{final_key(objective.metric)}`"
    experiment_id, parent_id = parent.info.experiment_id, parent.info.run_id
    order = f"{metric} {'DESC' if objective.maximize else 'ASC'}"
    first = _ranked(
        child_runs(client, experiment_id, parent_id, order_by=order, max_results=top), objective
    )
    unranked = any(objective.rank_key(r.value)[0] for r in first)  # no value, nan or inf
    if len(first) < top or unranked:
        return trials_of(client, parent)[:top]
    as_good = f"{metric} {'>=' if objective.maximize else '<='} {first[-1].value!r}"
    return _ranked(child_runs(client, experiment_id, parent_id, where=as_good), objective)[:top]


def _ranked(runs: list[Run], objective: Objective) -> list[TrialRecord]:
    """The runs' trials as the driver ranks them (tuner.commands.run._ranked). Ties: the chosen best
    first, then by trial id, so every table and plot ranks them alike."""
    records = [_record(run, objective.metric) for run in runs]
    return sorted(records, key=lambda r: (*objective.rank_key(r.value), not r.best, r.trial_id))


def parsed_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow's string params as the values they were logged from."""
    return {key: param_value(text) for key, text in params.items()}


def _record(run: Run, metric: str) -> TrialRecord:
    # A run recorded before tuner.core.selection holds its best epoch's value instead.
    value = run.data.metrics.get(final_key(metric), run.data.metrics.get(f"best_{metric}"))
    if value is not None and math.isnan(value):  # its last epochs diverged
        value = None
    return TrialRecord(
        trial_id=run.data.tags.get(Tag.TRIAL_ID, "?"),
        run_id=run.info.run_id,
        status=run.data.tags.get(Tag.STATUS, Status.UNKNOWN),
        value=value,
        epochs=int(run.data.metrics.get("epoch", 0)),
        params=dict(run.data.params),
        best=run.data.tags.get(Tag.BEST) == TRUE,
        metrics=dict(run.data.metrics),
        pareto=run.data.tags.get(Tag.PARETO) == TRUE,
        start_time=run.info.start_time or 0,
    )


def spec_of(parent: Run, tracking_uri: str, directory: Path) -> Path:
    """Download the spec file a parent run was started with into ``directory``."""
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id,
        artifact_path="spec",
        tracking_uri=tracking_uri,
        dst_path=str(directory),
    )
    files = sorted(Path(local).glob("*.y*ml"))
    if not files:
        raise UsageError(f"run {parent.info.run_id} has no spec artifact to resume from")
    return files[0]


def best_config_of(parent: Run, tracking_uri: str) -> dict[str, Any]:
    """The best config a finished search recorded (``best_config.json``), as trials got it."""
    import mlflow.artifacts

    if parent.info.status != "FINISHED":
        raise UsageError(
            f"run {parent.info.run_id} has not finished ({parent.info.status}): it chose no best "
            "config yet; finish it first (python -m tuner resume NAME)"
        )
    with tempfile.TemporaryDirectory() as directory:
        local = mlflow.artifacts.download_artifacts(
            run_id=parent.info.run_id,
            artifact_path="best_config.json",
            tracking_uri=tracking_uri,
            dst_path=directory,
        )
        return json.loads(Path(local).read_text())


def overrides_of(parent: Run) -> list[str]:
    """The overrides the search was started with, to start its resume the same way.

    They were recorded with credentials masked: a masked ``tracking.uri`` is left out (a resume
    writes to the store it found the run in); any other masked value is a UsageError.
    """
    overrides = []
    for override in SearchTags.of(parent).overrides:
        key = override.partition("=")[0]
        if MASK not in override:
            overrides.append(override)
        elif key != "tracking.uri":
            raise UsageError(
                f"--set {key}=... held a credential, which tuner does not record; resume with "
                f"the spec file instead: python -m tuner run SPEC --resume --set {key}=..."
            )
    return overrides


def headline_of(parent: Run) -> dict[str, Any]:
    """The parent run's headline numbers: best value, test metrics, where it is."""
    return {
        "run_id": parent.info.run_id,
        "metric": SearchTags.of(parent).metric,
        "metrics": dict(parent.data.metrics),
        "sampled": list(SearchTags.of(parent).sampled) or None,
    }
