"""MLflow recording: one parent run per `tuner run`, one nested child run per trial.

Everything is written from the driver (the Ray Tune callback in ``tuner.recorder``), so trial
workers need no access to the tracking store. Tags carry a ``tuner.`` prefix so people can
filter on them in the UI. This module imports neither Ray nor torch (seconds to import), so
`tuner best` and the reports read runs through it without them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import requests  # MLflow's own HTTP client library (it takes a URL's user:password@ too)
from filelock import FileLock
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds, read_mlflow_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from tuner.errors import UsageError
from tuner.journal import Journal, journal_path
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
    try:
        requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        return type(error).__name__
    return None


def health_url(tracking_uri: str) -> str:
    """What a tracking server answers at while it is up (`mlflow server`'s health check)."""
    return f"{tracking_uri.rstrip('/')}/health"


STORE_LOCK_S = 300  # creating a store's tables takes seconds; minutes means something is stuck


def store_lock(database: Path | None) -> AbstractContextManager[object]:
    """Held while a process opens a sqlite ``database`` (MLflow's or Optuna's): the first open
    creates its tables, and two searches started at once on a new store would both create them
    and one fail (``table ... already exists``). A lock file beside the database, released
    when its process ends however it ends; nothing for other stores, or in a folder this user
    can't write (nor create a database in)."""
    if database is None:
        return nullcontext()
    database.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(database.parent, os.W_OK):
        return nullcontext()
    return FileLock(database.with_name(f"{database.name}.lock"), timeout=STORE_LOCK_S)


def check_store(tracking_uri: str, *, writes: str | None = None) -> None:
    """A UsageError, before anything starts, for a store nothing can be read from (with
    ``writes``, an experiment's name: nor written to): a server that does not answer (MLflow's
    client would retry for minutes) or refuses us (``refusal``), a scheme MLflow doesn't know.
    """
    shown = mask_secrets(tracking_uri)
    fix = "start it, or point --tracking-uri (or MLFLOW_TRACKING_URI) at a running one"
    if is_server(tracking_uri):
        reason = unanswered(health_url(tracking_uri))
        if reason:
            raise UsageError(f"no MLflow tracking server answers at {shown} ({reason}); {fix}")
        with server_refusals(tracking_uri):
            _check_access(tracking_uri, writes)
        return
    try:
        with store_lock(sqlite_database(tracking_uri)):  # its first open creates its tables
            MlflowClient(tracking_uri).search_experiments(max_results=1)
    except (MlflowException, OSError) as error:  # OSError: a sqlite path MLflow can't make
        reason = str(error).strip().split(". See ")[0]  # MLflow adds a link to its docs
        raise UsageError(f"can't use the MLflow store {shown}: {reason}") from None


# ---------------------------------------------------------------------------------------------
# A server that refuses us: MLflow's auth app (`mlflow server --app-name basic-auth`)
# ---------------------------------------------------------------------------------------------

# Where the auth app says which permission a user has on an experiment or a registered model:
# mlflow.server.auth.routes.GET_USER_PERMISSION (that module needs the server's Flask packages).
PERMISSION_ROUTE = "/api/3.0/mlflow/users/permissions/get"
WRITE_PERMISSIONS = ("EDIT", "MANAGE")  # the auth app's permissions that may write (can_update)
LOGIN = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"  # what MLflow's client sends
_ENDPOINT = re.compile(r"request to endpoint (\S+) failed")  # in MLflow's non-JSON HTTP errors


def _check_access(tracking_uri: str, writes: str | None) -> None:
    """Read from the server (a missing or wrong login is refused here, HTTP 401); with
    ``writes``, ask it whether this user may write to that experiment and to the registered
    model of the same name (the search registers its best model there), where they exist:
    anyone logged in may create them. A search would learn it only after Ray started."""
    client = MlflowClient(tracking_uri)
    if writes is None:
        client.search_experiments(max_results=1)
        return
    experiment = client.get_experiment_by_name(writes)  # 403 without READ on it
    if experiment is not None:
        _check_writable(tracking_uri, "experiment", experiment.experiment_id, writes)
    try:
        client.get_registered_model(writes)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    else:
        _check_writable(tracking_uri, "registered_model", writes, writes)


def _check_writable(tracking_uri: str, kind: str, resource_id: str, name: str) -> None:
    """A UsageError unless the auth app gives this client's user a permission that writes on
    resource ``kind`` ``resource_id``. Nothing to ask without a username (a server that wanted
    one refused the read before) or of a server without the auth app (404: anyone writes)."""
    creds = get_default_host_creds(tracking_uri)
    if not creds.username:
        return
    params = {"username": creds.username, "resource_type": kind, "resource_id": resource_id}
    response = http_request(creds, PERMISSION_ROUTE, "GET", params=params)
    if response.status_code == 404:
        return
    permission = verify_rest_response(response, PERMISSION_ROUTE).json()["permission"]
    if permission not in WRITE_PERMISSIONS:
        what = kind.replace("_", " ")
        raise UsageError(
            f"the MLflow server at {mask_secrets(tracking_uri)} lets user {creds.username!r} "
            f"only {permission} on {what} {name!r}, and a search writes to it: ask the "
            f"server's admin for EDIT on it, or search under another name (run --name)"
        )


def refusal(error: BaseException, tracking_uri: str) -> str | None:
    """What to tell the user when the tracking server refused a request: HTTP 401 (who we are:
    what to set) or 403 (what we may do: what to ask for); None for any other error. The one
    place that decides it: MLflow's client raises a RestException, or an MlflowException when
    the answer isn't JSON (the auth app's isn't); artifact transfers raise requests' HTTPError."""
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        endpoint = _ENDPOINT.search(str(error))
        path = endpoint[1] if endpoint else ""
    elif isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        path = urlsplit(error.response.url).path
    else:
        return None
    server = f"the MLflow server at {mask_secrets(tracking_uri)}"
    user, password = read_mlflow_creds()
    if status == 401 and not (user and password):
        return f"{server} wants a login: set {LOGIN} to your account on it (its admin makes one)"
    if status == 401:
        return f"{server} did not accept user {user!r} and its password: check {LOGIN}"
    if status == 403:
        who = f"user {user!r}" if user else "this client"
        return (
            f"{server} denied {who} {path or 'a request'}: ask its admin for READ on the "
            "experiment to read it, EDIT to write to it"
        )
    return None


@contextlib.contextmanager
def server_refusals(tracking_uri: str) -> Iterator[None]:
    """Inside it, the tracking server's refusal is a UsageError (one line, ``refusal``'s),
    not MLflow's traceback."""
    try:
        yield
    except Exception as error:
        line = refusal(error, tracking_uri)
        if line is None:
            raise
        raise UsageError(line) from None


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else MLflow's own default made explicit (so `tuner best` and
    `tuner ui` find the same store as `tuner run`): sqlite:///mlflow.db in the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def search_tracking_uri(flag: str | None, spec_uri: str | None) -> str:
    """The store a search writes to: ``--tracking-uri``, else the spec's ``tracking.uri``, else
    ``default_tracking_uri()``."""
    return flag or spec_uri or default_tracking_uri()


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
        # Where writes the store did not take are kept: the runner sets it once it knows the
        # search's folder (tuner.journal).
        self.journal: Path | None = None

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

    def find_resumable(self, images: str, storage: str | None = None) -> str:
        """Find the run to continue, and the folder of its Tune state (``SearchTags.folder``).
        It is the latest parent run, once what its stopped driver kept in the journal is
        written (all of it may be: the finished search of a server that was down); it must not
        have finished and must have started on the same ``images`` per split (Splits.sizes),
        since a resume that loads other data (a changed dataset, an override not applied) would
        mix two searches in one run."""
        parent = latest_parent_run(self.client, self.experiment_id)
        if parent is not None:
            folder = SearchTags.of(parent).folder(storage)
            self.journal = journal_path(folder)
            if Journal(self.journal).finishes(parent.info.run_id):
                flags = f" --storage {storage}" if storage else ""
                raise UsageError(
                    f"{self.name!r} finished, but its last MLflow writes were not written (its "
                    "tracking server was down, or it stopped while writing them): nothing to "
                    f"resume; write what it kept in {self.journal} (and log its plots and "
                    f"register its model) with: python -m tuner sync {self.name} --tracking-uri "
                    f"{mask_secrets(self.tracking_uri)}{flags}"
                )
            written = write_journal(self.tracking_uri, self.journal)
            if written:
                print(f"tuner: wrote the {written} MLflow writes kept in {self.journal}")
            parent = self.client.get_run(parent.info.run_id)  # as the journal left it
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
        return folder

    def resume(self) -> None:
        """Continue the run find_resumable found."""
        self.client.update_run(self.parent_id, "RUNNING")
        self.client.set_tag(self.parent_id, "tuner.status", "running")

    def restart(self) -> None:
        """Continue the run find_resumable found, whose search starts again from its first trial
        (Tune never saved its state): the runs of the trials it started are deleted (MLflow
        keeps them as deleted runs), since no resumed trial will ever finish them."""
        self.resume()
        for run in child_runs(self.client, self.experiment_id, self.parent_id):
            self.client.delete_run(run.info.run_id)

    def children(self) -> list[Run]:
        self.flush()  # the trials' last writes may still be queued
        return child_runs(self.client, self.experiment_id, self.parent_id)

    def trial_run(self, trial_id: str) -> TrialRun:
        return TrialRun(self.experiment_id, self.parent_id, trial_id)

    def put(self, write: Write) -> None:
        """Queue a write to the background writer (kept in the journal until it is written)."""
        writer(self.tracking_uri, self.journal).put(write)

    def flush(self, *, close: bool = False) -> int:
        """Wait for the queued writes (``flush_writes``); how many are kept, unwritten: as
        many as the server, down, did not take."""
        return flush_writes(self.tracking_uri, self.journal, close=close)

    def mark_best(self, trial_id: str) -> None:
        self.put(Write(self.trial_run(trial_id), tags=[RunTag("tuner.best", "true")]))

    def mark_pareto(self, tests: Mapping[str, Mapping[str, float]]) -> None:
        """Tag the trials on the Pareto front of a multi-objective search (Tune trial ids), each
        with the test metrics of its best checkpoint ({}: not tested)."""
        for trial_id, metrics in tests.items():
            pareto = [RunTag("tuner.pareto", "true")]
            self.put(Write(self.trial_run(trial_id), metrics=metrics_now(metrics), tags=pareto))

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
        metrics = metrics_now({**best_metrics, **test_metrics})
        tags = [RunTag("tuner.final", final), RunTag("tuner.status", "completed")]
        config = json.dumps(dict(best_config), indent=2)  # as MlflowClient.log_dict writes it
        self.put(
            Write(
                self.parent_id,
                metrics=metrics,
                params=as_params(best),
                tags=tags,
                texts={"best_config.json": config},
                status="FINISHED",
                end_time=now_ms(),
            )
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags of the parent run."""
        self.put(Write(self.parent_id, tags=[RunTag(k, v) for k, v in tags.items()]))

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
        self.put(
            Write(
                run_id,
                metrics=metrics_now(metrics),
                params=as_params(params),
                status="FINISHED",
                end_time=now_ms(),
            )
        )

    def log_metrics(self, metrics: Mapping[str, float], *, step: int = 0) -> None:
        """Metrics of the parent run, all at one time; a later ``step`` keeps the earlier
        values in the metrics' history (MLflow shows the latest)."""
        self.put(Write(self.parent_id, metrics=metrics_now(metrics, step)))

    def interrupt(self) -> None:
        """Mark the parent and its running trials as killed; `--resume` picks them up again.
        (With the server down, only the parent: a resume takes trials still running as
        interrupted.)"""
        stopped = [RunTag("tuner.status", "interrupted")]
        if not self.flush():
            for run in child_runs(self.client, self.experiment_id, self.parent_id):
                if run.info.status == "RUNNING":
                    trial = self.trial_run(run.data.tags["tuner.trial_id"])
                    self.put(Write(trial, tags=stopped, status="KILLED", end_time=now_ms()))
        self.put(Write(self.parent_id, tags=stopped, status="KILLED", end_time=now_ms()))
        self.flush(close=True)

    def fail(self, reason: str) -> None:
        if self.parent_id:
            tags = [RunTag("tuner.error", reason[:5000]), RunTag("tuner.status", "errored")]
            self.put(Write(self.parent_id, tags=tags, status="FAILED", end_time=now_ms()))
        self.flush(close=True)


def metrics_now(metrics: Mapping[str, float], step: int = 0) -> list[Metric]:
    """``metrics`` as MLflow metrics logged now, at ``step`` (0: values measured once)."""
    now = now_ms()
    return [Metric(key, float(value), now, step) for key, value in metrics.items()]


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

PROBE_S = 10  # while a server is down, how often the writer asks whether it answers again


@dataclass(frozen=True)
class TrialRun:
    """A trial's child run, named by its Tune trial id: the writer finds it under the parent (by
    its tuner.trial_id tag) or creates it, so a trial retried or resumed, or its writes sent
    again from the journal, never opens a second run; and Tune's loop never waits for an id."""

    experiment_id: str
    parent_id: str
    trial_id: str


@dataclass
class Write:
    """One queued write to a run: a batch and text files, then (if ``status``) a change of the
    run's status. Sending it twice changes nothing: each metric keeps its timestamp (MLflow keeps
    one of each key, step, timestamp and value), params their values, tags and texts are set
    again."""

    run: str | TrialRun  # a run's id
    metrics: list[Metric] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    tags: list[RunTag] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # artifact path -> its text
    status: str | None = None  # RUNNING: update_run; FINISHED / FAILED / KILLED: set_terminated
    start_time: int | None = None  # ms: a trial's start, should the writer create its run
    end_time: int | None = None  # ms: when it got ``status`` (a write can be sent much later)

    def absorb(self, later: Write) -> None:
        """Take a later write to the same run into this one (their order is kept)."""
        self.metrics += later.metrics
        self.params += later.params
        self.tags += later.tags
        self.texts |= later.texts
        self.status, self.end_time = later.status, later.end_time
        self.start_time = self.start_time or later.start_time

    def as_json(self) -> dict[str, Any]:
        """What the journal keeps of it (``of_json`` reads it back)."""
        return {
            "run": self.run if isinstance(self.run, str) else self.run.__dict__,
            "metrics": [[m.key, m.value, m.timestamp, m.step] for m in self.metrics],
            "params": [[p.key, p.value] for p in self.params],
            "tags": [[t.key, t.value] for t in self.tags],
            "texts": self.texts,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }

    @classmethod
    def of_json(cls, kept: dict[str, Any]) -> Write:
        run = kept["run"]
        return cls(
            run=run if isinstance(run, str) else TrialRun(**run),
            metrics=[Metric(*values) for values in kept["metrics"]],
            params=[Param(*values) for values in kept["params"]],
            tags=[RunTag(*values) for values in kept["tags"]],
            texts=kept["texts"],
            status=kept["status"],
            start_time=kept["start_time"],
            end_time=kept["end_time"],
        )


_NOW = "now"  # a queued request: write what is kept now (ask a down server at once)
_STOP = "stop"  # the same, then end the thread


class Writer:
    """One thread that sends queued MLflow writes, so Tune's event loop never waits on the store
    (a sqlite commit or an HTTP round trip per epoch of every trial).

    One thread keeps each run's writes in order. What queued up while it was writing is merged
    per run (several epochs' results become one log_batch). A write the store refuses is
    reported by ``flush``. A write that fails because a tracking server does not answer (after
    MLflow's own retries, minutes by default) is kept, in memory and in the ``journal``, with
    every write after it; the server is asked every PROBE_S seconds, and when it answers they
    are sent, in order. (MLflow's own ``synchronous=False`` logging sends batches from a pool of
    threads, in no set order within a run, and can't queue ``set_terminated``.)
    """

    def __init__(self, tracking_uri: str, journal: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.journal = Journal(journal) if journal else None
        # What an earlier driver kept and never wrote: sent first, once the server answers.
        self._kept = [Write.of_json(w) for w in self.journal.unwritten] if self.journal else []
        self.recovered = len(self._kept)
        self._down = bool(self._kept)  # ask the server before sending what is kept
        self._next_probe = 0.0  # time.monotonic() of the next question to a down server
        # The journal's number of the latest write taken from the queue (or read from it).
        self._last = self.journal.seq if self.journal else 0
        self._runs: dict[TrialRun, str] = {}  # trial runs found or created: their run ids
        self._errors: list[str] = []
        self._queue: queue.Queue[tuple[int, Write] | str] = queue.Queue()
        self._lock = threading.Lock()  # the journal's file and the queue, as one
        # A daemon: a driver that dies must not hang on it; flush() is what waits for writes.
        self._thread = threading.Thread(target=self._loop, name="tuner-mlflow", daemon=True)
        self._thread.start()

    def put(self, write: Write) -> None:
        with self._lock:
            seq = self.journal.append(write.as_json()) if self.journal else 0
            self._queue.put((seq, write))

    def flush(self) -> int:
        """Wait until every queued write is written, or kept while the server does not answer
        (asked once more now); warn about those the store refused. How many are kept."""
        self._queue.put(_NOW)
        self._queue.join()
        return self._report()

    def close(self) -> int:
        """``flush``, and end the thread."""
        self._queue.put(_STOP)
        self._thread.join()
        return self._report()

    def _report(self) -> int:
        errors, self._errors = self._errors, []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            warnings.warn(
                f"tuner: {len(errors)} MLflow write(s) failed: {errors[0]}{more}", stacklevel=3
            )
        return len(self._kept)

    def _loop(self) -> None:
        while True:
            items = self._take()
            for item in items:
                if isinstance(item, tuple):
                    self._last, write = item
                    self._kept.append(write)
            self._write_kept(now=any(isinstance(item, str) for item in items))
            for _ in items:
                self._queue.task_done()
            if _STOP in items:
                return

    def _take(self) -> list[tuple[int, Write] | str]:
        """What is queued: waits for something, or while the server is down, until it is time
        to ask it again (nothing, then)."""
        timeout = max(0.0, self._next_probe - time.monotonic()) if self._down else None
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self._queue.empty():  # only this thread takes from the queue
            items.append(self._queue.get())
        return items

    def _write_kept(self, *, now: bool) -> None:
        """Send what is kept, in order, unless the server is down (asked when it is time, or
        ``now``); what the store refuses is reported by flush(); what does not get there is
        kept, with the rest, and the server is asked again in PROBE_S seconds."""
        if not self._kept:
            return
        if self._down:
            if not now and time.monotonic() < self._next_probe:
                return
            self._next_probe = time.monotonic() + PROBE_S
            if is_server(self.tracking_uri):  # a database or a folder: kept by a killed driver
                if unanswered(health_url(self.tracking_uri)):
                    return
                self._say(f"answers: writing the {len(self._kept)} writes kept")
            self._down = False
        writes = merged(self._kept)
        for i, write in enumerate(writes):
            try:
                self._send(write)
            except Exception as error:
                if not self._undelivered(error):
                    self._errors.append(f"run {write.run}: {type(error).__name__}: {error}")
                    continue
                self._kept, self._down = writes[i:], True
                self._next_probe = time.monotonic() + PROBE_S
                where = self.journal.path if self.journal else "memory (no journal)"
                self._say(f"does not answer: its writes are kept in {where}")
                return
        self._kept = []
        if self.journal:
            with self._lock:  # no put() in between, which would make a later write the latest
                self.journal.written(self._last)

    def _undelivered(self, error: Exception) -> bool:
        """Whether a write failed on its way to a tracking server (it did not answer, after
        MLflow's own retries): kept; rather than refused by the store with a reason, which a
        server sends as a RestException: reported and dropped."""
        return is_server(self.tracking_uri) and not isinstance(error, RestException)

    def _say(self, what: str) -> None:
        server = f"the MLflow server at {mask_secrets(self.tracking_uri)}"
        print(f"tuner: {server} {what}", file=sys.stderr, flush=True)

    def _send(self, write: Write) -> None:
        run_id = self._run_id(write)
        tags = list({tag.key: tag for tag in write.tags}.values())  # the last value of each key
        log_batch(self.client, run_id, metrics=write.metrics, params=write.params, tags=tags)
        for path, text in write.texts.items():
            self.client.log_text(run_id, text, path)
        if write.status == "RUNNING":
            self.client.update_run(run_id, write.status)
        elif write.status:
            self.client.set_terminated(run_id, write.status, end_time=write.end_time)

    def _run_id(self, write: Write) -> str:
        run = write.run
        if isinstance(run, str):
            return run
        if run not in self._runs:
            found = child_runs(self.client, run.experiment_id, run.parent_id, run.trial_id)
            self._runs[run] = (
                found[0].info.run_id
                if found
                else new_child_run(
                    self.client,
                    run.experiment_id,
                    run.parent_id,
                    f"trial_{run.trial_id}",
                    {"tuner.role": TRIAL_ROLE, "tuner.trial_id": run.trial_id},
                    start_time=write.start_time,
                )
            )
        return self._runs[run]


def merged(writes: Iterable[Write]) -> list[Write]:
    """Each run's consecutive writes as one, up to and including a change of its status."""
    out: list[Write] = []
    last: dict[str | TrialRun, Write] = {}  # run -> its latest write in ``out``
    for write in writes:
        previous = last.get(write.run)
        if previous is not None and previous.status is None:
            previous.absorb(write)
        else:
            out.append(write)
            last[write.run] = write
    return out


# Writers by tracking URI and journal. The recorder (which Tune pickles, and unpickles on a
# resume) and the Experiment find the same writer here; both run in the driver's main thread.
_writers: dict[tuple[str, Path | None], Writer] = {}


def writer(tracking_uri: str, journal: Path | None = None) -> Writer:
    """This process's background writer to ``tracking_uri``, keeping what the store does not
    take in ``journal``, started on first use."""
    key = (tracking_uri, journal)
    if key not in _writers:
        _writers[key] = Writer(tracking_uri, journal)
    return _writers[key]


def flush_writes(tracking_uri: str, journal: Path | None = None, *, close: bool = False) -> int:
    """Wait for the queued writes to ``tracking_uri`` (warning of refused ones); ``close`` also
    stops the writer's thread (the end of an experiment: a later write starts a new one, which
    reads what is kept from the journal). How many writes are kept, unwritten."""
    key = (tracking_uri, journal)
    found = _writers.pop(key, None) if close else _writers.get(key)
    if found is None:
        return 0
    return found.close() if close else found.flush()


def write_journal(tracking_uri: str, journal: Path) -> int:
    """Write to the store, in order, what a search kept in ``journal``; how many writes. A
    UsageError when some remain unwritten (the server stopped answering)."""
    recovered = writer(tracking_uri, journal).recovered
    kept = flush_writes(tracking_uri, journal, close=True)
    if kept:
        raise UsageError(
            f"the MLflow server at {mask_secrets(tracking_uri)} stopped answering: {kept} "
            f"writes are still kept in {journal}; run this again when it answers"
        )
    return recovered
