"""MLflow recording: one parent run per `tuner run`, one nested child run per trial.

Everything is written from the driver (the Ray Tune callback in ``tuner.recorder``), so trial
workers need no access to the tracking store. Tags carry a ``tuner.`` prefix so people can
filter on them in the UI. This module imports neither Ray nor torch (seconds to import), so
`tuner best` and the reports read runs through it without them.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from tuner.errors import UsageError
from tuner.secrets import mask_secrets

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
            code=tags.get("mlflow.source.git.commit", ""),
        )


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


def code_version() -> str:
    """The git commit of the checkout tuner runs from, "" when it isn't one (an installed
    package), with ``+changes`` when files differ from it."""
    import subprocess

    here = Path(__file__).parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        changes = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except OSError:  # no git on this machine
        return ""
    if commit.returncode:
        return ""
    return commit.stdout.strip() + ("+changes" if changes.stdout.strip() else "")


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


def is_server(tracking_uri: str) -> bool:
    """A tracking server (HTTP), rather than a database or folder this machine opens."""
    return tracking_uri.startswith(("http://", "https://"))


SERVER_TIMEOUT_S = 5  # a tracking server that has not answered by then is taken as down


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a sqlite tracking URI (relative ones from the cwd), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve()


def unanswered(url: str, timeout: float = SERVER_TIMEOUT_S) -> str | None:
    """Why nothing answers HTTP at ``url`` (the error's name), None when something does: any
    answer counts (an auth proxy may refuse), only silence means the server is down."""
    import requests  # MLflow's own HTTP client library (it takes a URL's user:password@ too)

    try:
        requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        return type(error).__name__
    return None


def check_store(tracking_uri: str) -> None:
    """A UsageError, before anything starts, for a store nothing can be written to: a server
    that does not answer (MLflow's client would retry for minutes), a scheme MLflow doesn't know.
    """
    shown = mask_secrets(tracking_uri)
    fix = "start it, or point --tracking-uri (or MLFLOW_TRACKING_URI) at a running one"
    if is_server(tracking_uri):
        reason = unanswered(f"{tracking_uri.rstrip('/')}/health")
        if reason:
            raise UsageError(f"no MLflow tracking server answers at {shown} ({reason}); {fix}")
        return
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except MlflowException as error:
        reason = str(error).strip().split(". See ")[0]  # MLflow adds a link to its docs
        raise UsageError(f"can't use the MLflow store {shown}: {reason}") from None


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else MLflow's own default made explicit (so `tuner best` and
    `tuner ui` find the same store as `tuner run`): sqlite:///mlflow.db in the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_location(
    tracking_uri: str, experiment_name: str, artifacts: str | None = None
) -> str | None:
    """Where a new experiment keeps its artifacts: under ``artifacts`` (a folder or a URI) when
    given, else beside a sqlite store (``mlartifacts/`` in the database's folder, as `mlflow
    server` does); None lets a tracking server choose. MLflow's own default for sqlite is
    ./mlruns in whatever folder the search ran from: moved or deleted, the runs lose their plots
    and models, and every store run from that folder shares it."""
    if artifacts and "://" not in artifacts and is_server(tracking_uri):
        raise UsageError(
            f"tracking.artifacts={artifacts} is a folder on this machine, but the store is a "
            "server that other machines read too: leave it unset (the server keeps them) or "
            "give a URI such as s3://bucket/path"
        )
    if artifacts:
        root = artifacts if "://" in artifacts else Path(artifacts).expanduser().resolve().as_uri()
    elif (database := sqlite_database(tracking_uri)) is not None:
        root = (database.parent / "mlartifacts").as_uri()
    else:
        return None
    return f"{root.rstrip('/')}/{re.sub(r'[^A-Za-z0-9_.-]', '_', experiment_name)}"


def child_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The trial runs nested under a parent run (the one query every reader uses)."""
    return _children(client, experiment_id, parent_id, f"tags.`tuner.role` = '{TRIAL_ROLE}'")


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
    client: MlflowClient, experiment_id: str, parent_id: str, name: str, tags: Mapping[str, str]
) -> str:
    """A run nested under ``parent_id`` (MLflow's UI shows it under the parent); its id."""
    run = client.create_run(
        experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_id, **tags}
    )
    return run.info.run_id


def error_line(trial: Any) -> str:
    """The last line of a failed Tune trial's traceback: the exception and its message."""
    if trial.error_file and Path(trial.error_file).exists():
        lines = Path(trial.error_file).read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1]
    return "unknown error"


class Experiment:
    """The parent run of one `tuner run` (or of the run it resumes) and what is written to it."""

    def __init__(
        self, tracking_uri: str, experiment_name: str, artifacts: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = (
            found.experiment_id
            if found
            else self.client.create_experiment(
                experiment_name,
                artifact_location=artifact_location(tracking_uri, experiment_name, artifacts),
            )
        )
        self.name = experiment_name
        # An experiment keeps the artifact location it was created with.
        self.artifacts = self.client.get_experiment(self.experiment_id).artifact_location
        self.parent_id = ""

    def start(self, spec_path: Path, search: SearchTags) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.name,
            tags={"tuner.role": PARENT_ROLE, **search.tags()},
        )
        self.parent_id = run.info.run_id
        # A masked copy, not the file: a spec may hold credentials (a tracking URI's password).
        with tempfile.TemporaryDirectory() as directory:
            copy = Path(directory) / spec_path.name  # same name: readers look for spec/<file>
            copy.write_text(mask_secrets(spec_path.read_text()))
            self.client.log_artifact(self.parent_id, str(copy), artifact_path="spec")
        return self.parent_id

    def find_resumable(self, images: str) -> SearchTags:
        """Find the run to continue: the latest parent run, which must not have finished and
        must have started on the same ``images`` per split (Splits.sizes), since a resume that
        loads other data (a changed dataset, an override not applied) would mix two searches
        in one run. Its tags say where Tune's state is."""
        parent = latest_parent_run(self.client, self.experiment_id)
        if parent is None or parent.info.status == "FINISHED":
            raise UsageError(
                f"experiment {self.name!r} has no unfinished run to resume in "
                f"{mask_secrets(self.tracking_uri)}; start a new one without --resume"
            )
        started_on = SearchTags.of(parent).images
        if started_on != images:
            raise UsageError(
                f"cannot resume {self.name!r}: it started on {started_on} images, this data has "
                f"{images}; resume with the data and overrides it started with"
            )
        self.parent_id = parent.info.run_id
        return SearchTags.of(parent)

    def resume(self) -> None:
        """Continue the run find_resumable found."""
        self.client.update_run(self.parent_id, "RUNNING")
        self.client.set_tag(self.parent_id, "tuner.status", "running")

    def children(self) -> list[Run]:
        flush_writes(self.tracking_uri)  # the trials' last writes may still be queued
        return child_runs(self.client, self.experiment_id, self.parent_id)

    def mark_best(self, trial_id: str) -> None:
        for run in self.children():
            if run.data.tags.get("tuner.trial_id") == trial_id:
                self.client.set_tag(run.info.run_id, "tuner.best", "true")

    def finish(
        self,
        best_config: Mapping[str, Any],
        best_params: Mapping[str, Any],
        best_metrics: Mapping[str, float],
        test_metrics: Mapping[str, float],
        *,
        final: str,
    ) -> None:
        """Record the search's outcome: ``best_params`` are the best config under the names
        of ``space.named``; ``final`` says which model the test metrics are of."""
        best = {f"best.{key}": value for key, value in best_params.items()}
        log_batch(self.client, self.parent_id, params=as_params(best))
        self.client.log_dict(self.parent_id, dict(best_config), "best_config.json")
        self.log_metrics({**best_metrics, **test_metrics})
        self.client.set_tag(self.parent_id, "tuner.final", final)
        self.client.set_tag(self.parent_id, "tuner.status", "completed")
        self.client.set_terminated(self.parent_id, "FINISHED")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags of the parent run."""
        log_batch(self.client, self.parent_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_repeat(
        self,
        trial_id: str,
        seed: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        *,
        chosen: bool,
    ) -> None:
        """One finished repeat of trial ``trial_id``'s config with ``seed``, as a child run."""
        tags = {
            "tuner.final": REPEAT,
            "tuner.trial_id": trial_id,
            "tuner.seed": str(seed),
            "tuner.chosen": str(chosen).lower(),
        }
        name = f"repeat_{trial_id}_seed{seed}"
        run_id = new_child_run(self.client, self.experiment_id, self.parent_id, name, tags)
        log_batch(self.client, run_id, params=as_params(params))
        self.log_metrics(metrics, run_id)
        self.client.set_terminated(run_id, "FINISHED")

    def log_metrics(self, metrics: Mapping[str, float], run_id: str | None = None) -> None:
        """Metrics of ``run_id`` (default: the parent run), all at one time."""
        now = now_ms()
        batch = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
        log_batch(self.client, run_id or self.parent_id, metrics=batch)

    def interrupt(self) -> None:
        """Mark the parent and its running trials as killed; `--resume` picks them up again."""
        for run in self.children():
            if run.info.status == "RUNNING":
                self.client.set_tag(run.info.run_id, "tuner.status", "interrupted")
                self.client.set_terminated(run.info.run_id, "KILLED")
        self.client.set_tag(self.parent_id, "tuner.status", "interrupted")
        self.client.set_terminated(self.parent_id, "KILLED")

    def fail(self, reason: str) -> None:
        flush_writes(self.tracking_uri)
        if self.parent_id:
            self.client.set_tag(self.parent_id, "tuner.error", reason[:5000])
            self.client.set_tag(self.parent_id, "tuner.status", "errored")
            self.client.set_terminated(self.parent_id, "FAILED")


def as_params(params: Mapping[str, Any]) -> list[Param]:
    """Config values as MLflow params: lists and dicts as JSON, cut at MLflow's 6000 chars."""
    return [Param(key, _param_value(value)) for key, value in params.items()]


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


PYTHON_CONSTANTS = {"True": True, "False": False, "None": None}  # str() of them, as logged


def param_value(text: str) -> Any:
    """A param's value as it was before _param_value wrote it: numbers, booleans, None, lists
    and mappings as themselves; anything else (a name such as sgd) the text."""
    if text in PYTHON_CONSTANTS:
        return PYTHON_CONSTANTS[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Sequence[Metric] = (),
    params: Sequence[Param] = (),
    tags: Sequence[RunTag] = (),
) -> None:
    """``client.log_batch``, split into as many calls as MLflow's per-call limits need."""
    size = MAX_PARAMS_TAGS_PER_BATCH  # params, and tags, per call
    room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - 2 * size)  # metrics per call
    calls = max(
        math.ceil(len(entities) / limit)
        for entities, limit in ((params, size), (tags, size), (metrics, room))
    )
    for i in range(calls):
        client.log_batch(
            run_id,
            metrics=list(metrics[i * room : (i + 1) * room]),
            params=list(params[i * size : (i + 1) * size]),
            tags=list(tags[i * size : (i + 1) * size]),
        )


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------------------------
# Writes in the background
# ---------------------------------------------------------------------------------------------


@dataclass
class Write:
    """One queued write to a run: a batch, then (if ``status``) a change of the run's status."""

    run_id: str
    metrics: list[Metric] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    tags: list[RunTag] = field(default_factory=list)
    status: str | None = None  # RUNNING: update_run; FINISHED / FAILED / KILLED: set_terminated

    def absorb(self, later: Write) -> None:
        """Take a later write to the same run into this one (their order is kept)."""
        self.metrics += later.metrics
        self.params += later.params
        self.tags += later.tags
        self.status = later.status


class Writer:
    """One thread that sends queued MLflow writes, so Tune's event loop never waits on the store
    (a sqlite commit or an HTTP round trip per epoch of every trial).

    One thread keeps each run's writes in order. What queued up while it was writing is merged
    per run (several epochs' results become one log_batch). A write that fails is kept and
    reported by ``flush``, which returns once everything queued has been written. (MLflow's own
    ``synchronous=False`` logging sends batches from a pool of threads, in no set order within a
    run, and can't queue ``set_terminated``.)
    """

    def __init__(self, tracking_uri: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self._queue: queue.Queue[Write | None] = queue.Queue()
        self._errors: list[str] = []
        # A daemon: a driver that dies must not hang on it; flush() is what waits for writes.
        self._thread = threading.Thread(target=self._loop, name="tuner-mlflow", daemon=True)
        self._thread.start()

    def put(self, write: Write) -> None:
        self._queue.put(write)

    def flush(self) -> None:
        """Wait until every queued write is written; warn about those that failed."""
        self._queue.join()
        errors, self._errors = self._errors, []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            warnings.warn(
                f"tuner: {len(errors)} MLflow write(s) failed: {errors[0]}{more}", stacklevel=2
            )

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            writes = [self._queue.get()]
            while not self._queue.empty():  # only this thread takes from the queue
                writes.append(self._queue.get())
            for write in merged(w for w in writes if w is not None):
                try:
                    self._send(write)
                except Exception as error:  # reported by flush(); later writes still go out
                    self._errors.append(f"run {write.run_id}: {type(error).__name__}: {error}")
            for _ in writes:
                self._queue.task_done()
            if writes[-1] is None:
                return

    def _send(self, write: Write) -> None:
        tags = list({tag.key: tag for tag in write.tags}.values())  # the last value of each key
        log_batch(self.client, write.run_id, metrics=write.metrics, params=write.params, tags=tags)
        if write.status == "RUNNING":
            self.client.update_run(write.run_id, write.status)
        elif write.status:
            self.client.set_terminated(write.run_id, write.status)


def merged(writes: Iterable[Write]) -> list[Write]:
    """Each run's consecutive writes as one, up to and including a change of its status."""
    out: list[Write] = []
    last: dict[str, Write] = {}  # run id -> its latest write in ``out``
    for write in writes:
        previous = last.get(write.run_id)
        if previous is not None and previous.status is None:
            previous.absorb(write)
        else:
            out.append(write)
            last[write.run_id] = write
    return out


# Writers by tracking URI. The recorder (which Tune pickles, and unpickles on a resume) and the
# Experiment find the same writer here; both run in the driver's main thread.
_writers: dict[str, Writer] = {}


def writer(tracking_uri: str) -> Writer:
    """This process's background writer to ``tracking_uri``, started on first use."""
    if tracking_uri not in _writers:
        _writers[tracking_uri] = Writer(tracking_uri)
    return _writers[tracking_uri]


def flush_writes(tracking_uri: str, *, close: bool = False) -> None:
    """Wait for the queued writes to ``tracking_uri`` (warning of failed ones); ``close`` also
    stops the writer's thread (the end of an experiment: a later write starts a new one)."""
    found = _writers.pop(tracking_uri, None) if close else _writers.get(tracking_uri)
    if found is not None:
        found.close() if close else found.flush()
