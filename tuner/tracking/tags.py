"""The MLflow layout of a search: every ``tuner.*`` tag key (``Tag``) and the values of its
status tag (``Status``), run roles, the parent's tags, the child-run queries.

The one place they are spelt: writers and readers (and the tests) name them from here. MLflow
itself is imported only for type hints, so a trial (``trainables.trial_report``) can name a
status without importing MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Final, cast

from tuner.core.objective import Mode, Objective
from tuner.core.secrets import mask_secrets

if TYPE_CHECKING:
    from mlflow.entities import Metric, Run
    from mlflow.tracking import MlflowClient


class Tag:
    """The key of every tag tuner sets on a run (and of its model's metadata)."""

    # Every run
    ROLE: Final = "tuner.role"  # PARENT_ROLE, TRIAL_ROLE or REPEAT
    STATUS: Final = "tuner.status"  # a Status
    ERROR: Final = "tuner.error"  # why a trial or the search errored: its error's last line
    # A search's parent run (SearchTags, StudyTags)
    METRIC: Final = "tuner.metric"
    MODE: Final = "tuner.mode"
    SAMPLED: Final = "tuner.sampled"
    SPEC: Final = "tuner.spec"
    STORAGE: Final = "tuner.storage"
    OVERRIDES: Final = "tuner.overrides"
    IMAGES: Final = "tuner.images"
    OBJECTIVES: Final = "tuner.objectives"
    CODE_PATH: Final = "tuner.code_path"  # the folders the spec's own code was imported from
    OPTUNA_STORAGE: Final = "tuner.optuna_storage"
    OPTUNA_STUDY: Final = "tuner.optuna_study"
    WARM_START_TRIALS: Final = "tuner.warm_start_trials"
    FINAL: Final = "tuner.final"  # how the best trial was tested; on a child run: REPEAT
    # ms since the epoch: a search restarted from its first trial then (Experiment.restart); the
    # anytime curve's points from before it belong to the search it replaced
    CURVE_SINCE: Final = "tuner.curve_since"
    # A trial's child run
    TRIAL_ID: Final = "tuner.trial_id"  # Tune's (a repeat: the trial whose config it trains)
    BEST: Final = "tuner.best"  # TRUE on the chosen trial
    PARETO: Final = "tuner.pareto"  # TRUE on a member of a multi-objective search's front
    NODE_ID: Final = "tuner.node_id"  # the Ray node it ran on
    WARNINGS: Final = "tuner.warnings"  # what it warned of (deep.TrainingRun.warn), one per line
    REJECTED: Final = "tuner.rejected"  # which constraint its model broke, by how much
    # A repeat's child run (final.repeats, `tuner repeat`)
    SEED: Final = "tuner.seed"
    CHOSEN: Final = "tuner.chosen"  # TRUE on the repeats of the config chosen by their mean
    # The exported model's metadata: the search it came from
    PARENT_RUN_ID: Final = "tuner.parent_run_id"


class Status:
    """The values of the ``tuner.status`` tag: how a trial (or a search) ended, or that it has
    not yet. Plain strings, as MLflow stores them and the UI filters on them."""

    COMPLETED: Final = "completed"  # trained its whole epoch budget (a search: finished)
    EARLY_STOPPED: Final = "early_stopped"  # by ASHA or the search's time budget
    DIVERGED: Final = "diverged"  # a NaN/inf loss ended it
    REJECTED: Final = "rejected"  # its model broke the spec's constraints: untrained
    ERRORED: Final = "errored"
    RUNNING: Final = "running"
    INTERRUPTED: Final = "interrupted"  # the driver stopped (Ctrl-C, a kill) while it ran
    UNKNOWN: Final = "unknown"  # what a reader shows for a run without the tag


TRUE: Final = "true"  # the value of a flag tag (tuner.best, tuner.pareto, tuner.chosen)
PARENT_ROLE = "parent"
TRIAL_ROLE = "trial"
MAX_RUNS = 50000  # the most runs MLflow hands back from one search
REPEAT = "repeat"  # the role and tuner.final tag of a child run repeating a config (final.repeats)


def tag_filter(key: str, value: str) -> str:
    """An MLflow search filter matching runs whose tag ``key`` (a Tag) is ``value`` (the key is
    quoted: it holds a dot)."""
    return f"tags.`{key}` = '{value}'"


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
    # The folders its own code (import paths) was imported from; resume imports from them too.
    code_path: tuple[str, ...] = ()

    def tags(self) -> dict[str, str]:
        return {
            Tag.METRIC: self.metric,
            Tag.MODE: self.mode,
            Tag.SAMPLED: ",".join(self.sampled),
            Tag.SPEC: self.spec,
            Tag.STORAGE: self.storage,
            Tag.OVERRIDES: json.dumps([mask_secrets(o) for o in self.overrides]),
            Tag.IMAGES: self.images,
            Tag.OBJECTIVES: ",".join(f"{name}:{mode}" for name, mode in self.objectives),
            "mlflow.source.git.commit": self.code,
            **({Tag.CODE_PATH: json.dumps(list(self.code_path))} if self.code_path else {}),
        }

    @classmethod
    def of(cls, parent: Run) -> SearchTags:
        tags = parent.data.tags
        return cls(
            metric=tags.get(Tag.METRIC, cls.metric),
            mode=tags.get(Tag.MODE, cls.mode),
            sampled=tuple(key for key in tags.get(Tag.SAMPLED, "").split(",") if key),
            spec=tags.get(Tag.SPEC, ""),
            storage=tags.get(Tag.STORAGE, ""),
            overrides=_overrides(tags.get(Tag.OVERRIDES, "")),
            images=tags.get(Tag.IMAGES, ""),
            objectives=_objectives(tags.get(Tag.OBJECTIVES, "")),
            code=tags.get("mlflow.source.git.commit", ""),
            code_path=tuple(json.loads(tags.get(Tag.CODE_PATH, "[]"))),
        )

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, cast(Mode, self.mode))  # Objective checks the mode

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
            Tag.OPTUNA_STORAGE: mask_secrets(self.storage),
            Tag.OPTUNA_STUDY: self.name,
            Tag.WARM_START_TRIALS: str(self.warm_start_trials),
        }

    @classmethod
    def of(cls, parent: Run) -> StudyTags:
        tags = parent.data.tags
        return cls(
            storage=tags.get(Tag.OPTUNA_STORAGE, ""),
            name=tags.get(Tag.OPTUNA_STUDY, ""),
            warm_start_trials=int(tags.get(Tag.WARM_START_TRIALS, 0)),
        )


def _overrides(tag: str) -> tuple[str, ...]:
    """The overrides tag: a JSON list; runs recorded before it was one hold "a=1; b=2"."""
    if not tag:
        return ()
    try:
        return tuple(json.loads(tag))
    except json.JSONDecodeError:
        return tuple(tag.split("; "))


def anytime_key(metric: str) -> str:
    """The parent run's metric holding a search's anytime curve: the best value of ``metric``
    any epoch of any trial reported so far, at step = the epochs all trials had trained then
    (tuner.search.recorder logs it as the search goes; MLflow's UI charts it)."""
    return f"anytime_{metric}"


def anytime_points(client: MlflowClient, parent: Run) -> list[Metric]:
    """The points of the anytime curve ``parent`` holds, in step order: its search's, not those
    of a search it restarted from the first trial (Tag.CURVE_SINCE)."""
    since = int(parent.data.tags.get(Tag.CURVE_SINCE, 0))
    metric = SearchTags.of(parent).metric
    history = client.get_metric_history(parent.info.run_id, anytime_key(metric))
    return sorted((m for m in history if m.timestamp >= since), key=lambda m: m.step)


def latest_parent_run(client: MlflowClient, experiment_id: str) -> Run | None:
    """The newest parent run of an experiment (the one query for it), None when there is none."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=tag_filter(Tag.ROLE, PARENT_ROLE),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def child_runs(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    trial_id: str | None = None,
    *,
    where: str | None = None,
    order_by: str | None = None,
    max_results: int = MAX_RUNS,
) -> list[Run]:
    """The trial runs nested under a parent run, or the one of Tune's trial ``trial_id``, or
    those ``where`` (an MLflow filter) picks, in ``order_by``'s order (the one query every
    reader uses)."""
    kind = tag_filter(Tag.ROLE, TRIAL_ROLE)
    if trial_id is not None:
        kind += f" and {tag_filter(Tag.TRIAL_ID, trial_id)}"
    if where is not None:
        kind += f" and {where}"
    return _children(client, experiment_id, parent_id, kind, order_by, max_results)


def repeat_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The child runs of a parent that repeat a config with another seed (final.repeats)."""
    return _children(client, experiment_id, parent_id, tag_filter(Tag.FINAL, REPEAT))


def _children(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    kind: str,
    order_by: str | None = None,
    max_results: int = MAX_RUNS,
) -> list[Run]:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and {kind}",
        order_by=[order_by] if order_by else None,
        max_results=max_results,
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
