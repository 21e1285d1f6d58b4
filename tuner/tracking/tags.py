"""The MLflow layout of a search: run roles, the parent's tags, the child-run queries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tuner.core.secrets import mask_secrets

PARENT_ROLE = "parent"


TRIAL_ROLE = "trial"


REPEAT = "repeat"  # the tuner.final tag of a child run that repeats a config (final.repeats)


@dataclass(frozen=True)
class SearchTags:
    """What a search records on its parent run as tags, read back the same way: the one place
    that names them (Experiment.start writes them; results, report, artifacts, anytime read)."""

    metric: str = "val_acc"  # what the search selected on
    mode: str = "max"
    sampled: tuple[str, ...] = ()  # the config keys the search varied
    spec: str = ""  # the spec file's name; its masked copy is the artifact spec/<name>
    storage: str = ""  # Ray Tune's state and checkpoints
    overrides: tuple[str, ...] = ()  # --set and the shortcut flags, credentials masked
    images: str = ""  # images per split it ran on (data.Splits.sizes), checked on resume
    # spec.objectives as (name, mode) pairs, the metric first; () for a single-metric search
    objectives: tuple[tuple[str, str], ...] = ()
    code: str = ""  # the git commit tuner ran from ("": not a git checkout), MLflow's own tag

    def tags(self) -> dict[str, str]:
        return {
            "tuner.metric": self.metric,
            "tuner.mode": self.mode,
            "tuner.sampled": ",".join(self.sampled),
            "tuner.spec": self.spec,
            "tuner.storage": self.storage,
            "tuner.overrides": json.dumps([mask_secrets(o) for o in self.overrides]),
            "tuner.images": self.images,
            "tuner.objectives": ",".join(f"{name}:{mode}" for name, mode in self.objectives),
            "mlflow.source.git.commit": self.code,
        }

    @classmethod
    def of(cls, parent: Run) -> SearchTags:
        tags = parent.data.tags
        return cls(
            metric=tags.get("tuner.metric", cls.metric),
            mode=tags.get("tuner.mode", cls.mode),
            sampled=tuple(key for key in tags.get("tuner.sampled", "").split(",") if key),
            spec=tags.get("tuner.spec", ""),
            storage=tags.get("tuner.storage", ""),
            overrides=_overrides(tags.get("tuner.overrides", "")),
            images=tags.get("tuner.images", ""),
            objectives=_objectives(tags.get("tuner.objectives", "")),
            code=tags.get("mlflow.source.git.commit", ""),
        )

    def folder(self, storage: str | None = None) -> str:
        """Where the search's Tune state is: where it started, unless ``storage`` (--storage)
        says where its folder is now."""
        return (
            f"{storage.rstrip('/')}/{PurePosixPath(self.storage).name}" if storage else self.storage
        )


def _objectives(tag: str) -> tuple[tuple[str, str], ...]:
    """The objectives tag, ``val_acc:max,model_params:min``, as (name, mode) pairs."""
    pairs = (pair.partition(":") for pair in tag.split(",") if pair)
    return tuple((name, mode) for name, _, mode in pairs)


@dataclass(frozen=True)
class StudyTags:
    """Where an Optuna search's study lives, and how many earlier trials it started with: tags
    of the parent run, set once the run (whose id names the study) exists."""

    storage: str = ""  # an RDB URL (credentials masked)
    name: str = ""
    warm_start_trials: int = 0

    def tags(self) -> dict[str, str]:
        return {
            "tuner.optuna_storage": mask_secrets(self.storage),
            "tuner.optuna_study": self.name,
            "tuner.warm_start_trials": str(self.warm_start_trials),
        }

    @classmethod
    def of(cls, parent: Run) -> StudyTags:
        tags = parent.data.tags
        return cls(
            storage=tags.get("tuner.optuna_storage", ""),
            name=tags.get("tuner.optuna_study", ""),
            warm_start_trials=int(tags.get("tuner.warm_start_trials", 0)),
        )


def _overrides(tag: str) -> tuple[str, ...]:
    """The overrides tag: a JSON list; runs recorded before it was one hold "a=1; b=2"."""
    if not tag:
        return ()
    try:
        return tuple(json.loads(tag))
    except json.JSONDecodeError:
        return tuple(tag.split("; "))


def latest_parent_run(client: MlflowClient, experiment_id: str) -> Run | None:
    """The newest parent run of an experiment (the one query for it), None when there is none."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`tuner.role` = '{PARENT_ROLE}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def child_runs(
    client: MlflowClient, experiment_id: str, parent_id: str, trial_id: str | None = None
) -> list[Run]:
    """The trial runs nested under a parent run, or the one of Tune's trial ``trial_id`` (the
    one query every reader uses)."""
    kind = f"tags.`tuner.role` = '{TRIAL_ROLE}'"
    if trial_id is not None:
        kind += f" and tags.`tuner.trial_id` = '{trial_id}'"
    return _children(client, experiment_id, parent_id, kind)


def repeat_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The child runs of a parent that repeat a config with another seed (final.repeats)."""
    return _children(client, experiment_id, parent_id, f"tags.`tuner.final` = '{REPEAT}'")


def _children(client: MlflowClient, experiment_id: str, parent_id: str, kind: str) -> list[Run]:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and {kind}",
        max_results=50000,
    )


def new_child_run(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    name: str,
    tags: Mapping[str, str],
    *,
    start_time: int | None = None,
) -> str:
    """A run nested under ``parent_id`` (MLflow's UI shows it under the parent); its id."""
    run = client.create_run(
        experiment_id,
        start_time=start_time,
        run_name=name,
        tags={"mlflow.parentRunId": parent_id, **tags},
    )
    return run.info.run_id
