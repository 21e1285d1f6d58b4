"""Where every file of a search lives, decided in one place.

A search's own files sit in Ray Tune's folder for it, ``<storage>/<name>`` (``--storage``, else
``./tuner_results``): Tune's state, trials and checkpoints; tuner's whole copies of Tune's state
(``.tuner-state/``); the journal of MLflow writes a server did not take, and beside it the
closing step kept for `tuner sync`. A store's files: the default store (``./mlflow.db``), the
Optuna studies beside a sqlite store (``optuna.db``), and each experiment's artifacts
(``mlartifacts/<experiment>`` beside a sqlite store).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tuner.core.errors import UsageError
from tuner.core.terminal import say
from tuner.tracking.store import is_server, sqlite_database

RESULTS = "tuner_results"  # the default storage, in the current directory
SNAPSHOTS = ".tuner-state"  # tuner's whole copies of Tune's state (tuner.search.tune_state)
JOURNAL = "mlflow_journal.jsonl"  # tuner.tracking.journal
UNPUBLISHED = "unpublished.pt"  # the closing step kept for `tuner sync` (tuner.publishing.closing)
OPTUNA_DB = "optuna.db"
DEFAULT_STORE = "mlflow.db"
ARTIFACTS = "mlartifacts"


@dataclass(frozen=True)
class SearchFiles:
    """The files of one search, from its Tune folder (a path, or an object store's URI)."""

    folder: str

    @classmethod
    def new(cls, storage: str | None, name: str) -> SearchFiles:
        """A new search's: ``<storage>/<name>``, or ``<name>-2``, ``-3``... when an earlier
        search's state is there (Tune would mix both in one folder). A URI is taken as is."""
        storage = storage or str(Path.cwd() / RESULTS)
        if "://" in storage:
            return cls(f"{storage.rstrip('/')}/{name}")
        path, number = Path(storage, name), 1
        while path.exists():
            number += 1
            path = Path(storage, f"{name}-{number}")
        if number > 1:
            say(f"tuner: {Path(storage, name)} holds an earlier search; this one's state: {path}")
        return cls(str(path))

    @property
    def storage(self) -> str:
        """The folder (or URI) Tune's folder for the search is in."""
        return str(PurePosixPath(self.folder).parent)

    @property
    def snapshots(self) -> Path:
        return Path(self.folder, SNAPSHOTS)

    @property
    def journal(self) -> Path:
        """In Tune's folder; with an object store's URI (s3://..., which can't be appended to),
        in ./tuner_results/<its name> on this machine."""
        if "://" in self.folder:
            return Path(RESULTS, PurePosixPath(self.folder).name, JOURNAL).resolve()
        return Path(self.folder, JOURNAL)

    @property
    def unpublished(self) -> Path:
        """The closing step a search kept while its server was down: beside its journal."""
        return self.journal.with_name(UNPUBLISHED)

    def optuna_storage(self, setting: str | None, tracking_uri: str) -> str:
        """The Optuna study's storage: ``search.optuna_storage`` (``setting``), else a sqlite
        ``optuna.db`` beside the MLflow sqlite store (one file for all its experiments, as the
        store), else in Tune's storage folder (a local one), else in the current directory."""
        if setting:
            return setting
        database = sqlite_database(tracking_uri)
        if database:
            folder = database.parent
        elif "://" not in self.storage:
            folder = Path(self.storage)
        else:  # Tune's state in the cloud (s3://...): sqlite needs a file here
            folder = Path.cwd()
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / OPTUNA_DB}"


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else MLflow's own default made explicit (so `tuner best` and
    `tuner ui` find the same store as `tuner run`): sqlite:///mlflow.db in the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_STORE}"


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
        root = (database.parent / ARTIFACTS).as_uri()
    else:
        return None
    return f"{root.rstrip('/')}/{re.sub(r'[^A-Za-z0-9_.-]', '_', experiment_name)}"
