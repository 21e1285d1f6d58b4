"""A search's closing step: its plots and tables logged on the parent run, and its best model
registered under the experiment's name.

Both need the tracking store. When a search ends while its server is down, what they are made
from (the best trial's test evaluation, with its trained model) is kept in a file beside the
search's journal, and `tuner sync` takes the step once it has written the journal.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from tuner.core.errors import UsageError
from tuner.core.secrets import mask_secrets
from tuner.core.terminal import note, step
from tuner.publishing import export
from tuner.publishing.artifacts import log_search_artifacts
from tuner.tracking.experiment import Experiment
from tuner.tracking.files import SearchFiles
from tuner.tracking.store import health_url, is_server, unanswered
from tuner.trainables.metrics import Evaluation


@dataclass(frozen=True)
class Closing:
    """All the closing step is made from, so that a later process can take it from a file."""

    parent_run_id: str  # the run it logs on, whichever search is the latest when it is taken
    evaluation: Evaluation  # the best trial's on the test split, with the trained model
    example: np.ndarray  # a few uint8 test images (N, C, H, W): the model's input example
    registered_name: str  # the experiment's name


def close(experiment: Experiment, closing: Closing, *, verbose: bool) -> str | None:
    """Take the closing step (``publish``), or, while the server does not answer (writes are
    kept in the journal), keep it for `tuner sync`. The model's ``models:/`` URI, if
    registered."""
    if experiment.flush():  # the plots read the trials back from the store
        path = experiment.files.unpublished
        keep(closing, path)
        warnings.warn(
            "tuner: the tracking server does not answer: the plots and the model are kept in "
            f"{path}; `tuner sync` logs them and registers the model",
            stacklevel=1,
        )
        return None
    model_uri = publish(experiment.tracking_uri, closing, verbose=verbose)
    # A resumed search whose driver was killed after keeping its closing step has taken it now.
    experiment.files.unpublished.unlink(missing_ok=True)
    return model_uri


def publish(tracking_uri: str, closing: Closing, *, verbose: bool) -> str | None:
    """Log the plots and tables on the parent run and register the model; its ``models:/`` URI
    (None: not registered, with a warning; the search's results stand without it)."""
    step("logging plots and tables")
    client = MlflowClient(tracking_uri)
    log_search_artifacts(client, closing.parent_run_id, closing.evaluation)
    # Taken again (a sync that lost its server after registering, a resumed search), the plots
    # replace themselves; the model would become a second version, so the first one stands.
    registered = [
        version
        for version in client.search_model_versions(f"run_id = '{closing.parent_run_id}'")
        if version.name == closing.registered_name
    ]
    if registered:
        return f"models:/{registered[0].name}/{registered[0].version}"
    step("registering the model")
    return _register(tracking_uri, closing, verbose=verbose)


def publish_kept(tracking_uri: str, files: SearchFiles) -> str | None:
    """`tuner sync`, once the journal is written: the closing step the search of ``files``
    kept, if any, and the file removed. The model's ``models:/`` URI, if registered."""
    path = files.unpublished
    if not path.is_file():
        return None
    model_uri = publish(tracking_uri, kept(path), verbose=False)
    # The plots and the model only warn when they fail. A store that refused them (a broken
    # plot, a model that can't be exported) would refuse them again: the file goes, as a search
    # that ran with its server up moves on. A server that went down meanwhile would not: the
    # file stays for the next sync.
    if is_server(tracking_uri) and unanswered(health_url(tracking_uri)):
        raise UsageError(
            f"the MLflow server at {mask_secrets(tracking_uri)} stopped answering while the "
            f"plots and the model were logged; they are still kept in {path}: run this again "
            "when it answers"
        )
    path.unlink()
    return model_uri


def keep(closing: Closing, path: Path) -> None:
    """Keep the closing step in ``path`` (``kept`` reads it back)."""
    # torch's pickle: a network's tensors and a scikit-learn pipeline alike (MLflow's flavours
    # need the live objects). Written whole, then renamed: a killed driver leaves no torn file.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(closing, partial)
    partial.replace(path)


def kept(path: Path) -> Closing:
    """The closing step ``keep`` kept in ``path``, its model on the CPU."""
    # Not weights only: the file holds the model's classes, and this search's own driver wrote it.
    return torch.load(path, map_location="cpu", weights_only=False)


def _register(tracking_uri: str, closing: Closing, *, verbose: bool) -> str | None:
    """Register the best model under the experiment's name; a failure here only warns. MLflow's
    own lines about the registration ("Successfully registered model", "Created version") only
    with ``verbose``."""
    mlflow_lines = io.StringIO()
    try:
        with contextlib.redirect_stderr(sys.stderr if verbose else mlflow_lines):
            version = export.log_best_model(
                tracking_uri,
                closing.parent_run_id,
                closing.evaluation.model,
                closing.example,
                classes=closing.evaluation.classes,
                registered_name=closing.registered_name,
            )
    except Exception as error:  # the search itself succeeded: keep its results
        if mlflow_lines.getvalue():  # what MLflow said may explain it
            note(mlflow_lines.getvalue().rstrip("\n"))
        warnings.warn(f"tuner: the best model was not exported: {error}", stacklevel=1)
        return None
    return f"models:/{version.name}/{version.version}"
